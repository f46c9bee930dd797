"""Cross-attention maps recorded by the trace: every layer, probabilities, words apart from specials."""

import pytest
import torch

from sdexplain.attention import AttentionMaps, check_against_processor, clean_token, cross_attention_layers, resolution_of
from sdexplain.trace import trace

PROMPT = "a red circle on the left"


def _traced(pipe, height=64, width=64, **options):
    pipe.set_progress_bar_config(disable=True)
    with trace(pipe, **options) as run:
        pipe(PROMPT, num_inference_steps=3, height=height, width=width, output_type="pt", generator=torch.Generator().manual_seed(0))
    return run


def test_cross_attention_layers_are_the_attn2_modules(tiny_pipe):
    layers = cross_attention_layers(tiny_pipe.unet)
    assert len(layers) == 7  # 2 down + 4 up + 1 mid in the tiny U-Net
    assert all(name.endswith("attn2") for name in layers)
    with pytest.raises(ValueError, match="no cross-attention"):
        cross_attention_layers(torch.nn.Linear(2, 2))


def test_resolution_of_follows_the_unet_rounding():
    assert resolution_of(64, (8, 8)) == (8, 8)
    assert resolution_of(16, (8, 8)) == (4, 4)
    assert resolution_of(8 * 16, (8, 16)) == (8, 16)
    assert resolution_of(2 * 3, (3, 5)) == (2, 3)  # ceil(3/2) × ceil(5/2)
    with pytest.raises(ValueError, match="cannot place 7"):
        resolution_of(7, (8, 8))


def test_every_layer_records_maps_at_every_step(tiny_pipe):
    """That the recorded weights are the layers' own is checked against their output in
    test_recorded_weights_reproduce_every_layers_real_output (check_against_processor)."""
    run = _traced(tiny_pipe)
    att = run.attention
    assert set(att.layer_calls) == set(cross_attention_layers(tiny_pipe.unet))
    assert all(calls == len(run.steps) for calls in att.layer_calls.values())  # every layer, every step
    assert att.layers["down_blocks.0.attentions.0.transformer_blocks.0.attn2"] == (8, 8)
    assert att.layers["mid_block.attentions.0.transformer_blocks.0.attn2"] == (4, 4)


def test_reduced_maps_are_still_a_distribution_over_the_77_tokens(tiny_pipe):
    run = _traced(tiny_pipe)
    att, length = run.attention, run.tokens[0].length
    assert att.steps == [s.index for s in run.steps]
    for maps, padding in zip(att.per_step, att.padding_per_step):
        assert maps.shape == (1, length, 8, 8) and padding.shape == (1, 8, 8)
        total = maps[0].sum(0) + padding[0] * (77 - length)  # kept positions + mean padding × count
        assert torch.allclose(total, torch.ones(8, 8), atol=1e-5)
        assert (maps > 0).all()
    for res, maps in att.per_resolution.items():
        assert maps.shape == (1, length, *res)
        total = maps[0].sum(0) + att.padding_per_resolution[res][0] * (77 - length)
        assert torch.allclose(total, torch.ones(res), atol=1e-5)


def test_word_maps_hold_only_the_words_and_specials_are_apart(tiny_pipe):
    run = _traced(tiny_pipe)
    att = run.attention
    words = att.word_maps(batch_index=0)
    assert list(words) == ["1:a", "2:red", "3:circle", "4:on", "5:the", "6:left"]
    assert all(m.shape == (8, 8) for m in words.values())
    last = run.steps[-1].index
    assert torch.equal(att.word_maps(0, step=last)["2:red"], att.per_step[-1][0, 2])
    assert torch.equal(att.start_map(0, step=last), att.per_step[-1][0, 0])
    assert torch.equal(att.end_map(0, step=last), att.per_step[-1][0, 7])
    assert att.padding_map(0).shape == (8, 8)
    assert torch.allclose(words["2:red"], torch.stack([m[0, 2] for m in att.per_step]).mean(0))
    with pytest.raises(ValueError, match="no attention maps for step 99"):
        att.word_maps(0, step=99)
    with pytest.raises(IndexError, match="batch_index 3"):
        att.word_maps(3)


def test_non_square_maps_and_size_cap(tiny_pipe):
    run = _traced(tiny_pipe, height=64, width=128)
    assert run.attention.resolution == (8, 16)
    assert run.attention.per_step[0].shape[-2:] == (8, 16)
    assert set(run.attention.per_resolution) == {(8, 16), (4, 8)}
    capped = _traced(tiny_pipe, height=64, width=128, attention_size=8)
    assert capped.attention.resolution == (4, 8)


def test_attention_off_records_no_maps(tiny_pipe):
    run = _traced(tiny_pipe, attention=False)
    assert run.attention.per_step == [] and run.attention.layer_calls == {}
    with pytest.raises(ValueError, match="no attention maps were recorded"):
        run.attention.word_maps()


def test_empty_maps_and_clean_token():
    assert clean_token("red</w>") == "red"
    with pytest.raises(ValueError, match="no attention maps"):
        AttentionMaps().word_maps()


def test_recorded_weights_reproduce_every_layers_real_output(tiny_pipe):
    tiny_pipe.set_progress_bar_config(disable=True)
    calls = []
    counter = tiny_pipe.unet.register_forward_hook(lambda *args: calls.append(1))
    try:
        check = check_against_processor(tiny_pipe, PROMPT, steps=2, cfg=5.0, height=64, width=64)
    finally:
        counter.remove()
    assert set(check.layers) == set(cross_attention_layers(tiny_pipe.unet))
    assert len(calls) >= 2 and all(v["calls"] == len(calls) for v in check.layers.values())  # every layer at every U-Net call
    assert check.worst < 1e-5
    # the check can fail: without 1/√d the recomputed weights no longer give the layers' outputs
    wrong = check_against_processor(tiny_pipe, PROMPT, steps=2, cfg=5.0, height=64, width=64, unscaled=True)
    assert wrong.worst > 1000 * check.worst
    # nor does it pass a processor that changes the keys after the projection the trace observes
    import torch.nn.functional as F

    class Sharper:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
            b = hidden_states.shape[0]
            q, k, v = attn.to_q(hidden_states), 2 * attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
            q, k, v = (x.view(b, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2) for x in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, attn.heads * q.shape[-1])
            return attn.to_out[1](attn.to_out[0](out))

    layers = cross_attention_layers(tiny_pipe.unet)
    saved = {name: layer.processor for name, layer in layers.items()}
    try:
        for layer in layers.values():
            layer.set_processor(Sharper())
        assert check_against_processor(tiny_pipe, PROMPT, steps=2, cfg=5.0, height=64, width=64).worst > 1000 * check.worst
    finally:
        for name, layer in layers.items():
            layer.set_processor(saved[name])
    layer = next(iter(layers.values()))  # hooks gone afterwards
    assert not layer.to_q._forward_hooks and not layer.to_v._forward_hooks and not layer.to_out[0]._forward_pre_hooks
    assert not tiny_pipe.unet._forward_pre_hooks

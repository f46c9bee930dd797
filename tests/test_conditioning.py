"""sdexplain.conditioning builds the WebUI's conditioning and hands it to the stock pipeline.

Checked against independent computations: the plain text encoder (diffusers' encode_prompt), the
encoder with its last layer removed (clip skip), a hand-written emphasis formula, and the U-Net's
actual text input at each step (prompt editing).
"""

import copy

import numpy as np
import pytest
import torch

import sdexplain
from sdexplain.conditioning import diffusers_tokens, emphasize, encode, make_chunks, webui_conditioning
from sdexplain.loading import load_pipeline, set_scheduler


@pytest.fixture(scope="module")
def toy():
    pipe = load_pipeline("toy")
    return set_scheduler(pipe, "euler")  # one U-Net call per step, as WebUI's Euler


def _run(pipe, kwargs, steps=4, cfg=3.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return pipe(**kwargs, num_inference_steps=steps, guidance_scale=cfg, generator=generator, output_type="np").images


LONG = " ".join(["a red cat on the left"] * 16)  # 96 tokens, no comma


# ----------------------------------------------------------------------------- chunks


def test_short_prompt_is_one_chunk_like_diffusers(toy):
    (chunk,) = make_chunks(toy.tokenizer, "a red cat")
    expected = toy.tokenizer("a red cat", padding="max_length", max_length=77).input_ids  # what diffusers feeds the encoder
    assert chunk.ids == expected
    assert chunk.used == 3 and chunk.weights == [1.0] * 77


def test_long_prompt_is_cut_into_75_token_chunks(toy):
    chunks = make_chunks(toy.tokenizer, LONG)
    assert [c.used for c in chunks] == [75, 21]
    start, end = toy.tokenizer.bos_token_id, toy.tokenizer.eos_token_id
    for chunk in chunks:
        assert len(chunk.ids) == 77 and chunk.ids[0] == start and chunk.ids[76] == end
    kept, cut = diffusers_tokens(toy.tokenizer, LONG)
    assert len(kept) == 75 and len(cut) == 21  # plain diffusers keeps only the first chunk's tokens
    assert chunks[1].strings[1:22] == cut  # the chunked conditioning keeps them in the second chunk


def test_a_comma_near_the_chunk_end_moves_the_rest_to_the_next_chunk(toy):
    text = ", ".join(["a red cat on the left"] * 14)  # 6 tokens per phrase + a comma
    chunks = make_chunks(toy.tokenizer, text)
    assert chunks[0].strings[chunks[0].used] == ",</w>"  # the first chunk ends at a comma
    assert sum(c.used for c in chunks) == len(toy.tokenizer(text, add_special_tokens=False, verbose=False).input_ids)
    no_backtrack = make_chunks(toy.tokenizer, text, comma_backtrack=0)
    assert no_backtrack[0].used == 75 and chunks[0].used < 75


def test_break_starts_a_new_chunk(toy):
    chunks = make_chunks(toy.tokenizer, "a red cat BREAK a blue dog")
    assert [c.used for c in chunks] == [3, 3]
    assert chunks[1].strings[1:4] == ["a</w>", "blue</w>", "dog</w>"]
    assert len(make_chunks(toy.tokenizer, "")) == 1


def test_weights_follow_the_tokens(toy):
    (chunk,) = make_chunks(toy.tokenizer, "a (red:1.5) [cat]")
    assert chunk.strings[1:4] == ["a</w>", "red</w>", "cat</w>"]
    assert chunk.weights[1:4] == [1.0, 1.5, 1 / 1.1]


# ----------------------------------------------------------------------------- encoding


def test_clip_skip_1_is_diffusers_encode_prompt_bit_for_bit(toy):
    z, _ = encode(toy, "a red cat on the left")
    reference, _ = toy.encode_prompt("a red cat on the left", "cpu", 1, False)
    assert z.shape == (1, 77, 64) and torch.equal(z, reference)


def test_clip_skip_2_is_the_encoder_without_its_last_layer(toy):
    z, _ = encode(toy, "a red cat", clip_skip=2)
    shorter = copy.deepcopy(toy.text_encoder)
    layers = getattr(shorter, "text_model", shorter).encoder.layers
    del layers[-1]
    ids = torch.tensor([make_chunks(toy.tokenizer, "a red cat")[0].ids])
    with torch.no_grad():
        reference = shorter(ids)[0]
    assert torch.allclose(z, reference, atol=1e-6)
    assert not torch.allclose(z, encode(toy, "a red cat")[0], atol=1e-3)
    with pytest.raises(ValueError, match="clip_skip must be an int from 1 .* to 2"):
        encode(toy, "a red cat", clip_skip=3)
    with pytest.raises(ValueError, match="clip_skip"):
        encode(toy, "a red cat", clip_skip=0)


def test_emphasis_scales_vectors_then_restores_the_mean(toy):
    plain, _ = encode(toy, "a red cat", emphasis=False)
    weighted, _ = encode(toy, "a (red:1.5) cat")
    assert torch.allclose(weighted.mean(), plain.mean(), atol=1e-6)
    z = plain[0].double().numpy()  # (77, 64), the same tokens unweighted: the hand-written formula
    w = np.ones(77)
    w[2] = 1.5
    expected = z * w[:, None]
    expected *= z.mean() / expected.mean()
    # float32 mean ratio (the mean is near 0): agreement to 0.1 %, while the emphasis itself is 50 %
    assert np.allclose(weighted[0].double().numpy(), expected, rtol=1e-3, atol=1e-4)
    assert not np.allclose(z * z.mean() / z.mean(), expected, rtol=1e-2)
    assert torch.equal(encode(toy, "a red cat")[0], plain)  # all weights 1: unchanged
    assert torch.equal(emphasize(plain, torch.ones(1, 77)), plain)


def test_long_prompt_embeddings_have_77_per_chunk(toy):
    z, chunks = encode(toy, LONG)
    assert len(chunks) == 2 and z.shape == (1, 154, 64)
    first, _ = encode(toy, " ".join(LONG.split()[:75]))
    assert torch.equal(z[:, :77], first)  # the first chunk is encoded on its own


# ----------------------------------------------------------------------------- the pipeline call


def test_traced_run_equals_the_stock_call(toy):
    cond = webui_conditioning(toy, "a [red:blue:2] (cat:1.2)", "a dog", steps=4)
    stock = _run(toy, cond.pipe_kwargs())
    with sdexplain.trace(toy) as run:
        traced = _run(toy, cond.pipe_kwargs())
    assert np.array_equal(stock, traced)
    assert len(run.steps) == 4


def test_prompt_editing_switches_at_webuis_step(toy):
    steps = 6
    cond = webui_conditioning(toy, "a [red:blue:3] cat", steps=steps)
    red, _ = encode(toy, "a red cat")
    blue, _ = encode(toy, "a blue cat")
    empty, _ = encode(toy, "")
    seen = []
    handle = toy.unet.register_forward_pre_hook(lambda m, a, k: seen.append(k["encoder_hidden_states"].clone()), with_kwargs=True)
    try:
        _run(toy, cond.pipe_kwargs(), steps=steps)
    finally:
        handle.remove()
    assert len(seen) == steps
    # WebUI: calls 0..3 use "a red cat" (end step 3, counted from 0), calls 4, 5 "a blue cat"
    for i, hidden in enumerate(seen):
        expected = red if i <= 3 else blue
        assert torch.equal(hidden[1:], expected), i
        assert torch.equal(hidden[:1], empty), i
    assert [s[1] for s in cond.switches] == [0, 0, 0, 0, 1, 1]


def test_alternation_switches_every_step(toy):
    cond = webui_conditioning(toy, "a red [cat|dog]", steps=4)
    assert cond.schedule == [(1, "a red cat"), (2, "a red dog"), (3, "a red cat"), (4, "a red dog")]
    _run(toy, cond.pipe_kwargs(), steps=4)
    assert [s[1] for s in cond.switches] == [0, 0, 1, 2]  # WebUI's order: cat, cat, dog, cat


def test_prompt_and_negative_of_different_lengths_are_padded_with_empty_chunks(toy):
    cond = webui_conditioning(toy, LONG, "a dog", steps=4)
    empty, _ = encode(toy, "")
    dog, _ = encode(toy, "a dog")
    assert cond.embeds[0].shape == cond.negative_embeds[0].shape == (1, 154, 64)
    assert torch.equal(cond.negative_embeds[0][:, :77], dog)
    assert torch.equal(cond.negative_embeds[0][:, 77:], empty)
    images = _run(toy, cond.pipe_kwargs())
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


def test_bad_input_is_refused(toy):
    with pytest.raises(TypeError, match="negative_prompt must be a str"):
        webui_conditioning(toy, "a cat", None)
    with pytest.raises(ValueError, match="not a finite number"):
        webui_conditioning(toy, "(cat:" + "9" * 400 + ")")


def test_sdxl_is_refused_by_name_not_half_built():
    from sdexplain.architectures import build_pipeline

    xl = build_pipeline("tiny-sdxl")
    with pytest.raises(ValueError, match="StableDiffusionXLPipeline is SDXL.*not built yet"):
        encode(xl, "a (red:1.5) cat")

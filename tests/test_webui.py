"""sdexplain.webui: WebUI sampler names, the seed batching, object counting, hires fix, variation seeds."""

import math

import diffusers
import numpy as np
import pytest
import torch

from sdexplain import webui
from sdexplain.conditioning import webui_conditioning
from sdexplain.loading import load_pipeline
from sdexplain.toy import world


@pytest.fixture(scope="module")
def toy():
    pipe = load_pipeline("toy")
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = webui.webui_scheduler(pipe, "Euler")
    return pipe


def test_webui_sampler_names_make_the_right_schedulers(toy):
    for name, (cls_name, extra) in webui.WEBUI_SAMPLERS.items():
        scheduler = webui.webui_scheduler(toy, name)
        assert type(scheduler) is getattr(diffusers, cls_name)
        for key, value in extra.items():
            assert scheduler.config[key] == value
        assert scheduler.config.num_train_timesteps == toy.scheduler.config.num_train_timesteps
        assert webui.webui_sampler_name(scheduler) == name, name
    assert webui.webui_scheduler(toy, "DPM++ 2M Karras").config.use_karras_sigmas
    assert not webui.webui_scheduler(toy, "DPM++ 2M").config.use_karras_sigmas
    with pytest.raises(ValueError, match="unknown WebUI sampler 'Euler A'; allowed: Euler a"):
        webui.webui_scheduler(toy, "Euler A")
    assert webui.webui_sampler_name(diffusers.DDPMScheduler()) is None


def test_defaults():
    assert webui.WEBUI_CFG == 7.0 and webui.WEBUI_STEPS == 20
    assert webui.default_cfg("toy") == 3.0 and webui.default_cfg("some/sd-model") == 7.0


def test_batched_seeds_give_each_seeds_own_image(toy):
    together = webui.run(toy, "a red cat", [3, 5], steps=3)
    cond = webui_conditioning(toy, "a red cat", steps=3)
    alone = toy(**cond.pipe_kwargs(), num_inference_steps=3, guidance_scale=3.0, generator=torch.Generator().manual_seed(5)).images
    single = webui.run(toy, "a red cat", [5], steps=3)
    assert np.array_equal(np.asarray(single[0]), np.asarray(alone[0]))  # one seed: the stock call, bit for bit
    difference = np.abs(np.asarray(together[1]).astype(int) - np.asarray(alone[0]))
    assert difference.max() <= 1  # in a batch: the same image up to float rounding
    other = np.abs(np.asarray(together[0]).astype(int) - np.asarray(alone[0]))
    assert other.mean() > 10 * max(difference.mean(), 1e-3)  # seed 3's image is another image


def test_slerp_ends_and_norm(toy):
    a, b = webui.noises(toy, [0, 1])
    assert torch.equal(webui.slerp(0.0, a, b), a) and torch.equal(webui.slerp(1.0, a, b), b)
    middle = webui.slerp(0.5, a, b)
    # on the sphere: each column keeps (about) its length, unlike the straight average
    lengths = lambda x: torch.norm(x, dim=1)
    assert torch.allclose(lengths(middle), (lengths(a) + lengths(b)) / 2, rtol=0.15)
    assert float(((a + b) / 2).std()) < 0.8 < float(middle.std())
    mixed = webui.variation_noises(toy, 0, 1, [0.0, 0.5, 1.0])
    assert mixed.shape == (3, *a.shape) and torch.equal(mixed[1], middle)


def test_count_objects():
    one = world.render(world.make_scene("cat", "red", "left", "small"))[0]
    two = np.minimum(one, world.render(world.make_scene("circle", "blue", "right", "small"))[0])
    assert webui.count_objects(one) == 1
    assert webui.count_objects(two) == 2
    assert webui.count_objects(np.full((64, 64, 3), world.BACKGROUND, dtype=np.uint8)) == 0
    # floors are not objects: a grey floor in a pale frame (what the toy draws at 128×128), the night floor
    framed = np.full((128, 128, 3), (240, 232, 240), dtype=np.uint8)
    framed[8:-8, 8:-8] = (200, 196, 190)
    assert webui.count_objects(framed) == 0
    framed[40:70, 40:70] = world.COLOURS["green"]  # the least saturated object colour
    assert webui.count_objects(framed) == 1
    night = np.where(world.render(world.make_scene("cat", "purple", "left", "small"))[1][..., None], np.uint8(world.COLOURS["purple"]), np.uint8(world.NIGHT_FLOOR))
    assert webui.count_objects(night) == 1
    with pytest.raises(ValueError):
        webui.count_objects(np.zeros((2, 64, 64, 3), dtype=np.uint8))  # a batch, not one picture


def test_hires_fix_makes_pictures_at_twice_the_size(toy):
    base, hires = webui.hires_fix(toy, "a red cat", [0], strength=0.5, steps=4)
    assert base[0].size == (64, 64) and hires[0].size == (128, 128)
    assert webui.upscale(base[0]).size == (128, 128)


def test_crossing():
    assert webui.crossing([1.0, 1.0, 0.0]) == 1.5
    assert webui.crossing([1.0, 0.5, 0.25]) == pytest.approx(1.0 + 0.0 / 0.25)
    assert webui.crossing([1.0, 0.9]) == math.inf


def test_slot_attention_agrees_with_the_trace_and_covers_every_chunk(toy):
    import sdexplain
    from sdexplain.attention import cross_attention_layers

    shares = webui.slot_attention(toy, "a red cat on the left", 0, steps=4)
    cond = webui_conditioning(toy, "a red cat on the left", steps=4)
    with sdexplain.trace(toy, preview_every=0) as run:  # the trace's recorder: an independent computation
        toy(**cond.pipe_kwargs(), num_inference_steps=4, guidance_scale=3.0, generator=torch.Generator().manual_seed(0), output_type="latent")
    recorded = torch.stack(run.attention.per_step).mean(dim=(0, 1, 3, 4))[:77]  # (77,) per slot, over steps and pixels
    assert shares.shape == (77,) and abs(float(shares.sum()) - 1) < 1e-4
    # layers weighted alike up to the maps' resizing: the trace brings the coarse layers' maps to one grid by
    # interpolation, which does not keep a map's pixel mean exactly (measured on world 2's toy: worst slot
    # 0.0075, "left" 0.064 against 0.057; a uniform or a wrong slot would be off by far more)
    assert float((shares - recorded).abs().max()) < 0.01
    assert float(shares[2]) > float(shares[70])  # a word draws more than a padding slot
    long_shares = webui.slot_attention(toy, " ".join(["a"] * 75) + " a blue dog", 0, steps=2)
    assert long_shares.shape == (154,) and abs(float(long_shares.sum()) - 1) < 1e-4
    for attn in cross_attention_layers(toy.unet).values():  # hooks removed
        assert not attn.to_q._forward_hooks and not attn.to_k._forward_hooks


def test_line_plot_keeps_a_fixed_y_range():
    figure = webui.line_plot([0, 1], {"a": [0.875, 1.0]}, "x", "y", "t", ylim=(0, 1.05))
    assert figure.axes[0].get_ylim() == (0, 1.05)

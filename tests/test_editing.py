"""Image-to-image, inpainting and depth helpers, checked against diffusers' own pipelines."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline

from sdexplain import editing, images
from sdexplain.toy import world
from sdexplain.toy.extras import DepthEstimator


def _scene_image():
    image, mask, depth = world.render(world.make_scene("cat", "orange", "center", "large"))
    return images.to_pil(image), mask, depth


@pytest.mark.parametrize("strength", [0.05, 0.3, 0.5, 0.75, 1.0])
def test_start_step_is_diffusers_get_timesteps(tiny_pipe, strength):
    img2img = StableDiffusionImg2ImgPipeline.from_pipe(tiny_pipe)
    img2img.scheduler.set_timesteps(20)
    timesteps, n = img2img.get_timesteps(20, strength, "cpu")
    start = editing.start_step(tiny_pipe.scheduler, 20, strength)
    assert start.timesteps == [int(t) for t in timesteps]
    assert start.denoising_steps == n == int(20 * strength)
    assert start.alpha_bar == pytest.approx(float(tiny_pipe.scheduler.alphas_cumprod[start.timestep]))


def test_strength_zero_runs_no_step_and_bad_strength_is_refused(tiny_pipe):
    start = editing.start_step(tiny_pipe.scheduler, 20, 0.0)
    assert start.denoising_steps == 0 and start.timestep is None
    with pytest.raises(ValueError, match=r"strength must be a number in \[0, 1\], got 1.5"):
        editing.start_step(tiny_pipe.scheduler, 20, 1.5)


def test_strength_sweep_starts_where_start_step_says(tiny_pipe):
    image, _, _ = _scene_image()
    sweep = editing.strength_sweep(tiny_pipe, "a blue dog", image, [0.25, 0.5], steps=8, cfg=3.0)
    for run, start in zip(sweep.runs, sweep.starts):
        assert [int(s.timestep) for s in run.steps] == start.timesteps
    assert sweep.noised_latent(0).shape == (4, 8, 8)
    assert len(sweep.images) == 2 and sweep.images[0].size == image.size


def test_strength_one_is_text_to_image_from_the_start_latent_it_rebuilds(tiny_pipe):
    image, _, _ = _scene_image()
    check = editing.strength_one_check(tiny_pipe, "a red cat", image, steps=4, cfg=3.0)
    assert check.formula_error < 1e-5  # x_start = sqrt(ᾱ)·z + sqrt(1−ᾱ)·ε, replayed from the generator
    assert 0 < check.alpha_bar < 0.1  # the first timestep (751 of 1000 with 4 PNDM steps): ᾱ small, not zero
    assert check.alpha_bar == pytest.approx(float(tiny_pipe.scheduler.alphas_cumprod[check.start_timestep]))
    assert check.errors["same start latent"]["max"] <= 1 / 255 + 1e-6
    assert 0 < check.input_share < 1


def test_round_trip_error_is_zero_for_identical_images_and_measures_the_vae(tiny_pipe):
    image, _, _ = _scene_image()
    assert editing.image_error(image, image) == {"mean": 0.0, "max": 0.0}
    error = editing.round_trip_error(tiny_pipe, image)
    assert error["mean"] > 0.01  # a random VAE does not reconstruct


def test_standard_masks_cover_what_their_names_say():
    masks = {name: editing.mask_array(m) for name, m in editing.standard_masks(64, 64).items()}
    assert masks["left half"][:, :32].all() and not masks["left half"][:, 32:].any()
    assert (masks["left half"] | masks["right half"]).all()
    assert masks["center box"].sum() == 32 * 32


def test_preservation_sees_changes_only_where_they_are():
    original = np.zeros((64, 64, 3), dtype=np.uint8)
    result = original.copy()
    result[:, :32] = 255  # changed inside the left half only
    mask = editing.standard_masks(64, 64)["left half"]
    measured = editing.preservation(original, result, mask, margin=8)
    assert measured["max outside"] == 0 and measured["max inside"] == 1.0
    assert measured["max far outside"] == 0


def test_inpainting_with_paste_back_keeps_every_outside_pixel(tiny_pipe):
    image, _, _ = _scene_image()
    mask = editing.standard_masks(64, 64)["center box"]
    sweep = editing.strength_sweep(tiny_pipe, "a green square", image, [1.0], steps=3, cfg=3.0, mask_image=mask)
    pasted = editing.paste_back(tiny_pipe, mask, image, sweep.images[0])
    assert editing.preservation(image, pasted, mask)["max outside"] == 0.0
    assert editing.preservation(image, sweep.images[0], mask)["max outside"] > 0  # without it, the VAE changes pixels


def test_pearson_and_depth_correlation():
    a = np.arange(10.0)
    assert editing.pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert editing.pearson(a, -a) == pytest.approx(-1.0)
    torch.manual_seed(0)
    estimator = DepthEstimator().eval()
    image, _, _ = _scene_image()
    assert editing.estimate_depth(estimator, image).shape == (64, 64)
    assert editing.depth_correlation(estimator, image, image) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="constant"):
        editing.pearson(np.ones(4), a[:4])


def test_measure_depth_row_measures_each_seed_against_the_input_and_the_other_scene(tiny_pipe):
    from sdexplain.toy.model import Judge

    torch.manual_seed(0)
    estimator = DepthEstimator().eval()
    judge = Judge.load()
    image, _, _ = _scene_image()
    other = editing.estimate_depth(estimator, images.to_pil(world.render(world.make_scene("cat", "orange", "right", "large"))[0]))
    row = editing.measure_depth_row(tiny_pipe, "a green circle", image, estimator=estimator, judge=judge, other_depth=other, strength=1.0, seeds=[0, 1], steps=2, cfg=3.0)
    assert row.seeds == 2 and row.strength == 1.0
    for i, result in enumerate(row.images):
        assert row.own[i] == pytest.approx(editing.depth_correlation(estimator, image, result))
        assert row.other[i] == pytest.approx(editing.pearson(other, editing.estimate_depth(estimator, result)))
    assert row.mean_own == pytest.approx(sum(row.own) / 2)
    # the colours are the judge's readings of the results, read here through the tensor path
    from sdexplain.toy.evaluate import judge_images

    batch = torch.cat([images.pil_to_tensor(r) for r in row.images])
    read = [world.COLOUR_NAMES[int(i)] for i in judge_images(judge, batch)["colour"]["predicted"]]
    assert row.colours == read
    assert sum(row.count(c) for c in world.COLOUR_NAMES) == 2 and row.count("green") == read.count("green")
    with pytest.raises(ValueError, match="colour must be one of .*got 'teal'"):
        row.count("teal")
    with pytest.raises(ValueError, match="at least one seed"):
        editing.measure_depth_row(tiny_pipe, "a cat", image, estimator=estimator, judge=judge, other_depth=other, strength=1.0, seeds=[])


def test_depth_pipeline_runs_depth_to_image_with_the_five_channel_unet(tiny_pipe):
    from sdexplain.toy.extras import make_depth_unet

    image, _, depth = _scene_image()
    depth_pipe = editing.depth_pipeline(tiny_pipe, make_depth_unet(tiny_pipe.unet))
    assert depth_pipe.unet.config.in_channels == 5 and depth_pipe.vae is tiny_pipe.vae
    sweep = editing.strength_sweep(depth_pipe, "a red cat", image, [1.0], steps=2, cfg=3.0, depth_map=torch.from_numpy(depth))
    assert sweep.images[0].size == image.size
    # the slider's frames: four panels, and a caption in the chosen language with the depth correlation
    from sdexplain import i18n

    torch.manual_seed(0)
    estimator = DepthEstimator().eval()
    frames, labels = editing.depth_frames(estimator, sweep, image, depth)
    r = editing.pearson(editing.estimate_depth(estimator, sweep.images[0]), depth)
    assert len(frames) == 1 and labels[0].startswith("strength 1 · panels: input") and labels[0].endswith(f"= {r:.3f}")
    try:
        i18n.set_language("zh")
        assert "从左到右" in editing.depth_frames(estimator, sweep, image, depth)[1][0]
    finally:
        i18n.set_language("en")
    with pytest.raises(ValueError, match="5 input channels"):
        editing.depth_pipeline(tiny_pipe, tiny_pipe.unet)


def test_round_trip_with_a_seed_uses_the_posterior_sample(tiny_pipe):
    image, _, _ = _scene_image()
    mean, sampled = editing.round_trip(tiny_pipe, image), editing.round_trip(tiny_pipe, image, seed=0)
    assert editing.image_error(sampled, editing.round_trip(tiny_pipe, image, seed=0))["max"] == 0  # reproducible
    assert editing.image_error(mean, sampled)["max"] > 0

"""generate(): picks the mode, derives the pipeline, validates its inputs, reproduces with a seed."""

import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    StableDiffusionDepth2ImgPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    UNet2DConditionModel,
)

from sdexplain.generate import generate, pick_mode
from sdexplain.loading import SCHEDULERS, derive, set_scheduler

PROMPT = "a red circle on the left"


@pytest.fixture
def pipe(tiny_pipe):
    tiny_pipe.set_progress_bar_config(disable=True)
    return tiny_pipe


@pytest.fixture
def depth_pipe(tiny_pipe):
    """The tiny pipeline with a 5-channel U-Net (latent + depth), as SD 2 depth."""
    unet = UNet2DConditionModel.from_config({**tiny_pipe.unet.config, "in_channels": 5}).eval()
    return StableDiffusionDepth2ImgPipeline(
        vae=tiny_pipe.vae,
        text_encoder=tiny_pipe.text_encoder,
        tokenizer=tiny_pipe.tokenizer,
        unet=unet,
        scheduler=tiny_pipe.scheduler,
        depth_estimator=None,
        feature_extractor=None,
    )


def _image(mode="RGB", size=(64, 64)):
    pixels = (np.random.RandomState(0).rand(size[1], size[0], 3) * 255).astype(np.uint8)
    return PIL.Image.fromarray(pixels).convert(mode)


def _mask(size=(64, 64)):
    mask = PIL.Image.new("L", size, 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


def _pixels(images):
    return np.stack([np.asarray(im) for im in images])


def test_text_to_image_returns_images_and_trace(pipe):
    images, run = generate(pipe, PROMPT, steps=3, height=64, width=128, num_images=2)
    assert len(images) == 2 and images[0].size == (128, 64)
    assert run.pipeline == "StableDiffusionPipeline" and len(run.steps) == 4
    assert run.steps[0].latent_in.shape == (2, 4, 8, 16)


def test_same_seed_same_image_other_seed_other_image(pipe):
    first, _ = generate(pipe, PROMPT, steps=2, seed=7)
    again, _ = generate(pipe, PROMPT, steps=2, seed=7)
    other, _ = generate(pipe, PROMPT, steps=2, seed=8)
    assert np.array_equal(_pixels(first), _pixels(again))
    assert not np.array_equal(_pixels(first), _pixels(other))


def test_generate_matches_the_stock_pipeline(pipe):
    images, _ = generate(pipe, PROMPT, steps=3, cfg=5.0, seed=3, height=64, width=64)
    stock = pipe(PROMPT, num_inference_steps=3, guidance_scale=5.0, height=64, width=64, generator=torch.Generator().manual_seed(3)).images
    assert np.array_equal(_pixels(images), _pixels(stock))


def test_modes_are_picked_from_the_arguments(pipe):
    assert pick_mode() == "text-to-image"
    assert pick_mode(image=1) == "image-to-image"
    assert pick_mode(image=1, mask_image=1) == "inpainting"
    assert pick_mode(image=1, depth_map=1) == "depth-to-image"
    with pytest.raises(ValueError, match="need an `image`"):
        pick_mode(mask_image=1)
    with pytest.raises(ValueError, match="not both"):
        pick_mode(image=1, mask_image=1, depth_map=1)
    img2img = derive(pipe, "image-to-image")
    assert isinstance(img2img, StableDiffusionImg2ImgPipeline) and img2img.unet is pipe.unet
    assert derive(pipe, "image-to-image") is img2img  # cached
    assert derive(pipe, "text-to-image") is pipe


def test_image_to_image_runs_int_steps_times_strength(pipe):
    images, run = generate(pipe, PROMPT, steps=10, strength=0.5, image=_image(), scheduler="ddim")
    assert run.pipeline == "StableDiffusionImg2ImgPipeline" and run.scheduler == "DDIMScheduler"
    assert len(run.steps) == 5 and images[0].size == (64, 64)
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"  # naming a scheduler leaves the caller's pipe alone


def test_inpainting_and_image_modes(pipe):
    images, run = generate(pipe, [PROMPT, "a blue square"], steps=2, image=_image("RGBA"), mask_image=_mask(), strength=1.0)
    assert run.pipeline == "StableDiffusionInpaintPipeline" and len(images) == 2
    images, run = generate(pipe, PROMPT, steps=2, image=_image("L"), strength=1.0)
    assert run.pipeline == "StableDiffusionImg2ImgPipeline"
    # width/height resize the input image
    images, _ = generate(pipe, PROMPT, steps=2, image=_image(), width=128, height=64, strength=1.0)
    assert images[0].size == (128, 64)


def test_depth_to_image(depth_pipe):
    depth = torch.linspace(0, 1, 64)[:, None].expand(64, 64).clone()  # (H, W)
    images, run = generate(depth_pipe, PROMPT, steps=4, image=_image(), depth_map=depth, strength=0.5, scheduler="ddim")
    assert run.pipeline == "StableDiffusionDepth2ImgPipeline"
    assert len(run.steps) == 2 and run.steps[0].latent_in.shape == (1, 4, 8, 8)
    assert images[0].size == (64, 64)


def test_depth_needs_a_depth_unet(pipe):
    with pytest.raises(ValueError, match="5 input channels.*has 4"):
        generate(pipe, PROMPT, steps=2, image=_image(), depth_map=torch.rand(64, 64))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"steps": 0}, ValueError, "steps must be >= 1, got 0"),
        ({"steps": 2.5}, TypeError, "steps must be an int"),
        ({"width": 60}, ValueError, "width=60 is not a multiple of the VAE factor 8"),
        ({"height": 100}, ValueError, "height=100 is not a multiple of the VAE factor 8"),
        ({"image": "IMAGE", "strength": 1.5}, ValueError, r"strength must be a number in \[0, 1\], got 1.5"),
        ({"image": "IMAGE", "strength": -0.1}, ValueError, "strength must be"),
        ({"image": "IMAGE", "steps": 4, "strength": 0.2}, ValueError, "leaves 0 denoising steps"),
        ({"image": "CMYK"}, ValueError, "mode 'CMYK'; allowed: RGB"),
        ({"image": "IMAGE", "mask_image": "SMALL_MASK"}, ValueError, r"mask_image size \(32, 32\) differs from the image size \(64, 64\)"),
        ({"image": np.zeros((64, 64, 3))}, TypeError, "image must be a PIL.Image.Image, got ndarray"),
        ({"scheduler": "fancy"}, ValueError, "unknown scheduler 'fancy'; allowed: ddim, euler"),
        ({"prompt": 3}, TypeError, "prompt must be a str"),
        ({"negative_prompt": ["a", "b"]}, ValueError, "negative_prompt has 2 entries but prompt has 1"),
        ({"num_images": 0}, ValueError, "num_images must be >= 1"),
        ({"cfg": "high"}, TypeError, "cfg must be a number"),
        ({"cfg": float("inf")}, ValueError, r"cfg must be a finite number >= 1 \(1 = no guidance\), got inf"),
        ({"cfg": float("nan")}, ValueError, r"cfg must be a finite number >= 1 \(1 = no guidance\), got nan"),
        ({"cfg": 0.0}, ValueError, r"cfg must be >= 1 \(1 = no guidance, WebUI's lowest CFG Scale\), got 0.0: below 1 diffusers"),
        ({"cfg": 0.5}, ValueError, r"cfg must be >= 1 .*got 0.5"),
        ({"steps": 1000}, ValueError, "steps must be at most 999, one fewer than the 1000 timesteps the model was trained on, got 1000"),
        ({"steps": 1001, "scheduler": "pndm"}, ValueError, "steps must be at most 999"),
        ({"seed": 2**64}, ValueError, f"seed must be at most 2\*\*64 - 1 = {2**64 - 1} \(torch.Generator's range\), got {2**64}"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
    ],
)
def test_bad_inputs_are_named(pipe, kwargs, error, match):
    kwargs = dict(kwargs)
    stand_ins = {"IMAGE": _image(), "CMYK": _image("CMYK"), "SMALL_MASK": _mask((32, 32))}
    for key, value in kwargs.items():
        if isinstance(value, str) and value in stand_ins:
            kwargs[key] = stand_ins[value]
    prompt = kwargs.pop("prompt", PROMPT)
    kwargs.setdefault("steps", 2)
    with pytest.raises(error, match=match):
        generate(pipe, prompt, **kwargs)


def test_long_prompt_warns_once_with_the_cut_tokens(pipe):
    long = " ".join(["red circle"] * 40)  # 80 tokens, 75 fit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, run = generate(pipe, long, steps=2)
    messages = [str(w.message) for w in caught if "cut:" in str(w.message)]
    assert messages == ["prompt 0 is longer than 75 tokens; cut: circle</w> red</w> circle</w> red</w> circle</w>"]
    assert run.tokens[0].cut == ["circle</w>", "red</w>", "circle</w>", "red</w>", "circle</w>"]


def test_long_negative_prompt_warns_too(pipe):
    long = " ".join(["blue square"] * 40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, run = generate(pipe, PROMPT, negative_prompt=long, steps=2)
    assert any(str(w.message).startswith("negative prompt 0 is longer than 75 tokens") for w in caught)
    assert run.negative_tokens[0].cut == ["square</w>", "blue</w>", "square</w>", "blue</w>", "square</w>"]


def test_scheduler_names(pipe):
    assert set(SCHEDULERS) >= {"ddim", "euler", "euler_a", "dpm++2m", "pndm", "ddpm", "lms", "heun"}
    set_scheduler(pipe, "ddim")
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    with pytest.raises(ValueError, match="unknown scheduler 'DDIMx'"):
        set_scheduler(pipe, "DDIMx")


@pytest.mark.parametrize("name", ["euler", "euler_a", "dpm++2m", "heun", "ddpm", "lms"])
def test_every_scheduler_runs_traced(pipe, name):
    images, run = generate(pipe, PROMPT, steps=3, scheduler=name)
    expected = 5 if name == "heun" else 3  # Heun evaluates the U-Net twice per step but the first
    assert len(run.steps) == expected
    assert all(step.x0 is not None and torch.isfinite(step.x0).all() for step in run.steps)


def test_inpainting_pipeline_derivation_keeps_components(pipe):
    inpaint = derive(pipe, "inpainting")
    assert isinstance(inpaint, StableDiffusionInpaintPipeline)
    assert inpaint.vae is pipe.vae and inpaint.text_encoder is pipe.text_encoder


def test_derived_pipelines_keep_the_progress_bar_setting(tiny_pipe, capfd):
    tiny_pipe.set_progress_bar_config(disable=True)
    for scheduler in (None, "ddim"):
        assert derive(tiny_pipe, "image-to-image", scheduler)._progress_bar_config == {"disable": True}
    capfd.readouterr()
    generate(tiny_pipe, "a red cat", steps=2, scheduler="euler", attention=False, preview_every=0)
    assert "it/s" not in capfd.readouterr().err


def test_derived_pipelines_keep_a_float16_pipeline_float16():
    # diffusers' from_pipe without dtype= casts the SHARED modules to float32 in place
    from sdexplain.architectures import build_tiny_pipeline
    pipe = build_tiny_pipeline(seed=0).to(torch.float16)
    for mode, scheduler in (("image-to-image", None), ("text-to-image", "ddim"), ("inpainting", "euler")):
        derived = derive(pipe, mode, scheduler)
        assert derived.unet is pipe.unet and derived.dtype == torch.float16
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.float16

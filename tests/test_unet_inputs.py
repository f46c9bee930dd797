"""The U-Net's text inputs built by hand (unet_inputs.text_inputs) give the stock pipeline's image, on SD and SDXL;
the package functions that use them (cfg_sweep, tokens.encode, time_unet_step) run on SDXL."""

import numpy as np
import pytest
import torch

from sdexplain import guidance, latents, tokens, unet_inputs
from sdexplain.architectures import TINY_SDXL_WIDTHS, build_pipeline


@pytest.fixture
def xl():
    pipe = build_pipeline("tiny-sdxl", seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _stock(pipe, prompt, scale, steps=3, seed=0, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    return pipe(prompt, guidance_scale=scale, num_inference_steps=steps, generator=generator, output_type="np", **kwargs).images[0]


def _by_hand(pipe, prompt, scale, steps=3, seed=0, height=None, width=None):
    """The denoising loop written out with text_inputs, as notebook 07 does."""
    height, width = height or unet_inputs.default_size(pipe)[0], width or unet_inputs.default_size(pipe)[1]
    text = unet_inputs.text_inputs(pipe, prompt, height=height, width=width)
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    shape = (1, pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    latent = torch.randn(shape, generator=generator) * scheduler.init_noise_sigma  # Euler's depends on its timesteps
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latent] * 2), t)
        with torch.no_grad():
            uncond, cond = pipe.unet(model_input, t, encoder_hidden_states=text.hidden(), **text.extra()).sample.chunk(2)
        latent = scheduler.step(uncond + scale * (cond - uncond), t, latent).prev_sample
    with torch.no_grad():
        image = pipe.vae.decode(latent / pipe.vae.config.scaling_factor).sample
    return pipe.image_processor.postprocess(image, output_type="np")[0]


@pytest.mark.parametrize("size", [None, (64, 96)])
def test_a_loop_by_hand_with_text_inputs_gives_the_stock_sdxl_image(xl, size):
    height, width = size or (None, None)
    ours = _by_hand(xl, "a red cat", 5.0, height=height, width=width)
    stock = _stock(xl, "a red cat", 5.0, **({"height": height, "width": width} if size else {}))
    assert np.abs(ours - stock).max() < 1e-5


def test_a_loop_by_hand_with_text_inputs_gives_the_stock_sd_image(tiny_pipe):
    tiny_pipe.set_progress_bar_config(disable=True)
    assert np.abs(_by_hand(tiny_pipe, "a red cat", 5.0) - _stock(tiny_pipe, "a red cat", 5.0)).max() < 1e-5


def test_sdxl_text_inputs_hold_the_pooled_text_and_the_image_size(xl):
    text = unet_inputs.text_inputs(xl, "a red cat", height=64, width=96)
    assert text.cond.shape[-1] == sum(TINY_SDXL_WIDTHS)
    assert text.added_cond["time_ids"].tolist() == [[64, 96, 0, 0, 64, 96]]
    assert text.added_cond["text_embeds"].shape == (1, TINY_SDXL_WIDTHS[1])
    assert float(text.uncond.abs().max()) == 0.0  # no negative prompt: SDXL's force_zeros_for_empty_prompt
    extra = text.extra(3)["added_cond_kwargs"]
    assert extra["text_embeds"].shape == (6, TINY_SDXL_WIDTHS[1]) and text.hidden(3).shape[0] == 6
    assert torch.equal(extra["text_embeds"][3:], text.added_cond["text_embeds"].expand(3, -1))  # [uncond × 3, cond × 3]
    alone = unet_inputs.text_inputs(xl, "a red cat", guidance=False)
    assert alone.uncond is None and alone.hidden(2).shape[0] == 2 and alone.extra(2)["added_cond_kwargs"]["time_ids"].shape == (2, 6)
    assert torch.equal(alone.cond, text.cond)


def test_sd_text_inputs_add_nothing_and_bad_input_is_refused(tiny_pipe, xl):
    assert unet_inputs.text_inputs(tiny_pipe, "a cat").extra(2) == {}
    with pytest.raises(TypeError, match="one string"):
        unet_inputs.text_inputs(xl, ["a cat"])
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        unet_inputs.text_inputs(xl, "a cat").extra(0)


def test_cfg_sweep_on_sdxl_matches_the_stock_pipeline_per_scale(xl):
    sweep = guidance.cfg_sweep(xl, "a red cat", scales=[2.0, 7.5], steps=3, seed=0, progress=False)
    for scale, image in zip(sweep.scales, sweep.images):
        ours = np.asarray(image, dtype=np.float32) / 255
        assert np.abs(ours - _stock(xl, "a red cat", scale)).max() <= 1 / 255 + 1e-6, scale


def test_cfg_sweep_on_sdxl_with_a_negative_prompt_matches_the_stock_pipeline(xl):
    sweep = guidance.cfg_sweep(xl, "a red cat", scales=[4.0], negative_prompt="a dog", steps=2, seed=1, progress=False)
    ours = np.asarray(sweep.images[0], dtype=np.float32) / 255
    assert np.abs(ours - _stock(xl, "a red cat", 4.0, steps=2, seed=1, negative_prompt="a dog")).max() <= 1 / 255 + 1e-6


def test_tokens_encode_on_sdxl_puts_both_encoders_side_by_side(xl):
    token, hidden = tokens.encode(xl, ["a red cat", "a blue cat"])
    assert token.shape == hidden.shape == (2, 77, sum(TINY_SDXL_WIDTHS))
    stock = xl.encode_prompt(prompt=["a red cat", "a blue cat"], device="cpu", do_classifier_free_guidance=False)[0]
    assert torch.equal(hidden, stock.float())
    ids_2 = xl.tokenizer_2(["a red cat"], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(token[:1, :, TINY_SDXL_WIDTHS[0]:], xl.text_encoder_2.get_input_embeddings()(ids_2).detach())
    rows = tokens.context_similarity(xl, "a red cat on the left", "a blue cat on the left")
    changed = next(r.position for r in rows if r.token_a != r.token_b)
    assert all(r.after > 0.99999 for r in rows if r.position < changed) and all(r.after < 0.9999 for r in rows if r.position > changed)


def test_time_unet_step_and_resolution_sweep_run_on_sdxl(xl):
    assert latents.time_unet_step(xl, 64, 96, repeats=1) > 0
    (result,) = latents.resolution_sweep(xl, [64], "a cat", steps=2, repeats=1)
    assert result.image.shape == (64, 64, 3)
    stock = (_stock(xl, "a cat", 7.5, steps=2, height=64, width=64) * 255).round()
    assert np.abs(result.image.astype(np.float32) - stock).max() <= 1


def test_a_refiner_layout_is_refused_by_name(xl):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=xl.vae, text_encoder=None, text_encoder_2=xl.text_encoder_2, tokenizer=None, tokenizer_2=xl.tokenizer_2,
        unet=xl.unet, scheduler=xl.scheduler, requires_aesthetics_score=True,
    )  # fmt: skip
    with pytest.raises(ValueError, match="StableDiffusionXLImg2ImgPipeline has the refiner's layout"):
        unet_inputs.text_inputs(refiner, "a cat")

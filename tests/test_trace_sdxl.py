"""The trace on Stable Diffusion XL: two tokenizers, two text encoders, the pooled embedding and the
micro-conditioning recorded, attention maps named by the prompt's words — and the run untouched."""

import types
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline

from sdexplain.architectures import TINY_SDXL_WIDTHS, XL_ARCHITECTURES, build_pipeline
from sdexplain.trace import DEFAULT_BUDGET, _Options, _plan, trace, Trace

PROMPT = "a red circle on the left"
WORDS = ["a</w>", "red</w>", "circle</w>", "on</w>", "the</w>", "left</w>"]
W1, W2 = TINY_SDXL_WIDTHS


@pytest.fixture
def xl():
    pipe = build_pipeline("tiny-sdxl", seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _call(pipe, **kwargs):
    args = dict(prompt=PROMPT, num_inference_steps=3, height=64, width=64, output_type="pt")
    args.update(kwargs)
    args["generator"] = torch.Generator().manual_seed(0)
    return pipe(**args).images


def _hooks(pipe):
    """Every hook on the pipeline's modules (transformers installs its own output-capturing ones)."""
    return {
        (name, n): (tuple(m._forward_hooks.values()), tuple(m._forward_pre_hooks.values()))
        for name in ("unet", "vae", "text_encoder", "text_encoder_2")
        if getattr(pipe, name, None) is not None
        for n, m in getattr(pipe, name).named_modules()
    }


def _stock_and_traced(pipe, **kwargs):
    stock = _call(pipe, **kwargs)
    pipe._hooks_before = _hooks(pipe)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with trace(pipe, preview_every=2) as run:
            traced = _call(pipe, **kwargs)
    ours = [str(w.message) for w in caught if "sdexplain" in w.filename or "tests" in w.filename or "token" in str(w.message)]
    assert not ours, ours  # no "tokens are not recorded", no reduction, no other complaint from the trace
    return stock, traced, run


def _no_hooks_left(pipe):
    assert _hooks(pipe) == pipe._hooks_before
    assert type(pipe.tokenizer).__name__ == "CLIPTokenizer" and type(pipe.tokenizer_2).__name__ == "CLIPTokenizer"


CASES = {
    "cfg_zero_negative": {},  # SDXL: no negative prompt → all-zero unconditional input, one encoding
    "negative": {"negative_prompt": "a blue square"},
    "no_cfg": {"guidance_scale": 1.0},
    "batch2": {"num_images_per_prompt": 2},
    "prompt_2": {"prompt_2": "a green triangle"},
    "micro": {"original_size": (256, 256), "crops_coords_top_left": (0, 16), "target_size": (64, 64)},
    "non_square": {"height": 64, "width": 128},
}


@pytest.mark.parametrize("case", [c if c in ("cfg_zero_negative", "negative") else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_sdxl_traced_equals_stock(xl, case):
    stock, traced, run = _stock_and_traced(xl, **CASES[case])
    assert torch.equal(stock, traced)
    assert run.pipeline == "StableDiffusionXLPipeline" and len(run.steps) == 3  # Euler: N evaluations
    _no_hooks_left(xl)


def test_sdxl_tokens_from_both_tokenizers_and_words_in_the_attention_maps(xl):
    _, _, run = _stock_and_traced(xl, negative_prompt="blue")
    assert run.tokens[0].words == WORDS and run.tokens_2[0].words == WORDS
    assert run.negative_tokens[0].words == ["blue</w>"] and run.negative_tokens_2[0].words == ["blue</w>"]
    # the second tokenizer pads with "!" (OpenCLIP's habit), the first with its end token
    assert run.tokens_2[0].strings[-1] == "!</w>" or run.tokens_2[0].strings[-1] == "!"
    assert run.tokens[0].strings[-1] == "<|endoftext|>"
    maps = run.attention.word_maps(0)
    assert [key.split(":", 1)[1] for key in maps] == ["a", "red", "circle", "on", "the", "left"]
    assert all(m.shape == run.attention.resolution for m in maps.values())


def test_sdxl_prompt_2_labels_each_slot_with_both_words(xl):
    _, _, run = _stock_and_traced(xl, prompt="a red circle", prompt_2="a green triangle")
    assert run.tokens[0].words == ["a</w>", "red</w>", "circle</w>"]
    assert run.tokens_2[0].words == ["a</w>", "green</w>", "triangle</w>"]
    assert run.attention.tokens[0][1:4] == ["a</w>", "red</w> | green</w>", "circle</w> | triangle</w>"]


def test_sdxl_embeddings_are_the_penultimate_layers_side_by_side_and_the_pooled_end_token(xl):
    _, _, run = _stock_and_traced(xl, negative_prompt="blue")
    ids = torch.tensor([run.tokens[0].ids])
    ids_2 = torch.tensor([run.tokens_2[0].ids])
    with torch.no_grad():  # an independent computation: the encoders called directly
        out = xl.text_encoder(ids, output_hidden_states=True)
        out_2 = xl.text_encoder_2(ids_2, output_hidden_states=True)
    assert run.embeddings.hidden.shape == (1, 77, W1 + W2)
    assert torch.equal(run.embeddings.hidden[..., :W1], out.hidden_states[-2])
    assert torch.equal(run.embeddings.hidden[..., W1:], out_2.hidden_states[-2])
    assert not torch.equal(out.hidden_states[-2], out.last_hidden_state)  # the layer choice is visible
    assert [(p.encoder, p.start, p.width, p.layer) for p in run.embeddings.parts] == [
        ("text_encoder", 0, W1, -2),
        ("text_encoder_2", W1, W2, -2),
    ]
    assert torch.equal(run.embeddings.pooled, out_2.text_embeds)  # (1, W2): the projected end token
    assert run.embeddings.token.shape == (1, 77, W1) and run.embeddings.token_2.shape == (1, 77, W2)
    assert torch.equal(run.embeddings.token_2[0], xl.text_encoder_2.get_input_embeddings()(ids_2)[0])
    negative = torch.tensor([run.negative_tokens_2[0].ids])
    with torch.no_grad():
        assert torch.equal(run.embeddings.pooled_uncond, xl.text_encoder_2(negative).text_embeds)


def test_sdxl_without_negative_prompt_the_unconditional_input_is_zeros(xl):
    _, _, run = _stock_and_traced(xl)
    assert run.tokens[0].words == WORDS and run.negative_tokens == [] and run.negative_tokens_2 == []
    assert not run.embeddings.hidden.eq(0).all()
    assert run.embeddings.hidden_uncond.eq(0).all() and run.embeddings.pooled_uncond.eq(0).all()


def test_sdxl_clip_skip_is_seen_as_an_earlier_layer(xl):
    _, _, run = _stock_and_traced(xl, clip_skip=1)
    assert [p.layer for p in run.embeddings.parts] == [-3, -3]  # one layer further back, in both encoders


def test_sdxl_micro_conditioning_recorded(xl):
    # the unconditional half gets its own numbers only when both negative sizes are given (else the prompt's)
    _, _, run = _stock_and_traced(xl, **CASES["micro"], negative_original_size=(512, 512), negative_target_size=(64, 64))
    assert run.micro_conditioning == [{"original_size": (256, 256), "crops_coords_top_left": (0, 16), "target_size": (64, 64)}]
    assert run.micro_conditioning_uncond == [{"original_size": (512, 512), "crops_coords_top_left": (0, 0), "target_size": (64, 64)}]
    _, _, run = _stock_and_traced(xl, height=64, width=128)
    assert run.micro_conditioning[0] == {"original_size": (64, 128), "crops_coords_top_left": (0, 0), "target_size": (64, 128)}


def test_sd15_part_is_the_text_encoders_last_output(tiny_pipe):
    tiny_pipe.set_progress_bar_config(disable=True)
    with trace(tiny_pipe) as run:
        _call(tiny_pipe)
    assert [(p.encoder, p.start, p.width, p.layer) for p in run.embeddings.parts] == [("text_encoder", 0, 32, "last")]
    assert run.tokens_2 == [] and run.embeddings.pooled is None and run.micro_conditioning == []


def _image(size=64):
    pixels = np.random.RandomState(0).rand(size, size, 3)
    return PIL.Image.fromarray((pixels * 255).astype(np.uint8))


@pytest.mark.slow
def test_sdxl_image_to_image_and_inpainting_traced_equal_stock(xl):
    img2img = StableDiffusionXLImg2ImgPipeline.from_pipe(xl)
    img2img.set_progress_bar_config(disable=True)
    stock, traced, run = _stock_and_traced(img2img, image=_image(), strength=0.5, num_inference_steps=4)
    assert torch.equal(stock, traced) and len(run.steps) == 2 and run.tokens[0].words == WORDS
    mask = PIL.Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpaint = StableDiffusionXLInpaintPipeline.from_pipe(xl)
    inpaint.set_progress_bar_config(disable=True)
    stock, traced, run = _stock_and_traced(inpaint, image=_image(), mask_image=mask, strength=1.0)
    assert torch.equal(stock, traced) and run.tokens_2[0].words == WORDS


@pytest.mark.slow
def test_refiner_style_handoff_denoising_end_and_start(xl):
    """The base runs the first 75 % of the schedule and hands its latent over; image-to-image resumes there."""
    base = _call(xl, num_inference_steps=8, denoising_end=0.75, output_type="latent")
    with trace(xl) as run:
        _call(xl, num_inference_steps=8, denoising_end=0.75, output_type="latent")
    assert len(run.steps) == 6 and run.steps[-1].latent_out is None  # no VAE decode with output_type="latent"
    refiner = StableDiffusionXLImg2ImgPipeline.from_pipe(xl)
    refiner.set_progress_bar_config(disable=True)
    stock = _call(refiner, image=base, num_inference_steps=8, denoising_start=0.75)
    with trace(refiner) as run_2:
        traced = _call(refiner, image=base, num_inference_steps=8, denoising_start=0.75)
    assert torch.equal(stock, traced) and len(run_2.steps) == 2
    assert run_2.steps[0].timestep < run.steps[-1].timestep  # it continues where the base stopped


def test_sdxl_trace_at_1024_fits_the_default_budget():
    """SDXL's own layout at 1024² (latent 4×128×128, 2048-wide text): the plan keeps every step's tensors
    at the default budget for 30 Euler steps with CFG; the tiny layout measured at the same latent size
    keeps no more than the plan estimated."""
    arch = XL_ARCHITECTURES["sdxl"]
    pipe = types.SimpleNamespace(
        unet=types.SimpleNamespace(config=types.SimpleNamespace(**arch["unet"])), vae_scale_factor=8
    )
    run = Trace()
    plan = _plan(_Options(True, 64, 5, 128, DEFAULT_BUDGET), 1, True, (128, 128), pipe, 30, run)
    assert run.reductions == [] and len(plan["tensor_steps"]) == 30 and plan["attention_hw"] == (64, 64)
    latent = 4 * 128 * 128 * 4  # bytes of one float32 latent
    assert 30 * 5 * latent < plan["estimate"] < DEFAULT_BUDGET  # every step's five tensors, and still under


@pytest.mark.slow
def test_tiny_sdxl_at_1024_keeps_what_the_plan_says(xl):
    with trace(xl) as run:
        _call(xl, height=1024, width=1024, num_inference_steps=2)
    assert run.steps[0].latent_in.shape == (1, 4, 128, 128) and run.reductions == []
    assert run.attention.resolution == (64, 64) and len(run.previews) == 2
    kept = run.nbytes()
    assert kept >= 2 * 5 * 4 * 128 * 128 * 4  # all five tensors of both steps are there
    plan = _plan(_Options(True, 64, 5, 128, DEFAULT_BUDGET), 1, True, (128, 128), xl, 2, Trace(tokens=run.tokens))
    assert kept <= plan["estimate"] < DEFAULT_BUDGET  # the plan's estimate is an upper bound of what is kept


def test_generate_on_sdxl_names_the_words_and_reaches_image_to_image(xl):
    from sdexplain.generate import generate

    images, run = generate(xl, PROMPT, steps=2, height=64, width=64)
    assert run.pipeline == "StableDiffusionXLPipeline" and run.tokens_2[0].words == WORDS
    assert "2:red" in run.attention.word_maps(0)
    images, run = generate(xl, PROMPT, steps=4, image=images[0], strength=0.5)
    assert run.pipeline == "StableDiffusionXLImg2ImgPipeline" and len(run.steps) == 2


def test_a_refiner_layout_second_encoder_only_with_the_aesthetic_score(xl):
    """SDXL's refiner has only the second text encoder and is told an aesthetic score instead of a target size."""
    from diffusers import UNet2DConditionModel

    width = TINY_SDXL_WIDTHS[1]
    unet = UNet2DConditionModel.from_config(
        xl.unet.config, cross_attention_dim=width, projection_class_embeddings_input_dim=5 * 8 + width
    ).eval()
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=xl.vae, text_encoder=None, text_encoder_2=xl.text_encoder_2, tokenizer=None, tokenizer_2=xl.tokenizer_2,
        unet=unet, scheduler=xl.scheduler, requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
    )  # fmt: skip
    refiner.set_progress_bar_config(disable=True)
    stock, traced, run = _stock_and_traced(refiner, image=_image(), strength=0.5, num_inference_steps=4, aesthetic_score=6.0)
    assert torch.equal(stock, traced)
    assert run.tokens[0].words == WORDS and run.tokens_2 == []  # its one tokenizer's tokens
    assert [(p.encoder, p.start, p.width, p.layer) for p in run.embeddings.parts] == [("text_encoder_2", 0, width, -2)]
    assert run.micro_conditioning == [{"original_size": (64, 64), "crops_coords_top_left": (0, 0), "aesthetic_score": 6.0}]
    assert run.micro_conditioning_uncond[0]["aesthetic_score"] == 2.5  # diffusers' default negative_aesthetic_score


def test_sdxl_hooks_and_both_tokenizers_are_put_back_when_the_run_raises(xl):
    _call(xl)  # transformers adds its own output-capturing hooks on the first call
    before = _hooks(xl)
    tokenizers = (xl.tokenizer, xl.tokenizer_2)

    def fail(pipe, step, timestep, kwargs):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        with trace(xl):
            _call(xl, callback_on_step_end=fail)
    assert _hooks(xl) == before and (xl.tokenizer, xl.tokenizer_2) == tokenizers

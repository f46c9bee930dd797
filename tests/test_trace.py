"""The trace records a real run faithfully and leaves the run itself untouched."""

import inspect
import logging
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
)

from sdexplain.trace import DEFAULT_BUDGET, trace

PROMPT = "a red circle on the left"


def _image(seed=0, size=(64, 64)):
    pixels = np.random.RandomState(seed).rand(size[1], size[0], 3)
    return PIL.Image.fromarray((pixels * 255).astype(np.uint8))


def _mask(size=(64, 64)):
    mask = PIL.Image.new("L", size, 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


def _call(pipe, **kwargs):
    args = dict(prompt=PROMPT, num_inference_steps=3, height=64, width=64, output_type="pt")
    args.update(kwargs)
    args["generator"] = torch.Generator().manual_seed(0)
    return pipe(**args).images


def _stock_and_traced(pipe, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    stock = _call(pipe, **kwargs)
    with trace(pipe, preview_every=2) as run:
        traced = _call(pipe, **kwargs)
    return stock, traced, run


def _no_hooks_left(*modules):
    for root in modules:
        for module in root.modules():
            assert not module._forward_hooks and not module._forward_pre_hooks, module


CASES = {
    "cfg": {},
    "no_cfg": {"guidance_scale": 1.0},
    "negative": {"negative_prompt": "a blue square"},
    "batch2": {"num_images_per_prompt": 2},
    "prompt_list": {"prompt": [PROMPT, "a small green triangle"], "negative_prompt": ["", "red"]},
    "non_square": {"height": 64, "width": 128},
}


# One case in the quick run; all of them (a few seconds each) with the slow tests.
@pytest.mark.parametrize("case", [case if case == "cfg" else pytest.param(case, marks=pytest.mark.slow) for case in CASES])
def test_text_to_image_traced_equals_stock(tiny_pipe, case):
    stock, traced, run = _stock_and_traced(tiny_pipe, **CASES[case])
    assert torch.equal(stock, traced)
    assert len(run.steps) == 4  # PNDM (SD's default) runs N + 1 U-Net evaluations
    _no_hooks_left(tiny_pipe.unet, tiny_pipe.vae, tiny_pipe.text_encoder)


@pytest.mark.slow
def test_image_to_image_traced_equals_stock_and_counts_steps(tiny_pipe):
    tiny_pipe.scheduler = DDIMScheduler.from_config({**tiny_pipe.scheduler.config, "clip_sample": False})
    pipe = StableDiffusionImg2ImgPipeline.from_pipe(tiny_pipe)
    pipe.set_progress_bar_config(disable=True)
    args = dict(image=_image(), strength=0.6, num_inference_steps=10)
    g = torch.Generator().manual_seed(0)
    stock = pipe(PROMPT, generator=g, output_type="pt", **args).images
    with trace(pipe) as run:
        traced = pipe(PROMPT, generator=torch.Generator().manual_seed(0), output_type="pt", **args).images
    assert torch.equal(stock, traced)
    assert len(run.steps) == int(10 * 0.6)
    assert [s.index for s in run.steps] == list(range(6))


@pytest.mark.slow
def test_inpainting_traced_equals_stock(tiny_pipe):
    pipe = StableDiffusionInpaintPipeline.from_pipe(tiny_pipe)
    stock, traced, run = _stock_and_traced(pipe, image=_image(), mask_image=_mask(), strength=1.0, num_images_per_prompt=2)
    assert torch.equal(stock, traced)
    assert run.steps[0].latent_in.shape == (2, 4, 8, 8)


def test_hooks_are_removed_when_the_run_raises(tiny_pipe):
    def explode(pipe, step, timestep, callback_kwargs):
        raise RuntimeError("boom")

    root_logger = logging.getLogger(type(tiny_pipe).__module__)
    handlers = list(root_logger.handlers)
    with pytest.raises(RuntimeError, match="boom"):
        with trace(tiny_pipe):
            _call(tiny_pipe, callback_on_step_end=explode)
    _no_hooks_left(tiny_pipe.unet, tiny_pipe.vae, tiny_pipe.text_encoder)
    assert root_logger.handlers == handlers
    with trace(tiny_pipe) as run:  # and the pipeline can be traced again
        _call(tiny_pipe)
    assert len(run.steps) == 4


def test_nested_trace_is_refused(tiny_pipe):
    with trace(tiny_pipe):
        with pytest.raises(RuntimeError, match="already being traced"):
            with trace(tiny_pipe):
                pass
    _no_hooks_left(tiny_pipe.unet)


def test_second_call_in_one_trace_is_refused(tiny_pipe):
    with pytest.raises(RuntimeError, match="one trace records one pipeline call"):
        with trace(tiny_pipe):
            _call(tiny_pipe)
            _call(tiny_pipe)
    _no_hooks_left(tiny_pipe.unet, tiny_pipe.text_encoder)


def test_step_records_are_consistent(tiny_pipe):
    stock, traced, run = _stock_and_traced(tiny_pipe, num_images_per_prompt=2)
    g = tiny_pipe.guidance_scale
    for i, step in enumerate(run.steps):
        assert step.index == i
        assert step.latent_in.shape == (2, 4, 8, 8) and step.latent_in.dtype == torch.float32
        assert step.latent_in.device.type == "cpu"
        assert torch.equal(step.noise_guided, step.noise_uncond + g * (step.noise_cond - step.noise_uncond))
        assert step.sigma == pytest.approx((1 - step.alpha_bar) ** 0.5)
        assert step.alpha_bar == pytest.approx(float(tiny_pipe.scheduler.alphas_cumprod[int(step.timestep)]))
    for before, after in zip(run.steps, run.steps[1:]):
        assert before.latent_out is after.latent_in
    # the last latent_out is what went into the VAE
    latents = _call(tiny_pipe, num_images_per_prompt=2, output_type="latent")
    assert torch.allclose(run.steps[-1].latent_out, latents, atol=1e-6)


def test_cfg_off_has_no_unconditional_half(tiny_pipe):
    _, _, run = _stock_and_traced(tiny_pipe, guidance_scale=1.0)
    assert run.guidance_scale is None
    assert run.negative_tokens == [] and run.embeddings.hidden_uncond is None and run.embeddings.token_uncond is None
    for step in run.steps:
        assert step.noise_uncond is None and step.noise_guided is step.noise_cond


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_x0_and_latent_out_replay_ddim(tiny_pipe, prediction_type):
    """x0 and latent_out equal what DDIM's own step returns for the recorded inputs."""
    config = {**tiny_pipe.scheduler.config, "prediction_type": prediction_type}
    tiny_pipe.scheduler = DDIMScheduler.from_config(config)  # clip_sample stays as configured (True)
    _, _, run = _stock_and_traced(tiny_pipe, num_inference_steps=4)
    assert len(run.steps) == 4
    replay = DDIMScheduler.from_config(config)
    replay.set_timesteps(4)
    for step, t in zip(run.steps, replay.timesteps):
        assert step.timestep == float(t)
        out = replay.step(step.noise_guided, t, step.latent_in)
        assert torch.allclose(step.x0, out.pred_original_sample, atol=1e-5)
        if step is not run.steps[-1]:
            assert torch.allclose(step.latent_out, out.prev_sample, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_x0_replay_euler(tiny_pipe, prediction_type):
    """Euler works with σ: latent_in is unscaled (x_ve) and x0 uses ᾱ = 1/(1+σ²) of the step."""
    config = {**tiny_pipe.scheduler.config, "prediction_type": prediction_type}
    tiny_pipe.scheduler = EulerDiscreteScheduler.from_config(config)
    _, _, run = _stock_and_traced(tiny_pipe, num_inference_steps=4)
    replay = EulerDiscreteScheduler.from_config(config)
    replay.set_timesteps(4)
    for step, t in zip(run.steps, replay.timesteps):
        replay.scale_model_input(step.latent_in, t)  # sets Euler's step index
        sigma = float(replay.sigmas[replay.step_index])
        assert step.alpha_bar == pytest.approx(1 / (1 + sigma**2), rel=1e-6)
        out = replay.step(step.noise_guided, t, step.latent_in)
        assert torch.allclose(step.x0, out.pred_original_sample, atol=1e-4, rtol=1e-4)
        if step is not run.steps[-1]:
            assert torch.allclose(step.latent_out, out.prev_sample, atol=1e-4, rtol=1e-4)


def test_x0_exists_for_dpm_solver(tiny_pipe):
    tiny_pipe.scheduler = DPMSolverMultistepScheduler.from_config(tiny_pipe.scheduler.config)
    stock, traced, run = _stock_and_traced(tiny_pipe, num_inference_steps=4)
    assert torch.equal(stock, traced)
    assert len(run.steps) == 4 and all(step.x0 is not None for step in run.steps)
    # DPM++'s own first-order x0: (x_t − σ_t·ε)/α_t with α_t, σ_t from its σ table
    sigma = float(tiny_pipe.scheduler.sigmas[0])
    alpha_t, sigma_t = 1 / (1 + sigma**2) ** 0.5, sigma / (1 + sigma**2) ** 0.5
    first = run.steps[0]
    expected = (first.latent_in - sigma_t * first.noise_guided) / alpha_t
    assert torch.allclose(first.x0, expected, atol=1e-5)


def test_tokens_and_embeddings(tiny_pipe):
    _, _, run = _stock_and_traced(tiny_pipe, negative_prompt="blue", num_images_per_prompt=2)
    assert len(run.tokens) == 2 and len(run.negative_tokens) == 2
    tok = run.tokens[0]
    assert tok.words == ["a</w>", "red</w>", "circle</w>", "on</w>", "the</w>", "left</w>"]
    assert tok.length == 8 and len(tok.ids) == 77 and tok.cut == [] and not tok.filled
    assert run.negative_tokens[0].words == ["blue</w>"]
    ids = torch.tensor([tok.ids])
    expected_token = tiny_pipe.text_encoder.get_input_embeddings()(ids)[0]
    assert run.embeddings.token.shape == (2, 77, 32)
    assert torch.equal(run.embeddings.token[1], expected_token)
    cond, uncond = tiny_pipe.encode_prompt(PROMPT, "cpu", 2, True, negative_prompt="blue")
    assert torch.equal(run.embeddings.hidden, cond) and torch.equal(run.embeddings.hidden_uncond, uncond)


def test_long_prompt_warns_with_the_cut_tokens(tiny_pipe):
    long = " ".join(["red circle"] * 40)  # 80 tokens
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, _, run = _stock_and_traced(tiny_pipe, prompt=long)
    assert run.tokens[0].cut == ["circle</w>", "red</w>", "circle</w>", "red</w>", "circle</w>"]
    assert run.tokens[0].filled
    assert any("cut: circle</w> red</w> circle</w> red</w> circle</w>" in str(w.message) for w in caught)


def test_previews_every_k_steps_and_the_last(tiny_pipe):
    _, _, run = _stock_and_traced(tiny_pipe, num_inference_steps=4)  # 5 PNDM steps, preview_every=2
    assert [p.step for p in run.previews] == [0, 2, 4]
    for preview in run.previews:
        assert preview.images.shape == (1, 3, 64, 64)
        assert 0 <= float(preview.images.min()) and float(preview.images.max()) <= 1
    with trace(tiny_pipe, preview_size=32) as small:
        _call(tiny_pipe)
    assert small.previews[0].images.shape == (1, 3, 32, 32)


def test_default_budget_keeps_everything(tiny_pipe):
    _, _, run = _stock_and_traced(tiny_pipe)
    assert run.reductions == []
    assert 0 < run.nbytes() < DEFAULT_BUDGET
    assert all(s.latent_in is not None for s in run.steps)


def test_tiny_budget_reduces_and_stays_under_it(tiny_pipe):
    budget = 150_000
    with pytest.warns(UserWarning, match="reduced to fit"):
        with trace(tiny_pipe, budget_bytes=budget, preview_every=1) as run:
            _call(tiny_pipe, num_inference_steps=10)
    assert run.reductions, "a tiny budget must force recorded reductions"
    assert run.nbytes() <= budget
    assert len(run.steps) == 11  # every step keeps its scalars
    assert run.steps[-1].x0 is not None  # the last step always keeps its tensors


def test_attention_budget_lowers_resolution_first(tiny_pipe):
    with pytest.warns(UserWarning, match="attention maps at"):
        with trace(tiny_pipe, budget_bytes=4 * 60_000) as run:
            _call(tiny_pipe, num_inference_steps=10, height=64, width=128)
    assert any(r.startswith("attention maps at") for r in run.reductions)
    assert run.attention.resolution[1] < 16
    assert run.nbytes() <= 4 * 60_000


def test_bad_options_are_named(tiny_pipe):
    with pytest.raises(ValueError, match="budget_bytes"):
        trace(tiny_pipe, budget_bytes=0)
    with pytest.raises(ValueError, match="preview_every"):
        trace(tiny_pipe, preview_every=-1)
    with pytest.raises(TypeError, match="unet"):
        trace(object())


# ----------------------------------------------------------------------------- issue 13: fuzzing found these

LONG = " ".join(["a large red cat on the left"] * 20)  # 140 tokens: 65 are cut


def test_cut_tokens_come_from_this_pipelines_own_text(tiny_pipe):
    """Another pipeline's truncation warning (same class, same logger) is not this run's cut."""
    from sdexplain.architectures import build_tiny_pipeline

    other = build_tiny_pipeline(seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with trace(tiny_pipe) as run:
            other.encode_prompt(LONG, "cpu", 1, False)  # logs diffusers' "was truncated" warning
            _call(tiny_pipe)
    assert run.tokens[0].cut == [] and not run.tokens[0].filled
    assert not any("cut:" in str(w.message) for w in caught)


def test_cut_tokens_with_a_pad_token_and_at_any_log_level(tiny_pipe):
    """SD-2-style padding with "!" gives no false cut for the short row; a quiet log level hides no cut."""
    from diffusers.utils import logging as diffusers_logging

    tiny_pipe.tokenizer.pad_token = "!"
    expected = tiny_pipe.tokenizer.tokenize(LONG)[75:]  # everything after the 75 usable slots
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, traced, run = _stock_and_traced(tiny_pipe, prompt=[PROMPT, LONG], negative_prompt=["", LONG])
    finally:
        diffusers_logging.set_verbosity(level)
    assert len(expected) == 65
    assert run.tokens[0].cut == [] and run.tokens[0].words[-1] == "left</w>"
    assert run.tokens[1].cut == expected and run.tokens[1].filled
    assert run.negative_tokens[0].cut == [] and run.negative_tokens[1].cut == expected


def test_prompt_embeds_with_a_negative_prompt_text_is_not_taken_for_the_prompt(tiny_pipe):
    embeds, _ = tiny_pipe.encode_prompt(PROMPT, "cpu", 1, False)  # (1, 77, 32)
    stock, traced, run = _stock_and_traced(tiny_pipe, prompt=None, prompt_embeds=embeds, negative_prompt="blue")
    assert torch.equal(stock, traced)
    assert run.tokens == [] and run.embeddings.token is None
    assert [t.words for t in run.negative_tokens] == [["blue</w>"]]
    assert run.attention.tokens[0][:3] == ["#0", "#1", "#2"]  # positions, not the negative prompt's words

    _, negative_embeds = tiny_pipe.encode_prompt("", "cpu", 1, True, negative_prompt="blue")
    _, _, run = _stock_and_traced(tiny_pipe, negative_prompt_embeds=negative_embeds)
    assert run.tokens[0].words == ["a</w>", "red</w>", "circle</w>", "on</w>", "the</w>", "left</w>"]
    assert run.negative_tokens == [] and run.embeddings.token_uncond is None
    assert run.attention.tokens[0][1] == "a</w>"


@pytest.mark.parametrize("guidance", [float("inf"), float("nan")])
def test_non_finite_guidance_is_refused_and_everything_is_put_back(tiny_pipe, guidance):
    tokenizer, config = tiny_pipe.tokenizer, dict(tiny_pipe.config)
    with pytest.raises(ValueError, match=f"guidance_scale must be a finite number.*got {guidance}"):
        with trace(tiny_pipe):
            _call(tiny_pipe, guidance_scale=guidance)
    _no_hooks_left(tiny_pipe.unet, tiny_pipe.vae, tiny_pipe.text_encoder)
    assert tiny_pipe.tokenizer is tokenizer and dict(tiny_pipe.config) == config
    with trace(tiny_pipe) as run:  # and the pipeline can be traced again
        _call(tiny_pipe)
    assert len(run.steps) == 4 and run.tokens[0].words[0] == "a</w>"
    assert tiny_pipe.tokenizer is tokenizer


def test_fused_projections_record_the_same_attention(tiny_pipe):
    _, _, plain = _stock_and_traced(tiny_pipe)
    tiny_pipe.fuse_qkv_projections()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "recorded no attention map"
        _, _, fused = _stock_and_traced(tiny_pipe)
    assert all(calls > 0 for calls in fused.attention.layer_calls.values())
    assert torch.allclose(fused.attention.per_step[0], plain.attention.per_step[0], atol=1e-5)


class _ProjectionsByWeight:
    """An attention processor that applies the projections through their weights (F.linear) and so
    never calls the to_q/to_k modules the trace observes — as some third-party processors do."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        import torch.nn.functional as F

        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        b = hidden_states.shape[0]
        q, k, v = (F.linear(x, m.weight, m.bias) for x, m in ((hidden_states, attn.to_q), (context, attn.to_k), (context, attn.to_v)))
        q, k, v = (t.view(b, -1, attn.heads, t.shape[-1] // attn.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, q.shape[1] * q.shape[-1])
        return attn.to_out[1](attn.to_out[0](out))


def test_a_cross_attention_layer_that_records_nothing_is_a_loud_warning(tiny_pipe):
    from sdexplain.attention import cross_attention_layers

    layers = cross_attention_layers(tiny_pipe.unet)
    name = next(iter(layers))
    layers[name].set_processor(_ProjectionsByWeight())
    with pytest.warns(RuntimeWarning, match=f"1 of {len(layers)} cross-attention layers recorded no attention map \\({name}\\)"):
        _, _, run = _stock_and_traced(tiny_pipe)
    assert run.attention.layer_calls[name] == 0 and run.attention.per_step


def _replay_x0(scheduler, step, t):
    """The scheduler's own x0 for a recorded evaluation (its step advances its state as in the run)."""
    scheduler.scale_model_input(step.latent_in, t)  # sets the step index on the first call
    if isinstance(scheduler, DPMSolverMultistepScheduler):  # its step returns no x0 but keeps it (DPM-Solver++ works on x0)
        scheduler.step(step.noise_guided, t, step.latent_in)
        return scheduler.model_outputs[-1]
    if isinstance(scheduler, PNDMScheduler):  # PLMS returns no x0: DDIM's at the same ᾱ_t is the outside reference
        ddim = DDIMScheduler.from_config({**scheduler.config, "clip_sample": False})
        ddim.set_timesteps(scheduler.num_inference_steps)
        x0 = ddim.step(step.noise_guided, t, step.latent_in).pred_original_sample
        scheduler.step(step.noise_guided, t, step.latent_in)
        return x0
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters  # the ancestral ones add noise
    extra = {"generator": torch.Generator().manual_seed(0)} if takes_generator else {}
    return scheduler.step(step.noise_guided, t, step.latent_in, **extra).pred_original_sample


@pytest.mark.parametrize("name", ["ddim", "euler", "euler_a", "dpm++2m", "pndm", "ddpm", "lms", "heun", "kdpm2", "kdpm2_a"])
def test_x0_equals_the_schedulers_own_for_every_scheduler(name):
    """The README promises x0 for every scheduler: compared with each one's pred_original_sample."""
    from diffusers import KDPM2AncestralDiscreteScheduler, KDPM2DiscreteScheduler

    from sdexplain.loading import SCHEDULERS
    from sdexplain.loading import load_pipeline

    if name == "lms":
        pytest.importorskip("scipy", reason="LMS needs scipy, a declared dependency: reinstall the package (make setup)")
    classes = {**SCHEDULERS, "kdpm2": KDPM2DiscreteScheduler, "kdpm2_a": KDPM2AncestralDiscreteScheduler}
    pipe = load_pipeline("toy", device="cpu")
    pipe.scheduler = classes[name].from_config(pipe.scheduler.config)
    _, _, run = _stock_and_traced(pipe, prompt="a large red cat on the left", height=None, width=None, num_inference_steps=3)
    replay = classes[name].from_config(pipe.scheduler.config)
    replay.set_timesteps(3)
    assert [s.timestep for s in run.steps] == [float(t) for t in replay.timesteps]
    for step, t in zip(run.steps, replay.timesteps):
        expected = _replay_x0(replay, step, t)
        assert torch.allclose(step.x0, expected, atol=1e-4, rtol=1e-4), (name, step.index, float((step.x0 - expected).abs().max()))

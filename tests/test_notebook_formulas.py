"""Every formula and closed-form number the notebooks state, checked against the libraries' own computation.

Issue 25, item 2, second reviewer. One test per formula family. Each one compares what a notebook says
(its markdown formula, or a number in its saved output, read from the .ipynb) with what diffusers, peft,
torch or the published configs compute — never with the notebook's own helper doing the same arithmetic.
The β schedule is rebuilt from its definition (scaled_linear: β = linspace(√β₀, √β₁, T)²) so that a
changed scheduler config is caught too. Every test says in a comment which input would make it fail.
"""

import copy
import json
import math
import re
from pathlib import Path

import pytest
import torch

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


# ----------------------------------------------------------------------------- helpers


def notebook_outputs(prefix: str) -> str:
    """The printed text (stdout and text/markdown outputs) of the English notebook `prefix`_*.ipynb."""
    (path,) = NOTEBOOKS.glob(f"{prefix}_*.ipynb")
    parts = []
    for cell in json.loads(path.read_text())["cells"]:
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/markdown") or ""
            parts.append("".join(text))
    return "\n".join(parts)


def notebook_markdown(prefix: str) -> str:
    (path,) = NOTEBOOKS.glob(f"{prefix}_*.ipynb")
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown")


def shown(printed: str, value: float) -> bool:
    """Whether `printed` (a number as a notebook printed it) is `value` rounded to the digits shown."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return abs(float(printed) - value) <= 0.5 * 10**-decimals + 1e-7


def sd_alpha_bar() -> torch.Tensor:
    """ᾱ_t of SD v1's schedule from its definition (scheduler_config.json: scaled_linear, 0.00085…0.012, 1000)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


@pytest.fixture(scope="module")
def toy():
    import sdexplain

    pipe = sdexplain.load_pipeline("toy")
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------- 01, 02, 10: forward diffusion


def test_forward_closed_form_is_the_schedulers_add_noise(toy):
    """01/02/08/10: x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε, and the factors the notebooks print.

    Fails if: the toy's scheduler stops being SD's schedule, the formula printed uses 1/√ᾱ or ᾱ instead
    of √ᾱ, or a printed factor is off by more than its last digit."""
    from diffusers import DDPMScheduler, PNDMScheduler

    alpha_bar = sd_alpha_bar()
    assert torch.allclose(toy.scheduler.alphas_cumprod.double(), alpha_bar, atol=1e-6)  # the toy uses SD's schedule (01, 08)
    generator = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 1, 4, 8, 8, generator=generator)
    for cls in (DDPMScheduler, PNDMScheduler):  # DDPM: training; PNDM: img2img's add_noise on the toy's own sampler
        scheduler = cls.from_config(toy.scheduler.config)
        for t in (0, 1, 250, 500, 750, 951, 999):
            closed = alpha_bar[t].sqrt() * x0 + (1 - alpha_bar[t]).sqrt() * eps
            library = scheduler.add_noise(x0, eps, torch.tensor([t]))
            assert torch.allclose(library.double(), closed.double(), atol=1e-5), (cls.__name__, t)
    # 01's printed table: "t =  250:  signal √ᾱ_t = 0.821   noise √(1−ᾱ_t) = 0.571"
    rows = re.findall(r"t =\s*(\d+):\s+signal √ᾱ_t = ([\d.]+)\s+noise √\(1−ᾱ_t\) = ([\d.]+)", notebook_outputs("01"))
    assert len(rows) == 5, rows
    for t, signal, noise in rows:
        assert signal == f"{alpha_bar[int(t)].sqrt():.3f}" and noise == f"{(1 - alpha_bar[int(t)]).sqrt():.3f}", (t, signal, noise)
    assert "√ᾱ = 0.068" in notebook_markdown("01") and f"{alpha_bar[999].sqrt():.3f}" == "0.068"  # 01's prose: never pure noise
    # 02: "t = 500: x_t keeps √ᾱ_t = 0.53 of the image and holds √(1−ᾱ_t) = 0.85 of noise"
    (signal, noise), = re.findall(r"t = 500: x_t keeps √ᾱ_t = ([\d.]+) of the image and holds √\(1−ᾱ_t\) = ([\d.]+)", notebook_outputs("02"))
    assert (signal, noise) == (f"{alpha_bar[500].sqrt():.2f}", f"{(1 - alpha_bar[500]).sqrt():.2f}")


# ----------------------------------------------------------------------------- 03, 13: x̂0, error gain, v


def test_x0_from_eps_and_v_is_ddims_pred_original_sample():
    """03/07/13: x̂0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ (ε-models) and x̂0 = √ᾱ·x_t − √(1−ᾱ)·v̂ (v-models), as diffusers'
    DDIMScheduler.step computes `pred_original_sample`; v = √ᾱ·ε − √(1−ᾱ)·x0 as its get_velocity.

    Fails if: a sign or a square root in any of the three formulas is wrong (e.g. v = √(1−ᾱ)·ε − √ᾱ·x0)."""
    from diffusers import DDIMScheduler

    from sdexplain.architectures import ARCHITECTURES

    alpha_bar = sd_alpha_bar()
    generator = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 1, 4, 8, 8, generator=generator)
    config = dict(ARCHITECTURES["sd15"]["scheduler"])
    for prediction_type in ("epsilon", "v_prediction"):
        scheduler = DDIMScheduler.from_config({**config, "_class_name": "DDIMScheduler"}, prediction_type=prediction_type, steps_offset=0)
        scheduler.set_timesteps(1000)  # every training timestep is a sampling step: x̂0 at any t
        for t in (1, 250, 500, 750, 999):
            a = alpha_bar[t]
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
            v = a.sqrt() * eps - (1 - a).sqrt() * x0  # notebook 13's v
            assert torch.allclose(scheduler.get_velocity(x0, eps, torch.tensor([t])).double(), v.double(), atol=1e-5)
            output = eps if prediction_type == "epsilon" else v
            x0_hat = scheduler.step(output.float(), t, x_t.float()).pred_original_sample
            formula = (x_t - (1 - a).sqrt() * output) / a.sqrt() if prediction_type == "epsilon" else a.sqrt() * x_t - (1 - a).sqrt() * output
            assert torch.allclose(x0_hat.double(), formula.double(), atol=1e-4 * max(1.0, float((1 - a).sqrt() / a.sqrt())))
            assert torch.allclose(x0_hat.double(), x0.double(), atol=1e-3 * max(1.0, float((1 - a).sqrt() / a.sqrt())))  # and it recovers x0


def test_error_gain_to_x0_matches_ddim_and_notebook_13():
    """13: an error δ in ε̂ reaches x̂0 multiplied by √(1−ᾱ)/√ᾱ; one in v̂ by √(1−ᾱ) (printed at five t).

    Measured here with diffusers' DDIM step (pred_original_sample with ε̂ + δ minus without), not with
    sdexplain.diffusion. Fails if: the notebook printed 1/√ᾱ (the error of issue 25: 1.00 at t = 1, not 0.04)."""
    from diffusers import DDIMScheduler

    from sdexplain.architectures import ARCHITECTURES

    config = {**ARCHITECTURES["sd15"]["scheduler"], "_class_name": "DDIMScheduler"}
    generator = torch.Generator().manual_seed(2)
    x_t, output, delta = torch.randn(3, 1, 4, 8, 8, generator=generator)
    pattern = (r"t =\s*(\d+): ᾱ = ([\d.]+) .*?ε-model √\(1−ᾱ\)/√ᾱ =\s*([\d.]+) \(measured\s*([\d.]+)\),"
               r"\s+v-model √\(1−ᾱ\) = ([\d.]+) \(measured ([\d.]+)\)")
    rows = re.findall(pattern, notebook_outputs("13"))
    assert [int(r[0]) for r in rows] == [1, 250, 500, 750, 999], rows
    gains = {}
    for prediction_type in ("epsilon", "v_prediction"):
        scheduler = DDIMScheduler.from_config(config, prediction_type=prediction_type, steps_offset=0)
        scheduler.set_timesteps(1000)
        for t, *_ in rows:
            t = int(t)
            a = scheduler.step(output, t, x_t).pred_original_sample
            b = scheduler.step(output + delta, t, x_t).pred_original_sample
            gains[prediction_type, t] = float((b - a).norm() / delta.norm())
    for t, alpha_bar, eps_formula, eps_measured, v_formula, v_measured in rows:
        t = int(t)
        assert alpha_bar == f"{float(sd_alpha_bar()[t]):.4f}", (t, alpha_bar)
        assert eps_formula == eps_measured == f"{gains['epsilon', t]:.2f}", (t, eps_formula, gains["epsilon", t])
        assert v_formula == v_measured == f"{gains['v_prediction', t]:.2f}", (t, v_formula, gains["v_prediction", t])
    assert max(gains[k] for k in gains if k[0] == "v_prediction") <= 1 + 1e-6  # "never above 1"


# ----------------------------------------------------------------------------- 08: schedules, sigmas, call counts


def test_karras_sigma_is_the_euler_schedulers_sigma(toy):
    """08: k-diffusion's σ = √((1−ᾱ_t)/ᾱ_t) at each timestep is diffusers' EulerDiscreteScheduler.sigmas; the
    numbers 08 prints (first σ 9.54 at t = 925 for 15 steps, largest 14.61, DPM++ 2M 9.86 vs Karras 14.61, steps
    below σ = 1: 5 vs 7) are the schedulers' own.

    Fails if: σ were taken as √(1−ᾱ) (the VP level: 0.995, not 9.54), or the toy's spacing/offset changed."""
    from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

    alpha_bar = sd_alpha_bar()
    euler = EulerDiscreteScheduler.from_config(toy.scheduler.config)
    euler.set_timesteps(15)
    formula = torch.tensor([((1 - alpha_bar[int(t)]) / alpha_bar[int(t)]).sqrt() for t in euler.timesteps])
    assert torch.allclose(euler.sigmas[:-1].double(), formula, rtol=1e-4)
    assert float(euler.sigmas[-1]) == 0.0
    assert abs(float(euler.init_noise_sigma) - math.sqrt(float(formula[0]) ** 2 + 1)) < 1e-3  # Euler's latent: x_t/√ᾱ
    text = notebook_outputs("08")
    (first_vp, first_k), = re.findall(r"first level: σ_t = ([\d.]+), k-diffusion σ = ([\d.]+)", text)
    assert int(euler.timesteps[0]) == 925 and first_k == f"{float(euler.sigmas[0]):.2f}" and first_vp == f"{(1 - alpha_bar[925]).sqrt():.3f}"
    (largest,), = [re.findall(r"largest σ = √\(\(1−ᾱ\)/ᾱ\) at t = 999: ([\d.]+)", text)]
    assert largest == f"{((1 - alpha_bar[999]) / alpha_bar[999]).sqrt():.2f}"
    plain = DPMSolverMultistepScheduler.from_config(toy.scheduler.config, use_karras_sigmas=False, algorithm_type="dpmsolver++")
    karras = DPMSolverMultistepScheduler.from_config(toy.scheduler.config, use_karras_sigmas=True, algorithm_type="dpmsolver++")
    for s in (plain, karras):
        s.set_timesteps(15)
    (a, b, below), = re.findall(r"first σ: DPM\+\+ 2M ([\d.]+), DPM\+\+ 2M Karras ([\d.]+); steps below σ = 1: (\{.*\})", text)
    assert (a, b) == (f"{float(plain.sigmas[0]):.2f}", f"{float(karras.sigmas[0]):.2f}") and b == largest  # Karras starts at the largest σ
    assert below == str({"DPM++ 2M": int((plain.sigmas[:-1] < 1).sum()), "DPM++ 2M Karras": int((karras.sigmas[:-1] < 1).sum())})


def test_sampler_timesteps_and_unet_call_counts(toy):
    """00/03/07/08: PNDM (PLMS) spends one extra U-Net call (20 steps → 21, 15 → 16; the second timestep
    twice), DDIM/Euler/DPM++ one per step, Heun two per step except the last (15 steps → 29); the printed
    timestep lists are the schedulers' own.

    Fails if: a notebook printed a count or a timestep list that the scheduler does not produce."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler, PNDMScheduler

    def timesteps(cls, steps):
        scheduler = cls.from_config(toy.scheduler.config)
        scheduler.set_timesteps(steps)
        return [int(t) for t in scheduler.timesteps]  # the pipeline calls the U-Net once per entry

    pndm20, pndm15 = timesteps(PNDMScheduler, 20), timesteps(PNDMScheduler, 15)
    assert len(pndm20) == 21 and pndm20[:4] == [951, 901, 901, 851]
    (printed,), = [re.findall(r"first timesteps: \[([\d, ]+)\]", notebook_outputs("07"))]
    assert [int(t) for t in printed.split(",")] == pndm20[:4]
    (t07,), = [re.findall(r"first timestep t = (\d+);", notebook_outputs("07"))]
    assert int(t07) == pndm20[0]
    text08 = notebook_outputs("08")
    (row,), = [re.findall(r"timestep t:((?:\s+\d+)+)", text08)]
    assert [int(t) for t in row.split()] == pndm15 and "PNDMScheduler, 15 steps → 16 U-Net calls" in text08
    assert set((-torch.tensor(list(dict.fromkeys(pndm15))[:-1]).diff()).tolist()) == {66}  # "gaps between timesteps: [66]"
    counts = dict(re.findall(r"(\w+Scheduler)\s+(\d+) U-Net calls", text08))
    for cls, expected in ((DDIMScheduler, 15), (EulerDiscreteScheduler, 15), (PNDMScheduler, 16), (HeunDiscreteScheduler, 2 * 15 - 1)):
        assert len(timesteps(cls, 15)) == expected == int(counts[cls.__name__]), cls.__name__


# ----------------------------------------------------------------------------- 07, 09, 14: classifier-free guidance


def _unet_calls(pipe):
    """Record every U-Net call of a pipeline run: (input latents, timestep, text, output)."""
    calls = []

    def hook(module, args, kwargs, output):
        calls.append((args[0].detach().clone(), args[1], kwargs["encoder_hidden_states"].detach().clone(), output[0].detach().clone()))

    return calls, pipe.unet.register_forward_hook(hook, with_kwargs=True)


def test_cfg_formula_and_two_evaluations_per_step_in_diffusers(toy):
    """07/09/14: ε̂ = ε_u + s·(ε_c − ε_u), the uncond half first, both in one batch of 2 per step (2 U-Net
    evaluations per image per step); a negative prompt takes the empty prompt's place (09).

    Replays diffusers' own StableDiffusionPipeline run from its recorded U-Net outputs with the formula and
    the scheduler's step. Fails if: the formula had ε_c and ε_u swapped, or s applied to ε_c alone."""
    from diffusers import DDIMScheduler

    pipe = copy.copy(toy)
    pipe.scheduler = DDIMScheduler.from_config(toy.scheduler.config)
    s, steps = 3.0, 4
    calls, handle = _unet_calls(pipe)
    try:
        latents = pipe("a red cat on the left", negative_prompt="blue", num_inference_steps=steps, guidance_scale=s,
                       generator=torch.Generator().manual_seed(0), output_type="latent").images
    finally:
        handle.remove()
    assert len(calls) == steps and all(c[0].shape[0] == 2 for c in calls)  # one call per step, batch 2: uncond + cond
    negative, _ = pipe.encode_prompt("blue", "cpu", 1, False)
    prompt, _ = pipe.encode_prompt("a red cat on the left", "cpu", 1, False)
    assert torch.equal(calls[0][2][0], negative[0]) and torch.equal(calls[0][2][1], prompt[0])  # negative in the uncond half
    replay = DDIMScheduler.from_config(toy.scheduler.config)
    replay.set_timesteps(steps)
    latent = calls[0][0][:1]
    for (x, t, _, out), expected_t in zip(calls, replay.timesteps):
        assert torch.equal(x[0], x[1]) and int(t) == int(expected_t)  # the same latent twice
        eps_u, eps_c = out.chunk(2)
        latent = replay.step(eps_u + s * (eps_c - eps_u), t, latent).prev_sample
    assert torch.allclose(latent, latents, atol=1e-5), float((latent - latents).abs().max())


def test_cfg_0_ignores_the_prompt_in_the_sweep_and_generate_refuses_it(toy):
    """14 ("CFG scale: 0 ignores the prompt"; ε_u + s·(ε_c − ε_u) at s = 0 is ε_u).

    diffusers guides only for guidance_scale > 1 (below it runs the conditional model alone), so
    `sdexplain.generate` refuses cfg < 1 and the panel's slider starts at 1, as WebUI's; `guidance.cfg_sweep`
    applies the formula itself at every scale. Its scale-0 image for two different prompts, same seed, must be
    the same picture: it fails if the sweep ran the conditional model alone at 0 (the two prompts differ)."""
    import numpy as np

    import sdexplain
    from sdexplain import guidance

    with pytest.raises(ValueError, match=r"cfg must be >= 1"):
        sdexplain.generate(toy, "a red cat on the left", steps=4, cfg=0.0, seed=0)
    a = guidance.cfg_sweep(toy, "a red cat on the left", scales=(0.0, 7.5), steps=4, seed=0, keep_steps=False, progress=False)
    b = guidance.cfg_sweep(toy, "a purple triangle at the top", scales=(0.0, 7.5), steps=4, seed=0, keep_steps=False, progress=False)
    pixels = [[np.asarray(image).astype(int) for image in sweep.images] for sweep in (a, b)]
    assert np.abs(pixels[0][0] - pixels[1][0]).max() <= 2  # scale 0: the prompt has no say
    assert np.abs(pixels[0][1] - pixels[1][1]).max() > 50  # scale 7.5: it has (the check can tell prompts apart)


# ----------------------------------------------------------------------------- 09: classifier guidance


class _LinearClassifier(torch.nn.Module):
    """logits = flatten(x)·W: ∇ log p(y | x) = W_y − Σ_k p_k·W_k in closed form (no autograd needed)."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight  # (features, classes)

    def forward(self, x, t):
        return {"shape": x.flatten(1) @ self.weight}

    def grad_log_prob(self, x, y):
        p = (x.flatten(1) @ self.weight).softmax(-1)  # (n, classes)
        return (self.weight[:, y][None] - p @ self.weight.T).reshape(x.shape)


def test_classifier_guidance_sign_and_scale(toy):
    """09: ε̂ = ε(x_t) − s·√(1−ᾱ_t)·∇ log p(y | x_t) (Dhariwal & Nichol 2021, Algorithm 2), as
    guidance.classifier_guided_sample runs it; a larger s moves x_t up the gradient.

    One DDIM step at t = 999 with a linear classifier whose gradient is known in closed form. Fails if the
    sign were + or the factor √(1−ᾱ) were missing or 1/√(1−ᾱ)."""
    from diffusers import DDIMScheduler

    from sdexplain import guidance, images

    pipe = copy.copy(toy)
    pipe.scheduler = DDIMScheduler.from_config(toy.scheduler.config, timestep_spacing="trailing")  # one step, at t = 999
    features = pipe.unet.config.in_channels * pipe.unet.config.sample_size**2
    classifier = _LinearClassifier(torch.randn(features, 5, generator=torch.Generator().manual_seed(3)) * 0.3)
    s, target = 4.0, 2
    pictures, _ = guidance.classifier_guided_sample(pipe, classifier, target, s, n=1, steps=1, seed=0)
    unguided, _ = guidance.classifier_guided_sample(pipe, classifier, target, 0.0, n=1, steps=1, seed=0)
    # the same step by hand: starting noise as the pipeline draws it, ε from the U-Net, the closed-form gradient
    scheduler = DDIMScheduler.from_config(toy.scheduler.config, timestep_spacing="trailing")
    scheduler.set_timesteps(1)
    (t,) = scheduler.timesteps
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    context, _ = pipe.encode_prompt("", "cpu", 1, False)
    x = pipe.prepare_latents(1, 4, size, size, context.dtype, "cpu", torch.Generator().manual_seed(0))
    with torch.no_grad():
        eps = pipe.unet(x, t, encoder_hidden_states=context).sample
    grad = classifier.grad_log_prob(x, target)
    a = scheduler.alphas_cumprod[int(t)]
    guided_eps = eps - s * (1 - a).sqrt() * grad
    by_hand = scheduler.step(guided_eps, t, x).prev_sample
    plain = scheduler.step(eps, t, x).prev_sample
    assert float(((by_hand - plain) * grad).sum()) > 0  # the guided latent moved up the gradient of log p(y | x)
    expected = images.vae_decode(pipe.vae, by_hand)
    assert (pictures - expected).abs().max() < 1e-4, float((pictures - expected).abs().max())
    assert (pictures - unguided).abs().max() > 1e-2  # the guidance did change the picture: the comparison can fail


# ----------------------------------------------------------------------------- 10: image-to-image start step


def test_img2img_start_step_is_diffusers_get_timesteps(toy):
    """10: with N steps and strength s, diffusers runs the last ⌊N·s⌋ steps, from t_start = their first
    timestep (printed: 0.25 → 251, 0.5 → 501, 0.75 → 751, 1.0 → 951; 0.01 with 100 steps → t = 11), and
    ᾱ at 951 is 0.00815 (√ᾱ 0.0903), not 0.

    From StableDiffusionImg2ImgPipeline.get_timesteps itself. Fails if the notebook said ⌈N·s⌉ or
    N·(1−s), or printed another start."""
    from diffusers import StableDiffusionImg2ImgPipeline

    img2img = StableDiffusionImg2ImgPipeline(**toy.components)
    text = notebook_outputs("10")
    rows = re.findall(r"strength\s+([\d.]+): runs\s+(\d+) of (\d+) steps, starts at t = (\d+)", text)
    assert len(rows) == 4, rows
    for strength, runs, steps, start in rows + [("0.01", "1", "100", re.findall(r"strength 0.01 \(100 steps, starts at t = (\d+)\)", text)[0])]:
        img2img.scheduler.set_timesteps(int(steps))
        timesteps, denoising_steps = img2img.get_timesteps(int(steps), float(strength), "cpu")
        assert denoising_steps == int(runs) == math.floor(int(steps) * float(strength)), (strength, denoising_steps)
        assert int(timesteps[0]) == int(start), (strength, timesteps[:3])
    (t1, alpha, root), = re.findall(r"first timestep t1 = (\d+), ᾱ_t1 = ([\d.]+), √ᾱ_t1 = ([\d.]+)", text)
    assert shown(alpha, float(sd_alpha_bar()[int(t1)])) and shown(root, float(sd_alpha_bar()[int(t1)].sqrt())), (alpha, root)


# ----------------------------------------------------------------------------- 04: VAE, latent sizes


def test_vae_latent_sizes_scaling_and_48x(toy):
    """04/07: the latent is the VAE posterior's mean times the config's scaling factor (0.18215 for SD 1.x/2.x,
    0.13025 for SDXL), 8× smaller per side with 4 channels: 3·8²/4 = 48× fewer numbers; SD 1.5 at
    512×512 → 4×64×64, 768×512 → 4×96×64, 1024² → 4×128×128 (04's printout).

    From diffusers' AutoencoderKL on the toy and on SD 1.5's published config (meta device). Fails if the
    printed latent shapes were (w, h) swapped or the compression counted without the channels."""
    from diffusers import AutoencoderKL

    from sdexplain import images
    from sdexplain.architectures import ARCHITECTURES, XL_ARCHITECTURES

    picture = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        mean = toy.vae.encode(picture).latent_dist.mean
    assert mean.shape == (1, 4, 8, 8) and picture.numel() / mean.numel() == 48
    assert torch.allclose(images.vae_encode(toy.vae, picture), mean * toy.vae.config.scaling_factor, atol=1e-5)
    assert ARCHITECTURES["sd15"]["vae"]["scaling_factor"] == ARCHITECTURES["sd21"]["vae"]["scaling_factor"] == 0.18215
    assert XL_ARCHITECTURES["sdxl"]["vae"]["scaling_factor"] == 0.13025
    with torch.device("meta"):
        sd_vae = AutoencoderKL(**ARCHITECTURES["sd15"]["vae"])
    for h, w, shape in re.findall(r"SD 1.5 at (\d+)×(\d+): latent (\d+×\d+×\d+)", notebook_outputs("04")):
        with torch.device("meta"):
            latent = sd_vae.encode(torch.empty(1, 3, int(h), int(w), device="meta")).latent_dist.mean
        assert "×".join(map(str, latent.shape[1:])) == shape, (h, w, shape, latent.shape)
    assert "512 × 512 × 3 = 786,432" in notebook_outputs("04") and 512 * 512 * 3 == 786_432


# ----------------------------------------------------------------------------- 06: attention


def test_cross_attention_is_softmax_qk_over_sqrt_d(toy):
    """06: each pixel's weights over the 77 token slots are softmax(Q·Kᵀ/√d), d = one head's width, and the
    layer's output is those weights times V (then to_out).

    Recomputed by hand from the projections of a real toy cross-attention layer and compared with the
    output diffusers' processor produced. Fails without the 1/√d (checked: that version does not match)."""
    attn = toy.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    seen = {}

    def hook(module, args, kwargs, output):
        seen["x"], seen["context"], seen["out"] = args[0], kwargs["encoder_hidden_states"], output

    handle = attn.register_forward_hook(hook, with_kwargs=True)
    try:
        context, _ = toy.encode_prompt("a red cat on the left", "cpu", 1, False)
        with torch.no_grad():
            toy.unet(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5)), 500, encoder_hidden_states=context)
    finally:
        handle.remove()
    x, ctx = seen["x"], seen["context"]  # (1, pixels, C), (1, 77, D)
    heads = attn.heads
    with torch.no_grad():
        q, k, v = attn.to_q(x), attn.to_k(ctx), attn.to_v(ctx)
        d = q.shape[-1] // heads

        def split(z):
            return z.reshape(z.shape[0], z.shape[1], heads, d).transpose(1, 2)  # (1, heads, n, d)

        def output(scale):
            weights = (split(q) @ split(k).transpose(-1, -2) * scale).softmax(-1)  # (1, heads, pixels, 77)
            mixed = (weights @ split(v)).transpose(1, 2).reshape(x.shape[0], x.shape[1], heads * d)
            return attn.to_out[1](attn.to_out[0](mixed)), weights

        by_hand, weights = output(1 / math.sqrt(d))
        without_sqrt_d, _ = output(1.0)
    assert ctx.shape[1] == 77 and torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5)
    assert torch.allclose(by_hand, seen["out"], atol=1e-5), float((by_hand - seen["out"]).abs().max())
    assert not torch.allclose(without_sqrt_d, seen["out"], atol=1e-3)  # the check can tell the 1/√d apart


# ----------------------------------------------------------------------------- 16: LoRA and textual inversion


def test_lora_update_and_parameter_counts(toy):
    """16: a LoRA adds (alpha/r)·w·B·A·x beside the frozen W·x (A: r × in, B: out × r); the notebook's B·A
    holds because its lora_alpha = r. Parameter counts r·(in + out) per adapted projection: 35,840 on both
    kinds of attention, 17,408 on cross-attention, 18,432 on self-attention (16's printout), counted here
    from the U-Net's Linear layers, not from peft.

    Fails if: peft scaled by something else than alpha/r·w, or 16's counts were wrong."""
    from peft import LoraConfig

    from sdexplain import adapters

    def expected_count(targets):
        pattern = re.compile(adapters.TARGETS[targets])
        return sum(4 * (m.in_features + m.out_features) for name, m in toy.unet.named_modules()
                   if isinstance(m, torch.nn.Linear) and pattern.fullmatch(name))

    counts = {targets: expected_count(targets) for targets in ("both", "cross", "self")}
    assert counts == {"both": 35_840, "cross": 17_408, "self": 18_432}, counts  # 16's printed numbers
    unet = copy.deepcopy(toy.unet)
    config = adapters.lora_config(rank=4, targets="both")
    assert config.lora_alpha == config.r  # so that 16's "W x + B A x" holds at weight 1
    unet.add_adapter(config)
    assert sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n) == counts["both"]
    # the update itself, with alpha ≠ r and a weight w, against B·A computed by hand
    unet2 = copy.deepcopy(toy.unet)
    unet2.add_adapter(LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian", target_modules=adapters.TARGETS["cross"]), adapter_name="a")
    layer = unet2.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_q
    torch.nn.init.normal_(layer.lora_B["a"].weight, std=0.1)  # peft starts B at 0
    unet2.set_adapters(["a"], weights=[0.5])
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        delta = layer(x) - layer.base_layer(x)
        by_hand = 0.5 * (8 / 4) * x @ (layer.lora_B["a"].weight @ layer.lora_A["a"].weight).T
    assert torch.allclose(delta, by_hand, atol=1e-5), float((delta - by_hand).abs().max())
    # fusing (16: "adds w·B A into the frozen weights"): peft's merge, which diffusers' fuse_lora calls
    before = layer.base_layer.weight.detach().clone()
    layer.merge()
    fused_delta = layer.base_layer.weight.detach() - before
    assert torch.allclose(fused_delta, 0.5 * (8 / 4) * layer.lora_B["a"].weight @ layer.lora_A["a"].weight, atol=1e-6)


def test_textual_inversion_vector_width_and_file(tmp_path):
    """05/16: SD 1.x's token table has 49,408 rows of 768 numbers (SD 2.x: 1024), and a textual-inversion file
    holds one vector of that width: 768 float32 numbers, about 3 kB.

    From transformers' CLIPTextModel built from the published configs (meta device). Fails if a width is wrong."""
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdexplain import adapters
    from sdexplain.architectures import ARCHITECTURES

    for name, width in (("sd15", 768), ("sd21", 1024)):
        with torch.device("meta"):
            table = CLIPTextModel(CLIPTextConfig(**ARCHITECTURES[name]["text_encoder"])).get_input_embeddings().weight
        assert tuple(table.shape) == (49_408, width), (name, table.shape)
    path = adapters.save_embedding(torch.zeros(768), tmp_path / "sd15.safetensors")
    (tensor,) = load_file(path).values()
    assert tensor.numel() == 768 and 3_000 < path.stat().st_size < 3_300  # "768 numbers, about 3 kB"


# ----------------------------------------------------------------------------- 02, 13: parameter counts and memory


@pytest.mark.slow  # builds SD 1.5's U-Net on the meta device: a few seconds
def test_sd15_unet_parameters_and_training_memory():
    """02/13: SD 1.5's U-Net has 859,520,964 parameters; weights + gradients + Adam's two moments in float32 =
    16 bytes each = 13.8 GB (02's printout, "≈ 14 GB" in its prose).

    Counted with diffusers' UNet2DConditionModel from the published config. Fails if 02 counted 3 × 4 bytes."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from sdexplain.architectures import ARCHITECTURES

    with torch.device("meta"):
        count = sum(p.numel() for p in UNet2DConditionModel(**ARCHITECTURES["sd15"]["unet"]).parameters())
    assert count == 859_520_964
    (printed, gb), = re.findall(r"SD 1.5's U-Net: ([\d,]+) parameters; .*? = ([\d.]+) GB", notebook_outputs("02"))
    assert int(printed.replace(",", "")) == count and gb == f"{count * 16 / 1e9:.1f}"
    # 13: "SDXL's [random-weight instances], about 14 GB in float32": its three networks and VAE at 4 bytes each
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from sdexplain.architectures import XL_ARCHITECTURES

    xl = XL_ARCHITECTURES["sdxl"]
    with torch.device("meta"):
        parts = [UNet2DConditionModel(**xl["unet"]), CLIPTextModel(CLIPTextConfig(**xl["text_encoder"])),
                 CLIPTextModelWithProjection(CLIPTextConfig(**xl["text_encoder_2"])), AutoencoderKL(**xl["vae"])]
    total = sum(p.numel() for part in parts for p in part.parameters())
    assert round(total * 4 / 1e9) == 14 and "about 14 GB in float32" in notebook_markdown("13"), total


def test_training_loss_is_the_mean_squared_error():
    """02: the printed "loss ‖ε̂ − ε‖²" is the mean of (ε̂ − ε)² (as 02's text now defines it), the loss
    diffusers' training scripts compute (F.mse_loss, reduction 'mean'); the sum would be 256× larger here.

    Rebuilds 02's noise (seed 0, the (1, 4, 8, 8) latent) and its "guessing ε̂ = 0" score. Fails if the
    notebook printed the sum (≈ 226) or the text called the mean a sum again."""
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    (zero,), = [re.findall(r"guessing ε̂ = 0 would score ([\d.]+)", notebook_outputs("02"))]
    assert shown(zero, float(torch.nn.functional.mse_loss(torch.zeros_like(noise), noise)))
    assert "the *mean* of (ε̂ − ε)²" in notebook_markdown("02")


@pytest.mark.slow  # builds the tiny random-weight SDXL and runs 10 + 10 steps
def test_sdxl_refiner_cut_is_at_timestep_200():
    """13: with denoising_end = denoising_start = 0.8 the base runs the timesteps ≥ 1000 × (1 − 0.8) = 200 and
    the refiner the ones below: 40 steps → 32 + 8 (13's printed expectation for SDXL), 10 → 8 + 2.

    Counted from the U-Net calls of diffusers' own StableDiffusionXL pipelines (tiny random-weight SDXL,
    SDXL's scheduler config). Fails if the cut were at 80 % of the noise instead of the timesteps."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline

    from sdexplain.architectures import build_pipeline

    base = build_pipeline("tiny-sdxl")
    base.set_progress_bar_config(disable=True)
    sdxl_scheduler = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
                      "steps_offset": 1, "timestep_spacing": "leading", "prediction_type": "epsilon"}  # SDXL base 1.0's scheduler_config.json
    base.scheduler = EulerDiscreteScheduler.from_config(sdxl_scheduler)
    refiner = StableDiffusionXLImg2ImgPipeline(**base.components)
    refiner.set_progress_bar_config(disable=True)
    calls, handle = _unet_calls(base)  # base and refiner share the U-Net
    try:
        latent = base("a red cat", num_inference_steps=10, denoising_end=0.8, guidance_scale=1.0, output_type="latent",
                      generator=torch.Generator().manual_seed(0)).images
        n_base = len(calls)
        refiner("a red cat", image=latent, num_inference_steps=10, denoising_start=0.8, guidance_scale=1.0, output_type="latent",
                generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    timesteps = [float(c[1]) for c in calls]
    assert n_base == 8 and len(timesteps) == 10, timesteps
    assert min(timesteps[:n_base]) >= 200 > max(timesteps[n_base:]), timesteps
    forty = EulerDiscreteScheduler.from_config(sdxl_scheduler)
    forty.set_timesteps(40)
    assert sum(int(t) >= 200 for t in forty.timesteps) == 32  # "40 steps split at 0.8: the base runs 32 and the refiner the last 8"
    assert "the base runs 32 and the refiner the last 8" in notebook_outputs("13")


def test_inpainting_mask_is_decided_by_one_pixel_per_latent_block(toy):
    """11: the mask acts at latent resolution, one value per 8×8 pixel block, and diffusers' nearest-neighbour
    shrink lets one pixel of each block (its top-left one) decide whether the whole block is in or out.

    From StableDiffusionInpaintPipeline.prepare_mask_latents itself. Fails if the shrink averaged the block
    (then the two blocks below would read 1/64 and 63/64) or took its maximum."""
    from diffusers import StableDiffusionInpaintPipeline

    inpaint = StableDiffusionInpaintPipeline(**toy.components)
    mask = torch.zeros(1, 1, 64, 64)
    mask[0, 0, 0, 0] = 1  # block (0, 0): only its top-left pixel in the mask
    mask[0, 0, 8:16, 8:16] = 1
    mask[0, 0, 8, 8] = 0  # block (1, 1): every pixel but its top-left one
    small, _ = inpaint.prepare_mask_latents(mask, torch.zeros(1, 4, 8, 8), 1, 64, 64, torch.float32, "cpu", None, False)
    assert small.shape == (1, 1, 8, 8)
    assert float(small[0, 0, 0, 0]) == 1 and float(small[0, 0, 1, 1]) == 0 and float(small.sum()) == 1


def test_depth_map_is_resized_to_the_latent_and_scaled_to_minus_one_one(toy):
    """12: the depth map is resized to the latent's size and scaled to [−1, 1] before it is concatenated to the
    noisy latent (diffusers' StableDiffusionDepth2ImgPipeline.prepare_depth_map, given a depth map).

    Fails if the range were [0, 1] or the map kept the image's size."""
    from diffusers import StableDiffusionDepth2ImgPipeline

    parts = {k: v for k, v in toy.components.items() if k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    depth2img = StableDiffusionDepth2ImgPipeline(**parts, depth_estimator=None, feature_extractor=None)
    depth = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(7)) * 5 + 2  # any positive depths
    image = torch.zeros(1, 3, 64, 64)
    small = depth2img.prepare_depth_map(image, depth, 1, False, torch.float32, torch.device("cpu"))
    assert small.shape == (1, 1, 8, 8) and float(small.min()) == -1 and abs(float(small.max()) - 1) < 1e-6

"""Guidance: classifier-free guidance sweeps and classifier guidance, as readable sampling loops.

Two loops diffusers doesn't have, written out once with the papers' names:

- `cfg_sweep`: one prompt, one seed, N guidance scales, computed as ONE batch — every U-Net call
  evaluates all N latents, unconditional and conditional halves together, and each latent is
  guided with its own scale:  ε̂ = ε(x_t, ∅) + w·(ε(x_t, c) − ε(x_t, ∅))   (Ho & Salimans 2021).
  For a scale w > 1 the result is the stock pipeline's with `guidance_scale=w` (tested); w = 0 is
  the unconditional model (the prompt ignored), w = 1 the conditional model without guidance.
- `classifier_guided_sample`: the unconditional model steered by a separate classifier of noisy
  latents toward a label y (Dhariwal & Nichol 2021, Algorithm 2 — the ε form that works with any
  ε-scheduler):  ε̂ = ε(x_t) − s·sqrt(1 − ᾱ_t)·∇_{x_t} log p(y | x_t).

Both use the pipeline's own components and scheduler (`scheduler.step`), not a sampler of ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image


@dataclass
class CFGSweep:
    """The result of `cfg_sweep`: per scale an image, per step the two noise predictions."""

    prompt: str
    scales: list[float]
    images: list[Image.Image]  # one per scale
    timesteps: list[int] = field(default_factory=list)  # one per step
    noise_uncond: list[torch.Tensor] = field(default_factory=list)  # per step (N, 4, h, w), CPU float32
    noise_cond: list[torch.Tensor] = field(default_factory=list)  # per step (N, 4, h, w)
    latents: list[torch.Tensor] = field(default_factory=list)  # per step, the latent going in (N, 4, h, w)

    def noise_guided(self, step: int) -> torch.Tensor:
        """ε̂ = ε_uncond + w·(ε_cond − ε_uncond) at `step`, per scale: (N, 4, h, w)."""
        w = torch.tensor(self.scales, dtype=torch.float32).view(-1, 1, 1, 1)
        return self.noise_uncond[step] + w * (self.noise_cond[step] - self.noise_uncond[step])


def _check_scales(scales) -> list[float]:
    scales = [float(s) for s in scales]
    if not scales:
        raise ValueError("scales must name at least one guidance scale, got an empty list")
    negative = [s for s in scales if s < 0]
    if negative:
        raise ValueError(f"guidance scales must be ≥ 0, got {negative}")
    return scales


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer ≥ 1, got {steps!r}")


@torch.no_grad()
def cfg_sweep(
    pipe,
    prompt: str,
    scales=(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0),
    *,
    negative_prompt: str = "",
    steps: int = 25,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    keep_steps: bool = True,
    progress: bool = True,
) -> CFGSweep:
    """Generate `prompt` at every guidance scale in `scales` from the same noise, in one batch."""
    # Adapted from diffusers pipeline_stable_diffusion.py (0.42), __call__, steps 1–8
    scales = _check_scales(scales)
    _check_steps(steps)
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be one string, got {type(prompt).__name__}")
    n = len(scales)
    height = height or pipe.unet.config.sample_size * pipe.vae_scale_factor
    width = width or pipe.unet.config.sample_size * pipe.vae_scale_factor
    pipe.check_inputs(prompt, height, width, None, negative_prompt, None, None)
    device = pipe._execution_device

    # 1. encode the prompt and the unconditional (negative) prompt once: (1, 77, D) each
    cond, uncond = pipe.encode_prompt(prompt, device, 1, True, negative_prompt)
    context = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)])  # (2N, 77, D)

    # 2. timesteps, and ONE starting latent (as the stock pipeline draws it) repeated N times
    pipe.scheduler.set_timesteps(steps, device=device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    latent = pipe.prepare_latents(1, pipe.unet.config.in_channels, height, width, cond.dtype, device, generator)
    latents = latent.repeat(n, 1, 1, 1)  # (N, 4, h, w)
    w = torch.tensor(scales, device=device, dtype=latents.dtype).view(n, 1, 1, 1)
    extra = pipe.prepare_extra_step_kwargs(generator, 0.0)

    sweep = CFGSweep(prompt=prompt, scales=scales, images=[])
    for t in pipe.progress_bar(pipe.scheduler.timesteps) if progress else pipe.scheduler.timesteps:
        # 3. one U-Net call for all N latents, unconditional and conditional halves together
        model_input = pipe.scheduler.scale_model_input(torch.cat([latents] * 2), t)  # (2N, 4, h, w)
        noise = pipe.unet(model_input, t, encoder_hidden_states=context, return_dict=False)[0]
        noise_uncond, noise_cond = noise.chunk(2)  # 2 × (N, 4, h, w)
        # 4. each latent guided with its own scale: ε̂ = ε_∅ + w·(ε_c − ε_∅)
        guided = noise_uncond + w * (noise_cond - noise_uncond)
        if keep_steps:
            copied = torch.stack([latents, noise_uncond, noise_cond]).float().cpu()  # one device→host copy
            sweep.timesteps.append(int(t))
            sweep.latents.append(copied[0])
            sweep.noise_uncond.append(copied[1])
            sweep.noise_cond.append(copied[2])
        # 5. the scheduler's own step: x_t → x_{t-1}
        latents = pipe.scheduler.step(guided, t, latents, **extra, return_dict=False)[0]

    # 6. decode
    images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    sweep.images = pipe.image_processor.postprocess(images, output_type="pil")
    return sweep


def classifier_guided_sample(
    pipe,
    classifier,
    target: int,
    scale: float,
    *,
    attribute: str = "shape",
    n: int = 16,
    steps: int = 25,
    seed: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample n images from the UNCONDITIONAL model (empty prompt), steered toward class `target`.

    `classifier(x_t, t)` returns logits per attribute (e.g. `sdexplain.toy.extras.NoisyLatentClassifier`),
    trained on x_t = sqrt(ᾱ_t)·x_0 + sqrt(1−ᾱ_t)·ε. Returns (images in [-1, 1] (n, 3, H, W), the
    classifier's p(target | x_t) at each step (steps, n)). scale 0 = plain unconditional sampling.
    """
    if scale < 0:
        raise ValueError(f"scale must be ≥ 0, got {scale}")
    _check_steps(steps)
    device = pipe._execution_device
    scheduler = pipe.scheduler
    # 1. the unconditional context: the empty prompt, as in training's 10 % dropped captions
    with torch.no_grad():
        context, _ = pipe.encode_prompt("", device, n, False)  # (n, 77, D)
    # 2. starting noise and timesteps
    scheduler.set_timesteps(steps, device=device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    size = pipe.unet.config.sample_size
    latents = pipe.prepare_latents(n, pipe.unet.config.in_channels, size * pipe.vae_scale_factor, size * pipe.vae_scale_factor, context.dtype, device, generator)
    alphas_cumprod = scheduler.alphas_cumprod.to(device)
    confidence = []
    for t in pipe.progress_bar(scheduler.timesteps) if progress else scheduler.timesteps:
        x_in = scheduler.scale_model_input(latents, t)  # the VP-form x_t the U-Net and classifier see
        with torch.no_grad():
            eps = pipe.unet(x_in, t, encoder_hidden_states=context, return_dict=False)[0]  # ε(x_t)
        # 3. ∇_{x_t} log p(y | x_t) from the classifier
        with torch.enable_grad():
            x = x_in.detach().float().requires_grad_(True)
            log_probs = classifier(x, t.expand(n).to(device))[attribute].log_softmax(-1)  # (n, classes)
            selected = log_probs[:, target]
            grad = torch.autograd.grad(selected.sum(), x)[0]
        confidence.append(selected.detach().exp().cpu())
        # 4. ε̂ = ε − s·sqrt(1 − ᾱ_t)·∇ log p(y | x_t): the guidance shifts the drift toward y
        eps = eps - scale * (1 - alphas_cumprod[t]).sqrt() * grad.to(eps.dtype)
        latents = scheduler.step(eps, t, latents, return_dict=False)[0]
    with torch.no_grad():
        images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0].clamp(-1, 1)
    return images.float().cpu(), torch.stack(confidence)

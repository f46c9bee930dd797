"""The diffusion maths of Stable Diffusion as small pure functions, named as in the papers.

Notation (DDPM, Ho et al. 2020; DDIM, Song et al. 2021; v-prediction, Salimans & Ho 2022):

    β_t                 noise added at training step t (the scheduler's `betas`)
    ᾱ_t = Π_{s≤t}(1−β_s)   alphas_cumprod: how much of the clean signal survives at step t
    σ_t = sqrt(1−ᾱ_t)   the noise level in the variance-preserving (VP) view used by DDPM/DDIM/PNDM
    σ_ve = sqrt((1−ᾱ_t)/ᾱ_t)   the noise level in the variance-exploding view of Karras et al. /
                        k-diffusion, used by the Euler, LMS and Heun schedulers: x_ve = x_t / sqrt(ᾱ_t)

    forward process     x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε                      (q_sample)
    ε-prediction        x0 = (x_t − sqrt(1−ᾱ_t)·ε̂) / sqrt(ᾱ_t)                   (predict_x0)
    v-prediction        v = sqrt(ᾱ_t)·ε − sqrt(1−ᾱ_t)·x0                         (v_target)
                        x0 = sqrt(ᾱ_t)·x_t − sqrt(1−ᾱ_t)·v̂
                        ε  = sqrt(1−ᾱ_t)·x_t + sqrt(ᾱ_t)·v̂                       (predict_eps)

Everything here works on torch tensors (any device/dtype) and Python floats for ᾱ.
"""

from __future__ import annotations

from typing import Union

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

AlphaBar = Union[float, torch.Tensor]


def alphas_cumprod(scheduler) -> torch.Tensor:
    """ᾱ_t = Π_{s≤t} (1 − β_s) for every training timestep t = 0 … T−1 (float32, CPU)."""
    if getattr(scheduler, "alphas_cumprod", None) is not None:
        return scheduler.alphas_cumprod.detach().to("cpu", torch.float32)  # (T,)
    if getattr(scheduler, "betas", None) is None:
        raise TypeError(f"{type(scheduler).__name__} has neither `alphas_cumprod` nor `betas`; not a DDPM-family scheduler")
    return torch.cumprod(1.0 - scheduler.betas.detach().to("cpu", torch.float32), dim=0)  # (T,)


def noise_level(scheduler, t: int) -> tuple[float, float]:
    """(ᾱ_t, σ_t) at integer training timestep t, with σ_t = sqrt(1 − ᾱ_t) (the VP noise level)."""
    table = alphas_cumprod(scheduler)
    t = int(t)
    if not 0 <= t < len(table):
        raise ValueError(f"timestep {t} is outside the scheduler's training range 0..{len(table) - 1}")
    alpha_bar = float(table[t])
    return alpha_bar, (1.0 - alpha_bar) ** 0.5


def sigma_ve(alpha_bar: AlphaBar) -> AlphaBar:
    """σ_ve = sqrt((1 − ᾱ) / ᾱ): the noise level in the variance-exploding view (Euler, LMS, Heun)."""
    return ((1 - alpha_bar) / alpha_bar) ** 0.5


def alpha_bar_from_sigma_ve(sigma: AlphaBar) -> AlphaBar:
    """Inverse of `sigma_ve`: ᾱ = 1 / (1 + σ_ve²)."""
    return 1 / (1 + sigma**2)


def _alpha_bar_at(t, schedule: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """ᾱ_t from a (T,) table, shaped to broadcast over `like` (B, C, H, W)."""
    t = torch.as_tensor(t, device=schedule.device).long()
    a = schedule[t].to(like.device, like.dtype)  # () or (B,)
    return a.reshape(-1, *([1] * (like.dim() - 1))) if a.dim() == 1 else a  # (B, 1, 1, 1) or ()


def q_sample(x0: torch.Tensor, t, noise: torch.Tensor, scheduler_or_alphas_cumprod) -> torch.Tensor:
    """Forward process: x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε.

    `t` is an int or a (B,) tensor of training timesteps; `scheduler_or_alphas_cumprod` is a
    scheduler or its (T,) ᾱ table.
    """
    if x0.shape != noise.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} must have the same shape")
    schedule = (
        scheduler_or_alphas_cumprod
        if isinstance(scheduler_or_alphas_cumprod, torch.Tensor)
        else alphas_cumprod(scheduler_or_alphas_cumprod)
    )
    a = _alpha_bar_at(t, schedule, x0)  # ᾱ_t, broadcastable
    return a.sqrt() * x0 + (1 - a).sqrt() * noise  # (B, C, H, W)


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; allowed: {', '.join(PREDICTION_TYPES)}")


def _as_factor(alpha_bar: AlphaBar, like: torch.Tensor):
    """ᾱ as a float or a tensor broadcastable over `like` (a (B,) tensor becomes (B, 1, 1, 1))."""
    if isinstance(alpha_bar, torch.Tensor):
        a = alpha_bar.to(like.device, like.dtype)
        return a.reshape(-1, *([1] * (like.dim() - 1))) if a.dim() == 1 else a
    return float(alpha_bar)


def predict_x0(sample: torch.Tensor, model_output: torch.Tensor, alpha_bar: AlphaBar, prediction_type: str = "epsilon") -> torch.Tensor:
    """The clean latent x0 the model's output implies at noise level ᾱ (x_t = `sample`, VP-scaled).

        epsilon       x0 = (x_t − sqrt(1−ᾱ)·ε̂) / sqrt(ᾱ)
        v_prediction  x0 = sqrt(ᾱ)·x_t − sqrt(1−ᾱ)·v̂
        sample        x0 = model output
    """
    _check_prediction_type(prediction_type)
    a = _as_factor(alpha_bar, sample)
    if prediction_type == "epsilon":
        return (sample - (1 - a) ** 0.5 * model_output) / a**0.5
    if prediction_type == "v_prediction":
        return a**0.5 * sample - (1 - a) ** 0.5 * model_output
    return model_output


def predict_eps(sample: torch.Tensor, model_output: torch.Tensor, alpha_bar: AlphaBar, prediction_type: str = "epsilon") -> torch.Tensor:
    """The noise ε the model's output implies at noise level ᾱ (x_t = `sample`, VP-scaled).

        epsilon       ε = model output
        v_prediction  ε = sqrt(1−ᾱ)·x_t + sqrt(ᾱ)·v̂
        sample        ε = (x_t − sqrt(ᾱ)·x̂0) / sqrt(1−ᾱ)
    """
    _check_prediction_type(prediction_type)
    a = _as_factor(alpha_bar, sample)
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return (1 - a) ** 0.5 * sample + a**0.5 * model_output
    return (sample - a**0.5 * model_output) / (1 - a) ** 0.5


def v_target(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: AlphaBar) -> torch.Tensor:
    """The v-prediction training target: v = sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x0."""
    a = _as_factor(alpha_bar, x0)
    return a**0.5 * noise - (1 - a) ** 0.5 * x0


def check_steps(steps) -> None:
    """Refuse a number of sampling steps that is not an integer ≥ 1 (a bool is not a number of steps)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer ≥ 1, got {steps!r}")

"""Noise schedules and samplers: the noise level each step should reach, and the level a real run reached.

The article: "the noise schedule says how much noise the latent should still have after each step;
the sampler removes just enough noise to get there." Here both halves are computed:

    expected_noise_levels(scheduler, steps)   [(timestep, σ_t)] the schedule's noise level at every U-Net
                                              call of a sampler with `steps` steps, σ_t = sqrt(1 − ᾱ_t)
    karras_noise_levels(scheduler, steps)     the same steps in k-diffusion's units σ = sqrt((1 − ᾱ_t)/ᾱ_t),
                                              the scale of the article's "15 steps" figure
    two_views_figure(scheduler, steps)        both views side by side, with each step's drop
    noise_levels(run, variance_exploding)     expected vs MEASURED noise level of the latent at every step
    run_samplers(pipe, prompt, names, …)      the same prompt and seed through several samplers, traced
    levels_figure / noise_levels_figure / samplers_figure   static figures
    widgets.SamplerSwitcher(results)          a Dropdown over the runs: final image + measured-vs-expected plot

How the noise level of a latent is MEASURED (`noise_levels`). Every latent x_t of a run is compared
with the run's own final clean latent x0 (the one the VAE decodes):

    1. bring x_t to the variance-preserving (VP) scale x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε that
       DDIM/PNDM/DDPM/DPM++ use. Euler, Euler-ancestral, LMS and Heun keep x_t/sqrt(ᾱ_t) = x0 + σ_ve·ε
       instead (`init_noise_sigma` ≠ 1); that is multiplied back by sqrt(ᾱ_t) = 1/sqrt(1 + σ_ve²).
    2. residual r = x_t − sqrt(ᾱ_t)·x0_final: what is in the latent besides the final image's signal.
    3. measured level σ̂_t = sqrt(mean(r²)) over all latent numbers (unit-variance noise gives 1).

The schedule's σ_t = sqrt(1 − ᾱ_t) is what σ̂_t should be if the latent holds the final image at
strength sqrt(ᾱ_t) plus unit Gaussian noise at strength σ_t. The residual also contains whatever the
image has still to change (early x̂0 guesses differ from the final one), so σ̂_t is "what the sampler
still has to remove", measured — not a quantity the schedule fixes by construction.

Not here: the maths of ᾱ/σ (`sdexplain.diffusion`), the ᾱ/σ curves against t (`sdexplain.plots.noise_schedule`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sdexplain.i18n import Figure  # matplotlib's Figure; its texts follow sdexplain.set_language

from sdexplain import diffusion, images
from sdexplain.generate import generate
from sdexplain.loading import SCHEDULERS, make_scheduler

LABELS = {  # how WebUIs name them
    "ddim": "DDIM",
    "euler": "Euler",
    "euler_a": "Euler a (ancestral)",
    "dpm++2m": "DPM++ 2M",
    "pndm": "PNDM (PLMS)",
    "ddpm": "DDPM",
    "lms": "LMS",
    "heun": "Heun",
}


def available_samplers() -> list[str]:
    """Names in `sdexplain.loading.SCHEDULERS` that can be built here (LMS needs scipy, a declared dependency)."""
    from diffusers import PNDMScheduler

    base = PNDMScheduler().config
    names = []
    for name, cls in SCHEDULERS.items():
        try:
            cls.from_config(base)
        except ImportError:
            continue
        names.append(name)
    return names


def is_variance_exploding(scheduler) -> bool:
    """True for schedulers that keep the latent as x0 + σ_ve·ε (Euler, Euler a, LMS, Heun): init_noise_sigma ≠ 1."""
    return getattr(scheduler, "sigmas", None) is not None and float(scheduler.init_noise_sigma) != 1.0


def expected_noise_levels(scheduler, steps: int) -> list[tuple[int, float]]:
    """[(timestep, σ_t)] at each U-Net call of `scheduler` sampling with `steps` steps (a copy is used).

    σ_t = sqrt(1 − ᾱ_t) from the scheduler's ᾱ table: the noise level the latent entering that call should have.
    """
    diffusion.check_steps(steps)
    copy = type(scheduler).from_config(scheduler.config)
    copy.set_timesteps(steps)
    table = diffusion.alphas_cumprod(copy)  # (T,)
    return [(int(t), math.sqrt(1.0 - float(table[int(t)]))) for t in copy.timesteps]


def levels_figure(scheduler, steps: int, title: str | None = None) -> Figure:
    """The schedule's noise level per sampling step: σ_t of the latent entering each step, then 0 after the last.

    Each step's drop (σ_t − σ_next) is the noise that step must remove. One axes.
    """
    levels = expected_noise_levels(scheduler, steps)
    sigma = [s for _, s in levels] + [0.0]  # the last step leaves the clean latent
    x = np.arange(len(sigma))
    fig = Figure(figsize=(6.0, 2.8), layout="constrained")
    ax = fig.add_subplot()
    ax.step(x, sigma, where="post", color="tab:orange", linewidth=1.5, label="σ_t = √(1−ᾱ_t) of the latent")
    ax.scatter(x, sigma, color="tab:orange", s=14, zorder=3)
    drops = np.maximum(np.array(sigma[:-1]) - np.array(sigma[1:]), 0.0)
    ax.bar(x[:-1] + 0.5, drops, width=0.5, color="0.6", alpha=0.6, label="noise removed by the step (σ_t − σ_next)")
    labels = [str(t) for t, _ in levels] + ["clean"]
    ax.set_xticks(x, labels, rotation=90, fontsize=7)
    ax.set_xlabel("timestep t of each U-Net call (noisy → clean)")
    ax.set_ylabel("noise level")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title or f"{type(scheduler).__name__}, {steps} steps: expected noise level", fontsize=10)
    return fig


def karras_noise_levels(scheduler, steps: int) -> list[tuple[int, float]]:
    """[(timestep, σ)] at each U-Net call, in k-diffusion's (Karras et al. 2022) units σ = sqrt((1 − ᾱ_t)/ᾱ_t).

    The same timesteps as `expected_noise_levels`, measured on another scale: the latent divided by
    √ᾱ_t is x0 + σ·ε (the scale Euler-type samplers store, `init_noise_sigma` = σ of the first step).
    σ_t (variance preserving) = σ/√(1 + σ²), so both views order the steps the same way.
    """
    levels = expected_noise_levels(scheduler, steps)
    return [(t, s / math.sqrt(1.0 - s * s)) for t, s in levels]  # σ/√(1+σ²) = s  ⇔  σ = s/√(1−s²)


def step_drops(levels: list[tuple[int, float]]) -> list[float]:
    """The noise each step removes: level_i − level_(i+1), and the last level (the last step ends clean).

    PNDM visits its first timestep twice (a warm-up call); that repeated call removes nothing, so it is skipped.
    """
    unique = [s for i, (t, s) in enumerate(levels) if i == 0 or t != levels[i - 1][0]]
    return [a - b for a, b in zip(unique, unique[1:] + [0.0])]


def two_views_figure(scheduler, steps: int) -> Figure:
    """The noise level per sampling step in two units: σ_t = √(1−ᾱ_t) (left) and k-diffusion's σ (right).

    Bars are each step's drop (`step_drops`). Same timesteps, same schedule: only the unit differs.
    """
    fig = Figure(figsize=(7.5, 2.8), layout="constrained")
    views = [
        (expected_noise_levels(scheduler, steps), "σ_t = √(1−ᾱ_t)  (x_t's noise factor)", "tab:orange"),
        (karras_noise_levels(scheduler, steps), "σ = √((1−ᾱ_t)/ᾱ_t)  (k-diffusion)", "tab:purple"),
    ]
    for k, (levels, name, colour) in enumerate(views):
        ax = fig.add_subplot(1, 2, k + 1)
        unique = [s for i, (t, s) in enumerate(levels) if i == 0 or t != levels[i - 1][0]]
        x = np.arange(len(unique) + 1)
        ax.step(x, unique + [0.0], where="post", color=colour, linewidth=1.5)
        ax.scatter(x, unique + [0.0], color=colour, s=12, zorder=3)
        ax.bar(x[:-1] + 0.5, step_drops(levels), width=0.5, color="0.6", alpha=0.7, label="removed by the step")
        ax.set_xlabel("sampling step")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    return fig


# ----------------------------------------------------------------------------- measured levels


@dataclass
class NoiseLevels:
    steps: list  # [int] U-Net call index of each latent (the run's step index)
    timesteps: list  # [float] timestep of that call
    expected: list  # [float] σ_t = sqrt(1 − ᾱ_t) the scheduler says the latent has
    measured: list  # [float] σ̂_t = RMS(x_t,VP − sqrt(ᾱ_t)·x0_final) measured on the latent

    def gap(self) -> float:
        """Root-mean-square difference between measured and expected levels."""
        diff = np.asarray(self.measured) - np.asarray(self.expected)
        return float(np.sqrt(np.mean(diff**2)))


def noise_levels(run, variance_exploding: bool, batch_index: int = 0) -> NoiseLevels:
    """Expected and measured noise level of the latent entering every step of a traced run (see module docstring)."""
    steps = [s for s in run.steps if s.latent_in is not None]
    final = run.steps[-1].latent_out if run.steps else None
    if not steps or final is None:
        raise ValueError("the run kept no latents or no final latent (output_type='latent'? a thinned trace? see run.reductions)")
    x0 = final[batch_index].double()  # (C, h, w) the clean latent the VAE decoded
    out = NoiseLevels([], [], [], [])
    for s in steps:
        a = float(s.alpha_bar)
        x_t = s.latent_in[batch_index].double()  # (C, h, w), the scheduler's own scale
        if variance_exploding:
            x_t = x_t * math.sqrt(a)  # x0 + σ_ve·ε  →  sqrt(ᾱ)·x0 + sqrt(1−ᾱ)·ε
        residual = x_t - math.sqrt(a) * x0
        out.steps.append(s.index)
        out.timesteps.append(float(s.timestep))
        out.expected.append(math.sqrt(max(0.0, 1.0 - a)))
        out.measured.append(float(residual.pow(2).mean().sqrt()))
    return out


@dataclass
class SamplerRun:
    name: str  # key of SCHEDULERS
    scheduler: str  # class name
    image: object  # PIL image
    run: object  # Trace
    levels: NoiseLevels
    variance_exploding: bool  # the latent was kept as x0 + σ_ve·ε
    init_noise_sigma: float  # the starting latent is init_noise_sigma·ε


def run_samplers(pipe, prompt: str, names=None, steps: int = 15, cfg: float = 7.5, seed: int = 0, **options) -> dict[str, SamplerRun]:
    """The same prompt and seed through each named sampler (default: all available), traced.

    The pipeline's scheduler is swapped for each run and restored afterwards; the U-Net, text encoder
    and VAE are shared. `options` go to `sdexplain.generate` (e.g. attention=False, preview_every=0).
    """
    names = list(names) if names is not None else available_samplers()
    if not names:
        raise ValueError("no sampler names given")
    options = {"attention": False, "preview_every": 0, **options}
    original = pipe.scheduler
    results = {}
    try:
        for name in names:
            pipe.scheduler = make_scheduler(pipe, name)
            ve = is_variance_exploding(pipe.scheduler)
            images_, run = generate(pipe, prompt, steps=steps, cfg=cfg, seed=seed, **options)
            init = float(pipe.scheduler.init_noise_sigma)
            results[name] = SamplerRun(name, type(pipe.scheduler).__name__, images_[0], run, noise_levels(run, ve), ve, init)
    finally:
        pipe.scheduler = original
    return results


# ----------------------------------------------------------------------------- figures and the switcher


def _plot_levels(ax, levels: NoiseLevels, title: str | None = None, legend: bool = True) -> None:
    x = np.arange(len(levels.steps) + 1)
    ax.plot(x, levels.expected + [0.0], color="tab:orange", linewidth=1.5, label="expected σ_t (schedule)")
    ax.scatter(x[:-1], levels.measured, color="tab:blue", s=14, zorder=3, label="measured σ̂_t (latent)")
    ax.set_ylim(-0.03, max(1.05, max(levels.measured) + 0.05))
    ax.set_xlabel("U-Net call (noisy → clean)", fontsize=8)
    ax.set_ylabel("noise level", fontsize=8)
    ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    if legend:
        ax.legend(fontsize=7, loc="lower left")


def noise_levels_figure(levels: NoiseLevels, title: str | None = None) -> Figure:
    """Measured σ̂_t (dots) against the schedule's σ_t (line) for one run. One axes."""
    fig = Figure(figsize=(4.2, 2.6), layout="constrained")
    _plot_levels(fig.add_subplot(), levels, title)
    return fig


def samplers_figure(results: dict[str, SamplerRun], cell: float = 1.9) -> Figure:
    """All samplers side by side: the final image on top, measured vs expected noise level below."""
    n = len(results)
    if n == 0:
        raise ValueError("no sampler results to show")
    fig = Figure(figsize=(cell * n, cell * 2.1), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False, height_ratios=[1, 0.9])
    for i, (name, result) in enumerate(results.items()):
        axes[0, i].imshow(images.to_uint8(result.image), interpolation="nearest")
        axes[0, i].set_axis_off()
        axes[0, i].set_title(f"{LABELS.get(name, name)}\n{len(result.run.steps)} U-Net calls", fontsize=8)
        _plot_levels(axes[1, i], result.levels, legend=i == 0)
        axes[1, i].set_title(f"gap {result.levels.gap():.3f}", fontsize=8)
        if i:
            axes[1, i].set_ylabel("")
    return fig


def same_start(results: dict[str, SamplerRun]) -> float:
    """Largest difference between the samplers' starting noise ε (same seed → it should be 0, up to rounding).

    Every sampler starts from x_T = init_noise_sigma·ε (1 for DDIM/PNDM/DDPM/DPM++, about σ_max for
    Euler/Heun/LMS), so dividing the first latent by it gives ε back.
    """
    starts = [r.run.steps[0].latent_in[0].double() / r.init_noise_sigma for r in results.values()]  # (C, h, w) each
    return max(float((s - starts[0]).abs().max()) for s in starts)

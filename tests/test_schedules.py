"""Noise levels: the schedule's expected σ per step, and a measurement that agrees with the forward process."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler

from sdexplain import diffusion, schedules, widgets
from sdexplain.generate import generate
from sdexplain.toy.model import SCHEDULER_CONFIG
from sdexplain.trace import Step, Trace


def test_expected_levels_follow_the_alpha_bar_table_and_leave_the_scheduler_alone():
    scheduler = DDIMScheduler.from_config(SCHEDULER_CONFIG)
    scheduler.set_timesteps(50)
    before = scheduler.timesteps.clone()
    levels = schedules.expected_noise_levels(scheduler, 15)
    assert torch.equal(scheduler.timesteps, before)
    assert len(levels) == 15
    table = diffusion.alphas_cumprod(scheduler)
    for t, sigma in levels:
        assert sigma == pytest.approx(math.sqrt(1 - float(table[t])))
    sigmas = [s for _, s in levels]
    assert sigmas == sorted(sigmas, reverse=True) and sigmas[0] > 0.99 and sigmas[-1] < 0.1
    assert len(schedules.expected_noise_levels(PNDMScheduler.from_config(SCHEDULER_CONFIG), 15)) == 16  # PLMS warm-up call
    with pytest.raises(ValueError, match="steps"):
        schedules.expected_noise_levels(scheduler, 0)


def _synthetic_run(variance_exploding: bool, seed: int = 0) -> tuple[Trace, list[float]]:
    """A run whose latents are made by the forward process from one x0 (what an ideal sampler would hold)."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(1, 4, 64, 64, generator=g)
    table = diffusion.alphas_cumprod(DDIMScheduler.from_config(SCHEDULER_CONFIG))
    run, expected = Trace(), []
    for i, t in enumerate([900, 600, 300, 50]):
        a = float(table[t])
        x_t = diffusion.q_sample(x0, t, torch.randn(1, 4, 64, 64, generator=g), table)  # sqrt(ᾱ)x0 + sqrt(1−ᾱ)ε
        if variance_exploding:
            x_t = x_t / math.sqrt(a)  # x0 + σ_ve·ε
        run.steps.append(Step(index=i, timestep=float(t), alpha_bar=a, sigma=math.sqrt(1 - a), latent_in=x_t))
        expected.append(math.sqrt(1 - a))
    run.steps[-1].latent_out = x0
    return run, expected


@pytest.mark.parametrize("variance_exploding", [False, True])
def test_measured_level_recovers_the_noise_the_forward_process_put_in(variance_exploding):
    run, expected = _synthetic_run(variance_exploding)
    levels = schedules.noise_levels(run, variance_exploding)
    assert levels.expected == pytest.approx(expected)
    assert levels.measured == pytest.approx(expected, rel=0.02)  # 16,384 numbers: RMS of unit noise ≈ 1 ± 0.6 %
    assert levels.gap() < 0.02
    wrong = schedules.noise_levels(run, not variance_exploding)  # the wrong scale is visibly wrong
    assert wrong.gap() > 0.1


def test_noise_levels_needs_the_final_latent():
    run, _ = _synthetic_run(False)
    run.steps[-1].latent_out = None
    with pytest.raises(ValueError, match="final latent"):
        schedules.noise_levels(run, False)


def test_variance_exploding_detection():
    assert schedules.is_variance_exploding(EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG))
    assert not schedules.is_variance_exploding(DDIMScheduler.from_config(SCHEDULER_CONFIG))
    assert "ddim" in schedules.available_samplers() and "euler" in schedules.available_samplers()


def test_run_samplers_equals_generate_with_that_scheduler_and_restores_the_pipeline(tiny_pipe):
    original = tiny_pipe.scheduler
    results = schedules.run_samplers(tiny_pipe, "a red cat", names=["ddim", "euler"], steps=3, cfg=3.0, seed=1, height=64, width=64)
    assert tiny_pipe.scheduler is original
    assert [r.scheduler for r in results.values()] == ["DDIMScheduler", "EulerDiscreteScheduler"]
    assert results["euler"].variance_exploding and not results["ddim"].variance_exploding
    for name, result in results.items():
        images, _ = generate(tiny_pipe, "a red cat", steps=3, cfg=3.0, seed=1, height=64, width=64, scheduler=name, attention=False, preview_every=0)
        assert np.array_equal(np.asarray(images[0]), np.asarray(result.image))
        assert len(result.levels.measured) == len(result.run.steps) == 3
    assert schedules.same_start(results) < 1e-5  # same seed: the same starting noise for every sampler


def test_switcher_swaps_the_pictures_without_running_anything(tiny_pipe):
    results = schedules.run_samplers(tiny_pipe, "a red cat", names=["ddim", "euler_a"], steps=2, cfg=1.0, seed=0, height=64, width=64)
    view = widgets.SamplerSwitcher(results)
    first = (view.image.value, view.plot.value)
    calls = []
    handle = tiny_pipe.unet.register_forward_hook(lambda *args: calls.append(1))
    view.dropdown.value = "euler_a"
    handle.remove()
    assert calls == [] and view.errors == []
    assert (view.image.value, view.plot.value) != first and "EulerAncestral" in view.readout.value
    fig = schedules.samplers_figure(results)
    assert len(fig.axes) == 4
    assert len(schedules.levels_figure(tiny_pipe.scheduler, 5).axes) == 1

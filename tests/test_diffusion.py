"""The paper formulas in sdexplain.diffusion agree with diffusers' schedulers."""

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler

from sdexplain.diffusion import (
    alpha_bar_from_sigma_ve,
    alphas_cumprod,
    noise_level,
    predict_eps,
    predict_x0,
    q_sample,
    sigma_ve,
    v_target,
)
from sdexplain.architectures import SD_SCHEDULE


def _config(prediction_type):
    # SD v1.5's real scheduler config has clip_sample=False (DDIM's default would clip x0 to [-1, 1])
    return {**SD_SCHEDULE, "prediction_type": prediction_type, "clip_sample": False}


def test_alphas_cumprod_is_product_of_one_minus_beta():
    scheduler = PNDMScheduler.from_config(SD_SCHEDULE)
    a = alphas_cumprod(scheduler)
    assert a.shape == (1000,) and a.dtype == torch.float32
    assert torch.allclose(a, torch.cumprod(1 - scheduler.betas, 0))
    assert (a[1:] < a[:-1]).all()  # noise only grows


def test_noise_level_and_sigma_ve():
    scheduler = DDIMScheduler.from_config(SD_SCHEDULE)
    alpha_bar, sigma = noise_level(scheduler, 500)
    assert alpha_bar == pytest.approx(float(scheduler.alphas_cumprod[500]))
    assert alpha_bar + sigma**2 == pytest.approx(1.0)
    s = sigma_ve(alpha_bar)
    assert s == pytest.approx(((1 - alpha_bar) / alpha_bar) ** 0.5)
    assert alpha_bar_from_sigma_ve(s) == pytest.approx(alpha_bar)
    # Euler's σ table is exactly sigma_ve of ᾱ
    euler = EulerDiscreteScheduler.from_config(SD_SCHEDULE)
    assert torch.allclose(sigma_ve(euler.alphas_cumprod), ((1 - euler.alphas_cumprod) / euler.alphas_cumprod) ** 0.5)
    with pytest.raises(ValueError, match="1000"):
        noise_level(scheduler, 1000)


def test_q_sample_matches_scheduler_add_noise():
    scheduler = DDIMScheduler.from_config(SD_SCHEDULE)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 400, 999])
    expected = scheduler.add_noise(x0, noise, t)
    assert torch.allclose(q_sample(x0, t, noise, scheduler), expected, atol=1e-6)
    assert torch.allclose(q_sample(x0, t, noise, alphas_cumprod(scheduler)), expected, atol=1e-6)
    # an int timestep applies to the whole batch
    assert torch.allclose(q_sample(x0, 400, noise, scheduler)[1], expected[1], atol=1e-6)


def test_round_trips_between_x0_eps_and_v():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    a = 0.3
    x_t = a**0.5 * x0 + (1 - a) ** 0.5 * eps
    v = v_target(x0, eps, a)
    assert torch.allclose(predict_x0(x_t, eps, a, "epsilon"), x0, atol=1e-5)
    assert torch.allclose(predict_x0(x_t, v, a, "v_prediction"), x0, atol=1e-5)
    assert torch.allclose(predict_eps(x_t, v, a, "v_prediction"), eps, atol=1e-5)
    assert torch.allclose(predict_eps(x_t, x0, a, "sample"), eps, atol=1e-5)
    assert torch.equal(predict_x0(x_t, x0, a, "sample"), x0)
    # a (B,) tensor of ᾱ broadcasts per sample
    per_sample = predict_x0(x_t, eps, torch.tensor([a, a]), "epsilon")
    assert torch.allclose(per_sample, x0, atol=1e-5)


def test_bad_prediction_type_is_named():
    x = torch.zeros(1, 4, 2, 2)
    with pytest.raises(ValueError, match="'flow'.*epsilon, v_prediction, sample"):
        predict_x0(x, x, 0.5, "flow")
    with pytest.raises(ValueError, match="'x0'"):
        predict_eps(x, x, 0.5, "x0")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predict_x0_equals_ddim_pred_original_sample(prediction_type):
    scheduler = DDIMScheduler.from_config(_config(prediction_type))
    scheduler.set_timesteps(10)
    g = torch.Generator().manual_seed(2)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    for t in scheduler.timesteps[[0, 4, 9]]:
        model_output = torch.randn(2, 4, 8, 8, generator=g)
        out = scheduler.step(model_output, t, sample)
        alpha_bar = float(scheduler.alphas_cumprod[int(t)])
        assert torch.allclose(predict_x0(sample, model_output, alpha_bar, prediction_type), out.pred_original_sample, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predict_x0_equals_euler_pred_original_sample(prediction_type):
    """Euler works in the VE view: its sample is x_ve = x_t / sqrt(ᾱ) and the model sees x_t.

    So the VP x_t our formula needs is the *scaled* model input, and ᾱ = 1 / (1 + σ²) for the
    step's σ (Euler's timesteps are interpolated, so ᾱ comes from σ, not from a table lookup).
    """
    scheduler = EulerDiscreteScheduler.from_config(_config(prediction_type))
    scheduler.set_timesteps(10)
    g = torch.Generator().manual_seed(3)
    x_ve = torch.randn(2, 4, 8, 8, generator=g) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x_t = scheduler.scale_model_input(x_ve, t)  # what the U-Net sees
        sigma = scheduler.sigmas[scheduler.step_index]
        model_output = torch.randn(2, 4, 8, 8, generator=g)
        out = scheduler.step(model_output, t, x_ve)
        alpha_bar = float(alpha_bar_from_sigma_ve(sigma))
        ours = predict_x0(x_t, model_output, alpha_bar, prediction_type)
        assert torch.allclose(ours, out.pred_original_sample, atol=1e-4, rtol=1e-4)
        x_ve = out.prev_sample


@pytest.mark.parametrize("steps", [0, -3, 2.0, True, "20", None])
def test_check_steps_refuses_what_is_not_an_integer_of_at_least_one(steps):
    from sdexplain.diffusion import check_steps

    with pytest.raises(ValueError, match=r"steps must be an integer ≥ 1, got"):
        check_steps(steps)
    check_steps(1)

"""Guidance loops against the stock pipeline, and their errors."""

import numpy as np
import pytest
import torch

from sdexplain import guidance


def _stock(pipe, prompt, scale, steps=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return pipe(prompt, guidance_scale=scale, num_inference_steps=steps, generator=generator, output_type="np").images[0]


def test_batched_sweep_matches_the_stock_pipeline_per_scale(tiny_pipe):
    tiny_pipe.set_progress_bar_config(disable=True)
    sweep = guidance.cfg_sweep(tiny_pipe, "a red cat", scales=[1.0, 3.0, 7.5], steps=3, seed=0, progress=False)
    for scale, image in zip(sweep.scales, sweep.images):
        ours = np.asarray(image, dtype=np.float32) / 255
        stock = _stock(tiny_pipe, "a red cat", scale)
        assert np.abs(ours - stock).max() <= 1 / 255 + 1e-6, scale  # equal up to 8-bit rounding of batched float math


def test_sweep_records_both_predictions_per_step_and_guided_noise_follows_the_formula(tiny_pipe):
    sweep = guidance.cfg_sweep(tiny_pipe, "a blue dog", scales=[0.0, 2.0], steps=2, progress=False)
    n_steps = len(tiny_pipe.scheduler.timesteps)  # PNDM evaluates the U-Net steps + 1 times
    assert sweep.timesteps == tiny_pipe.scheduler.timesteps.tolist()
    assert len(sweep.noise_uncond) == len(sweep.noise_cond) == n_steps
    assert sweep.noise_cond[0].shape == (2, 4, 8, 8)
    guided = sweep.noise_guided(0)
    assert torch.allclose(guided[0], sweep.noise_uncond[0][0])  # w = 0: the prompt is ignored
    expected = sweep.noise_uncond[0][1] + 2.0 * (sweep.noise_cond[0][1] - sweep.noise_uncond[0][1])
    assert torch.allclose(guided[1], expected)
    assert torch.equal(sweep.latents[0][0], sweep.latents[0][1])  # every scale starts from the same noise


@pytest.mark.parametrize("scales, message", [([], "at least one"), ([-1.0], "≥ 0")])
def test_bad_scales_are_refused(tiny_pipe, scales, message):
    with pytest.raises(ValueError, match=message):
        guidance.cfg_sweep(tiny_pipe, "a cat", scales=scales, steps=2)


def test_bad_steps_are_refused(tiny_pipe):
    with pytest.raises(ValueError, match="steps must be an integer ≥ 1, got 0"):
        guidance.cfg_sweep(tiny_pipe, "a cat", steps=0)


class _LinearClassifier(torch.nn.Module):
    """A fixed linear read-out of the latent's mean per channel: enough to check the gradient's direction."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]]))
            self.linear.bias.zero_()

    def forward(self, x, t):
        return {"shape": self.linear(x.mean(dim=(2, 3)))}


def test_classifier_guidance_moves_samples_toward_the_target(tiny_pipe):
    classifier = _LinearClassifier()
    _, plain = guidance.classifier_guided_sample(tiny_pipe, classifier, target=0, scale=0.0, n=4, steps=3)
    _, guided = guidance.classifier_guided_sample(tiny_pipe, classifier, target=0, scale=50.0, n=4, steps=3)
    assert plain.shape == (len(tiny_pipe.scheduler.timesteps), 4)
    assert guided[-1].mean() > plain[-1].mean()  # p(target | x_t) rises with the scale


def test_negative_classifier_scale_is_refused(tiny_pipe):
    with pytest.raises(ValueError, match="scale must be ≥ 0, got -1"):
        guidance.classifier_guided_sample(tiny_pipe, _LinearClassifier(), target=0, scale=-1)

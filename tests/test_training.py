"""Live training of the noise predictor (sdexplain.training) on the tiny random pipeline."""

import pytest
import torch

from sdexplain import diffusion
from sdexplain.toy import world
from sdexplain.training import TrainingData, fresh_unet, noise_prediction_loss, train_noise_predictor, training_data


@pytest.fixture
def data(tiny_pipe):
    scenes = world.batch(32, seed=5)
    return training_data(tiny_pipe, scenes["images"], scenes["captions"])


def test_training_data_shapes(tiny_pipe, data):
    assert data.latents.shape == (32, 4, 8, 8)
    assert data.hidden.shape == (32, 77, tiny_pipe.text_encoder.config.hidden_size)
    assert data.hidden_empty.shape == (1, 77, tiny_pipe.text_encoder.config.hidden_size)
    assert len(data) == 32 and len(data.captions) == 32


@pytest.mark.slow
def test_loss_decreases_on_a_tiny_run(tiny_pipe, data):
    unet = fresh_unet(tiny_pipe, seed=0)
    before = noise_prediction_loss(unet, data, tiny_pipe.scheduler, batches=3)
    losses = [r.loss for r in train_noise_predictor(unet, data, tiny_pipe.scheduler, steps=40, batch_size=16, learning_rate=2e-3)]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.8 * first, (first, last)
    assert not unet.training  # left in eval mode after the loop
    # on fixed held draws too (no update there), the trained U-Net does better than before
    assert noise_prediction_loss(unet, data, tiny_pipe.scheduler, batches=3) < before


def test_records_are_consistent(tiny_pipe, data):
    unet = fresh_unet(tiny_pipe)
    records = list(train_noise_predictor(unet, data, tiny_pipe.scheduler, steps=3, batch_size=5, seed=3))
    assert [r.step for r in records] == [0, 1, 2]
    r = records[0]
    assert r.t.shape == (5,) and r.index.shape == (5,)
    for tensor in (r.noise, r.x_t, r.target, r.noise_pred):
        assert tensor.shape == (5, 4, 8, 8)
    assert int(r.t.min()) >= 0 and int(r.t.max()) < tiny_pipe.scheduler.config.num_train_timesteps
    # the corrupted latent is the forward process applied to the picked examples with the recorded noise
    expected = diffusion.q_sample(data.latents[r.index], r.t, r.noise, tiny_pipe.scheduler)
    torch.testing.assert_close(r.x_t, expected)
    torch.testing.assert_close(r.target, r.noise)  # epsilon-prediction
    # the recorded loss is the MSE of the recorded prediction (before the update)
    assert r.loss == pytest.approx(float(((r.noise_pred - r.noise) ** 2).mean()), rel=1e-5)


def test_same_seed_same_run(tiny_pipe, data):
    runs = []
    for _ in range(2):
        unet = fresh_unet(tiny_pipe, seed=1)
        runs.append([r.loss for r in train_noise_predictor(unet, data, tiny_pipe.scheduler, steps=3, batch_size=4, seed=7)])
    assert runs[0] == runs[1]


def test_fresh_unet_is_a_random_copy_of_the_architecture(tiny_pipe):
    unet = fresh_unet(tiny_pipe, seed=0)
    assert unet is not tiny_pipe.unet
    assert dict(unet.config) == dict(tiny_pipe.unet.config)
    before = {k: v.clone() for k, v in tiny_pipe.unet.state_dict().items()}
    assert any(not torch.equal(v, before[k]) for k, v in unet.state_dict().items() if v.dtype.is_floating_point)


def test_training_leaves_the_pipeline_unet_alone(tiny_pipe, data):
    before = {k: v.clone() for k, v in tiny_pipe.unet.state_dict().items()}
    list(train_noise_predictor(fresh_unet(tiny_pipe), data, tiny_pipe.scheduler, steps=2, batch_size=4))
    assert all(torch.equal(v, before[k]) for k, v in tiny_pipe.unet.state_dict().items())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=0), "steps must be a positive int"),
        (dict(batch_size=2.5), "batch_size must be a positive int"),
        (dict(learning_rate=-1.0), "learning_rate must be a number > 0"),
        (dict(caption_dropout=1.5), r"caption_dropout must be a number in \[0, 1\]"),
    ],
)
def test_bad_arguments_give_clear_errors(tiny_pipe, data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        next(train_noise_predictor(fresh_unet(tiny_pipe), data, tiny_pipe.scheduler, **kwargs))


def test_bad_data_gives_clear_errors(tiny_pipe, data):
    with pytest.raises(ValueError, match="one caption per image"):
        training_data(tiny_pipe, torch.zeros(3, 3, 64, 64), ["a cat"])
    with pytest.raises(ValueError, match="multiple of the VAE factor"):
        training_data(tiny_pipe, torch.zeros(1, 3, 60, 60), ["a cat"])
    with pytest.raises(ValueError, match=r"tensor \(N, 3, H, W\)"):
        training_data(tiny_pipe, torch.zeros(3, 64, 64), ["a cat"])
    wrong_width = TrainingData(data.latents, torch.zeros(32, 77, 7), torch.zeros(1, 77, 7), data.captions)
    with pytest.raises(ValueError, match="cross-attention expects"):
        next(train_noise_predictor(fresh_unet(tiny_pipe), wrong_width, tiny_pipe.scheduler))


def test_v_prediction_models_learn_the_v_target(tiny_pipe, data):
    scheduler = type(tiny_pipe.scheduler).from_config(tiny_pipe.scheduler.config, prediction_type="v_prediction")
    r = next(train_noise_predictor(fresh_unet(tiny_pipe), data, scheduler, steps=1, batch_size=4))
    alpha_bar = diffusion.alphas_cumprod(scheduler)[r.t]
    torch.testing.assert_close(r.target, diffusion.v_target(data.latents[r.index], r.noise, alpha_bar))
    assert not torch.allclose(r.target, r.noise)

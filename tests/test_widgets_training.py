"""The 'train N more steps' control: it trains the same U-Net further and redraws from the new state."""

import torch

from sdexplain import diffusion
from sdexplain.toy import world
from sdexplain.training import fresh_unet, training_data
from sdexplain.widgets import Probe, TrainMore


def test_train_more_continues_training_and_redraws(tiny_pipe):
    scenes = world.batch(16, seed=5)
    data = training_data(tiny_pipe, scenes["images"], scenes["captions"])
    unet = fresh_unet(tiny_pipe, seed=0)
    noise = torch.randn(data.latents[:1].shape, generator=torch.Generator().manual_seed(1))
    probe = Probe(diffusion.q_sample(data.latents[:1], 600, noise, tiny_pipe.scheduler), 600, noise, data.hidden[:1])
    view = TrainMore(unet, data, tiny_pipe.scheduler, [1.0, 0.9], probe, batch_size=4)
    first_picture = view.noise.value
    assert first_picture[:4] == b"\x89PNG" and view.curve.value[:4] == b"\x89PNG"
    before = [p.detach().clone() for p in unet.parameters()]
    view.train(3)
    assert len(view.losses) == 5 and view.progress.value == 3 and not view.button.disabled
    assert any(not torch.equal(a, b) for a, b in zip(before, unet.parameters()))  # the same U-Net trained further
    assert view.noise.value != first_picture and "5 steps trained" in view.status.value

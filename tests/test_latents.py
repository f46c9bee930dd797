"""Latent-space measurements (sdexplain.latents): geometry from configs, VAE round trips, cost of resolution."""

import numpy as np
import pytest
import torch

from sdexplain import latents, widgets
from sdexplain.architectures import ARCHITECTURES
from sdexplain.toy import world


def test_sd15_geometry_from_its_published_config():
    geo = latents.latent_geometry(ARCHITECTURES["sd15"])
    assert (geo.height, geo.width) == (512, 512)
    assert geo.pixel_numbers == 786_432
    assert geo.latent_shape == (4, 64, 64)
    assert geo.compression == 48.0
    # the article's example: 768×512 → 4×96×64
    assert latents.latent_geometry(ARCHITECTURES["sd15"], 768, 512).latent_shape == (4, 96, 64)
    assert latents.default_size(ARCHITECTURES["sd21"]) == (768, 768)
    assert latents.size_multiple(ARCHITECTURES["sd15"]) == 64


def test_geometry_of_a_loaded_pipeline(tiny_pipe):
    geo = latents.latent_geometry(tiny_pipe)
    assert geo.image_shape == (3, 64, 64)
    assert geo.latent_shape == tuple(tiny_pipe.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean.shape[1:])
    assert latents.vae_factor(tiny_pipe) == tiny_pipe.vae_scale_factor
    assert latents.size_multiple(tiny_pipe) == 16  # factor 8 × one U-Net downsampling


def test_bad_sizes_are_refused(tiny_pipe):
    with pytest.raises(ValueError, match="multiple of the VAE factor 8"):
        latents.latent_geometry(tiny_pipe, 60, 64)
    with pytest.raises(TypeError, match="pipeline or an ARCHITECTURES entry"):
        latents.latent_geometry("sd15")
    with pytest.raises(ValueError, match="multiples of 16"):
        latents.time_unet_step(tiny_pipe, 72, 64, repeats=1)


def test_error_map_is_mean_abs_difference_in_unit_range():
    a = torch.zeros(1, 3, 4, 4)
    b = a.clone()
    b[0, :, 1, 2] = 1.0  # one pixel off by half the range in every channel
    b[0, 0, 3, 3] = -2.0  # one channel off by the whole range
    m = latents.error_map(a, b)
    assert m.shape == (1, 4, 4)
    assert float(m[0, 1, 2]) == pytest.approx(0.5)
    assert float(m[0, 3, 3]) == pytest.approx(1 / 3)
    assert float(m.sum()) == pytest.approx(0.5 + 1 / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        latents.error_map(a, torch.zeros(1, 3, 4, 5))


def test_reconstruct_round_trip(tiny_pipe):
    scenes = world.batch(3, seed=2)["images"]
    rec = latents.reconstruct(tiny_pipe, scenes)
    assert len(rec) == 3
    assert rec.latent.shape == (3, 4, 8, 8)
    assert rec.reconstruction.shape == scenes.shape
    assert rec.error_map.shape == (3, 64, 64)
    assert rec.mean_abs_error == pytest.approx(float(rec.error_map.mean()))
    assert float(rec.reconstruction.min()) >= -1 and float(rec.reconstruction.max()) <= 1
    # the same images as PIL pictures give the same round trip
    pictures = [world.render(s)[0] for s in world.batch(3, seed=2)["scenes"]]
    again = latents.reconstruct(tiny_pipe, pictures)
    torch.testing.assert_close(again.latent, rec.latent, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="multiple of the VAE factor"):
        latents.reconstruct(tiny_pipe, torch.zeros(1, 3, 60, 64))


def test_resolution_ladder_and_timing(tiny_pipe):
    sides = latents.resolution_ladder(tiny_pipe)
    assert sides == sorted(set(sides)) and 64 in sides
    assert all(s % 16 == 0 for s in sides)
    seconds = latents.time_unet_step(tiny_pipe, 32, 32, repeats=1)
    assert 0 < seconds < 10


def test_resolution_sweep_and_explorer(tiny_pipe):
    results = latents.resolution_sweep(tiny_pipe, [32, 64], prompt="a red cat", steps=2, cfg=2.0, repeats=1)
    assert [r.geometry.latent_shape for r in results] == [(4, 4, 4), (4, 8, 8)]
    assert results[0].image.shape == (32, 32, 3) and results[1].image.shape == (64, 64, 3)
    assert "4×8×8" in results[1].label and "ms per step" in results[1].label
    view = widgets.ResolutionExplorer(results)
    assert view.slider.value == 1  # the middle entry
    view.slider.value = 0
    assert "32×32 px" in view.readout.value
    shown = view.image.value
    from sdexplain.images import decode_image

    assert decode_image(shown).shape[0] * 2 == decode_image(view.frames[1]).shape[0]  # true relative size
    assert not view.errors

"""sdexplain.images: conversions, bytes, uploads, latent pictures, overlays."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from sdexplain import images


def _bytes(picture: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=format)
    return buffer.getvalue()


# --------------------------------------------------------------------------- to_uint8 / bytes


def test_to_uint8_from_tensor_in_minus_one_one():
    t = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 4).expand(3, 1, 4)  # (3, 1, 4)
    out = images.to_uint8(t)
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 128, 255, 255]  # clipped above 1


def test_to_uint8_batches_and_ranges():
    batch = torch.zeros(2, 3, 5, 6)
    assert images.to_uint8(batch).shape == (2, 5, 6, 3)
    assert images.to_uint8(torch.zeros(1, 3, 5, 6)).shape == (5, 6, 3)  # batch of one is one image
    floats = np.full((4, 4, 3), 0.5, dtype=np.float32)
    assert images.to_uint8(floats)[0, 0, 0] == 128
    assert images.to_uint8(torch.ones(3, 2, 2), value_range=(0, 1))[0, 0, 0] == 255
    grey = np.arange(4, dtype=np.uint8).reshape(2, 2)
    assert images.to_uint8(grey).shape == (2, 2, 3)
    assert images.to_uint8(Image.new("L", (3, 2), 7)).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="image tensor"):
        images.to_uint8(torch.zeros(3, 4))


def test_png_round_trip_is_exact_and_jpeg_is_close():
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    assert np.array_equal(images.decode_image(images.encode_png(picture)), picture)
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    back = images.decode_image(images.encode_jpeg(smooth, quality=95))
    assert np.abs(back.astype(int) - smooth).mean() < 3
    assert images.encode(picture, "jpeg")[:2] == b"\xff\xd8"
    with pytest.raises(ValueError, match="format"):
        images.encode(picture, "gif")


def test_pil_to_tensor_inverts_to_uint8():
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    tensor = images.pil_to_tensor(picture)
    assert tensor.shape == (1, 3, 8, 8) and tensor.min() >= -1 and tensor.max() <= 1
    assert np.array_equal(images.to_uint8(tensor), np.asarray(picture))


def test_zoom_is_nearest_neighbour():
    a = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    z = images.zoom(a, 3)
    assert z.shape == (6, 6, 3)
    assert np.array_equal(z[::3, ::3], a)
    assert images.zoom_for(64, 256) == 4 and images.zoom_for(512, 256) == 1 and images.zoom_for(100, 256) == 3


# --------------------------------------------------------------------------- uploads


def test_upload_rgba_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[1, 1] = (0, 0, 255, 0)  # fully transparent blue
    out = images.image_from_bytes(_bytes(Image.fromarray(rgba, "RGBA")))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((1, 1)) == (255, 255, 255)


def test_upload_grey_and_palette_become_rgb():
    grey = images.image_from_bytes(_bytes(Image.new("L", (5, 5), 90)))
    assert grey.mode == "RGB" and grey.getpixel((2, 2)) == (90, 90, 90)
    palette = Image.new("RGB", (5, 5), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert images.image_from_bytes(_bytes(palette)).getpixel((0, 0)) == (10, 200, 30)
    jpeg = images.image_from_bytes(_bytes(Image.new("RGB", (8, 8), (0, 128, 255)), "JPEG"))
    assert jpeg.mode == "RGB"


def test_upload_other_modes_and_garbage_are_refused_clearly():
    cmyk = Image.new("CMYK", (4, 4), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="mode 'CMYK' is not supported"):
        images.image_from_bytes(_bytes(cmyk, "JPEG"))
    sixteen = Image.fromarray(np.full((4, 4), 1000, dtype=np.uint16))
    with pytest.raises(ValueError, match="not supported"):
        images.image_from_bytes(_bytes(sixteen))
    with pytest.raises(ValueError, match="could not read the upload as an image"):
        images.image_from_bytes(b"this is not a picture")


def test_fit_to_model_crops_the_centre_then_resizes():
    wide = np.zeros((100, 300, 3), dtype=np.uint8)
    wide[:, :100] = (255, 0, 0)
    wide[:, 100:200] = (0, 255, 0)
    wide[:, 200:] = (0, 0, 255)
    out = images.fit_to_model(Image.fromarray(wide), (64, 64))
    assert out.size == (64, 64)
    array = np.asarray(out)
    assert (array[:, 2:-2, 1] > 200).all() and (array[:, 2:-2, 0] < 50).all()  # only the green middle survives
    tall = images.fit_to_model(Image.new("RGB", (50, 200)), (32, 64))  # (height, width)
    assert tall.size == (64, 32)


def test_model_image_size(tiny_pipe):
    assert images.model_image_size(tiny_pipe) == (64, 64)


# --------------------------------------------------------------------------- latents


def test_latent_channels_grid_layout_and_shared_scale():
    latent = torch.stack([torch.full((3, 3), v) for v in (-2.0, -1.0, 1.0, 2.0)])  # (4, 3, 3)
    grid = images.latent_channels_grid(latent, pad=1)  # vmax = 2
    assert grid.shape == (7, 7, 3)
    expected = {(0, 0): 0, (0, 4): 64, (4, 0): 191, (4, 4): 255}  # top-left pixel of each quadrant
    for (r, c), value in expected.items():
        assert grid[r, c, 0] == value, (r, c)
    assert (grid[3, :, :] == 255).all() and (grid[:, 3, :] == 255).all()  # white gaps
    fixed = images.latent_channels_grid(latent[None], vmax=4.0, zoom_factor=2, pad=2)
    assert fixed.shape == (14, 14, 3)
    assert fixed[0, 0, 0] == 64  # -2 on a ±4 scale
    with pytest.raises(ValueError, match="latent"):
        images.latent_channels_grid(torch.zeros(3, 3))


def test_colormap_and_nan_gaps():
    values = np.array([[0.0, 1.0], [np.nan, 0.5]], dtype=np.float32)
    out = images.colormap(values, 0.0, 1.0, "gray")
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == [255, 255, 255]
    assert out[1, 0].tolist() == [255, 255, 255]  # NaN -> white


def test_vae_round_trip_shapes(tiny_pipe):
    x = torch.zeros(2, 3, 64, 64)
    z = images.vae_encode(tiny_pipe.vae, x)
    assert z.shape == (2, 4, 8, 8)
    back = images.vae_decode(tiny_pipe.vae, z, pixel_budget=64 * 64)  # one image per call
    assert back.shape == (2, 3, 64, 64) and back.min() >= -1 and back.max() <= 1


def test_vae_batch_size_by_pixels_on_cuda_only():
    budget = images.VAE_PIXEL_BUDGET_CUDA
    assert images.vae_batch_size("cuda", 512, 512) == budget // (512 * 512) == 4
    assert images.vae_batch_size(torch.device("cuda:0"), 64, 64) == budget // (64 * 64)
    assert images.vae_batch_size("cuda", 2048, 2048) == 1  # one image even when it alone exceeds the budget
    assert images.vae_batch_size("cpu", 512, 512) == images.VAE_BATCH_ELSEWHERE
    assert images.vae_batch_size("cpu", 64, 64, pixel_budget=3 * 64 * 64) == 3
    with pytest.raises(ValueError, match="pixel_budget"):
        images.vae_batch_size("cuda", 64, 64, pixel_budget=0)


def _record_vae_calls(monkeypatch, vae):
    """Count the pixels of every real encode/decode call of `vae` (the calls still run)."""
    calls = []
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    encode, decode = vae.encode, vae.decode
    monkeypatch.setattr(vae, "encode", lambda x, *a, **k: calls.append(("encode", x.shape[0] * x.shape[-2] * x.shape[-1])) or encode(x, *a, **k))
    monkeypatch.setattr(vae, "decode", lambda z, *a, **k: calls.append(("decode", z.shape[0] * z.shape[-2] * z.shape[-1] * factor**2)) or decode(z, *a, **k))
    return calls


def test_vae_calls_stay_within_a_cuda_pixel_budget(tiny_pipe, monkeypatch):
    """On a (fake) CUDA budget of 3 images of 64², 7 images go 3 + 3 + 1 per call, and the results equal one big call."""
    vae = tiny_pipe.vae
    x = torch.rand(7, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    whole_z = images.vae_encode(vae, x, pixel_budget=10**9)
    whole_x = images.vae_decode(vae, whole_z, pixel_budget=10**9)
    calls = _record_vae_calls(monkeypatch, vae)
    monkeypatch.setattr(images, "VAE_PIXEL_BUDGET_CUDA", 3 * 64 * 64)
    real_batch_size = images.vae_batch_size
    monkeypatch.setattr(images, "vae_batch_size", lambda device, h, w, budget=None: real_batch_size("cuda", h, w, budget))  # as if on CUDA
    z = images.vae_encode(vae, x)
    back = images.vae_decode(vae, z)
    assert [kind for kind, _ in calls] == ["encode"] * 3 + ["decode"] * 3
    assert [pixels for _, pixels in calls] == [3 * 64 * 64, 3 * 64 * 64, 64 * 64] * 2
    assert max(pixels for _, pixels in calls) <= images.VAE_PIXEL_BUDGET_CUDA
    torch.testing.assert_close(z, whole_z, atol=1e-4, rtol=1e-4)  # batch size changes float rounding only
    torch.testing.assert_close(back, whole_x, atol=1e-4, rtol=1e-4)


def test_overlay_heatmap_puts_the_hot_spot_where_the_map_is():
    base = np.full((32, 32, 3), 100, dtype=np.uint8)
    heat = np.zeros((4, 4), dtype=np.float32)
    heat[0, 0] = 1.0
    assert np.array_equal(images.overlay_heatmap(base, heat, alpha=0.0), base)
    full = images.overlay_heatmap(base, heat, alpha=1.0, cmap="gray")
    assert full[0, 0, 0] > 200 and full[-1, -1, 0] == 0  # hot top-left, cold elsewhere
    half = images.overlay_heatmap(base, heat, alpha=0.5, cmap="gray")
    assert half[-1, -1, 0] == 50
    flat = images.overlay_heatmap(base, np.ones((4, 4)), alpha=1.0, cmap="gray")  # no contrast: all cold
    assert (flat == 0).all()


def test_hstack_pads_between_images():
    a, b = np.zeros((4, 2, 3), np.uint8), np.zeros((3, 5, 3), np.uint8)
    out = images.hstack([a, b], pad=3)
    assert out.shape == (4, 10, 3)
    assert (out[:, 2:5] == 255).all() and (out[3, 5:] == 255).all()

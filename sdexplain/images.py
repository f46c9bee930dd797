"""Image conversions for the explainer: tensors, arrays and PIL images to bytes a widget can show.

What it is for:
- one canonical display type, ``uint8`` RGB arrays ``(H, W, 3)``, and converters into it from
  what the model and the reader hand us (``to_uint8``), and out of it to PNG/JPEG bytes for a
  ``widgets.Image`` (``encode_png``, ``encode_jpeg``) and back (``decode_image``, for tests);
- pictures of latents: the 4 channels as a 2×2 grid of grey images (``latent_channels_grid``) and
  a cheap latent → RGB preview (``latent_to_rgb``) that is labelled APPROXIMATE everywhere it is
  shown — it is a per-pixel linear map fitted to the VAE (``sdexplain.latents.fit_latent_rgb``), not a decode;
- the reader's uploads: bytes → RGB PIL image (``image_from_bytes``) and resizing to the size the
  model works at (``fit_to_model``, ``model_image_size``), VAE encode/decode helpers.
- cheap colour-mapping of a 2-D array and heat-map overlays (``colormap``, ``overlay_heatmap``),
  so widgets never need matplotlib inside a slider callback.

What it is not: plotting (``sdexplain.plots``), widgets (``sdexplain.widgets``), or diffusion
maths (``sdexplain.diffusion``).

Conventions: torch image tensors are channels-first in [-1, 1] (what diffusers' VAE reads and
writes); float numpy arrays are channels-last in [0, 1] (what matplotlib shows); uint8 arrays are
channels-last in [0, 255]. Latents are in the U-Net's space (already multiplied by the VAE's
``scaling_factor``), as they are in a trace.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

# Modes we convert to RGB; anything else (CMYK, 16-bit, float, ...) is refused: converting them
# without colour management or tone mapping gives a wrong picture silently.
ACCEPTED_MODES = ("RGB", "RGBA", "L", "LA", "P")


# --------------------------------------------------------------------------- to uint8 arrays


def to_uint8(image, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Anything image-like -> uint8 array (H, W, 3), or (B, H, W, 3) for a batch.

    Accepts a PIL image; a torch tensor (3, H, W) / (B, 3, H, W) / (1, 3, H, W), by default in
    [-1, 1]; a float numpy array (H, W, 3) / (B, H, W, 3) / (H, W), by default in [0, 1]; or a
    uint8 numpy array (returned as is, grey (H, W) expanded to RGB). ``value_range`` overrides the
    float range. Values outside the range are clipped.
    """
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        array = image.detach().to("cpu", torch.float32)
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if array.ndim == 3:
            array = array.permute(1, 2, 0)  # (H, W, C)
        elif array.ndim == 4:
            array = array.permute(0, 2, 3, 1)  # (B, H, W, C)
        else:
            raise ValueError(f"expected an image tensor (3, H, W) or (B, 3, H, W), got shape {tuple(image.shape)}")
        lo, hi = value_range or (-1.0, 1.0)
        array = array.numpy()
    else:
        array = np.asarray(image)
        if array.dtype == np.uint8:
            return _to_rgb(array)
        if array.dtype == bool:
            array = array.astype(np.float32)
        lo, hi = value_range or (0.0, 1.0)
    scaled = (array.astype(np.float32) - lo) / (hi - lo)
    return _to_rgb(np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8))


def _to_rgb(array: np.ndarray) -> np.ndarray:
    """Grey (H, W) / (H, W, 1) -> (H, W, 3); RGBA -> RGB (alpha dropped); RGB unchanged."""
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    if array.shape[-1] == 4:
        return np.ascontiguousarray(array[..., :3])
    if array.shape[-1] != 3:
        raise ValueError(f"expected channels-last RGB, got shape {array.shape}")
    return array


def to_pil(image, value_range: tuple[float, float] | None = None) -> Image.Image:
    """Anything ``to_uint8`` accepts (one image) -> RGB PIL image."""
    array = to_uint8(image, value_range)
    if array.ndim != 3:
        raise ValueError(f"expected one image, got a batch of shape {array.shape}")
    return Image.fromarray(array)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor (1, 3, H, W) in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1)[None].div(127.5).sub(1.0)


def zoom(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor: (H, W, C) -> (H·f, W·f, C). Pixels stay crisp."""
    if factor <= 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def zoom_for(size: int, target: int = 256) -> int:
    """The integer zoom that brings an edge of ``size`` pixels to at least ``target`` (1 if already there)."""
    return max(1, -(-target // max(1, size)))


# --------------------------------------------------------------------------- bytes


def encode_png(image, compress_level: int = 1) -> bytes:
    """Image -> PNG bytes (lossless; level 1 is fast, which matters in slider callbacks)."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def encode_jpeg(image, quality: int = 90) -> bytes:
    """Image -> JPEG bytes (lossy, ~10× faster than PNG on big noisy pictures).

    No chroma subsampling (4:4:4): colour-mapped noise, one colour per pixel block, stays within a
    few levels instead of smearing.
    """
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def encode(image, format: str = "png") -> bytes:
    """Image -> bytes in ``format`` ('png' or 'jpeg')."""
    if format == "png":
        return encode_png(image)
    if format in ("jpeg", "jpg"):
        return encode_jpeg(image)
    raise ValueError(f"unknown image format {format!r}; allowed: png, jpeg")


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 array (H, W, 3). The inverse of ``encode_png`` (exactly)."""
    with Image.open(io.BytesIO(bytes(data))) as image:
        return np.asarray(image.convert("RGB")).copy()


def image_from_bytes(data: bytes, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """The bytes of an uploaded file -> RGB PIL image.

    RGBA/LA/P (with transparency) are composited onto ``background``; L (grey) is expanded to RGB.
    Other modes (CMYK, 16-bit, float, ...) are refused with a ValueError that says what to do, as
    are bytes that are not an image.
    """
    try:
        image = Image.open(io.BytesIO(bytes(data)))
        image.load()
    except Exception as error:  # PIL raises several types for unreadable bytes
        raise ValueError(f"could not read the upload as an image ({type(error).__name__}: {error}); use a PNG or JPEG file") from error
    if image.mode not in ACCEPTED_MODES:
        raise ValueError(
            f"image mode {image.mode!r} is not supported (accepted: {', '.join(ACCEPTED_MODES)}); "
            "save the picture as an 8-bit RGB PNG or JPEG and upload it again"
        )
    if image.mode == "RGB":
        return image
    if image.mode == "L":
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    flat = Image.new("RGBA", rgba.size, background + (255,))
    return Image.alpha_composite(flat, rgba).convert("RGB")


# --------------------------------------------------------------------------- model size


def model_image_size(pipe) -> tuple[int, int]:
    """(height, width) in pixels that a diffusers SD pipeline generates by default."""
    size = pipe.unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return height * pipe.vae_scale_factor, width * pipe.vae_scale_factor


def fit_to_model(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop ``image`` to the aspect ratio of ``size`` (height, width), then resize to it."""
    height, width = size
    image = image.convert("RGB")
    w, h = image.size
    target_ratio = width / height
    if w / h > target_ratio:  # too wide: crop the sides
        new_w = round(h * target_ratio)
        left = (w - new_w) // 2
        image = image.crop((left, 0, left + new_w, h))
    elif w / h < target_ratio:  # too tall: crop top and bottom
        new_h = round(w / target_ratio)
        top = (h - new_h) // 2
        image = image.crop((0, top, w, top + new_h))
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image


# --------------------------------------------------------------------------- VAE


def _scaling(vae) -> tuple[float, float]:
    scale = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    return scale, shift


# Pixels per VAE call on CUDA. The VAE's activations grow with the pixels of the batch, not with the
# latent: SD's VAE in float16 needs roughly 0.3 GB (encode) to 0.8 GB (decode) per 512×512 image, so
# 32 images of 512² in one call would need ~10 GB, more than a 16 GB T4 has left beside the model.
# Four 512² images per call keep a call near 3 GB; the toy's 64² images still go 256 at a time.
VAE_PIXEL_BUDGET_CUDA = 4 * 512 * 512
VAE_BATCH_ELSEWHERE = 16  # CPU and MPS: host memory; the batch only needs to be bounded


def vae_batch_size(device, height: int, width: int, pixel_budget: int | None = None) -> int:
    """Images per VAE encode/decode call for images of height×width pixels on `device`.

    On CUDA the batch is sized by pixel count (`pixel_budget`, default VAE_PIXEL_BUDGET_CUDA), so
    peak memory per call stays bounded whatever the resolution; at least one image per call.
    Elsewhere VAE_BATCH_ELSEWHERE images, unless a `pixel_budget` is given.
    """
    if pixel_budget is None:
        if torch.device(device).type != "cuda":
            return VAE_BATCH_ELSEWHERE
        pixel_budget = VAE_PIXEL_BUDGET_CUDA
    if pixel_budget < 1:
        raise ValueError(f"pixel_budget must be a positive number of pixels, got {pixel_budget}")
    return max(1, pixel_budget // (height * width))


def _vae_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


@torch.no_grad()
def vae_encode(vae, images: torch.Tensor, pixel_budget: int | None = None) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] -> latents (B, 4, H/8, W/8) in the U-Net's space.

    Uses the mean of the VAE's posterior (not a sample), so the same image always gives the same latent.
    Encoded in batches of `vae_batch_size` images (bounded by pixel count on CUDA).
    """
    scale, shift = _scaling(vae)
    out = []
    for chunk in torch.split(images, vae_batch_size(vae.device, *images.shape[-2:], pixel_budget)):
        posterior = vae.encode(chunk.to(vae.device, vae.dtype)).latent_dist
        out.append(((posterior.mean - shift) * scale).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def vae_decode(vae, latents: torch.Tensor, pixel_budget: int | None = None) -> torch.Tensor:
    """Latents (B, 4, h, w) in the U-Net's space -> images (B, 3, 8h, 8w) in [-1, 1].

    Decoded in batches of `vae_batch_size` images (bounded by pixel count on CUDA).
    """
    scale, shift = _scaling(vae)
    factor = _vae_factor(vae)
    out = []
    for chunk in torch.split(latents, vae_batch_size(vae.device, latents.shape[-2] * factor, latents.shape[-1] * factor, pixel_budget)):
        z = chunk.to(vae.device, vae.dtype) / scale + shift
        out.append(vae.decode(z).sample.float().clamp(-1, 1).cpu())
    return torch.cat(out)


# --------------------------------------------------------------------------- latents as pictures


def latent_array(latent) -> np.ndarray:
    """One latent-shaped tensor/array (C, h, w) or (1, C, h, w) -> float32 numpy (C, h, w)."""
    z = latent.detach().float().cpu().numpy() if isinstance(latent, torch.Tensor) else np.asarray(latent, dtype=np.float32)
    if z.ndim == 4 and z.shape[0] == 1:
        z = z[0]
    if z.ndim != 3:
        raise ValueError(f"expected a latent (C, h, w), got shape {z.shape}")
    return z


def channel_mosaic(latent, pad: int = 1) -> np.ndarray:
    """The channels of one latent (C, h, w) tiled into one float32 2-D array, NaN in the gaps.

    4 channels make a 2×2 mosaic (channel 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right);
    other counts make one row. Shape (rows·h + (rows−1)·pad, cols·w + (cols−1)·pad).
    """
    z = latent_array(latent)
    channels, h, w = z.shape
    cols = 2 if channels == 4 else channels
    rows = -(-channels // cols)
    canvas = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad), np.nan, dtype=np.float32)
    for c in range(channels):
        r, k = divmod(c, cols)
        canvas[r * (h + pad) : r * (h + pad) + h, k * (w + pad) : k * (w + pad) + w] = z[c]
    return canvas


def latent_channels_grid(latent, vmax: float | None = None, pad: int = 1, zoom_factor: int = 1, cmap: str = "gray") -> np.ndarray:
    """The channels of one latent (C, h, w) as a mosaic of images -> uint8 (rows·h·z + gaps, cols·w·z + gaps, 3).

    4 channels give a 2×2 grid (see ``channel_mosaic``), separated by white gaps. All channels
    share one symmetric scale: the middle of ``cmap`` (mid-grey for "gray") is 0, the top is +vmax,
    the bottom −vmax (default vmax: the largest |value|), so channels can be compared. Pass a fixed
    ``vmax`` to compare frames (e.g. along a t slider). A (1, C, h, w) batch of one is accepted.
    """
    z = latent_array(latent)  # (C, h, w)
    if zoom_factor > 1:
        z = np.repeat(np.repeat(z, zoom_factor, axis=1), zoom_factor, axis=2)  # (C, h·z, w·z)
    mosaic = channel_mosaic(z, pad)
    if vmax is None:
        vmax = float(np.nanmax(np.abs(mosaic))) or 1.0
    return colormap(mosaic, -vmax, vmax, cmap)


def latent_to_rgb(latent, projection: torch.Tensor, zoom_factor: int = 1) -> np.ndarray:
    """APPROXIMATE colour preview of one latent (C, h, w) -> uint8 (h·z, w·z, 3), via ``sdexplain.latents.fit_latent_rgb``'s matrix.

    One pixel per latent pixel (8× smaller than the decode) and blurrier colours; costs microseconds.
    """
    z = torch.from_numpy(latent_array(latent))
    flat = torch.cat([z.permute(1, 2, 0), torch.ones(*z.shape[1:], 1)], dim=2)  # (h, w, C+1)
    rgb = flat @ projection  # (h, w, 3) in ~[-1, 1]
    return zoom(to_uint8(rgb.numpy(), value_range=(-1.0, 1.0)), zoom_factor)


# --------------------------------------------------------------------------- colour maps and overlays


@lru_cache(maxsize=16)
def _lut(name: str) -> np.ndarray:
    """A matplotlib colour map as a uint8 look-up table (256, 3). No pyplot involved."""
    import matplotlib

    return np.round(matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def colormap(values, vmin: float, vmax: float, cmap: str = "magma") -> np.ndarray:
    """A 2-D array (h, w) -> uint8 RGB (h, w, 3) through a matplotlib colour map, clipped to [vmin, vmax].

    NaN (e.g. the gaps of ``channel_mosaic``) becomes white.
    """
    values = np.asarray(values, dtype=np.float32)
    missing = np.isnan(values)
    span = (vmax - vmin) or 1.0
    index = np.round(np.clip((np.where(missing, vmin, values) - vmin) / span, 0.0, 1.0) * 255).astype(np.uint8)
    coloured = _lut(cmap)[index]  # (h, w, 3)
    if missing.any():
        coloured[missing] = 255
    return coloured


def upsample_map(heat, size: tuple[int, int]) -> np.ndarray:
    """A small 2-D map (h, w) -> float32 (H, W) by bilinear interpolation (size is (H, W))."""
    heat = np.asarray(heat.detach().float().cpu() if isinstance(heat, torch.Tensor) else heat, dtype=np.float32)
    height, width = size
    if heat.shape == (height, width):
        return heat
    return np.asarray(Image.fromarray(np.ascontiguousarray(heat)).resize((width, height), Image.Resampling.BILINEAR))


def overlay_heatmap(image, heat, alpha: float = 0.6, cmap: str = "jet", normalize: bool = True) -> np.ndarray:
    """A heat map (h, w) upsampled onto an image -> uint8 (H, W, 3): image·(1−α) + colour(heat)·α.

    With ``normalize`` the map is scaled to [0, 1] by its own min and max (where the attention goes,
    not how much); otherwise it is shown as is, clipped to [0, 1].
    """
    base = to_uint8(image)  # (H, W, 3)
    heat = upsample_map(heat, base.shape[:2])
    if normalize:
        lo, hi = float(heat.min()), float(heat.max())
        heat = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    coloured = colormap(heat, 0.0, 1.0, cmap)
    blended = base.astype(np.float32) * (1.0 - alpha) + coloured.astype(np.float32) * alpha
    return np.round(blended).astype(np.uint8)


def hstack(images: list[np.ndarray], pad: int = 4, fill: int = 255) -> np.ndarray:
    """uint8 images (H, W_i, 3) of one height side by side with ``pad`` pixels of ``fill`` between."""
    height = max(im.shape[0] for im in images)
    parts = []
    for i, im in enumerate(images):
        if im.shape[0] != height:
            im = np.pad(im, ((0, height - im.shape[0]), (0, 0), (0, 0)), constant_values=fill)
        if i:
            parts.append(np.full((height, pad, 3), fill, dtype=np.uint8))
        parts.append(im)
    return np.concatenate(parts, axis=1)

"""Latent space, measured: how big pixel space is, how much the VAE compresses, what it loses, what size costs.

    geo = latent_geometry(pipe)                     # or latent_geometry(ARCHITECTURES["sd15"], 768, 512)
    geo.pixel_numbers, geo.latent_shape, geo.compression     # 786432, (4, 64, 64), 48.0 for SD 1.5
    rec = reconstruct(pipe, images)                 # encode → decode, error per pixel
    sweep = resolution_sweep(pipe, resolution_ladder(pipe), prompt="a red cat")   # images + seconds per step
    widgets.ResolutionExplorer(sweep)               # a slider over the measured resolutions

Everything is read from the model's own configs (the VAE's number of levels gives its factor,
its `latent_channels` the depth of the latent) or measured on the loaded model; nothing is typed in.

What it is not: the VAE helpers themselves (`sdexplain.images.vae_encode` / `vae_decode`, used
here), plotting (`sdexplain.plots`).
"""

from __future__ import annotations

import numbers
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sdexplain import images
from sdexplain.i18n import t
from sdexplain.unet_inputs import placeholder_extra
from sdexplain.toy import world


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class LatentGeometry:
    """An image size and the latent the model works on for it."""

    height: int  # pixels
    width: int
    image_channels: int  # 3 (RGB)
    latent_channels: int  # 4 for SD
    factor: int  # pixels per latent cell along each side (8 for SD)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.height // self.factor, self.width // self.factor)

    @property
    def pixel_numbers(self) -> int:
        """How many numbers describe the image: H × W × 3."""
        return self.height * self.width * self.image_channels

    @property
    def latent_numbers(self) -> int:
        """How many numbers describe its latent: C × H/f × W/f."""
        c, h, w = self.latent_shape
        return c * h * w

    @property
    def compression(self) -> float:
        """pixel_numbers / latent_numbers (48 for SD: 3·8·8 / 4)."""
        return self.pixel_numbers / self.latent_numbers


def _configs(source) -> tuple[Mapping, Mapping]:
    """(vae config, unet config) of a pipeline or of an `sdexplain.architectures.ARCHITECTURES` entry."""
    if isinstance(source, Mapping):
        if "vae" not in source or "unet" not in source:
            raise ValueError("an architecture dict needs 'vae' and 'unet' configs (see sdexplain.architectures.ARCHITECTURES)")
        return source["vae"], source["unet"]
    if hasattr(source, "vae") and hasattr(source, "unet"):
        return source.vae.config, source.unet.config
    raise TypeError(f"expected a Stable Diffusion pipeline or an ARCHITECTURES entry, got {type(source).__name__}")


def _get(config, key: str, default=None):
    return config.get(key, default) if isinstance(config, Mapping) else getattr(config, key, default)


def vae_factor(source) -> int:
    """Pixels per latent cell along each side: a pipeline's own `vae_scale_factor` (diffusers'), or for an
    ARCHITECTURES entry the same formula on its VAE config: 2 ** (number of VAE levels − 1)."""
    if hasattr(source, "vae_scale_factor"):
        return int(source.vae_scale_factor)
    vae, _ = _configs(source)
    return 2 ** (len(_get(vae, "block_out_channels")) - 1)


def size_multiple(source) -> int:
    """Image sides must be multiples of this: the VAE factor × the U-Net's own downsampling (2 per extra level)."""
    _, unet = _configs(source)
    return vae_factor(source) * 2 ** (len(_get(unet, "block_out_channels")) - 1)


def default_size(source) -> tuple[int, int]:
    """(height, width) the model was trained at: the U-Net's sample_size × the VAE factor."""
    _, unet = _configs(source)
    size = _get(unet, "sample_size")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return h * vae_factor(source), w * vae_factor(source)


def latent_geometry(source, height: int | None = None, width: int | None = None) -> LatentGeometry:
    """The image → latent geometry of a pipeline (or ARCHITECTURES entry) at height × width (default: its own size)."""
    vae, _ = _configs(source)
    factor = vae_factor(source)
    default_h, default_w = default_size(source)
    height = default_h if height is None else height
    width = default_w if width is None else width
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < factor or value % factor:
            raise ValueError(f"{name} must be a positive multiple of the VAE factor {factor}, got {value!r}")
    return LatentGeometry(int(height), int(width), int(_get(vae, "in_channels", 3)), int(_get(vae, "latent_channels")), factor)


# --------------------------------------------------------------------------- reconstruction


@dataclass
class Reconstruction:
    """A VAE round trip of a batch: what went in, the latent, what came out, and where it differs."""

    original: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    latent: torch.Tensor  # (B, C, h, w) in the U-Net's space (scaled)
    reconstruction: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    error_map: torch.Tensor  # (B, H, W) mean |original − reconstruction| over RGB, in [0, 1] image units
    mean_abs_error: float  # mean of error_map (0 = perfect; 1 = the whole range)
    psnr_db: float  # 10·log10(1 / MSE) on [0, 1] images

    def __len__(self) -> int:
        return len(self.original)


def error_map(original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Per-pixel error (B, H, W): mean over the colour channels of |a − b|, in [0, 1] image units.

    Both inputs (B, 3, H, W) in [-1, 1] (diffusers' convention), so the difference is halved.
    """
    if original.shape != reconstruction.shape:
        raise ValueError(f"shapes differ: {tuple(original.shape)} vs {tuple(reconstruction.shape)}")
    return (original.float() - reconstruction.float()).abs().mean(dim=1) / 2  # (B, H, W)


@torch.no_grad()
def reconstruct(pipe, pictures) -> Reconstruction:
    """Encode (posterior mean) and decode images with the pipeline's VAE; measure the error.

    `pictures`: a tensor (B, 3, H, W) in [-1, 1], or a list of PIL images / uint8 arrays of one size.
    """
    x = _as_batch(pictures)  # (B, 3, H, W)
    factor = vae_factor(pipe)
    if x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the VAE factor {factor}; resize it first")
    latent = images.vae_encode(pipe.vae, x)  # (B, C, h, w)
    out = images.vae_decode(pipe.vae, latent)  # (B, 3, H, W)
    errors = error_map(x, out)
    mse = float(((x - out) / 2).pow(2).mean())
    return Reconstruction(x, latent, out, errors, float(errors.mean()), 10 * float(np.log10(1.0 / max(mse, 1e-12))))


def _as_batch(pictures) -> torch.Tensor:
    if isinstance(pictures, torch.Tensor):
        if pictures.dim() == 3:
            pictures = pictures[None]
        if pictures.dim() != 4 or pictures.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W) in [-1, 1], got shape {tuple(pictures.shape)}")
        return pictures.float().cpu()
    if not isinstance(pictures, (list, tuple)) or not pictures:
        raise TypeError("pictures must be a tensor (B, 3, H, W) or a non-empty list of PIL images / uint8 arrays")
    arrays = [images.to_uint8(p) for p in pictures]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"all pictures must have one size, got {sorted({a.shape for a in arrays})}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


# --------------------------------------------------------------------------- a cheap colour preview of latents


# A weak cache so each VAE's projection is fitted once per session.
_PROJECTIONS: "weakref.WeakKeyDictionary[object, torch.Tensor]" = weakref.WeakKeyDictionary()


@torch.no_grad()
def fit_latent_rgb(vae, n: int = 48, seed: int = 12345) -> torch.Tensor:
    """Fit the cheap latent → RGB preview: a (C+1, 3) matrix P with rgb ≈ [z, 1] @ P per latent pixel.

    Least squares over toy-world scenes: encode ``n`` of them, and pair every latent pixel with the
    average colour of the 8×8 block of pixels it covers. Works for any VAE with factor 8. Cached per
    VAE. The result is an APPROXIMATION of a decode; say so wherever it is shown.
    """
    if vae in _PROJECTIONS:
        return _PROJECTIONS[vae]
    pictures = world.batch(n, seed)["images"]  # (n, 3, 64, 64) in [-1, 1]
    latents = images.vae_encode(vae, pictures)  # (n, C, 8, 8)
    factor = pictures.shape[-1] // latents.shape[-1]
    target = torch.nn.functional.avg_pool2d(pictures, factor)  # (n, 3, 8, 8)
    z = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])  # (n·64, C)
    z = torch.cat([z, torch.ones(len(z), 1)], dim=1)  # (n·64, C+1)
    rgb = target.permute(0, 2, 3, 1).reshape(-1, 3)  # (n·64, 3)
    projection = torch.linalg.lstsq(z.double(), rgb.double()).solution.float()  # (C+1, 3)
    _PROJECTIONS[vae] = projection
    return projection


# --------------------------------------------------------------------------- cost of resolution


def resolution_ladder(pipe, scales: Sequence[float] = (0.5, 0.75, 1.0, 1.5, 2.0)) -> list[int]:
    """Square image sides around the model's own size (× each scale), rounded to `size_multiple`, distinct."""
    native = default_size(pipe)[0]
    multiple = size_multiple(pipe)
    sides = sorted({max(multiple, int(round(native * s / multiple)) * multiple) for s in scales})
    return sides


@torch.no_grad()
def time_unet_step(pipe, height: int, width: int, repeats: int = 3, guidance: bool = True) -> float:
    """Median seconds of one sampling step's U-Net work at height × width (batch 2 with CFG, as the pipeline does).

    One warm-up call first; CUDA is synchronised around each timed call.
    """
    geo = latent_geometry(pipe, height, width)
    if height % size_multiple(pipe) or width % size_multiple(pipe):
        raise ValueError(f"height and width must be multiples of {size_multiple(pipe)} for this U-Net, got {height}×{width}")
    unet = pipe.unet
    batch = 2 if guidance else 1
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn((batch, *geo.latent_shape), generator=generator).to(unet.device, unet.dtype)  # (b, C, h, w)
    width_text = unet.config.cross_attention_dim
    hidden = torch.zeros(batch, pipe.tokenizer.model_max_length, width_text, device=unet.device, dtype=unet.dtype)  # (b, 77, D)
    extra = placeholder_extra(pipe, batch, height, width)  # SDXL: zero pooled text + micro-conditioning; SD: nothing
    t = torch.tensor(500, device=unet.device)
    times = []
    for i in range(repeats + 1):
        _sync(unet.device)
        start = time.perf_counter()
        unet(latent, t, encoder_hidden_states=hidden, **extra)
        _sync(unet.device)
        if i:  # the first call warms up
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class ResolutionResult:
    """One resolution of a sweep: its geometry, the measured cost of a step, and an image made at that size."""

    geometry: LatentGeometry
    seconds_per_step: float
    image: np.ndarray | None  # uint8 (H, W, 3), or None when not generated

    @property
    def label(self) -> str:
        g = self.geometry
        c, h, w = g.latent_shape
        return t("{height}×{width} px ({pixels:,} numbers) → latent {c}×{h}×{w} ({latent:,} numbers); {ms:.1f} ms per step (measured)").format(
            height=g.height, width=g.width, pixels=g.pixel_numbers, c=c, h=h, w=w, latent=g.latent_numbers, ms=self.seconds_per_step * 1000
        )


def resolution_sweep(pipe, sides: Sequence[int], prompt: str | None = None, *, steps: int = 10, cfg: float = 7.5, seed: int = 0, repeats: int = 3) -> list[ResolutionResult]:
    """For each square side: time one sampling step's U-Net work, and (with a prompt) generate one image at that size.

    The image uses the same seed at every size; the timing is `time_unet_step` (median of `repeats`).
    """
    if not sides:
        raise ValueError("resolution_sweep needs at least one side length")
    from sdexplain.generate import generate

    results = []
    for side in sides:
        seconds = time_unet_step(pipe, side, side, repeats=repeats, guidance=cfg > 1)
        picture = None
        if prompt is not None:
            made, _ = generate(pipe, prompt, steps=steps, cfg=cfg, seed=seed, height=side, width=side, attention=False, preview_every=0)
            picture = images.to_uint8(made[0])
        results.append(ResolutionResult(latent_geometry(pipe, side, side), seconds, picture))
    return results


@dataclass
class PixelLatentCost:
    """One U-Net evaluation on pixels vs on latents, with the SAME U-Net width (`pixel_vs_latent_cost`)."""

    pixel_shape: tuple  # (3, H, W)
    latent_shape: tuple  # (C, h, w)
    parameters: int  # of the pixel U-Net (the latent one differs only in its first and last convolution)
    pixel_seconds: float  # median time of one forward pass
    latent_seconds: float

    @property
    def numbers_ratio(self) -> float:
        return float(np.prod(self.pixel_shape) / np.prod(self.latent_shape))

    @property
    def time_ratio(self) -> float:
        return self.pixel_seconds / self.latent_seconds


def pixel_vs_latent_cost(pipe, repeats: int = 5) -> PixelLatentCost:
    """Time one U-Net call on the image's pixels and on its latent, with the loaded U-Net's own architecture.

    The pixel U-Net is `pipe.unet`'s config with 3 input/output channels and the image's size (random
    weights: the cost does not depend on their values); the latent one is `pipe.unet` itself. Both get
    the same text conditioning (zeros) and timestep. Returns median seconds of `repeats` calls each.
    Meant for small models: a pixel-space SD U-Net at 512×512 would not fit a typical GPU's memory.
    """
    from diffusers import UNet2DConditionModel

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    geometry = latent_geometry(pipe)
    height, width = geometry.height, geometry.width
    config = {**dict(pipe.unet.config), "in_channels": 3, "out_channels": 3, "sample_size": max(height, width)}
    # torch's own .to(): diffusers' override warns about float32-kept modules whenever a dtype is given (this U-Net has none)
    pixel_unet = torch.nn.Module.to(UNet2DConditionModel.from_config(config), pipe.unet.device, pipe.unet.dtype).eval()
    text = torch.zeros(1, pipe.tokenizer.model_max_length, pipe.unet.config.cross_attention_dim, device=pipe.unet.device, dtype=pipe.unet.dtype)

    extra = placeholder_extra(pipe, 1, height, width)  # SDXL: zero pooled text + micro-conditioning; SD: nothing

    def median_seconds(unet, sample):
        times = []
        with torch.no_grad():
            unet(sample, 500, encoder_hidden_states=text, **extra)  # warm-up call, not timed
            for _ in range(repeats):
                start = time.perf_counter()
                unet(sample, 500, encoder_hidden_states=text, **extra)
                if sample.device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        return float(np.median(times))

    pixels = torch.randn(1, 3, height, width, device=pipe.unet.device, dtype=pipe.unet.dtype)  # (1, 3, H, W)
    latent = torch.randn(1, *geometry.latent_shape, device=pipe.unet.device, dtype=pipe.unet.dtype)  # (1, C, h, w)
    return PixelLatentCost(
        pixel_shape=(3, height, width),
        latent_shape=tuple(geometry.latent_shape),
        parameters=sum(p.numel() for p in pixel_unet.parameters()),
        pixel_seconds=median_seconds(pixel_unet, pixels),
        latent_seconds=median_seconds(pipe.unet, latent),
    )

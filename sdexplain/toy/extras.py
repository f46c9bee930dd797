"""The toy model's extras: a noisy-latent classifier (classifier guidance) and depth-to-image parts.

- `NoisyLatentClassifier`: reads the object (cat, dog, circle, …) and its colour off a NOISY latent
  x_t, told the timestep t — what classifier guidance needs (Dhariwal & Nichol 2021, "Diffusion
  Models Beat GANs", §4: the gradient ∇ log p(y | x_t) steers sampling toward the label y).
- `DepthEstimator`: image → depth map, a tiny stand-in for MiDaS (which SD 2's depth model uses).
- `make_depth_unet(unet)`: the toy U-Net with the depth map as a fifth input channel, exactly as SD 2's
  depth model (`in_channels = 5`), so diffusers' `StableDiffusionDepth2ImgPipeline` runs it.

Shipped beside the model in `sdexplain/toy/model/` (`classifier/`, `depth_estimator/`, `depth_unet/`),
trained by `python -m sdexplain.toy.train --part classifier|depth`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sdexplain.toy import world


def _save(module: nn.Module, folder: Path, name: str, config: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, folder / f"{name}.safetensors")
    (folder / f"{name}.json").write_text(json.dumps(config, indent=2))


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (B,) -> (B, dim), as in DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class NoisyLatentClassifier(nn.Module):
    """p(shape | x_t, t) and p(colour | x_t, t) for scaled toy latents x_t (B, 4, 8, 8)."""

    HEADS = {"shape": world.SHAPES, "colour": world.COLOUR_NAMES}

    def __init__(self, width: int = 64):
        super().__init__()
        self.width = width
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2 * width))
        self.conv_in = nn.Conv2d(4, width, 3, padding=1)
        self.block1 = nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1))
        self.block2 = nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, 2 * width, 3, stride=2, padding=1))  # 8 → 4
        self.block3 = nn.Sequential(nn.GroupNorm(8, 2 * width), nn.SiLU(), nn.Conv2d(2 * width, 2 * width, 3, padding=1))
        self.heads = nn.ModuleDict({name: nn.Linear(2 * width * 16, len(labels)) for name, labels in self.HEADS.items()})

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        scale, shift = self.time(timestep_embedding(t, self.width)).chunk(2, dim=-1)  # 2 × (B, w)
        h = self.conv_in(x_t)  # (B, w, 8, 8)
        h = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]  # the timestep modulates features
        h = h + self.block1(h)
        h = self.block2(h)  # (B, 2w, 4, 4)
        h = (h + self.block3(h)).flatten(1)
        return {name: head(h) for name, head in self.heads.items()}  # logits per attribute

    def save(self, folder: Path) -> None:
        _save(self, folder, "classifier", {"width": self.width, "heads": {k: list(v) for k, v in self.HEADS.items()}})

    @classmethod
    def load(cls, folder: Path) -> "NoisyLatentClassifier":
        config = json.loads((folder / "classifier.json").read_text())
        model = cls(width=config["width"])
        model.load_state_dict(load_file(folder / "classifier.safetensors"))
        return model.eval()


class DepthEstimator(nn.Module):
    """Image in [-1, 1] (B, 3, 64, 64) -> relative inverse depth ("nearness") (B, 64, 64), as MiDaS."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.width = width

        def conv(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU())

        self.down1, self.down2, self.down3 = conv(3, width), conv(width, 2 * width), conv(2 * width, 4 * width)
        self.up2, self.up1 = conv(4 * width + 2 * width, 2 * width), conv(2 * width + width, width)
        self.out = nn.Conv2d(width, 1, 1)
        self.pool, self.upsample = nn.MaxPool2d(2), nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h1 = self.down1(images)  # (B, w, 64, 64)
        h2 = self.down2(self.pool(h1))  # (B, 2w, 32, 32)
        h3 = self.down3(self.pool(h2))  # (B, 4w, 16, 16)
        u2 = self.up2(torch.cat([self.upsample(h3), h2], 1))  # (B, 2w, 32, 32)
        u1 = self.up1(torch.cat([self.upsample(u2), h1], 1))  # (B, w, 64, 64)
        return self.out(u1)[:, 0]

    def save(self, folder: Path) -> None:
        _save(self, folder, "depth_estimator", {"width": self.width})

    @classmethod
    def load(cls, folder: Path) -> "DepthEstimator":
        config = json.loads((folder / "depth_estimator.json").read_text())
        model = cls(width=config["width"])
        model.load_state_dict(load_file(folder / "depth_estimator.safetensors"))
        return model.eval()


def make_depth_unet(unet):
    """A copy of `unet` taking [latent, depth] (5 channels): the depth channel's weights start at zero,
    so before fine-tuning it behaves exactly like the text-only U-Net."""
    from diffusers import UNet2DConditionModel

    config = dict(unet.config)
    config["in_channels"] = 5
    depth_unet = UNet2DConditionModel.from_config(config)
    state = unet.state_dict()
    weight = state["conv_in.weight"]  # (C, 4, 3, 3)
    state["conv_in.weight"] = torch.cat([weight, torch.zeros_like(weight[:, :1])], dim=1)  # (C, 5, 3, 3)
    depth_unet.load_state_dict(state)
    return depth_unet


def load_depth_unet(folder: Path | None = None):
    """The shipped 5-channel depth U-Net (diffusers layout in `model_extras/depth_unet/`), loaded quietly."""
    from diffusers import UNet2DConditionModel

    from sdexplain.quiet import quiet_libraries
    from sdexplain.toy.model import EXTRAS_DIR

    with quiet_libraries():  # a few MB: no progress bar, no note that accelerate is missing
        return UNet2DConditionModel.from_pretrained(folder or EXTRAS_DIR / "depth_unet", use_safetensors=True)


def depth_to_latent_input(depth: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """What StableDiffusionDepth2ImgPipeline feeds the U-Net: depth resized to the latent (bicubic),
    then min-max normalised per image to [-1, 1]. (B, H, W) -> (B, 1, h, w)."""
    # Adapted from diffusers pipeline_stable_diffusion_depth2img.py (0.42), prepare_depth_map
    depth = torch.nn.functional.interpolate(depth.unsqueeze(1).float(), size=latent_size, mode="bicubic", align_corners=False)
    depth_min = torch.amin(depth, dim=[1, 2, 3], keepdim=True)
    depth_max = torch.amax(depth, dim=[1, 2, 3], keepdim=True)
    return 2.0 * (depth - depth_min) / (depth_max - depth_min) - 1.0

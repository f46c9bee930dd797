"""Stable Diffusion v1 vs v2, read from the architecture configs (and the loaded model), not typed.

- `comparison_table(names)`: one row per property (text encoder width, layers, heads, resolution,
  prediction type, …) and one column per architecture, read from
  `sdexplain.architectures.ARCHITECTURES`, plus parameter counts.
- `parameter_counts(name)`: parameters per component, counted on PyTorch's "meta" device — the
  modules are built with shapes but no storage, so SD-sized counts cost milliseconds and no memory
  (tested equal to `count_parameters` on real random-weight instances).
- `clip_parameter_counts()`: the WHOLE CLIP models (text and image towers) whose text towers SD v1
  and v2 use, counted the same way, next to the number of image–text pairs each was trained on.
- `pipeline_row(pipe)`: the same properties read from a loaded pipeline's own configs.
- `prediction_targets(...)`: ε- and v-prediction targets for the same noisy latent:
      x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε     ε-target: ε     v-target: v = sqrt(ᾱ_t)·ε − sqrt(1−ᾱ_t)·x0
  (Salimans & Ho 2022, "Progressive Distillation"; SD 2's 768-px model is trained on v).

Not here: the training-data differences (prose in the notebook) and the real weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdexplain import diffusion
from sdexplain.architectures import ARCHITECTURES
from sdexplain.latents import vae_factor


def _text_encoder_name(text: dict) -> str:
    width = text["hidden_size"]
    return {768: "CLIP ViT-L/14 (OpenAI)", 1024: "OpenCLIP ViT-H/14 (LAION)"}.get(width, f"CLIP-style, width {width}")


def _heads(unet: dict) -> str:
    """Cross-attention heads per U-Net level, as diffusers reads `attention_head_dim` (a head COUNT, issue #2011)."""
    heads = unet["attention_head_dim"]
    if isinstance(heads, int):
        return f"{heads} at every level ({unet['block_out_channels'][0] // heads}–{unet['block_out_channels'][-1] // heads} channels each)"
    per_head = {c // h for c, h in zip(unet["block_out_channels"], heads)}
    return f"{', '.join(str(h) for h in heads)} ({'/'.join(str(c) for c in sorted(per_head))} channels each)"


def config_row(name: str) -> dict[str, object]:
    """The comparable properties of one architecture in `ARCHITECTURES`."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; allowed: {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[name]
    unet, text, vae, scheduler = arch["unet"], arch["text_encoder"], arch["vae"], arch["scheduler"]
    factor = vae_factor(arch)
    return {
        "Hub id": arch["hub_id"],
        "text encoder": _text_encoder_name(text),
        "text width (embedding size)": text["hidden_size"],
        "text encoder layers": text["num_hidden_layers"],
        "text attention heads": text["num_attention_heads"],
        "max tokens": text["max_position_embeddings"],
        "U-Net cross-attention width": unet["cross_attention_dim"],
        "U-Net channels": "/".join(str(c) for c in unet["block_out_channels"]),
        "U-Net attention heads": _heads(unet),
        "native resolution (px)": unet["sample_size"] * factor,
        "latent (C×h×w)": f"{vae['latent_channels']}×{unet['sample_size']}×{unet['sample_size']}",
        "prediction type": scheduler["prediction_type"],
        "default scheduler": scheduler["_class_name"],
        "VAE scaling factor": vae["scaling_factor"],
    }


@dataclass
class _Parts:
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    unet: torch.nn.Module


def _build_parts(name: str) -> _Parts:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    arch = ARCHITECTURES[name]
    return _Parts(
        vae=AutoencoderKL(**arch["vae"]),
        text_encoder=CLIPTextModel(CLIPTextConfig(**arch["text_encoder"])),
        unet=UNet2DConditionModel(**arch["unet"]),
    )


def parameter_counts(name: str) -> dict[str, int]:
    """Parameters per component (unet, text_encoder, vae) and 'total' of an architecture, without weights.

    The modules are built on the "meta" device: every parameter has its shape, none has storage.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; allowed: {', '.join(ARCHITECTURES)}")
    parts = meta_build(lambda: _build_parts(name))
    counts = {part: sum(p.numel() for p in getattr(parts, part).parameters()) for part in ("unet", "text_encoder", "vae")}
    counts["total"] = sum(counts.values())
    return counts


# The two CLIP models whose text towers SD uses, as published on the Hub (config.json of
# openai/clip-vit-large-patch14 and laion/CLIP-ViT-H-14-laion2B-s32B-b79K); `pairs`: image–text pairs
# they were trained on (Radford et al. 2021: 400 M; LAION-2B, the English part of LAION-5B: 2.32 B).
CLIP_MODELS = {
    "OpenAI CLIP ViT-L/14 (SD v1)": dict(
        text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14, image_size=224),
        projection_dim=768,
        pairs=400_000_000,
    ),
    "OpenCLIP ViT-H/14 (SD v2)": dict(
        text=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
        vision=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, patch_size=14, image_size=224),
        projection_dim=1024,
        pairs=2_320_000_000,
    ),
}


def clip_parameter_counts() -> dict[str, int]:
    """Parameters of each whole CLIP model in `CLIP_MODELS` (text + image towers + projections), built on "meta"."""
    from transformers import CLIPConfig, CLIPModel

    counts = {}
    for name, spec in CLIP_MODELS.items():
        config = CLIPConfig(text_config=spec["text"], vision_config=spec["vision"], projection_dim=spec["projection_dim"])
        model = meta_build(lambda: CLIPModel(config))
        counts[name] = sum(p.numel() for p in model.parameters())
    return counts


def meta_build(factory):
    """Call `factory()` with PyTorch's default device set to "meta": modules get shapes, no storage."""
    with torch.device("meta"):
        return factory()


def comparison_table(names=("sd15", "sd21"), counts: bool = True) -> tuple[list[str], list[list[object]]]:
    """(header, rows): one row per property, one column per architecture; parameter counts added with `counts`."""
    rows_by_name = {name: config_row(name) for name in names}
    if counts:
        for name in names:
            for part, value in parameter_counts(name).items():
                rows_by_name[name][f"parameters: {part}"] = f"{value:,}"
    keys = list(rows_by_name[names[0]])
    header = ["property", *names]
    return header, [[key, *(rows_by_name[name][key] for name in names)] for key in keys]


def pipeline_row(pipe) -> dict[str, object]:
    """The same properties as `config_row`, read from a loaded pipeline's own configs."""
    from sdexplain.architectures import count_parameters

    unet, text, vae = pipe.unet.config, pipe.text_encoder.config, pipe.vae.config
    factor = pipe.vae_scale_factor
    size = unet.sample_size if isinstance(unet.sample_size, int) else unet.sample_size[0]
    heads = unet.attention_head_dim
    row = {
        "Hub id": _source_name(pipe),
        "text encoder": _text_encoder_name({"hidden_size": text.hidden_size}),
        "text width (embedding size)": text.hidden_size,
        "text encoder layers": text.num_hidden_layers,
        "text attention heads": text.num_attention_heads,
        "max tokens": text.max_position_embeddings,
        "U-Net cross-attention width": unet.cross_attention_dim,
        "U-Net channels": "/".join(str(c) for c in unet.block_out_channels),
        "U-Net attention heads": _heads({"attention_head_dim": heads if isinstance(heads, int) else list(heads), "block_out_channels": list(unet.block_out_channels)}),
        "native resolution (px)": size * factor,
        "latent (C×h×w)": f"{vae.latent_channels}×{size}×{size}",
        "prediction type": pipe.scheduler.config.get("prediction_type", "epsilon"),
        "default scheduler": type(pipe.scheduler).__name__,
        "VAE scaling factor": vae.scaling_factor,
    }
    for part, value in count_parameters(pipe).items():
        row[f"parameters: {part}"] = f"{value:,}"
    return row


def _source_name(pipe) -> str:
    """The Hub id a pipeline was loaded from, or for a local folder just its name (no local paths in notebooks)."""
    from pathlib import Path

    name = str(pipe.name_or_path or "")
    if not name:
        return "(built in memory)"
    path = Path(name)
    return f"local folder '{path.name}'" if path.is_absolute() or path.exists() else name


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table (for `IPython.display.Markdown`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- ε vs v


@dataclass
class PredictionTargets:
    """The two training targets for one noisy latent."""

    timestep: int
    alpha_bar: float
    x0: torch.Tensor  # (4, h, w) the clean latent
    noise: torch.Tensor  # (4, h, w) ε
    x_t: torch.Tensor  # (4, h, w) sqrt(ᾱ)·x0 + sqrt(1−ᾱ)·ε
    eps_target: torch.Tensor  # (4, h, w) what an ε-model (SD 1.x, 2.x-base) learns to output
    v_target: torch.Tensor  # (4, h, w) what a v-model (SD 2.x 768) learns to output


def prediction_targets(x0: torch.Tensor, timestep: int, scheduler, seed: int = 0) -> PredictionTargets:
    """ε- and v-targets for x_t made from the clean latent `x0` (4, h, w) at `timestep` with seeded noise."""
    alpha_bar, _ = diffusion.noise_level(scheduler, timestep)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=generator)
    x0 = x0.float().cpu()
    x_t = diffusion.q_sample(x0[None], timestep, noise[None], scheduler)[0]
    v = diffusion.v_target(x0, noise, alpha_bar)
    return PredictionTargets(int(timestep), alpha_bar, x0, noise, x_t, noise.clone(), v)

"""Stable Diffusion v1 vs v2 vs XL, read from the architecture configs (and the loaded model).

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

Not read from configs: the text encoders' names (a lookup by width, `TEXT_ENCODER_NAMES`) and the CLIP
training-pair counts (published numbers, `CLIP_MODELS`). Not here: the training-data differences (prose in
the notebook) and the real weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdexplain import diffusion
from sdexplain.architectures import ARCHITECTURES, XL_ARCHITECTURES
from sdexplain.latents import vae_factor


# The text towers SD uses, told apart by their width (a lookup: the configs hold no model names).
TEXT_ENCODER_NAMES = {768: "CLIP ViT-L/14 (OpenAI)", 1024: "OpenCLIP ViT-H/14 (LAION)", 1280: "OpenCLIP ViT-bigG/14 (LAION)"}
NAMES = (*ARCHITECTURES, *XL_ARCHITECTURES)


def _text_encoder_name(text: dict) -> str:
    width = text["hidden_size"]
    return TEXT_ENCODER_NAMES.get(width, f"CLIP-style, width {width}")


def _arch(name: str) -> dict:
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    if name in XL_ARCHITECTURES:
        return XL_ARCHITECTURES[name]
    raise ValueError(f"unknown architecture {name!r}; allowed: {', '.join(NAMES)}")


def _joined(values: list, total: bool = False):
    """One value as itself; SDXL's two encoders as "a + b" (and "= a+b" with `total`)."""
    if len(values) == 1:
        return values[0]
    text = " + ".join(str(v) for v in values)
    return f"{text} = {sum(values)}" if total else text


def _heads(unet: dict) -> str:
    """Cross-attention heads per U-Net level, as diffusers reads `attention_head_dim` (a head COUNT, issue #2011)."""
    heads = unet["attention_head_dim"]
    if isinstance(heads, int):
        return f"{heads} at every level ({unet['block_out_channels'][0] // heads}–{unet['block_out_channels'][-1] // heads} channels each)"
    per_head = {c // h for c, h in zip(unet["block_out_channels"], heads)}
    return f"{', '.join(str(h) for h in heads)} ({'/'.join(str(c) for c in sorted(per_head))} channels each)"


def _row(hub_id, texts: list[dict], unet: dict, vae: dict, factor: int, size: int, prediction: str, scheduler: str) -> dict[str, object]:
    """The comparable properties, from the configs of one model's text encoder(s), U-Net and VAE."""
    pooled, micro = "—", "—"
    if unet.get("addition_embed_type") == "text_time":
        pooled = texts[-1]["projection_dim"]  # the last encoder's projected end token
        micro = (unet["projection_class_embeddings_input_dim"] - pooled) // unet["addition_time_embed_dim"]
    return {
        "Hub id": hub_id,
        "text encoder": " + ".join(_text_encoder_name(t) for t in texts),
        "text width (embedding size)": _joined([t["hidden_size"] for t in texts], total=True),
        "text encoder layers": _joined([t["num_hidden_layers"] for t in texts]),
        "text attention heads": _joined([t["num_attention_heads"] for t in texts]),
        "max tokens": texts[0]["max_position_embeddings"],
        "U-Net cross-attention width": unet["cross_attention_dim"],
        "pooled text width added to the time embedding": pooled,
        "micro-conditioning numbers": micro,
        "U-Net channels": "/".join(str(c) for c in unet["block_out_channels"]),
        "U-Net attention layers per level": _attention_layers(unet),
        "U-Net attention heads": _heads(unet),
        "native resolution (px)": size * factor,
        "latent (C×h×w)": f"{vae['latent_channels']}×{size}×{size}",
        "prediction type": prediction,
        "default scheduler": scheduler,
        "VAE scaling factor": vae["scaling_factor"],
    }


def _attention_layers(unet: dict) -> str:
    """Transformer (self- + cross-attention) layers per block at each down level, 0 where the level has none."""
    per_level = unet.get("transformer_layers_per_block", 1)
    blocks = unet["down_block_types"]
    if isinstance(per_level, int):
        per_level = [per_level] * len(blocks)
    return "/".join(str(n if "CrossAttn" in block else 0) for block, n in zip(blocks, per_level))


def config_row(name: str) -> dict[str, object]:
    """The comparable properties of one architecture in `ARCHITECTURES` or `XL_ARCHITECTURES`."""
    arch = _arch(name)
    texts = [arch[k] for k in ("text_encoder", "text_encoder_2") if k in arch]
    unet, scheduler = arch["unet"], arch["scheduler"]
    return _row(arch["hub_id"], texts, unet, arch["vae"], vae_factor(arch), unet["sample_size"], scheduler["prediction_type"], scheduler["_class_name"])


@dataclass
class _Parts:
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    text_encoder_2: torch.nn.Module | None = None


def _build_parts(name: str) -> _Parts:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    arch = _arch(name)
    return _Parts(
        vae=AutoencoderKL(**arch["vae"]),
        text_encoder=CLIPTextModel(CLIPTextConfig(**arch["text_encoder"])),
        unet=UNet2DConditionModel(**arch["unet"]),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**arch["text_encoder_2"])) if "text_encoder_2" in arch else None,
    )


def parameter_counts(name: str) -> dict[str, int]:
    """Parameters per component (unet, text_encoder, [text_encoder_2,] vae) and 'total', without weights.

    The modules are built on the "meta" device: every parameter has its shape, none has storage.
    """
    _arch(name)  # a clear error for an unknown name
    parts = meta_build(lambda: _build_parts(name))
    names = ("unet", "text_encoder", "text_encoder_2", "vae") if parts.text_encoder_2 is not None else ("unet", "text_encoder", "vae")
    counts = {part: sum(p.numel() for p in getattr(parts, part).parameters()) for part in names}
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
    keys = list(dict.fromkeys(key for name in names for key in rows_by_name[name]))  # SDXL adds text_encoder_2
    keys.sort(key=lambda k: (k.startswith("parameters"), k == "parameters: total"))  # stable: counts last, total at the end
    header = ["property", *names]
    return header, [[key, *(rows_by_name[name].get(key, "—") for name in names)] for key in keys]


def pipeline_row(pipe) -> dict[str, object]:
    """The same properties as `config_row`, read from a loaded pipeline's own configs."""
    from sdexplain.architectures import count_parameters

    texts = [dict(getattr(pipe, k).config.to_dict()) for k in ("text_encoder", "text_encoder_2") if getattr(pipe, k, None) is not None]
    unet = dict(pipe.unet.config)
    heads = unet["attention_head_dim"]
    unet.update(attention_head_dim=heads if isinstance(heads, int) else list(heads), block_out_channels=list(unet["block_out_channels"]))
    size = unet["sample_size"] if isinstance(unet["sample_size"], int) else unet["sample_size"][0]
    row = _row(
        _source_name(pipe),
        texts,
        unet,
        dict(pipe.vae.config),
        pipe.vae_scale_factor,
        size,
        pipe.scheduler.config.get("prediction_type", "epsilon"),
        type(pipe.scheduler).__name__,
    )
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
    """A Markdown table (for `IPython.display.Markdown`), its header, row labels and worded values in the chosen language."""
    from sdexplain.i18n import t

    lines = ["| " + " | ".join(t(str(cell)) for cell in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(t(str(cell)) for cell in row) + " |" for row in rows]
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


def x0_error_gains(targets: PredictionTargets, seed: int = 1, size: float = 0.1) -> tuple[float, float]:
    """(ε-model, v-model): how much an error in the model's output grows when turned into x̂₀, measured.

    The same small random error (RMS `size`) is added to the ε-target and to the v-target, x̂₀ is
    computed from each with `diffusion.predict_x0` (the formulas the samplers use), and the RMS error of
    x̂₀ is divided by the RMS of the error put in. Closed forms, for comparison:
        ε-model  x̂₀ = (x_t − √(1−ᾱ)·ε̂)/√ᾱ   → gain √(1−ᾱ)/√ᾱ   (large when ᾱ → 0, i.e. at high noise)
        v-model  x̂₀ = √ᾱ·x_t − √(1−ᾱ)·v̂     → gain √(1−ᾱ)      (never above 1)
    """
    error = size * torch.randn(targets.noise.shape, generator=torch.Generator().manual_seed(seed))
    rms = error.pow(2).mean().sqrt()
    gains = []
    for output, kind in ((targets.eps_target, "epsilon"), (targets.v_target, "v_prediction")):
        x0_hat = diffusion.predict_x0(targets.x_t, output + error, targets.alpha_bar, kind)
        gains.append(float((x0_hat - targets.x0).pow(2).mean().sqrt() / rms))
    return gains[0], gains[1]

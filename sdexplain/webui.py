"""The WebUI's knobs measured on a model: emphasis, long prompts, prompt editing, alternation, clip
skip, hires fix and variation seeds (notebook 15).

Every run goes through the stock diffusers pipeline with the WebUI's conditioning
(`sdexplain.conditioning.webui_conditioning`) as `prompt_embeds`; seeds are batched into one call
(each image starts from its own seed's noise, so image i is the image seed i gives alone, up to the
last bit of float rounding: a batch can round differently, at most 1/255 per pixel on the toy). The toy's judge
reads the results (`judge_pictures`); `count_objects` counts the separate objects in an image.

Sources for the WebUI behaviours: AUTOMATIC1111/stable-diffusion-webui wiki, *Features* (hires fix,
variations, prompt editing, alternating words, clip skip) and its code (modules/processing.py:
`slerp`, `create_random_tensors`; the hires pass in `StableDiffusionProcessingTxt2Img`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import PIL.Image
import torch

from sdexplain import images
from sdexplain.conditioning import encode, webui_conditioning
from sdexplain.generate import SD_GUIDANCE, default_guidance
from sdexplain.i18n import Figure
from sdexplain.loading import derive

# The WebUI's sampler names (txt2img "Sampling method") → a diffusers scheduler class name and the
# config it needs. "Karras" = the Karras et al. noise-level spacing (WebUI 1.9+ shows it as the
# separate "Schedule type"). PLMS is PNDM without its Runge-Kutta warm-up steps.
WEBUI_SAMPLERS = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": False, "algorithm_type": "dpmsolver++"}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++"}),
    "DPM++ 2M SDE Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver++"}),
    "LMS": ("LMSDiscreteScheduler", {"use_karras_sigmas": False}),
    "Heun": ("HeunDiscreteScheduler", {"use_karras_sigmas": False}),
    "DDIM": ("DDIMScheduler", {}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}),
}
WEBUI_CFG = SD_GUIDANCE  # txt2img "CFG Scale" default (modules/ui.py): 7
WEBUI_STEPS = 20  # "Sampling steps" default
default_cfg = default_guidance  # the CFG scale to use: the toy's measured default, else the WebUI's 7


def webui_scheduler(pipe, name: str):
    """A new scheduler for the WebUI sampler `name`, on the pipeline's own training schedule."""
    import diffusers

    if name not in WEBUI_SAMPLERS:
        raise ValueError(f"unknown WebUI sampler {name!r}; allowed: {', '.join(WEBUI_SAMPLERS)}")
    cls_name, extra = WEBUI_SAMPLERS[name]
    return getattr(diffusers, cls_name).from_config(pipe.scheduler.config, **extra)


def webui_sampler_name(scheduler) -> str | None:
    """The WebUI name of a diffusers scheduler, or None when the WebUI has no such sampler."""
    config = scheduler.config
    for name, (cls_name, extra) in WEBUI_SAMPLERS.items():
        if type(scheduler).__name__ == cls_name and all(config.get(k) == v for k, v in extra.items()):
            return name
    return None


# ----------------------------------------------------------------------------- running


def noises(pipe, seeds, height: int | None = None, width: int | None = None) -> torch.Tensor:
    """(S, C, h, w) the starting noise diffusers draws for each seed (CPU generator, as `generate`)."""
    height = height or pipe.unet.config.sample_size * pipe.vae_scale_factor
    width = width or pipe.unet.config.sample_size * pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    return torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def run(pipe, prompt: str, seeds, *, steps: int = 20, cfg: float = 3.0, negative_prompt: str = "", clip_skip: int = 1,
        latents: torch.Tensor | None = None, height: int | None = None, width: int | None = None, trace: bool = False):
    """Images (list of PIL) of `prompt`, one per seed, conditioned the WebUI way; with `trace`, also the Trace."""
    import sdexplain

    seeds = list(seeds)
    cond = webui_conditioning(pipe, prompt, negative_prompt, steps=steps, clip_skip=clip_skip)
    kwargs = cond.pipe_kwargs()
    n = len(seeds)
    kwargs["prompt_embeds"] = kwargs["prompt_embeds"].repeat(n, 1, 1)
    kwargs["negative_prompt_embeds"] = kwargs["negative_prompt_embeds"].repeat(n, 1, 1)
    if latents is None:
        latents = noises(pipe, seeds, height, width)
    generators = [torch.Generator(device=pipe.device).manual_seed(int(s)) for s in seeds]  # ancestral samplers' noise
    args = dict(num_inference_steps=steps, guidance_scale=cfg, latents=latents.to(pipe.device, pipe.unet.dtype), generator=generators,
                height=latents.shape[-2] * pipe.vae_scale_factor, width=latents.shape[-1] * pipe.vae_scale_factor, output_type="pil")
    if trace:
        with sdexplain.trace(pipe, preview_every=0) as record:
            out = pipe(**kwargs, **args).images
        return out, record
    return pipe(**kwargs, **args).images


def judge_pictures(judge, pictures) -> list[dict[str, str]]:
    """What the toy's judge reads off each picture, any size (brought to 64×64 first)."""
    from sdexplain.toy.evaluate import judge_pictures as judge_64

    small = [p.convert("RGB").resize((64, 64), PIL.Image.BICUBIC) if p.size != (64, 64) else p for p in pictures]
    return judge_64(judge, small)


def share(readings: list[dict[str, str]], attribute: str, value: str) -> float:
    """The share of readings whose `attribute` is `value`."""
    return sum(r[attribute] == value for r in readings) / len(readings)


# ----------------------------------------------------------------------------- 1. emphasis


@dataclass
class EmphasisCurve:
    weights: list[float]
    attention: list[float]  # the word's mean cross-attention share (all pixels, steps, layers)
    judged: list[float]  # share of seeds the judge reads the word's value off
    pictures: list[list]  # per weight, the seeds' images


def emphasis_curve(pipe, judge, template: str, word_position: int, attribute: str, value: str, weights, seeds, *, steps: int = 20, cfg: float = 3.0) -> EmphasisCurve:
    """`template` with `{w}` (e.g. "a (red:{w}) cat"): per weight, the word's attention share and the judge's reading."""
    curve = EmphasisCurve(list(weights), [], [], [])
    for w in weights:
        pictures, record = run(pipe, template.format(w=w), seeds, steps=steps, cfg=cfg, trace=True)
        maps = torch.stack(record.attention.per_step)  # (steps, B, T, h, w): each pixel's shares over the slots
        curve.attention.append(float(maps[:, :, word_position].mean()))
        curve.judged.append(share(judge_pictures(judge, pictures), attribute, value))
        curve.pictures.append(pictures)
    return curve


# ----------------------------------------------------------------------------- 2b. attention over every slot


@torch.no_grad()
def slot_attention(pipe, prompt: str, seed: int = 0, *, steps: int = 10, cfg: float = 3.0) -> torch.Tensor:
    """(S,) the prompt's share of cross-attention per conditioning slot (S = 77·k), averaged over
    pixels, heads, layers and steps of one run — for any number of chunks (the trace keeps 77).

    Forward hooks on each cross-attention layer's query and key projections read q and k; the
    shares softmax(q·kᵀ·scale) are computed beside the run, which they do not change. Each pixel's
    shares sum to 1, so the returned vector sums to 1.
    """
    from sdexplain.attention import cross_attention_layers

    layers = cross_attention_layers(pipe.unet)
    cond = webui_conditioning(pipe, prompt, "", steps=steps)
    total, count, seen = None, 0, {}
    handles = []

    def on_query(name):
        def hook(module, inputs, output):
            seen[name] = output.detach()
        return hook

    def on_key(name, attn):
        def hook(module, inputs, output):
            nonlocal total, count
            q, k = seen.pop(name), output.detach()  # (2B, N, inner), (2B, S, inner); the prompt's half is the second
            q, k = q[q.shape[0] // 2:], k[k.shape[0] // 2:]
            b, n, inner = q.shape
            heads = attn.heads
            q = q.reshape(b, n, heads, inner // heads).transpose(1, 2).float()
            k = k.reshape(b, -1, heads, inner // heads).transpose(1, 2).float()
            shares = ((q @ k.transpose(-1, -2)) * attn.scale).softmax(-1).mean(dim=(0, 1, 2))  # (S,)
            total = shares if total is None else total + shares
            count += 1
        return hook

    try:
        for name, attn in layers.items():
            handles.append(attn.to_q.register_forward_hook(on_query(name)))
            handles.append(attn.to_k.register_forward_hook(on_key(name, attn)))
        generator = torch.Generator(device=pipe.device).manual_seed(int(seed))
        pipe(**cond.pipe_kwargs(), num_inference_steps=steps, guidance_scale=cfg, generator=generator, output_type="latent")
    finally:
        for handle in handles:
            handle.remove()
    return (total / count).cpu()


# ----------------------------------------------------------------------------- 3. prompt editing


@dataclass
class EditingSweep:
    when: list[int]  # k of [from:to:k]
    judged: dict[str, list[float]]  # label -> share per k
    pictures: list[list]


def editing_sweep(pipe, judge, template: str, attribute: str, values: tuple[str, str], seeds, *, steps: int = 20, cfg: float = 3.0) -> EditingSweep:
    """`template` with `{k}` (e.g. "a red [cat:dog:{k}]"), k = 0 … steps: the judge's reading of `attribute`."""
    sweep = EditingSweep(list(range(steps + 1)), {v: [] for v in values}, [])
    for k in sweep.when:
        pictures = run(pipe, template.format(k=k), seeds, steps=steps, cfg=cfg)
        readings = judge_pictures(judge, pictures)
        for v in values:
            sweep.judged[v].append(share(readings, attribute, v))
        sweep.pictures.append(pictures)
    return sweep


def crossing(values: list[float], level: float = 0.5) -> float:
    """The first k where `values` (falling) drops below `level`, linearly interpolated; inf if never."""
    for k in range(1, len(values)):
        if values[k - 1] >= level > values[k]:
            return k - 1 + (values[k - 1] - level) / (values[k - 1] - values[k])
    return math.inf


# ----------------------------------------------------------------------------- 6. hires fix


# Every object colour of the toy world is saturated (its largest and smallest channel differ by 120 or
# more, world.COLOURS); its floors are not (the plain one, world.NIGHT_FLOOR, and the grey floor with a
# pale frame that the toy draws at 2× its size). A pixel whose channels differ by more than this is an object's.
OBJECT_SATURATION = 60


def count_objects(picture, min_pixels: int = 12) -> int:
    """Separate objects in a toy picture: connected regions (8-neighbours) of colourful pixels (largest −
    smallest channel > OBJECT_SATURATION) with at least `min_pixels` pixels per 64×64 of the picture's area.

    By colour rather than by distance from world.BACKGROUND: at 128×128 the toy draws a grey floor and a
    pale frame, whose pieces a distance from the plain floor would count as objects."""
    from scipy import ndimage

    pixels = images.to_uint8(picture).astype(np.int16)  # (H, W, 3)
    if pixels.ndim != 3:
        raise ValueError(f"count_objects takes one picture (H, W, 3), got shape {pixels.shape}")
    mask = pixels.max(axis=-1) - pixels.min(axis=-1) > OBJECT_SATURATION  # (H, W)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes >= min_pixels * (mask.shape[0] / 64) ** 2).sum())


def upscale(picture: PIL.Image.Image, factor: int = 2) -> PIL.Image.Image:
    """The hires fix's first stage with a pixel upscaler (Lanczos, one of the WebUI's "Upscaler" choices)."""
    return picture.resize((picture.width * factor, picture.height * factor), PIL.Image.LANCZOS)


def hires_fix(pipe, prompt: str, seeds, *, strength: float = 0.6, steps: int = 20, cfg: float = 3.0, factor: int = 2) -> tuple[list, list]:
    """WebUI's hires fix: text-to-image at the base size → upscale → image-to-image at `factor`× with `strength`.

    Returns (base pictures, hires pictures). As the WebUI, the second pass uses the same seed and the
    same prompt; its sampler runs int(steps × strength) steps (diffusers' image-to-image).
    """
    base = run(pipe, prompt, seeds, steps=steps, cfg=cfg)
    runner = derive(pipe, "image-to-image")
    cond = webui_conditioning(pipe, prompt, "", steps=steps)
    kwargs = cond.pipe_kwargs()
    kwargs.pop("callback_on_step_end", None)
    kwargs.pop("callback_on_step_end_tensor_inputs", None)
    hires = []
    for seed, picture in zip(seeds, base):
        generator = torch.Generator(device=pipe.device).manual_seed(int(seed))
        hires += runner(**kwargs, image=upscale(picture, factor), strength=strength, num_inference_steps=steps, guidance_scale=cfg, generator=generator).images
    return base, hires


# ----------------------------------------------------------------------------- 7. variation seed


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """The WebUI's spherical interpolation of two noises (C, H, W): val 0 → low, 1 → high.

    As in the WebUI, vectors are taken along dim 1 of (C, H, W) (each column of each channel), and
    nearly parallel inputs fall back to a straight line.
    """
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)  # WebUI's fallback, as written there
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


def variation_noises(pipe, seed: int, variation_seed: int, strengths) -> torch.Tensor:
    """(S, C, h, w): the starting noise for each variation strength (WebUI: slerp(strength, noise(seed), noise(variation seed)))."""
    a, b = noises(pipe, [seed, variation_seed])
    return torch.stack([slerp(float(s), a, b) for s in strengths])


def line_plot(x, series: dict[str, list[float]], xlabel: str, ylabel: str, title: str, figsize=(5.0, 3.0), marks=None, ylim=None):
    """A small line plot of one or more series against x (a Figure, never pyplot).

    `ylim` (bottom, top) fixes the y range, e.g. (0, 1) for shares, so a one-seed change does not fill the plot."""
    figure = Figure(figsize=figsize)
    ax = figure.add_subplot(1, 1, 1)
    for label, values in series.items():
        ax.plot(x, values, marker="o", markersize=3, label=label)
    if ylim is not None:
        ax.set_ylim(*ylim)
    for value, text in (marks or {}).items():
        ax.axvline(value, color="#999", linestyle=":", linewidth=1)
        ax.text(value, ax.get_ylim()[1], text, fontsize=8, ha="center", va="bottom", color="#555")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def slot_figure(shares: torch.Tensor, strings: list[str], title: str = "cross-attention share per slot", figsize=(7.0, 2.6)):
    """Bars of `shares` (S,) over the conditioning slots, a line between 77-slot chunks, prompt words named."""
    figure = Figure(figsize=figsize)
    ax = figure.add_subplot(1, 1, 1)
    values = shares.numpy()
    ax.bar(range(len(values)), values, width=1.0, color="#93c5fd")
    for boundary in range(77, len(values), 77):
        ax.axvline(boundary - 0.5, color="#b91c1c", linewidth=1)
    for i, token in enumerate(strings):
        word = token.removesuffix("</w>")
        if word and not word.startswith("<|") and i % 77 not in (0, 76) and (i >= 77 or i < 2):
            ax.text(i, values[i], word, rotation=90, fontsize=7, ha="center", va="bottom")
    ax.set_xlabel("conditioning slot (77 per chunk)")
    ax.set_ylabel("share")
    ax.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure

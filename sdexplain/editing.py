"""Editing images: image-to-image (SDEdit), inpainting and depth-to-image, measured.

The three modes run through diffusers' own pipelines (via `sdexplain.generate`); this module holds
what the notebooks measure about them:

- `start_step`: where a denoising strength starts sampling — the same arithmetic as diffusers'
  `StableDiffusionImg2ImgPipeline.get_timesteps`: of N steps, the last int(N·strength) are run,
  from the timestep the input latent is noised to:  x_start = sqrt(ᾱ_t)·z_input + sqrt(1−ᾱ_t)·ε.
- `strength_sweep`: one input, several strengths, each a traced run (the noised latent is the
  first step's input).
- `strength_one_check`: what "strength 1 = text-to-image from the same noise" means exactly.
- `round_trip_error`, `image_error`: the VAE's own error, the floor for "unchanged".
- `standard_masks`, `preservation`: inpainting masks and how well pixels outside them survive.
- `estimate_depth`, `pearson`: depth-to-image's structure check; `own_depth_estimator`: a depth
  checkpoint's own DPT estimator, in the same form as the toy's.

Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential Equations".
Not here: the sampling loops themselves (diffusers') and widgets (`sdexplain.widgets`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np
import PIL.Image
import torch

from sdexplain import diffusion
from sdexplain.i18n import t

# the caption under each frame of inpaint_frames (the key of its Chinese in i18n.ZH)
INPAINT_FRAME_LABEL = ("strength {strength:g} · panels: input + mask, result, |result − input| (black = 0, bright = 0.5), pasted back · "
                       "outside the mask: max {max:.3f}, mean {mean:.4f}")


# ----------------------------------------------------------------------------- strength -> start step


@dataclass
class StartStep:
    """Where image-to-image with `strength` starts on the sampler's schedule."""

    strength: float
    steps: int  # the steps asked for (num_inference_steps)
    denoising_steps: int  # int(steps · strength): the steps actually run
    skipped: int  # steps - denoising_steps: the noisiest steps, never run
    timestep: int | None  # the training timestep the input is noised to (None if no step runs)
    alpha_bar: float | None  # ᾱ at that timestep: sqrt(ᾱ) of the input survives in the start latent
    timesteps: list[int] = field(default_factory=list)  # the timesteps that are run (U-Net calls)


def _check_strength(strength) -> float:
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be a number in [0, 1], got {strength!r}")
    return float(strength)


def start_step(scheduler, steps: int, strength: float) -> StartStep:
    """The start of image-to-image on `scheduler`'s schedule (works on a copy of the scheduler).

    Adapted from diffusers pipeline_stable_diffusion_img2img.py (0.42), get_timesteps.
    """
    strength = _check_strength(strength)
    diffusion.check_steps(steps)
    copy = type(scheduler).from_config(scheduler.config)
    copy.set_timesteps(steps)
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = [int(t) for t in copy.timesteps[t_start * copy.order :]]
    first = timesteps[0] if init_timestep > 0 and timesteps else None
    alpha_bar = float(diffusion.alphas_cumprod(copy)[first]) if first is not None else None
    return StartStep(strength, steps, init_timestep, t_start, first, alpha_bar, timesteps if first is not None else [])


# ----------------------------------------------------------------------------- images and errors


def to_array(image) -> np.ndarray:
    """A PIL image (or uint8 array) -> float32 (H, W, 3) in [0, 1]."""
    if isinstance(image, PIL.Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    return array.astype(np.float32)


def image_error(a, b) -> dict[str, float]:
    """Mean and max absolute pixel difference of two images, on the [0, 1] scale."""
    diff = np.abs(to_array(a) - to_array(b))
    return {"mean": float(diff.mean()), "max": float(diff.max())}


@torch.no_grad()
def round_trip(pipe, image: PIL.Image.Image, seed: int | None = None) -> PIL.Image.Image:
    """decode(encode(image)): what the VAE alone does to an image.

    With `seed=None` the posterior's mean is decoded; with a seed, the posterior SAMPLE that diffusers'
    img2img/inpaint pipelines draw first from a generator seeded so (`retrieve_latents(..., generator)`).
    """
    processed = pipe.image_processor.preprocess(image).to(pipe.device, pipe.vae.dtype)  # (1, 3, H, W) in [-1, 1]
    posterior = pipe.vae.encode(processed).latent_dist
    if seed is None:
        latent = posterior.mode()
    else:
        latent = posterior.sample(torch.Generator(device=pipe.device).manual_seed(seed))
    decoded = pipe.vae.decode(latent, return_dict=False)[0]
    return pipe.image_processor.postprocess(decoded, output_type="pil")[0]


def round_trip_error(pipe, image: PIL.Image.Image, seed: int | None = None) -> dict[str, float]:
    """`image_error` between an image and its VAE round trip (see `round_trip`): the floor for 'returns the input'."""
    return image_error(image, round_trip(pipe, image, seed))


# ----------------------------------------------------------------------------- strength sweeps


@dataclass
class StrengthSweep:
    """Image-to-image (or inpainting / depth-to-image) of one input at several strengths."""

    prompt: str
    strengths: list[float]
    images: list[PIL.Image.Image]
    runs: list  # one Trace per strength
    starts: list[StartStep]

    def noised_latent(self, i: int) -> torch.Tensor:
        """The latent sampling started from at strength i (the input noised to the start timestep): (4, h, w)."""
        return self.runs[i].steps[0].latent_in[0]


def strength_sweep(pipe, prompt: str, image, strengths, *, steps: int = 20, cfg: float = 7.5, seed: int = 0, progress=None, **modes) -> StrengthSweep:
    """`sdexplain.generate(pipe, prompt, image=image, strength=s, ...)` for each strength, traced.

    `modes` may add `mask_image=` (inpainting) or `depth_map=` (depth-to-image); the same seed is used
    for every strength. `progress(done, total)` is called after each run.
    """
    from sdexplain.generate import generate

    strengths = [_check_strength(s) for s in strengths]
    if not strengths:
        raise ValueError("strengths must name at least one strength")
    sweep = StrengthSweep(prompt, strengths, [], [], [])
    for i, strength in enumerate(strengths):
        pictures, run = generate(pipe, prompt, image=image, strength=strength, steps=steps, cfg=cfg, seed=seed, attention=False, preview_every=0, **modes)
        sweep.images.append(pictures[0])
        sweep.runs.append(run)
        sweep.starts.append(start_step(pipe.scheduler, steps, strength))
        if progress is not None:
            progress(i + 1, len(strengths))
    return sweep


def strength_frames(pipe, sweep: StrengthSweep, image, size: int = 160) -> tuple[list, list[str], torch.Tensor]:
    """One picture per strength for a slider: the schedule with the start step marked, the input,
    the noised latent sampling starts from (decoded by the VAE), and the result.

    Returns (frames uint8 (H, W, 3), labels, the decoded noised latents (S, 3, H, W) in [-1, 1]).
    """
    from sdexplain import images, plots

    noised = images.vae_decode(pipe.vae, torch.stack([sweep.noised_latent(i) for i in range(len(sweep.strengths))]))
    curve = plots.schedule_curve(pipe.scheduler, timesteps=sweep.starts[-1].timesteps, figsize=(3.6, 2.2))
    zoom = images.zoom_for(max(images.to_uint8(image).shape[:2]), size)
    frames, labels = [], []
    for i, (strength, start) in enumerate(zip(sweep.strengths, sweep.starts)):
        pictures = [images.to_uint8(image), images.to_uint8(noised[i]), images.to_uint8(sweep.images[i])]
        frames.append(images.hstack([curve.frame(start.timestep)] + [images.zoom(p, zoom) for p in pictures], pad=6))
        labels.append(
            f"strength {strength:g}: {start.denoising_steps} of {start.steps} steps run, input noised to t = {start.timestep} "
            f"(ᾱ = {start.alpha_bar:.3f}) · panels: schedule, input, noised latent (decoded), result"
        )
    return frames, labels, noised


def plot_error_vs_strength(strengths, errors, floor: float, figsize=(4.5, 2.8)):
    """Mean pixel difference from the input against the strength, with the VAE round-trip error as a line."""
    from sdexplain.i18n import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    ax.plot(strengths, errors, marker="o", label="image-to-image result vs input")
    ax.axhline(floor, color="grey", linestyle="--", label="VAE round trip vs input")
    ax.set_xlabel("denoising strength")
    ax.set_ylabel("mean |difference| (pixels in [0, 1])")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    return fig


# ----------------------------------------------------------------------------- strength 1 vs text-to-image


@dataclass
class StrengthOneCheck:
    """Image-to-image at strength 1 against text-to-image (see `strength_one_check`)."""

    alpha_bar: float  # ᾱ at the first timestep: sqrt(ᾱ) of the input latent is still in the start latent
    start_timestep: int
    formula_error: float  # max |x_start − (sqrt(ᾱ)·z + sqrt(1−ᾱ)·ε)|: the pipeline's start latent, rebuilt
    input_share: float  # ‖sqrt(ᾱ)·z‖ / ‖x_start‖: how much of the start latent is the input
    img2img: PIL.Image.Image  # img2img, strength 1, seed s
    text2img_same_seed: PIL.Image.Image  # text-to-image, seed s: its noise is img2img's FIRST draw, not ε
    text2img_same_noise: PIL.Image.Image  # text-to-image started from ε (the noise img2img added)
    text2img_same_start: PIL.Image.Image  # text-to-image started from img2img's exact start latent
    errors: dict[str, dict[str, float]]  # img2img vs each text-to-image image (image_error)


@torch.no_grad()
def strength_one_check(pipe, prompt: str, image: PIL.Image.Image, *, steps: int = 20, cfg: float = 7.5, seed: int = 0) -> StrengthOneCheck:
    """What 'strength 1 equals text-to-image from the same noise' means in diffusers, measured.

    diffusers' img2img (0.42) draws, from ONE generator: first the VAE posterior sample of the input
    (`retrieve_latents(vae.encode(image), generator)`), then the noise ε, and starts from
    x_start = sqrt(ᾱ_t1)·z + sqrt(1−ᾱ_t1)·ε at the FIRST timestep t1 — whose ᾱ is small but not 0
    in SD's schedule, so a trace of the input remains. Text-to-image with the same seed starts from
    the generator's first draw instead. Here: the start latent rebuilt from the formula, and
    text-to-image run from (a) the same seed, (b) ε, (c) img2img's exact start latent.
    """
    from sdexplain.generate import generate
    from sdexplain.loading import derive

    images, run = generate(pipe, prompt, image=image, strength=1.0, steps=steps, cfg=cfg, seed=seed, attention=False, preview_every=0)
    x_start = run.steps[0].latent_in[:1]  # (1, 4, h, w)
    start = start_step(pipe.scheduler, steps, 1.0)

    # 1. replay img2img's draws: the posterior sample z first, then the noise ε (same generator)
    img2img = derive(pipe, "image-to-image")
    device = img2img.device
    generator = torch.Generator(device=device).manual_seed(seed)
    processed = img2img.image_processor.preprocess(image).to(device, pipe.vae.dtype)
    z = pipe.vae.encode(processed).latent_dist.sample(generator) * pipe.vae.config.scaling_factor  # (1, 4, h, w)
    noise = torch.randn(z.shape, generator=generator, device=device, dtype=z.dtype)
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps, device=device)
    rebuilt = scheduler.add_noise(z, noise, torch.tensor([start.timestep], device=device))
    formula_error = float((rebuilt.float().cpu() - x_start).abs().max())
    input_part = (start.alpha_bar**0.5) * z.float().cpu()
    input_share = float(input_part.norm() / x_start.norm())

    # 2. text-to-image three ways, the stock pipeline (no trace needed)
    text2img = derive(pipe, "text-to-image")
    sigma0 = float(getattr(text2img.scheduler, "init_noise_sigma", 1.0))

    def t2i(latents=None):
        generator = torch.Generator(device=device).manual_seed(seed)
        return text2img(prompt, num_inference_steps=steps, guidance_scale=cfg, generator=generator, latents=latents, height=image.size[1], width=image.size[0]).images[0]

    same_seed = t2i()
    same_noise = t2i(noise / sigma0)
    same_start = t2i(x_start.to(device, z.dtype) / sigma0)
    errors = {name: image_error(images[0], other) for name, other in (("same seed", same_seed), ("same noise ε", same_noise), ("same start latent", same_start))}
    return StrengthOneCheck(start.alpha_bar, start.timestep, formula_error, input_share, images[0], same_seed, same_noise, same_start, errors)


# ----------------------------------------------------------------------------- inpainting


def standard_masks(height: int, width: int) -> dict[str, PIL.Image.Image]:
    """Masks for inpainting (white = repaint): the left half, the right half, a centre box (half the size)."""
    masks = {}
    for name in ("left half", "right half", "center box"):
        array = np.zeros((height, width), dtype=np.uint8)
        if name == "left half":
            array[:, : width // 2] = 255
        elif name == "right half":
            array[:, width // 2 :] = 255
        else:
            array[height // 4 : height - height // 4, width // 4 : width - width // 4] = 255
        masks[name] = PIL.Image.fromarray(array, mode="L")
    return masks


def mask_array(mask) -> np.ndarray:
    """A mask (PIL or array) -> bool (H, W), True = repaint (diffusers binarises at 0.5)."""
    if isinstance(mask, PIL.Image.Image):
        mask = np.asarray(mask.convert("L"), dtype=np.float32) / 255
    mask = np.asarray(mask)
    return mask > 0.5 if mask.dtype != bool else mask


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """A bool mask grown by `pixels` in every direction (a square neighbourhood)."""
    padded = np.pad(mask, pixels)
    grown = np.zeros_like(mask)
    height, width = mask.shape
    for dy in range(2 * pixels + 1):
        for dx in range(2 * pixels + 1):
            grown |= padded[dy : dy + height, dx : dx + width]
    return grown


def preservation(original, result, mask, margin: int = 0) -> dict[str, float]:
    """How much `result` differs from `original` outside and inside the mask ([0, 1] pixel scale).

    Keys: max/mean outside, max/mean inside, and — with `margin` > 0 — max/mean outside and at
    least `margin` pixels away from the mask ("far": where neither the latent mask's blocky edge
    nor the VAE decoder's receptive field reaches as much).
    """
    diff = np.abs(to_array(original) - to_array(result)).max(axis=-1)  # (H, W): largest channel difference
    inside = mask_array(mask)
    if inside.shape != diff.shape:
        raise ValueError(f"mask {inside.shape} and images {diff.shape} differ in size")
    if inside.all() or not inside.any():
        raise ValueError("the mask must have pixels both inside and outside")
    out = {
        "max outside": float(diff[~inside].max()),
        "mean outside": float(diff[~inside].mean()),
        "max inside": float(diff[inside].max()),
        "mean inside": float(diff[inside].mean()),
    }
    if margin > 0:
        far = ~dilate(inside, margin)
        if far.any():
            out["max far outside"] = float(diff[far].max())
            out["mean far outside"] = float(diff[far].mean())
    return out


def paste_back(pipe, mask: PIL.Image.Image, original: PIL.Image.Image, result: PIL.Image.Image) -> PIL.Image.Image:
    """diffusers' own paste-back: the original's pixels outside the mask, the result's inside
    (`pipe.image_processor.apply_overlay`, diffusers 0.42)."""
    return pipe.image_processor.apply_overlay(mask.convert("L"), original.convert("RGB"), result.convert("RGB"))


def mask_overlay(image, mask, colour=(255, 0, 255), alpha: float = 0.45) -> np.ndarray:
    """The image with the mask tinted (uint8 (H, W, 3)): what will be repainted."""
    from sdexplain import images

    picture = images.to_uint8(image).astype(np.float32)
    inside = mask_array(mask)
    picture[inside] = picture[inside] * (1 - alpha) + np.array(colour, dtype=np.float32) * alpha
    return np.round(picture).astype(np.uint8)


def difference_map(original, result, vmax: float = 0.5) -> np.ndarray:
    """|result − original| (largest channel) as a colour map on [0, vmax] -> uint8 (H, W, 3)."""
    from sdexplain import images

    diff = np.abs(to_array(original) - to_array(result)).max(axis=-1)
    return images.colormap(diff, 0.0, vmax, "magma")


def inpaint_frames(pipe, sweep: StrengthSweep, image, mask, size: int = 160) -> tuple[list, list[str]]:
    """Per strength, one picture for a slider: input with the mask tinted, result, |result − input|,
    and the result pasted back onto the input outside the mask (`paste_back`)."""
    from sdexplain import images

    zoom = images.zoom_for(max(images.to_uint8(image).shape[:2]), size)
    frames, labels = [], []
    for strength, result in zip(sweep.strengths, sweep.images):
        pasted = paste_back(pipe, mask, image, result)
        parts = [mask_overlay(image, mask), images.to_uint8(result), difference_map(image, result), images.to_uint8(pasted)]
        frames.append(images.hstack([images.zoom(p, zoom) for p in parts], pad=6))
        kept = preservation(image, result, mask)
        labels.append(t(INPAINT_FRAME_LABEL).format(strength=strength, max=kept["max outside"], mean=kept["mean outside"]))
    return frames, labels


# ----------------------------------------------------------------------------- depth


@torch.no_grad()
def estimate_depth(estimator, image) -> torch.Tensor:
    """Depth ("nearness", larger = closer, as MiDaS) of a PIL image or a (B, 3, H, W) tensor in [-1, 1].

    Returns (H, W) for one PIL image, (B, H, W) for a batch.
    """
    if isinstance(image, PIL.Image.Image):
        batch = torch.from_numpy(to_array(image)).permute(2, 0, 1)[None] * 2 - 1  # (1, 3, H, W)
        return estimator(batch.to(next(estimator.parameters()).device))[0].float().cpu()
    return estimator(image.float()).float().cpu()


def pearson(a, b) -> float:
    """Pearson correlation of two equally shaped arrays/tensors (flattened)."""
    x = torch.as_tensor(np.asarray(a, dtype=np.float64)).flatten()
    y = torch.as_tensor(np.asarray(b, dtype=np.float64)).flatten()
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    x, y = x - x.mean(), y - y.mean()
    denominator = float(x.norm() * y.norm())
    if denominator == 0:
        raise ValueError("a constant array has no correlation")
    return float((x @ y) / denominator)


def depth_correlation(estimator, original, result) -> float:
    """Pearson correlation of the estimated depth of `original` and of `result` (same estimator)."""
    return pearson(estimate_depth(estimator, original), estimate_depth(estimator, result))


@dataclass
class DepthRow:
    """One row of the depth-to-image measurement (`measure_depth_row`): one runner, one prompt, one
    strength, many seeds, each result measured for layout (depth correlations) and colour (the judge)."""

    prompt: str
    strength: float
    images: list  # [PIL.Image], one per seed
    own: list[float]  # per seed: Pearson(result's estimated depth, the input's estimated depth)
    other: list[float]  # per seed: Pearson(result's estimated depth, another scene's depth)
    colours: list[str]  # per seed: the colour the judge reads off the result

    @property
    def seeds(self) -> int:
        return len(self.images)

    @property
    def mean_own(self) -> float:
        return sum(self.own) / len(self.own)

    @property
    def mean_other(self) -> float:
        return sum(self.other) / len(self.other)

    def count(self, colour: str) -> int:
        """How many seeds the judge read as `colour` (one of the toy world's colours)."""
        from sdexplain.toy import world

        if colour not in world.COLOUR_NAMES:
            raise ValueError(f"colour must be one of {list(world.COLOUR_NAMES)}, got {colour!r}")
        return self.colours.count(colour)


def measure_depth_row(runner, prompt: str, image, *, estimator, judge, other_depth, strength: float, seeds, steps: int = 20, cfg: float = 3.0, **modes) -> DepthRow:
    """Run `runner` (a depth-to-image pipeline with ``depth_map=...`` in `modes`, or plain image-to-image)
    on `image` once per seed and measure each result: the Pearson correlation of its estimated depth
    with `image`'s (same `estimator`) and with `other_depth` (another scene's, the control), and the
    colour the toy's `judge` reads off it."""
    import sdexplain
    from sdexplain.toy.evaluate import judge_pictures

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("measure_depth_row needs at least one seed, got none")
    results = [sdexplain.generate(runner, prompt, image=image, strength=strength, steps=steps, cfg=cfg, seed=seed, attention=False, preview_every=0, **modes)[0][0] for seed in seeds]
    input_depth = estimate_depth(estimator, image)
    result_depths = [estimate_depth(estimator, r) for r in results]
    return DepthRow(
        prompt=prompt,
        strength=float(strength),
        images=results,
        own=[pearson(input_depth, d) for d in result_depths],
        other=[pearson(other_depth, d) for d in result_depths],
        colours=[reading["colour"] for reading in judge_pictures(judge, results)],
    )


def depth_pipeline(pipe, depth_unet):
    """A depth-to-image pipeline sharing `pipe`'s components, with `depth_unet` (5 input channels) as U-Net.

    = `sdexplain.loading.derive(pipe, "depth-to-image", unet=depth_unet)`, with the U-Net moved to the
    pipeline's device and dtype first.
    """
    from sdexplain.loading import check_depth_unet, derive
    from sdexplain.quiet import quiet_libraries

    check_depth_unet(depth_unet)
    with quiet_libraries():  # .to() warns about an empty list of modules to keep in float32
        depth_unet = depth_unet.to(pipe.device, pipe.dtype)
    return derive(pipe, "depth-to-image", unet=depth_unet)


class PipelineDepthEstimator(torch.nn.Module):
    """A depth checkpoint's own estimator (its DPT and image processor), called like the toy's estimator.

    forward: images (B, 3, H, W) in [-1, 1] -> depth (B, H, W), larger = nearer (DPT/MiDaS predict
    inverse depth), resized to the input's size. The same two calls that diffusers'
    `StableDiffusionDepth2ImgPipeline.prepare_depth_map` makes when no `depth_map=` is given.
    """

    def __init__(self, depth_estimator, feature_extractor):
        super().__init__()
        self.depth_estimator = depth_estimator
        self.feature_extractor = feature_extractor

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pictures = [PIL.Image.fromarray(((x.permute(1, 2, 0).float().cpu().numpy() + 1) * 127.5).clip(0, 255).round().astype(np.uint8)) for x in images]
        pixel_values = self.feature_extractor(images=pictures, return_tensors="pt").pixel_values  # (B, 3, h', w')
        parameter = next(self.depth_estimator.parameters())
        depth = self.depth_estimator(pixel_values.to(parameter.device, parameter.dtype)).predicted_depth  # (B, h'', w'')
        return torch.nn.functional.interpolate(depth[:, None].float(), size=images.shape[-2:], mode="bicubic", align_corners=False)[:, 0]


def has_own_depth_estimator(pipe) -> bool:
    """Whether `pipe` is a depth checkpoint that brought its own depth estimator (e.g. stabilityai/stable-diffusion-2-depth)."""
    return pipe.unet.config.in_channels == 5 and getattr(pipe, "depth_estimator", None) is not None and getattr(pipe, "feature_extractor", None) is not None


def own_depth_estimator(pipe) -> PipelineDepthEstimator:
    """The depth estimator a depth checkpoint came with, as `estimate_depth` and `depth_frames` take it."""
    if not has_own_depth_estimator(pipe):
        raise ValueError(
            f"{type(pipe).__name__} with a {pipe.unet.config.in_channels}-channel U-Net has no depth estimator of its own; "
            "load a depth checkpoint such as stabilityai/stable-diffusion-2-depth (a StableDiffusionDepth2ImgPipeline)"
        )
    return PipelineDepthEstimator(pipe.depth_estimator, pipe.feature_extractor)


DEPTH_CHECKPOINT = "stabilityai/stable-diffusion-2-depth"


def depth_picture(depth) -> np.ndarray:
    """A depth map (H, W) as a uint8 picture, min…max of this map on a grey ramp (white = near)."""
    from sdexplain import images

    depth = np.asarray(depth.detach().cpu() if isinstance(depth, torch.Tensor) else depth, dtype=np.float32)
    return images.colormap(depth, float(depth.min()), float(depth.max()) or 1.0, "gray")


def depth_frames(estimator, sweep: StrengthSweep, image, depth, size: int = 160) -> tuple[list, list[str]]:
    """Per strength, one picture for a slider: input, its depth map, the result, the result's estimated
    depth (each depth map on its own min…max grey ramp, `depth_picture`); the label, in the chosen
    language, carries the Pearson correlation of the two depth maps."""
    from sdexplain import images
    from sdexplain.i18n import t

    zoom = images.zoom_for(max(images.to_uint8(image).shape[:2]), size)
    frames, labels = [], []
    for strength, result in zip(sweep.strengths, sweep.images):
        result_depth = estimate_depth(estimator, result)
        parts = [images.to_uint8(image), depth_picture(depth), images.to_uint8(result), depth_picture(result_depth)]
        frames.append(images.hstack([images.zoom(p, zoom) for p in parts], pad=6))
        labels.append(
            t("strength {strength:g} · panels: input, its depth, result, the result's estimated depth · Pearson(depth of result, depth of input) = {r:.3f}").format(
                strength=strength, r=pearson(result_depth, depth)
            )
        )
    return frames, labels

"""Guidance: classifier-free guidance sweeps and classifier guidance, as readable sampling loops.

Two loops diffusers doesn't have, written out once with the papers' names:

- `cfg_sweep`: one prompt, one seed, N guidance scales, computed as ONE batch — every U-Net call
  evaluates all N latents, unconditional and conditional halves together, and each latent is
  guided with its own scale:  ε̂ = ε(x_t, ∅) + w·(ε(x_t, c) − ε(x_t, ∅))   (Ho & Salimans 2021).
  For a scale w > 1 the result is the stock pipeline's with `guidance_scale=w` (tested); w = 0 is
  the unconditional model (the prompt ignored), w = 1 the conditional model without guidance.
- `classifier_guided_sample`: the unconditional model steered by a separate classifier of noisy
  latents toward a label y (Dhariwal & Nichol 2021, Algorithm 2 — the ε form that works with any
  ε-scheduler):  ε̂ = ε(x_t) − s·sqrt(1 − ᾱ_t)·∇_{x_t} log p(y | x_t).

Both use the pipeline's own components and scheduler (`scheduler.step`), not a sampler of ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image

from sdexplain.unet_inputs import text_inputs
from sdexplain.diffusion import check_steps
from sdexplain.images import vae_decode
from sdexplain.loading import is_xl


@dataclass
class CFGSweep:
    """The result of `cfg_sweep`: per scale an image, per step the two noise predictions."""

    prompt: str
    scales: list[float]
    images: list[Image.Image]  # one per scale
    timesteps: list[int] = field(default_factory=list)  # one per step
    noise_uncond: list[torch.Tensor] = field(default_factory=list)  # per step (N, 4, h, w), CPU float32
    noise_cond: list[torch.Tensor] = field(default_factory=list)  # per step (N, 4, h, w)
    latents: list[torch.Tensor] = field(default_factory=list)  # per step, the latent going in (N, 4, h, w)

    def noise_guided(self, step: int) -> torch.Tensor:
        """ε̂ = ε_uncond + w·(ε_cond − ε_uncond) at `step`, per scale: (N, 4, h, w)."""
        w = torch.tensor(self.scales, dtype=torch.float32).view(-1, 1, 1, 1)
        return self.noise_uncond[step] + w * (self.noise_cond[step] - self.noise_uncond[step])


def check_scales(scales) -> list[float]:
    scales = [float(s) for s in scales]
    if not scales:
        raise ValueError("scales must name at least one guidance scale, got an empty list")
    negative = [s for s in scales if s < 0]
    if negative:
        raise ValueError(f"guidance scales must be ≥ 0, got {negative}")
    return scales


@torch.no_grad()
def cfg_sweep(
    pipe,
    prompt: str,
    scales=(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0),
    *,
    negative_prompt: str = "",
    steps: int = 25,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    keep_steps: bool = True,
    progress: bool = True,
) -> CFGSweep:
    """Generate `prompt` at every guidance scale in `scales` from the same noise, in one batch."""
    # Adapted from diffusers pipeline_stable_diffusion.py and pipeline_stable_diffusion_xl.py (0.42), __call__
    scales = check_scales(scales)
    check_steps(steps)
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be one string, got {type(prompt).__name__}")
    n = len(scales)
    height = height or pipe.unet.config.sample_size * pipe.vae_scale_factor
    width = width or pipe.unet.config.sample_size * pipe.vae_scale_factor
    negative = negative_prompt or None  # "" is the stock default (None): SD encodes "", SDXL gives zeros
    if is_xl(pipe):
        pipe.check_inputs(prompt, None, height, width, None, negative)
    else:
        pipe.check_inputs(prompt, height, width, None, negative, None, None)
    device = pipe._execution_device

    # 1. encode the prompt and the unconditional (negative) prompt once: (1, 77, D) each; SDXL adds the
    #    pooled text and the micro-conditioning (`added_cond_kwargs`)
    text = text_inputs(pipe, prompt, negative, height=height, width=width)
    cond = text.cond
    context = text.hidden(n)  # (2N, 77, D): N unconditional, then N conditional
    extra_inputs = text.extra(n)

    # 2. timesteps, and ONE starting latent (as the stock pipeline draws it) repeated N times
    pipe.scheduler.set_timesteps(steps, device=device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    latent = pipe.prepare_latents(1, pipe.unet.config.in_channels, height, width, cond.dtype, device, generator)
    latents = latent.repeat(n, 1, 1, 1)  # (N, 4, h, w)
    w = torch.tensor(scales, device=device, dtype=latents.dtype).view(n, 1, 1, 1)
    extra = pipe.prepare_extra_step_kwargs(generator, 0.0)

    sweep = CFGSweep(prompt=prompt, scales=scales, images=[])
    for t in pipe.progress_bar(pipe.scheduler.timesteps) if progress else pipe.scheduler.timesteps:
        # 3. one U-Net call for all N latents, unconditional and conditional halves together
        model_input = pipe.scheduler.scale_model_input(torch.cat([latents] * 2), t)  # (2N, 4, h, w)
        noise = pipe.unet(model_input, t, encoder_hidden_states=context, **extra_inputs, return_dict=False)[0]
        noise_uncond, noise_cond = noise.chunk(2)  # 2 × (N, 4, h, w)
        # 4. each latent guided with its own scale: ε̂ = ε_∅ + w·(ε_c − ε_∅)
        guided = noise_uncond + w * (noise_cond - noise_uncond)
        if keep_steps:
            copied = torch.stack([latents, noise_uncond, noise_cond]).float().cpu()  # one device→host copy
            sweep.timesteps.append(int(t))
            sweep.latents.append(copied[0])
            sweep.noise_uncond.append(copied[1])
            sweep.noise_cond.append(copied[2])
        # 5. the scheduler's own step: x_t → x_{t-1}
        latents = pipe.scheduler.step(guided, t, latents, **extra, return_dict=False)[0]

    # 6. decode, a few images per VAE call on CUDA (memory grows with the pixels of a call)
    decoded = vae_decode(pipe.vae, latents)  # (S, 3, H, W) in [-1, 1]
    sweep.images = pipe.image_processor.postprocess(decoded, output_type="pil")
    return sweep


def classifier_guided_sample(
    pipe,
    classifier,
    target: int,
    scale: float,
    *,
    attribute: str = "shape",
    n: int = 16,
    steps: int = 25,
    seed: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample n images from the UNCONDITIONAL model (empty prompt), steered toward class `target`.

    `classifier(x_t, t)` returns logits per attribute (e.g. `sdexplain.toy.extras.NoisyLatentClassifier`),
    trained on x_t = sqrt(ᾱ_t)·x_0 + sqrt(1−ᾱ_t)·ε. Returns (images in [-1, 1] (n, 3, H, W), the
    classifier's p(target | x_t) at each step (steps, n)). scale 0 = plain unconditional sampling.
    """
    if scale < 0:
        raise ValueError(f"scale must be ≥ 0, got {scale}")
    check_steps(steps)
    device = pipe._execution_device
    scheduler = pipe.scheduler
    # 1. the unconditional context: the empty prompt, as in training's 10 % dropped captions
    with torch.no_grad():
        context, _ = pipe.encode_prompt("", device, n, False)  # (n, 77, D)
    # 2. starting noise and timesteps
    scheduler.set_timesteps(steps, device=device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    size = pipe.unet.config.sample_size
    latents = pipe.prepare_latents(n, pipe.unet.config.in_channels, size * pipe.vae_scale_factor, size * pipe.vae_scale_factor, context.dtype, device, generator)
    alphas_cumprod = scheduler.alphas_cumprod.to(device)
    confidence = []
    for t in pipe.progress_bar(scheduler.timesteps) if progress else scheduler.timesteps:
        x_in = scheduler.scale_model_input(latents, t)  # the VP-form x_t the U-Net and classifier see
        with torch.no_grad():
            eps = pipe.unet(x_in, t, encoder_hidden_states=context, return_dict=False)[0]  # ε(x_t)
        # 3. ∇_{x_t} log p(y | x_t) from the classifier
        with torch.enable_grad():
            x = x_in.detach().float().requires_grad_(True)
            log_probs = classifier(x, t.expand(n).to(device))[attribute].log_softmax(-1)  # (n, classes)
            selected = log_probs[:, target]
            grad = torch.autograd.grad(selected.sum(), x)[0]
        confidence.append(selected.detach().exp().cpu())
        # 4. ε̂ = ε − s·sqrt(1 − ᾱ_t)·∇ log p(y | x_t): the guidance shifts the drift toward y
        eps = eps - scale * (1 - alphas_cumprod[t]).sqrt() * grad.to(eps.dtype)
        latents = scheduler.step(eps, t, latents, return_dict=False)[0]
    return vae_decode(pipe.vae, latents), torch.stack(confidence)


# ----------------------------------------------------------------------------- measurements


def _to_judge_range(pictures) -> torch.Tensor:
    """PIL images (or a (B, 3, H, W) tensor in [0, 1]) -> a float tensor (B, 3, H, W) in [-1, 1]."""
    if isinstance(pictures, torch.Tensor):
        return pictures.float() * 2 - 1
    import numpy as np

    array = np.stack([np.asarray(p.convert("RGB"), dtype=np.float32) / 255 for p in pictures])  # (B, H, W, 3)
    return torch.from_numpy(array).permute(0, 3, 1, 2) * 2 - 1


def mean_pairwise_distance(pictures: torch.Tensor) -> float:
    """Diversity of a set of images (K, 3, H, W): the mean over all pairs of the RMS pixel difference.

    On images in [0, 1]: 0 when every image is the same, larger when they differ more.
    """
    k = len(pictures)
    if k < 2:
        raise ValueError(f"diversity needs at least two images, got {k}")
    flat = pictures.reshape(k, -1).float()
    distances = torch.cdist(flat, flat) / flat.shape[1] ** 0.5  # (K, K) RMS differences
    return float(distances.sum() / (k * (k - 1)))  # the diagonal is zero


@dataclass
class GuidanceCurve:
    """Prompt adherence and sample diversity against the CFG scale (see `adherence_and_diversity`)."""

    scales: list[float]
    prompts: list[str]
    seeds: list[int]
    adherence: dict[str, list[float]]  # attribute ("colour", "shape", "position", "all") -> per scale share matching
    diversity: list[float]  # per scale: mean pairwise RMS pixel distance across seeds, averaged over prompts
    images: torch.Tensor  # (prompts, seeds, scales, 3, H, W) in [0, 1]


ATTRIBUTES = ("colour", "shape", "position")


def _seed_sweeps(pipe, prompt: str, scales: list[float], seeds: list[int], steps: int):
    """Per seed, one batched `cfg_sweep` of ``prompt`` over ``scales``: its images (S, 3, H, W) in the judge's [-1, 1]."""
    for seed in seeds:
        yield _to_judge_range(cfg_sweep(pipe, prompt, scales, steps=steps, seed=seed, keep_steps=False, progress=False).images)


def adherence_and_diversity(pipe, judge, prompts, scales, seeds=(0, 1, 2), *, steps: int = 10, progress=None) -> GuidanceCurve:
    """Measure the CFG trade-off: per scale, how often images follow the prompt and how much they vary.

    For every (prompt, seed) one `cfg_sweep` (all scales in one batch). `judge` (the toy's
    `Judge`) reads colour, shape and position off each image; adherence per attribute is the share
    of images whose judged value equals the one the prompt names (attributes a prompt leaves out are
    not counted), "all" the share matching every named attribute at once. Diversity is the mean
    pairwise RMS pixel distance (images in [0, 1]) between the seeds' images of one prompt, averaged
    over prompts. `progress(done, total)` is called after each sweep.
    """
    from sdexplain.toy import world
    from sdexplain.toy.evaluate import judge_images

    scales = check_scales(scales)
    prompts, seeds = list(prompts), [int(s) for s in seeds]
    if not prompts or len(seeds) < 2:
        raise ValueError(f"need at least one prompt and two seeds, got {len(prompts)} prompts and {len(seeds)} seeds")
    labels = {"colour": world.COLOUR_NAMES, "shape": world.SHAPES, "position": world.POSITION_NAMES}
    hits = {name: torch.zeros(len(scales)) for name in (*ATTRIBUTES, "all")}
    counts = {name: 0 for name in (*ATTRIBUTES, "all")}
    pictures = []  # per prompt: (seeds, scales, 3, H, W)
    done = 0
    for prompt in prompts:
        named = {k: v for k, v in world.parse_caption(prompt).items() if k in ATTRIBUTES and v is not None}
        if not named:
            raise ValueError(f"prompt {prompt!r} names no colour, shape or position the judge could check")
        per_seed = []
        for batch in _seed_sweeps(pipe, prompt, scales, seeds, steps):  # (S, 3, H, W) in [-1, 1]
            verdict = judge_images(judge, batch)
            match_all = torch.ones(len(scales), dtype=torch.bool)
            for name, value in named.items():
                match = verdict[name]["predicted"] == labels[name].index(value)  # (S,)
                hits[name] += match.float()
                counts[name] += 1
                match_all &= match
            hits["all"] += match_all.float()
            counts["all"] += 1
            per_seed.append((batch + 1) / 2)
            done += 1
            if progress is not None:
                progress(done, len(prompts) * len(seeds))
        pictures.append(torch.stack(per_seed))  # (K, S, 3, H, W)
    stacked = torch.stack(pictures)  # (P, K, S, 3, H, W)
    diversity = [float(sum(mean_pairwise_distance(stacked[p, :, i]) for p in range(len(prompts))) / len(prompts)) for i in range(len(scales))]
    adherence = {name: (hits[name] / counts[name]).tolist() for name in hits if counts[name]}
    return GuidanceCurve(scales, prompts, seeds, adherence, diversity, stacked)


def entropy_bits(counts) -> float:
    """Entropy in bits of the distribution given by `counts` (non-negative, not all zero).

    0 when every sample has the same value; log2(k) when k values are equally frequent.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64).flatten()
    if len(counts) == 0 or bool((counts < 0).any()) or float(counts.sum()) == 0:
        raise ValueError(f"counts must be non-negative and not all zero, got {counts.tolist()}")
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum()) + 0.0  # + 0.0: no "-0.0" for a single value


@dataclass
class AttributeDiversity:
    """What CFG does to each attribute of many seeds' images (see `attribute_diversity`)."""

    prompt: str
    scales: list[float]
    seeds: list[int]
    named: dict[str, str]  # the attributes the prompt names -> the value it names, e.g. {"shape": "cat"}
    labels: dict[str, tuple]  # attribute -> the judge's values, in the order of `counts`' columns
    counts: dict[str, torch.Tensor]  # attribute -> (scales, values): how many seeds were judged each value
    images: torch.Tensor  # (scales, seeds, 3, H, W) in [0, 1]

    def distinct(self, attribute: str) -> list[int]:
        """Per scale: how many different values the judge read for `attribute`."""
        return [int((row > 0).sum()) for row in self.counts[attribute]]

    def entropy(self, attribute: str) -> list[float]:
        """Per scale: the entropy in bits of the judged values of `attribute` (0 = all seeds alike)."""
        return [entropy_bits(row) for row in self.counts[attribute]]

    def value_counts(self, attribute: str) -> list[dict[str, int]]:
        """Per scale: how many seeds the judge read as each value of `attribute`, e.g. for "size"
        [{"small": 13, "large": 19}, ...] (every value of the judge's head, zeros included)."""
        if attribute not in self.counts:
            raise ValueError(f"attribute must be one of {sorted(self.counts)}, got {attribute!r}")
        return [{value: int(n) for value, n in zip(self.labels[attribute], row)} for row in self.counts[attribute]]

    def adherence(self, attribute: str) -> list[float]:
        """Per scale: the share of seeds judged to have the value the prompt names for `attribute`."""
        if attribute not in self.named:
            raise ValueError(f"the prompt {self.prompt!r} names no {attribute}; it names {sorted(self.named) or 'nothing'}")
        column = list(self.labels[attribute]).index(self.named[attribute])
        return [float(row[column] / row.sum()) for row in self.counts[attribute]]


def attribute_diversity(pipe, judge, prompt: str, scales, seeds=range(32), *, steps: int = 20, progress=None) -> AttributeDiversity:
    """Per CFG scale, how varied many seeds' images are in each attribute the judge reads.

    For every seed one `cfg_sweep` (all scales in one batch, so every scale starts from the same
    noise); `judge` (the toy's `Judge`) reads colour, shape, position and size off every image, and
    the result counts, per scale and attribute, how many seeds got each value. The attributes the
    prompt leaves out ("a cat": colour, position, size) show the variety between seeds; the ones it
    names show adherence. `progress(done, total)` is called after each seed.
    """
    from sdexplain.toy import world
    from sdexplain.toy.evaluate import judge_images

    scales = check_scales(scales)
    seeds = [int(s) for s in seeds]
    if len(seeds) < 2:
        raise ValueError(f"diversity needs at least two seeds, got {seeds}")
    named = {k: v for k, v in world.parse_caption(prompt).items() if v is not None}
    pictures = []  # per seed: (S, 3, H, W) in [-1, 1]
    for done, batch in enumerate(_seed_sweeps(pipe, prompt, scales, seeds, steps), start=1):
        pictures.append(batch)
        if progress is not None:
            progress(done, len(seeds))
    stacked = torch.stack(pictures, dim=1)  # (S, K, 3, H, W)
    labels = {name: tuple(judge.HEADS[name]) for name in ("colour", "shape", "position", "size")}
    counts = {name: torch.zeros(len(scales), len(values), dtype=torch.long) for name, values in labels.items()}
    for i in range(len(scales)):
        verdict = judge_images(judge, stacked[i])
        for name in labels:
            counts[name][i] = torch.bincount(verdict[name]["predicted"], minlength=len(labels[name]))
    return AttributeDiversity(prompt, scales, seeds, named, labels, counts, (stacked + 1) / 2)


@dataclass
class ClassifierGuidanceCurve:
    """Classifier guidance measured against its scale (see `classifier_guidance_curve`)."""

    target: str  # the label steered toward, e.g. "cat"
    attribute: str  # the classifier head used, e.g. "shape"
    scales: list[float]
    share: list[float]  # per scale: share of samples the JUDGE reads as `target` (an independent check)
    confidence: list[float]  # per scale: the classifier's mean p(target | x_t) at the last step
    confidence_per_step: list[torch.Tensor]  # per scale: (steps, n) p(target | x_t) during sampling
    images: list[torch.Tensor]  # per scale: (n, 3, H, W) in [-1, 1]


def classifier_guidance_curve(pipe, classifier, judge, target: str, scales, *, attribute: str = "shape", n: int = 8, steps: int = 10, seed: int = 0, progress=None) -> ClassifierGuidanceCurve:
    """Run `classifier_guided_sample` at each scale (same seed, so the same starting noise) and measure
    the share of samples the judge reads as `target`, and the classifier's own confidence in it."""
    from sdexplain.toy.evaluate import judge_images

    labels = list(classifier.HEADS[attribute]) if hasattr(classifier, "HEADS") else None
    if labels is None or target not in labels:
        raise ValueError(f"target {target!r} is not a label of the classifier's {attribute!r} head; allowed: {labels}")
    scales = check_scales(scales)
    index = labels.index(target)
    judge_index = list(judge.HEADS[attribute]).index(target)
    curve = ClassifierGuidanceCurve(target, attribute, scales, [], [], [], [])
    for i, scale in enumerate(scales):
        pictures, confidence = classifier_guided_sample(pipe, classifier, index, scale, attribute=attribute, n=n, steps=steps, seed=seed)
        verdict = judge_images(judge, pictures)[attribute]["predicted"]
        curve.share.append(float((verdict == judge_index).float().mean()))
        curve.confidence.append(float(confidence[-1].mean()))
        curve.confidence_per_step.append(confidence)
        curve.images.append(pictures)
        if progress is not None:
            progress(i + 1, len(scales))
    return curve


# ----------------------------------------------------------------------------- views of the results


@dataclass
class SweepStep:
    """One step of a `CFGSweep` in the shape `sdexplain.widgets.CfgExplorer` reads (like a trace's Step)."""

    index: int
    timestep: int
    latent_in: torch.Tensor  # (N, 4, h, w)
    noise_uncond: torch.Tensor  # (N, 4, h, w)
    noise_cond: torch.Tensor  # (N, 4, h, w)
    noise_guided: torch.Tensor  # (N, 4, h, w)


@dataclass
class SweepRun:
    """The per-step record of a `CFGSweep`, shared by all its scales (entry i of each tensor = scale i)."""

    steps: list[SweepStep]


def sweep_results(sweep: CFGSweep) -> list[tuple[float, Image.Image, SweepRun, int]]:
    """A `CFGSweep` as [(scale, image, run, batch_index)]: what `sdexplain.widgets.CfgExplorer` takes."""
    steps = [
        SweepStep(i, t, sweep.latents[i], sweep.noise_uncond[i], sweep.noise_cond[i], sweep.noise_guided(i))
        for i, t in enumerate(sweep.timesteps)
    ]
    run = SweepRun(steps)
    return [(scale, image, run, i) for i, (scale, image) in enumerate(zip(sweep.scales, sweep.images))]


def plot_tradeoff(curve: GuidanceCurve, figsize=(7.5, 3.0), *, show_diversity: bool = True):
    """Adherence (per attribute, and all at once) and diversity against the CFG scale: two axes
    (one, adherence only, with `show_diversity=False`)."""
    from sdexplain.i18n import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    if show_diversity:
        left, right = fig.subplots(1, 2)
    else:
        left, right = fig.subplots(), None
    for name, values in curve.adherence.items():
        # "all" is drawn underneath, wide and pale, so a line that equals it (colour, when colour is what fails) stays visible
        style = dict(linewidth=6, color="0.75", zorder=1) if name == "all" else dict(linewidth=1.5, zorder=2)
        left.plot(curve.scales, values, marker="o", label=name, **style)
    left.set_xlabel("CFG scale s")
    left.set_ylabel("share matching the prompt")
    left.set_ylim(-0.03, 1.03)
    left.set_title("prompt adherence (judge)", fontsize=10)
    left.legend(fontsize=7)
    if right is None:
        return fig
    right.plot(curve.scales, curve.diversity, marker="o", color="tab:purple")
    right.set_xlabel("CFG scale s")
    right.set_ylabel("mean pairwise RMS distance")
    right.set_title(f"diversity across {len(curve.seeds)} seeds", fontsize=10)
    return fig


def plot_classifier_curve(curves, figsize=(5.0, 3.0)):
    """Per target: the share the judge reads as the target (solid) and the classifier's confidence in it at
    the last step (dashed), against the classifier-guidance scale. `curves`: one curve or a list of them."""
    from sdexplain.i18n import Figure

    curves = [curves] if isinstance(curves, ClassifierGuidanceCurve) else list(curves)
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    for i, curve in enumerate(curves):
        colour = f"C{i}"
        ax.plot(curve.scales, curve.share, marker="o", color=colour, label=f"judged '{curve.target}' (share)")
        ax.plot(curve.scales, curve.confidence, marker="s", linestyle="--", color=colour, label=f"classifier p({curve.target} | x_t)")
    ax.set_xlabel("classifier-guidance scale s")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=7)
    ax.set_title("classifier guidance: the judge vs the guiding classifier", fontsize=10)
    return fig


def image_rows(rows, labels, cell: float = 1.1):
    """Rows of images (each a (n, 3, H, W) tensor in [-1, 1] or a list of pictures), one label per row on the left."""
    from sdexplain.i18n import Figure

    from sdexplain import images

    pictures = [list(images.to_uint8(row, value_range=(-1, 1))) if isinstance(row, torch.Tensor) else [images.to_uint8(p) for p in row] for row in rows]
    ncols = max(len(row) for row in pictures)
    fig = Figure(figsize=(cell * ncols + 2.2, cell * len(pictures)), layout="constrained")
    axes = fig.subplots(len(pictures), ncols, squeeze=False)
    for r, (row, label) in enumerate(zip(pictures, labels)):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(row):
                ax.imshow(row[c], interpolation="nearest")
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    return fig


# ----------------------------------------------------------------------------- negative prompt


@dataclass
class NegativePromptEffect:
    """`negative_prompt_effect`: the same seeds with and without a negative prompt, judged.

    With a negative prompt n, CFG's unconditional half is ε(x_t, n) instead of ε(x_t, ""):
        ε̂ = ε(x_t, n) + s·(ε(x_t, prompt) − ε(x_t, n))
    so the guided step pushes away from n as much as toward the prompt.
    """

    prompt: str
    negative: str
    attribute: str  # the judge's head the negative names, e.g. "colour"
    value: str  # the value it names, e.g. "red"
    images_without: list  # [PIL.Image], negative "" (plain CFG)
    images_with: list  # [PIL.Image], the same seeds with the negative prompt
    share_without: float  # share of images the judge reads as `value`
    share_with: float
    probability_without: float  # the judge's mean p(value | image) over the images
    probability_with: float
    run_with: object  # the Trace of the run with the negative prompt: noise_uncond is ε(x_t, negative)


def negative_prompt_effect(pipe, judge, prompt: str, negative: str, *, n: int = 16, steps: int = 20, cfg: float = 3.0, seed: int = 0) -> NegativePromptEffect:
    """Generate `n` images of `prompt` (one batch, `seed`) without and with `negative`, and judge one attribute.

    `negative` must name exactly one toy attribute (e.g. "red"); the judge (the toy's `Judge`)
    reads that attribute off every image. Both runs start from the same noises.
    """
    from sdexplain.generate import generate
    from sdexplain.toy import world
    from sdexplain.toy.evaluate import judge_images

    named = {k: v for k, v in world.parse_caption(negative).items() if v is not None}
    if len(named) != 1:
        raise ValueError(f"negative prompt {negative!r} must name exactly one colour, shape, position or size; it names {named or 'none'}")
    (attribute, value), = named.items()
    index = list(judge.HEADS[attribute]).index(value)
    results = {}
    for key, negative_prompt in (("without", None), ("with", negative)):
        pictures, run = generate(pipe, prompt, negative_prompt=negative_prompt, steps=steps, cfg=cfg, seed=seed, num_images=n, attention=False, preview_every=0)
        verdict = judge_images(judge, _to_judge_range(pictures))[attribute]
        share = float((verdict["predicted"] == index).float().mean())
        probability = float(verdict["probs"][:, index].mean())
        results[key] = (pictures, share, probability, run)
    return NegativePromptEffect(
        prompt, negative, attribute, value,
        images_without=results["without"][0], images_with=results["with"][0],
        share_without=results["without"][1], share_with=results["with"][1],
        probability_without=results["without"][2], probability_with=results["with"][2],
        run_with=results["with"][3],
    )


@dataclass
class NegativePromptPlaces:
    """`negative_prompt_places`: the same seeds with and without a negative prompt, every picture read place by
    place by world 2's judge (`evaluate_pairs.read_places`), so one can tell whether an object the negative names
    goes away, turns into something else, or stays.

    A reading is {place: {"shape", "colour", "size"}} with only the places the judge finds occupied.
    """

    prompt: str
    negative: str
    images_without: list  # [PIL.Image], negative "" (plain CFG)
    images_with: list  # [PIL.Image], the same seeds with the negative prompt
    readings_without: list  # [reading] per image
    readings_with: list

    def _readings(self, which: str) -> list:
        if which not in ("without", "with"):
            raise ValueError(f"which must be 'without' or 'with', got {which!r}")
        return self.readings_without if which == "without" else self.readings_with

    def count(self, which: str, shape: str | None = None, colour: str | None = None, place: str | None = None) -> int:
        """How many objects the judge read in the pictures `which` ("without" / "with" the negative prompt)
        that have every attribute given (None: any)."""
        found = 0
        for reading in self._readings(which):
            for where, read in reading.items():
                if place in (None, where) and shape in (None, read["shape"]) and colour in (None, read["colour"]):
                    found += 1
        return found

    def objects_per_picture(self, which: str) -> list[int]:
        """The number of occupied places in each picture `which`."""
        return [len(reading) for reading in self._readings(which)]

    def fate(self, shape: str) -> dict[str, int]:
        """For every object of `shape` read without the negative prompt: what stands at its place in the picture
        of the same seed with it — "colour shape", or "nothing" — counted, most frequent first."""
        counts: dict[str, int] = {}
        for before, after in zip(self.readings_without, self.readings_with):
            for place, read in before.items():
                if read["shape"] != shape:
                    continue
                now = after.get(place)
                key = "nothing" if now is None else f"{now['colour']} {now['shape']}"
                counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def negative_prompt_places(pipe, judge, prompt: str, negative: str, *, n: int = 16, steps: int = 20, cfg: float = 3.0, seed: int = 0) -> NegativePromptPlaces:
    """Generate `n` images of `prompt` (one batch, `seed`) without and with the negative prompt `negative`, and
    read what stands at each place of every picture with `judge` (world 2's SlotJudge). Both runs start from the
    same noises, so picture i with and without the negative can be compared object by object."""
    from sdexplain.generate import generate
    from sdexplain.toy.evaluate_pairs import read_places

    if not isinstance(negative, str) or not negative.strip():
        raise ValueError(f"negative must be a non-empty prompt, got {negative!r}")
    pictures, readings = {}, {}
    for key, negative_prompt in (("without", None), ("with", negative)):
        pictures[key], _ = generate(pipe, prompt, negative_prompt=negative_prompt, steps=steps, cfg=cfg, seed=seed, num_images=n, attention=False, preview_every=0)
        readings[key] = read_places(judge, _to_judge_range(pictures[key]))
    return NegativePromptPlaces(prompt, negative, pictures["without"], pictures["with"], readings["without"], readings["with"])

"""Figures for the explainer: every function returns a ``matplotlib.figure.Figure``.

What it is for: the pictures the notebooks show — the noise schedule (ᾱ_t and σ_t against t, with
the sampler's timesteps), grids of images, training curves, a strip of a run's steps, the four
panels of classifier-free guidance at one step, cross-attention heat maps over an image, and the
channels of a latent. Plus ``MarkedCurve``: a curve rendered ONCE to an RGB array, onto which a
moving marker is drawn with PIL in a few milliseconds — what a slider callback may use.

What it is not: interactive. No function here touches ``pyplot`` (no global figure state, nothing
to close, safe inside widget callbacks); figures are built with ``Figure()`` and displayed by
returning them from a notebook cell (or ``IPython.display.display(fig)``). Widgets live in
``sdexplain.widgets``; array/bytes conversions in ``sdexplain.images``.
"""

from __future__ import annotations

import textwrap

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from sdexplain.i18n import Figure  # matplotlib's Figure; its texts follow sdexplain.set_language
from PIL import Image, ImageDraw

from sdexplain import diffusion, images

ALPHA_BAR_COLOUR = "tab:blue"
SIGMA_COLOUR = "tab:orange"


# --------------------------------------------------------------------------- schedule


def schedule_table(schedule) -> np.ndarray:
    """ᾱ_t for t = 0 … T−1 as float64 (T,), from a scheduler or its ᾱ table (tensor / array)."""
    if isinstance(schedule, torch.Tensor):
        return schedule.detach().cpu().double().numpy()
    if isinstance(schedule, np.ndarray):
        return schedule.astype(np.float64)
    return diffusion.alphas_cumprod(schedule).double().numpy()


def sampler_timesteps(scheduler, steps: int) -> list[int]:
    """The training timesteps a scheduler visits when sampling with ``steps`` steps (in order, from noisy to clean).

    Works on a copy: the caller's scheduler keeps its state. Repeats (PNDM visits one timestep
    twice) are kept; plots drop them.
    """
    copy = type(scheduler).from_config(scheduler.config)
    copy.set_timesteps(steps)
    return [int(t) for t in copy.timesteps]


def _unique_in_order(values) -> list[int]:
    seen, out = set(), []
    for v in values:
        if int(v) not in seen:
            seen.add(int(v))
            out.append(int(v))
    return out


def noise_schedule(
    schedule,
    t: int | None = None,
    timesteps: Sequence[int] | None = None,
    figsize: tuple[float, float] = (6.0, 3.2),
    title: str | None = "Noise schedule",
) -> Figure:
    """√ᾱ_t (signal scale) and σ_t = sqrt(1 − ᾱ_t) (noise level) against the training timestep t.

    Both curves are on the same scale, the factors of x_t = √ᾱ_t·x0 + σ_t·ε (so √ᾱ_t² + σ_t² = 1).

    ``schedule``: a scheduler or its ᾱ table. ``t``: draw a marker there. ``timesteps``: the
    sampler's timesteps (e.g. ``sampler_timesteps(pipe.scheduler, 20)``), drawn as a staircase on
    the σ_t curve: each step of sampling takes the latent from one noise level down to the next.

    One axes; ``ax.lines[0]`` is √ᾱ_t and ``ax.lines[1]`` is σ_t, both over t = 0 … T−1.
    """
    alpha_bar = schedule_table(schedule)  # (T,)
    signal = np.sqrt(alpha_bar)  # (T,) the factor of x0 in x_t
    sigma = np.sqrt(1.0 - alpha_bar)  # (T,) the factor of ε in x_t
    steps = np.arange(len(alpha_bar))
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(steps, signal, color=ALPHA_BAR_COLOUR, label="√ᾱ_t  (signal scale)")
    ax.plot(steps, sigma, color=SIGMA_COLOUR, label="σ_t = √(1−ᾱ_t)  (noise level)")
    if timesteps is not None and len(timesteps):
        visited = _unique_in_order(timesteps)  # noisy → clean
        xs, ys = [], []
        for i, step in enumerate(visited):
            xs.append(step)
            ys.append(sigma[step])
            if i + 1 < len(visited):  # across to the next timestep at this level, then down to its level
                xs.append(visited[i + 1])
                ys.append(sigma[step])
        ax.plot(xs, ys, color="0.3", linestyle="--", linewidth=1, label=f"sampler: {len(visited)} timesteps")
        ax.scatter(visited, sigma[visited], s=14, color="0.2", zorder=3)
    if t is not None:
        t = int(t)
        ax.axvline(t, color="crimson", linewidth=1)
        ax.scatter([t, t], [signal[t], sigma[t]], color="crimson", zorder=4, s=25)
        title = f"{title + ': ' if title else ''}t={t}, √ᾱ_t={signal[t]:.3f}, σ_t={sigma[t]:.3f}"
    ax.set_xlim(0, len(alpha_bar) - 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training timestep t")
    ax.legend(loc="center right", fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def figure_pixels(fig: Figure) -> np.ndarray:
    """A figure rendered to an RGB array (H, W, 3) uint8 (for an Image widget, without IPython's display)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


class MarkedCurve:
    """A figure rendered once to RGB; ``frame(x)`` draws a marker at x onto a copy (a few ms, no matplotlib).

    ``curves`` are (x, y) arrays already plotted on ``ax``; the marker is a vertical line at x and
    a dot on each curve at x (linear interpolation). Use ``frame_png(x)`` in slider callbacks.
    """

    def __init__(self, fig: Figure, ax, curves: Sequence[tuple[np.ndarray, np.ndarray]], colour: tuple[int, int, int] = (220, 20, 60), label=None):
        self.background = figure_pixels(fig)  # (H, W, 3) uint8
        self.height = self.background.shape[0]
        self._to_display = ax.transData.frozen()  # data -> display pixels (origin bottom-left)
        x0, y0, x1, y1 = ax.bbox.extents
        self._top, self._bottom = self.height - y1, self.height - y0  # axes extent in rows
        self.curves = [(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)) for x, y in curves]
        self.colour = colour
        self.label = label  # optional callable x -> str drawn next to the marker

    def _pixel(self, x: float, y: float) -> tuple[float, float]:
        px, py = self._to_display.transform((x, y))
        return float(px), float(self.height - py)  # (column, row)

    def frame(self, x: float) -> np.ndarray:
        """The curve with a marker at x -> uint8 (H, W, 3)."""
        picture = Image.fromarray(self.background.copy())
        draw = ImageDraw.Draw(picture)
        column, _ = self._pixel(x, 0.0)
        draw.line([(column, self._top), (column, self._bottom)], fill=self.colour, width=2)
        for xs, ys in self.curves:
            c, r = self._pixel(x, float(np.interp(x, xs, ys)))
            draw.ellipse([c - 4, r - 4, c + 4, r + 4], fill=self.colour)
        if self.label is not None:
            text = self.label(x)
            left = column + 5 if column < self.background.shape[1] * 0.7 else column - 5 - draw.textlength(text)
            draw.text((left, self._top + 3), text, fill=self.colour)
        return np.asarray(picture)

    def frame_png(self, x: float) -> bytes:
        return images.encode_png(self.frame(x))


def schedule_curve(schedule, timesteps: Sequence[int] | None = None, figsize: tuple[float, float] = (5.0, 2.6)) -> MarkedCurve:
    """``noise_schedule`` as a ``MarkedCurve``: the marker sits at t on both the √ᾱ_t and σ_t curves."""
    alpha_bar = schedule_table(schedule)
    fig = noise_schedule(alpha_bar, timesteps=timesteps, figsize=figsize, title=None)
    steps = np.arange(len(alpha_bar))
    return MarkedCurve(fig, fig.axes[0], [(steps, np.sqrt(alpha_bar)), (steps, np.sqrt(1 - alpha_bar))], label=lambda t: f"t={int(t)}")


# --------------------------------------------------------------------------- images


def image_grid(
    pictures: Sequence,
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    suptitle: str | None = None,
    cell: float = 2.0,
) -> Figure:
    """Images (anything ``images.to_uint8`` takes) in a grid, one axes each, with optional titles.

    Long titles are wrapped to the cell's width, so neighbouring titles never overlap.
    """
    n = len(pictures)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    if titles is not None and len(titles) != n:
        raise ValueError(f"{n} images but {len(titles)} titles")
    ncols = ncols or min(n, 6)
    nrows = -(-n // ncols)
    arrays = [images.to_uint8(p) for p in pictures]
    # rows as tall as the tallest picture needs (wide pictures get short rows, with room for a title)
    row = cell * min(1.0, max(0.5, max(a.shape[0] / a.shape[1] for a in arrays)))
    fig = Figure(figsize=(cell * ncols, row * nrows + (0.4 if suptitle else 0)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < n:
            ax.imshow(arrays[i], interpolation="nearest")
            if titles is not None:
                ax.set_title(wrap_title(titles[i], cell), fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def weight_rows(images_per_weight: Sequence, weights: Sequence[float], n: int = 6, gain: float = 4.0, label: str = "w = {w:g}", cell: float = 1.0) -> Figure:
    """A LoRA's weight sweep, tight: one row per weight, its first ``n`` pictures side by side on the
    left and, on the right, what the weight changed against the first row (the base pictures):
    |picture − base| × ``gain`` (``adapters.amplified_difference``; black = unchanged)."""
    from sdexplain import adapters

    if len(images_per_weight) != len(weights) or not weights:
        raise ValueError(f"{len(images_per_weight)} image batches for {len(weights)} weights; one batch per weight, at least one")
    base = images_per_weight[0][:n]
    fig = Figure(figsize=(2 * n * cell + 0.6, len(weights) * cell + 0.45), layout="constrained")
    axes = fig.subplots(len(weights), 2, squeeze=False)
    for row, (batch, w) in enumerate(zip(images_per_weight, weights)):
        left = np.concatenate(list(images.to_uint8(batch[:n])), axis=1)
        right = np.concatenate(adapters.amplified_difference(batch[:n], base, gain), axis=1)
        for ax, picture in zip(axes[row], (left, right)):
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
        axes[row, 0].set_ylabel(label.format(w=w), rotation=0, ha="right", va="center", fontsize=9)
    axes[0, 0].set_title("pictures", fontsize=9)
    axes[0, 1].set_title(f"|picture − first row| × {gain:g}", fontsize=9)
    return fig


def wrap_title(title: str, cell: float, fontsize: float = 9.0) -> str:
    """``title`` with every line wrapped to fit an axes ``cell`` inches wide. A caption's characters, spaces
    included, measured 0.66·fontsize points each on average in DejaVu Sans (notebook 06's slot-swap titles,
    which overlapped when wrapped at 0.55); 0.7 leaves a margin (`test_neighbouring_titles…` draws them)."""
    width = max(6, int(cell * 72 / (0.7 * fontsize)))
    return "\n".join(textwrap.fill(line, width) if line else line for line in str(title).split("\n"))


def latent_channels(latent, vmax: float | None = None, titles: Sequence[str] | None = None, title: str | None = None, cell: float = 1.8) -> Figure:
    """The channels of one latent (C, h, w) side by side on one shared symmetric grey scale, with a colour bar.

    C image axes plus one colour-bar axes.
    """
    z = images.latent_array(latent)  # (C, h, w)
    vmax = vmax or float(np.abs(z).max()) or 1.0
    fig = Figure(figsize=(cell * len(z) + 0.8, cell + 0.5), layout="constrained")
    axes = fig.subplots(1, len(z), squeeze=False)[0]
    for c, ax in enumerate(axes):
        shown = ax.imshow(z[c], cmap="gray", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(titles[c] if titles else f"channel {c}", fontsize=9)
        ax.set_axis_off()
    fig.colorbar(shown, ax=list(axes), shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def _spread(items: list, n: int) -> list:
    """At most n items evenly spread over ``items``, always keeping the first and the last."""
    if len(items) <= n:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


STRIP_KINDS = ("previews", "x0", "noisy", "latent", "noise")


def step_strip(run, what: str = "previews", pipe=None, batch_index: int = 0, max_frames: int = 8, cell: float = 1.6) -> Figure:
    """One row of pictures across a traced run's steps, titled with step and timestep.

    ``what``:
        "previews"  the trace's own decoded previews of x̂0 (``run.previews``; no VAE work here)
        "x0"        the predicted clean image x̂0 at each step, decoded now with ``pipe``'s VAE (one batch)
        "noisy"     the noisy latent x_t itself going into the U-Net, decoded with ``pipe``'s VAE: the
                    article's "image at each sampling step". Euler-type samplers store x_t/√ᾱ_t
                    (``pipe.scheduler.init_noise_sigma`` ≠ 1); that is brought back to x_t first.
        "latent"    the latent x_t going into the U-Net, 4 grey channels on one scale
        "noise"     the guided noise prediction ε̂, 4 grey channels on one scale
    At most ``max_frames`` steps, evenly spread, first and last included. One axes per frame.
    """
    if what not in STRIP_KINDS:
        raise ValueError(f"unknown strip {what!r}; allowed: {', '.join(STRIP_KINDS)}")
    total = len(run.steps)

    def label(index: int) -> str:
        return f"step {index + 1}/{total}\nt={int(run.steps[index].timestep)}"

    if what == "previews":
        if not run.previews:
            raise ValueError("the run has no previews (traced with preview_every=0?); try what='x0' with a pipe")
        chosen = _spread(list(run.previews), max_frames)
        pictures = [images.to_uint8(p.images[batch_index], value_range=(0.0, 1.0)) for p in chosen]
        return image_grid(pictures, [label(p.step) for p in chosen], ncols=len(chosen), cell=cell)
    chosen, pictures = _step_pictures(run, what, pipe, batch_index, max_frames)
    return image_grid(pictures, [label(s.index) for s in chosen], ncols=len(chosen), cell=cell)


def step_pictures(run, what: str, pipe=None, batch_index: int = 0) -> list[np.ndarray]:
    """The pictures `step_strip` shows, for EVERY step of a traced run (uint8 (H, W, 3) each).

    ``what`` is "x0", "noisy", "latent" or "noise" (as in `step_strip`); "x0" and "noisy" decode with
    ``pipe``'s VAE. Use it to measure what a strip shows, e.g. each step's distance from the final image.
    """
    if what not in STRIP_KINDS or what == "previews":
        raise ValueError(f"unknown step picture {what!r}; allowed: {', '.join(k for k in STRIP_KINDS if k != 'previews')}")
    return _step_pictures(run, what, pipe, batch_index, None)[1]


def _step_pictures(run, what: str, pipe, batch_index: int, max_frames: int | None) -> tuple[list, list]:
    """(chosen steps, their pictures) for step_strip / step_pictures; max_frames=None keeps every step."""
    field = {"x0": "x0", "noisy": "latent_in", "latent": "latent_in", "noise": "noise_guided"}[what]
    chosen = [s for s in run.steps if getattr(s, field) is not None]
    chosen = chosen if max_frames is None else _spread(chosen, max_frames)
    if not chosen:
        raise ValueError(f"the run kept no {field} tensors (see run.reductions)")
    stack = torch.stack([getattr(s, field)[batch_index] for s in chosen]).float()  # (n, 4, h, w)
    if what in ("x0", "noisy"):
        if pipe is None:
            raise ValueError(f"step_strip(what={what!r}) decodes with the VAE: pass pipe=")
        if what == "noisy" and float(pipe.scheduler.init_noise_sigma) != 1.0:  # x_t/√ᾱ_t → x_t = √ᾱ_t·(x_t/√ᾱ_t)
            stack = stack * torch.tensor([s.alpha_bar**0.5 for s in chosen]).view(-1, 1, 1, 1)
        pictures = list(images.to_uint8(images.vae_decode(pipe.vae, stack)))
    else:
        vmax = float(stack.abs().max()) or 1.0
        pictures = [images.latent_channels_grid(z, vmax=vmax) for z in stack]
    return chosen, pictures


# --------------------------------------------------------------------------- training curves


def _series(values) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A sequence, or a mapping name -> sequence / (x, y): as name -> (x, y) arrays."""
    if not isinstance(values, Mapping):
        values = {"": values}
    out = {}
    for name, v in values.items():
        if isinstance(v, tuple) and len(v) == 2:
            x, y = np.asarray(v[0], dtype=np.float64), np.asarray(v[1], dtype=np.float64)
        else:
            y = np.asarray(v, dtype=np.float64)
            x = np.arange(len(y), dtype=np.float64)
        out[name] = (x, y)
    return out


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first points average what there is)."""
    if window <= 1 or len(y) == 0:
        return y
    cumulative = np.cumsum(np.insert(y, 0, 0.0))
    counts = np.minimum(np.arange(1, len(y) + 1), window)
    return (cumulative[1:] - cumulative[np.maximum(0, np.arange(1, len(y) + 1) - window)]) / counts


def loss_curve(losses, smooth: int = 1, log: bool = True, xlabel: str = "training step", title: str | None = "Training loss") -> Figure:
    """Loss against step. ``losses``: a sequence, or name -> sequence or (steps, values) (e.g. train / val).

    With ``smooth`` > 1 the raw curve is drawn faintly and a moving average over it. One axes; the
    first line of each series is its raw data.
    """
    fig = Figure(figsize=(6.0, 3.2), layout="constrained")
    ax = fig.add_subplot()
    for name, (x, y) in _series(losses).items():
        raw = ax.plot(x, y, alpha=0.35 if smooth > 1 else 1.0, label=None if smooth > 1 else (name or None))[0]
        if smooth > 1:
            ax.plot(x, _smooth(y, smooth), color=raw.get_color(), label=f"{name} (mean of {smooth})".strip())
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def confidence_histogram(confidence, classes: int, title: str | None = None, bins: int = 16, ylabel: str = "samples") -> Figure:
    """How sure a classifier is: a histogram of its probability for its top class, from 1/classes
    (no idea: every class as likely) to 1 (certain); `ylabel` names what was counted."""
    if classes < 2:
        raise ValueError(f"classes must be at least 2, got {classes}")
    fig = Figure(figsize=(6, 2.6), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(np.asarray(confidence), bins=np.linspace(1 / classes, 1, bins + 1), color="tab:blue", edgecolor="white")
    ax.set(xlabel=f"judge's probability for its top shape (1/{classes} = no idea)", ylabel=ylabel, title=title)
    return fig


def error_vs_timestep(t, error, title: str | None = None) -> Figure:
    """Per-example training error against the example's timestep t (log scale), one dot each."""
    t, error = np.asarray(t), np.asarray(error)
    if t.shape != error.shape:
        raise ValueError(f"t and error must have the same shape, got {t.shape} and {error.shape}")
    fig = Figure(figsize=(6, 2.8), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(t, error, s=6, alpha=0.6)
    ax.set(xlabel="timestep t of the example", ylabel="squared error", yscale="log", title=title)
    return fig


def step_cost(sweep, prompt_title: str | None = None) -> Figure:
    """Time per sampling step against image size (``latents.resolution_sweep``'s results), beside the
    images at their true relative sizes."""
    if not sweep:
        raise ValueError("step_cost needs at least one measured size")
    fig = Figure(figsize=(9, 2.8), layout="constrained")
    ax, ax_img = fig.add_gridspec(1, 2, width_ratios=[1, 1.4]).subplots()
    pixels = [r.geometry.pixel_numbers / r.geometry.image_channels for r in sweep]
    ax.plot(pixels, [r.seconds_per_step * 1000 for r in sweep], marker="o")
    for r, p in zip(sweep, pixels):
        ax.annotate(f"{r.geometry.height}²", (p, r.seconds_per_step * 1000), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set(xlabel="pixels per image", ylabel="ms per sampling step", title="Measured cost of one step")
    canvas = np.full((max(r.geometry.height for r in sweep), sum(r.geometry.width + 4 for r in sweep), 3), 255, np.uint8)
    left = 0
    for r in sweep:  # the images at their true relative sizes (a sweep run without a prompt has none)
        if r.image is not None:
            canvas[: r.geometry.height, left : left + r.geometry.width] = images.to_uint8(r.image)
        left += r.geometry.width + 4
    ax_img.imshow(canvas, interpolation="nearest")
    ax_img.set_axis_off()
    ax_img.set_title(prompt_title)
    return fig


def accuracy_vs_t(t, accuracy, chance: float | Mapping[str, float] | None = None, title: str | None = "Accuracy against timestep") -> Figure:
    """Accuracy (0…1) against timestep t: one line per series (``accuracy`` a sequence or name -> sequence).

    ``chance``: a dashed chance level (one float, or one per series name). One axes.
    """
    t = np.asarray(t, dtype=np.float64)
    fig = Figure(figsize=(6.0, 3.2), layout="constrained")
    ax = fig.add_subplot()
    series = accuracy if isinstance(accuracy, Mapping) else {"": accuracy}
    for name, values in series.items():
        line = ax.plot(t, np.asarray(values, dtype=np.float64), marker="o", markersize=3, label=name or None)[0]
        level = chance.get(name) if isinstance(chance, Mapping) else None
        if level is not None:
            ax.axhline(level, color=line.get_color(), linestyle=":", linewidth=1)
    if chance is not None and not isinstance(chance, Mapping):
        ax.axhline(float(chance), color="0.5", linestyle="--", linewidth=1, label="chance")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("timestep t (noisier →)")
    ax.set_ylabel("accuracy")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- guidance


def cfg_panels(noise_uncond, noise_cond, noise_guided=None, scale: float | None = None, channel: int | None = None, title: str | None = None, names: Sequence[str] | None = None) -> Figure:
    """Classifier-free guidance at one step, four panels:

        unconditional ε̂(x_t, "")   conditional ε̂(x_t, prompt)   difference cond − uncond   guided ε̂

    The two noises and the guided noise share ONE colour scale (left colour bar). The difference is
    far smaller (on the shared scale it would be a blank white square), so it gets its OWN
    symmetric scale and its own colour bar, and its title says so with its range. White = 0 in both.
    Tensors are one latent's noise (C, h, w) or (1, C, h, w). ``noise_guided`` defaults to
    uncond + scale·(cond − uncond). ``channel``: show one channel; default all as a 2×2 grid.
    ``names``: the four panel titles (e.g. for a negative prompt, whose noise takes the unconditional place).
    Returns a figure with 6 axes (4 panels, 2 colour bars).
    """
    uncond, cond = images.latent_array(noise_uncond), images.latent_array(noise_cond)
    diff = cond - uncond
    if noise_guided is None:
        if scale is None:
            raise ValueError("give noise_guided or the guidance scale")
        guided = uncond + scale * diff
    else:
        guided = images.latent_array(noise_guided)
    panels = [uncond, cond, diff, guided]
    if names is None:
        names = ["unconditional", "conditional", "cond − uncond", "guided" + (f" (s={scale:g})" if scale is not None else "")]
    if len(names) != 4:
        raise ValueError(f"names must give 4 panel titles, got {len(names)}")
    pictures = [p[channel] if channel is not None else images.channel_mosaic(p) for p in panels]
    vmax = max(float(np.nanmax(np.abs(p))) for k, p in enumerate(pictures) if k != 2) or 1.0
    dmax = float(np.nanmax(np.abs(pictures[2]))) or 1.0
    fig = Figure(figsize=(10.0, 3.1), layout="constrained")
    axes = fig.subplots(1, 4)
    for k, (ax, picture, name, raw) in enumerate(zip(axes, pictures, names, panels)):
        own = k == 2
        limit = dmax if own else vmax
        shown = ax.imshow(picture, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        label = f"{name}\n‖·‖={np.linalg.norm(raw):.2f}"
        if own:
            label += f"\nown scale ±{dmax:.2f}"
            diff_image = shown
        else:
            shared_image = shown
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    fig.colorbar(shared_image, ax=[axes[0], axes[1], axes[3]], shrink=0.8, location="left", label=f"±{vmax:.2f}")
    fig.colorbar(diff_image, ax=axes[2], shrink=0.8, location="right")
    if title:
        fig.suptitle(title)
    return fig


def attention_overlays(
    pictures: Sequence,
    heats: Sequence,
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    suptitle: str | None = None,
    cell: float = 2.0,
    alpha: float = 0.6,
    shared: bool = True,
) -> Figure:
    """Heat maps over images, one axes each; a heat of None shows its picture plain.

    ``pictures``: one image for all, or one per heat. ``shared``: every map on ONE scale (the lowest
    to the highest value among them) with a colour bar, so maps can be compared by eye; otherwise
    each map is stretched to its own min…max (where it looks, not how much) and its title gives that range.
    """
    heats = list(heats)
    if not heats:
        raise ValueError("attention_overlays needs at least one map")
    if not isinstance(pictures, (list, tuple)):
        pictures = [pictures] * len(heats)
    if len(pictures) != len(heats):
        raise ValueError(f"{len(pictures)} pictures for {len(heats)} maps")
    arrays = [None if h is None else np.asarray(h.detach().float().cpu() if isinstance(h, torch.Tensor) else h, dtype=np.float32) for h in heats]
    titles = list(titles) if titles is not None else [""] * len(heats)
    values = [a for a in arrays if a is not None]
    lo, hi = (min(float(a.min()) for a in values), max(float(a.max()) for a in values)) if values else (0.0, 1.0)
    shown, labels = [], []
    for picture, heat, label in zip(pictures, arrays, titles):
        if heat is None:
            shown.append(images.to_uint8(picture))
        elif shared:
            scaled = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
            shown.append(images.overlay_heatmap(picture, scaled, alpha=alpha, normalize=False))
        else:
            shown.append(images.overlay_heatmap(picture, heat, alpha=alpha, normalize=True))
            label = f"{label}\n{float(heat.min()):.3f}–{float(heat.max()):.3f}"
        labels.append(label)
    fig = image_grid(shown, labels, ncols=ncols, suptitle=suptitle, cell=cell)
    if shared and values:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        bar = fig.colorbar(ScalarMappable(Normalize(lo, hi), "jet"), ax=fig.axes, shrink=0.7, pad=0.02)
        bar.set_label("attention (one scale)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return fig


# --------------------------------------------------------------------------- attention


def attention_maps(image, maps: Mapping[str, object], alpha: float = 0.6, cell: float = 2.0, ncols: int | None = None, suptitle: str | None = None, shared: bool = True) -> Figure:
    """The generated image, then one overlay per word (``maps``: word -> (h, w) map). One axes per picture.

    ``shared``: all maps on one scale with a colour bar (see `attention_overlays`); else each its own range, given in its title.
    """
    n = len(maps) + 1
    return attention_overlays(image, [None, *maps.values()], ["image", *(str(w) for w in maps)], ncols=ncols or min(n, 6), suptitle=suptitle, cell=cell, alpha=alpha, shared=shared)

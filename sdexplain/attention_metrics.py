"""Measurements on cross-attention maps: do they add up, and does a word look at its own object?

The cross-attention maps of a traced run (`run.attention`, see `sdexplain.attention`) say, for every
latent pixel, how its attention is shared among the 77 token slots. Two honest checks:

1. Shares add up. Each pixel's attention over the 77 slots is a softmax, so it sums to 1, and the
   stored maps must keep that: averaging heads/layers/resolutions and resizing are convex, so per
   pixel start + words + end + padding = 1 (`token_mass`) — a check of the trace's bookkeeping
   (every slot kept, the padding counted right). `slot_shares` gives the same per slot, against
   the uniform 1/77. (That the recorded weights are the pipeline's own is checked against the
   layers' real outputs by `sdexplain.attention.check_against_processor`.)

2. A word looks at its object. Given the object's mask (on the toy, segmented from the generated
   image itself by `object_mask`: every pixel that is not the background colour), the share of a
   word's attention mass that lies inside the mask is compared with the share of the image the mask
   covers (`overlap`). A word that looks everywhere equally scores a ratio of 1; a ratio > 1 means
   its attention is concentrated on the object.

       mass_inside = Σ_cells A(cell)·m(cell) / Σ_cells A(cell)      A: the word's map (h, w)
       mask_share  = mean_cells m(cell)                              m: mask fraction per map cell
       ratio       = mass_inside / mask_share

   The mask is brought to the map's grid by area averaging (m = fraction of each cell the object
   covers), rather than the map being blown up to pixels: no attention value is invented.

On the toy, `overlap_rows` / `role_summary` / `role_figure` group the ratios by what each word of
the caption grammar names (colour, shape, size, position, other).

Not here: recording the maps (`sdexplain.attention`, `sdexplain.trace`), drawing them (`sdexplain.plots`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sdexplain.i18n import Figure  # matplotlib's Figure; its texts follow sdexplain.set_language

from sdexplain import images
from sdexplain.toy import world
from sdexplain.toy.world import BACKGROUND

DEFAULT_THRESHOLD = 60.0  # RGB distance (0…441) from the background above which a pixel is "object"


@dataclass
class Overlap:
    mass_inside: float  # share of the word's attention mass inside the mask, 0…1
    mask_share: float  # share of the image the mask covers, 0…1
    ratio: float  # mass_inside / mask_share: 1 = no preference, > 1 = looks at the object


def object_mask(image, background=BACKGROUND, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """bool (H, W): pixels whose colour is farther than `threshold` (Euclidean RGB, 0–255) from `background`.

    `image`: anything `sdexplain.images.to_uint8` takes (PIL image, uint8 array, tensor in [0, 1]).
    """
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    pixels = images.to_uint8(image).astype(np.float32)  # (H, W, 3)
    distance = np.linalg.norm(pixels - np.asarray(background, dtype=np.float32), axis=-1)  # (H, W)
    return distance > threshold


def mask_on_grid(mask, grid_hw: tuple[int, int]) -> torch.Tensor:
    """float (h, w): the fraction of each cell of an h×w grid that the (H, W) mask covers (area average)."""
    m = torch.as_tensor(np.asarray(mask), dtype=torch.float32)
    if m.dim() != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {tuple(m.shape)}")
    return F.adaptive_avg_pool2d(m[None, None], grid_hw)[0, 0]  # (h, w)


def overlap(heat, mask) -> Overlap:
    """How much of one attention map (h, w) falls inside a mask (H, W), against the mask's share of the image."""
    heat = torch.as_tensor(heat, dtype=torch.float32)
    if heat.dim() != 2:
        raise ValueError(f"heat must be one 2-D map (h, w), got shape {tuple(heat.shape)}")
    if float(heat.min()) < 0:
        raise ValueError("attention maps are probabilities: negative values found")
    m = mask_on_grid(mask, tuple(heat.shape))  # (h, w)
    total = float(heat.sum())
    if total == 0:
        raise ValueError("the attention map is all zeros: no mass to locate")
    share = float(m.mean())
    if share == 0:
        raise ValueError("the mask is empty: nothing to overlap with (is the image all background?)")
    inside = float((heat * m).sum()) / total
    return Overlap(inside, share, inside / share)


def word_overlaps(run, mask, batch_index: int = 0, step: int | None = None) -> dict[str, Overlap]:
    """{"position:word": Overlap} for every word of the prompt, then "<start>" and "<end>".

    `step=None` uses the maps averaged over all recorded steps.
    """
    attention = run.attention
    maps = dict(attention.word_maps(batch_index=batch_index, step=step))
    maps["<start>"] = attention.start_map(batch_index, step)
    maps["<end>"] = attention.end_map(batch_index, step)
    return {label: overlap(heat, mask) for label, heat in maps.items()}


def overlap_per_step(run, mask, position: int, batch_index: int = 0) -> list[tuple[int, float]]:
    """[(step index, ratio)] for one token position over the steps that have maps."""
    attention = run.attention
    return [(step, overlap(attention.token_map(position, batch_index, step), mask).ratio) for step in attention.steps]


def find_position(run, word: str, batch_index: int = 0) -> int:
    """Slot of the first prompt token whose text (without `</w>`) is `word`."""
    for label in run.attention.word_maps(batch_index=batch_index):
        position, text = label.split(":", 1)
        if text == word:
            return int(position)
    raise ValueError(f"{word!r} is not a token of prompt {batch_index}; tokens: {list(run.attention.word_maps(batch_index=batch_index))}")


def token_mass(run, batch_index: int = 0, step: int | None = None) -> dict[str, float]:
    """Mean attention per pixel going to the start token, the words, the end token and all padding slots.

    Each pixel's attention over all 77 slots is a probability distribution, so "total" must be 1
    ("max error": the largest per-pixel deviation from 1).
    """
    attention = run.attention
    length = attention.lengths[batch_index]
    slots = len(run.tokens[batch_index].ids) if run.tokens else 77  # the text encoder's sequence length
    maps = torch.stack([attention.token_map(p, batch_index, step) for p in range(length)])  # (length, h, w)
    padding = attention.padding_map(batch_index, step) * (slots - length)  # (h, w): all padding slots together
    start, words, end = maps[0], maps[1 : length - 1].sum(0), maps[length - 1]
    per_pixel = start + words + end + padding  # (h, w)
    return {
        "start": float(start.mean()),
        "words": float(words.mean()),
        "end": float(end.mean()),
        "padding": float(padding.mean()),
        "total": float(per_pixel.mean()),
        "max error": float((per_pixel - 1).abs().max()),
    }


def slot_shares(run, batch_index: int = 0, step: int | None = None) -> dict[str, float]:
    """Mean attention per pixel that ONE slot of each kind receives: the start slot, a word slot
    (the words' mean), the end slot and a padding slot (the padding's mean), next to "uniform" = 1/slots,
    what every slot would get if a pixel attended to all slots alike.

    `token_mass` gives the kinds' totals; a large total for the padding may come from its number of
    slots alone, which these per-slot values tell apart.
    """
    attention = run.attention
    length = attention.lengths[batch_index]
    slots = len(run.tokens[batch_index].ids) if run.tokens else 77
    mass = token_mass(run, batch_index, step)
    return {
        "start": mass["start"],
        "word": mass["words"] / max(length - 2, 1),
        "end": mass["end"],
        "padding": mass["padding"] / max(slots - length, 1),
        "uniform": 1.0 / slots,
    }


# ----------------------------------------------------------------------------- the toy's captions


def word_role(word: str) -> str:
    """What a word of the toy's caption grammar names: colour, shape, size, position or other ("a", "on", "the").
    World 2's synonyms name what their canonical word names ("kitty": shape, "crimson": colour)."""
    word = world.CANONICAL.get(word, word)
    if word in world.COLOUR_NAMES:
        return "colour"
    if word in world.SHAPES:
        return "shape"
    if word in world.SIZE_NAMES:
        return "size"
    if word in world.POSITION_NAMES:
        return "position"
    return "other"


def overlap_rows(run, masks, step: int | None = None) -> list[dict]:
    """One row per (image, token): {"image", "token", "role", "mass_inside", "mask_share", "ratio"}.

    masks: one (H, W) object mask per image of the run's batch. Tokens: every word, "<start>", "<end>".
    """
    if len(masks) != len(run.attention.lengths):
        raise ValueError(f"{len(masks)} masks for a batch of {len(run.attention.lengths)} images")
    rows = []
    for b, mask in enumerate(masks):
        for label, o in word_overlaps(run, mask, b, step).items():
            token = label.split(":", 1)[-1]
            role = token if token.startswith("<") else word_role(token)
            rows.append({"image": b, "token": token, "role": role, "mass_inside": o.mass_inside, "mask_share": o.mask_share, "ratio": o.ratio})
    return rows


def role_summary(rows: list[dict]) -> dict[str, tuple[float, float, int]]:
    """Per role: (mean ratio, min ratio, count) over the rows of `overlap_rows`, in a fixed order."""
    order = ["colour", "shape", "size", "position", "other", "<start>", "<end>"]
    out = {}
    for role in order:
        ratios = [r["ratio"] for r in rows if r["role"] == role]
        if ratios:
            out[role] = (float(np.mean(ratios)), float(np.min(ratios)), len(ratios))
    return out


def role_figure(rows: list[dict], title: str | None = None) -> Figure:
    """Each token's ratio (dots) and the mean per role (bar); the line at 1 = no preference for the object."""
    summary = role_summary(rows)
    fig = Figure(figsize=(5.2, 2.8), layout="constrained")
    ax = fig.add_subplot()
    for i, (role, (mean, _, _)) in enumerate(summary.items()):
        ax.bar(i, mean, color="tab:blue" if role in ("colour", "shape") else "0.7", width=0.6)
        ratios = [r["ratio"] for r in rows if r["role"] == role]
        ax.scatter(np.full(len(ratios), i) + np.linspace(-0.15, 0.15, len(ratios)), ratios, color="k", s=8, zorder=3)
    ax.axhline(1.0, color="crimson", linewidth=1, linestyle="--", label="1 = attention spread evenly")
    ax.set_xticks(range(len(summary)), list(summary), fontsize=8)
    ax.set_ylabel("attention inside object\n÷ object's share of image", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    if title:
        ax.set_title(title, fontsize=10)
    return fig

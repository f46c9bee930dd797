"""World v2's measures: two objects in one prompt, synonyms, and a word's attention on *its* object.

    python -m sdexplain.toy.evaluate --model DIR      # includes these when the model's judge reads places

    pairs        generated two-object scenes: each object's shape, colour and place read at its place by the
                 SlotJudge; both right; the binding failure (the two colours swapped between the objects)
    synonyms     the same seed with a synonym prompt and with the canonical prompt: judged the same?
    neighbours   each synonym's nearest word (cosine) in the text encoder's input-embedding table
    attention    per word of a two-object prompt, its attention on its own object against the other object

Everything is generated from held-out prompts (`samples.held_out_pairs`, `held_out_scenes`), judged by the
model's own SlotJudge, and compared with the prompt's ground truth; the notebooks (05, 06) reuse them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sdexplain.toy import world
from sdexplain.toy.samples import generate_latents_to_images, held_out_pairs, held_out_scenes
from sdexplain.toy.model import DEFAULT_GUIDANCE, SlotJudge

PLACES = world.POSITION_NAMES


def read_places(judge: SlotJudge, images: torch.Tensor) -> list[dict[str, dict[str, str]]]:
    """What `judge` reads at each place of each image (B, 3, 64, 64) in [-1, 1]:
    [{place: {"shape", "colour", "size"}}] with only the places it finds occupied (present logit > 0)."""
    if not isinstance(judge, SlotJudge):
        raise TypeError(f"reading places needs a SlotJudge (world v2's judge), got {type(judge).__name__}")
    with torch.no_grad():
        logits = judge.slots(images.float().clamp(-1, 1))
    present = logits["present"] > 0  # (B, 5)
    readings = []
    for i in range(len(images)):
        found = {}
        for p, place in enumerate(PLACES):
            if present[i, p]:
                found[place] = {name: labels[int(logits[name][i, p].argmax())] for name, labels in judge.SLOT_HEADS.items()}
        readings.append(found)
    return readings


def read_shapes(judge: SlotJudge, images: torch.Tensor) -> list[list[tuple[str, str, float]]]:
    """Every object `judge` finds in each image (B, 3, 64, 64) in [-1, 1] (present logit > 0, as `read_places`),
    as (place, shape, the judge's probability of that shape there), places in `world.POSITION_NAMES` order:
    what each object is, and how sure the judge is of it. An image where it finds nothing gives []."""
    if not isinstance(judge, SlotJudge):
        raise TypeError(f"reading shapes per place needs a SlotJudge (world v2's judge), got {type(judge).__name__}")
    with torch.no_grad():
        logits = judge.slots(images.float().clamp(-1, 1))
    confidence, shape = logits["shape"].softmax(-1).max(-1)  # (B, 5 places) each
    present = logits["present"] > 0  # (B, 5)
    return [
        [(place, world.SHAPES[int(shape[i, p])], float(confidence[i, p])) for p, place in enumerate(PLACES) if present[i, p]]
        for i in range(len(images))
    ]


def score_pair(pair: world.Pair, reading: dict[str, dict[str, str]]) -> dict[str, bool]:
    """One generated picture of `pair` against what the judge read (`read_places`):
    - "place": both of the pair's places are occupied; "shape" / "colour": each object's, read at its place;
    - "both": place, shape and colour right for both objects;
    - "swapped": the pair's two colours differ and each place holds the *other* object's colour;
    - "extra": an object at a place the prompt did not name."""
    first, second = pair.objects
    at = [reading.get(obj.position) for obj in pair.objects]
    place = all(r is not None for r in at)
    shape = place and all(r["shape"] == obj.shape for r, obj in zip(at, pair.objects))
    colour = place and all(r["colour"] == obj.colour for r, obj in zip(at, pair.objects))
    swapped = place and first.colour != second.colour and at[0]["colour"] == second.colour and at[1]["colour"] == first.colour
    return {
        "place": place,
        "shape": shape,
        "colour": colour,
        "both": place and shape and colour,
        "swapped": swapped,
        "extra": bool(set(reading) - {first.position, second.position}),
    }


def object_read_right(obj: world.Scene, reading: dict[str, dict[str, str]]) -> bool:
    """Whether the judge's reading (`read_places`) of one picture finds `obj` at its place: an object there, of
    `obj`'s shape and colour (size aside). Notebook 11 uses it for the object an inpainting mask left out."""
    at = reading.get(obj.position)
    return at is not None and at["shape"] == obj.shape and at["colour"] == obj.colour


def pair_adherence(pipe, judge: SlotJudge, n: int = 200, guidance_scale: float = DEFAULT_GUIDANCE, steps: int = 25, seed: int = 0) -> dict[str, float]:
    """Shares of `n` held-out two-object prompts (full captions) whose picture scores each of `score_pair`'s
    keys; "swapped" is also given among the prompts whose two colours differ ("swapped_of_distinct")."""
    pairs = held_out_pairs(n)
    images = generate_latents_to_images(pipe, [p.caption() for p in pairs], guidance_scale, steps, seed)
    scores = [score_pair(p, r) for p, r in zip(pairs, read_places(judge, images))]
    result = {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}
    distinct = [s["swapped"] for p, s in zip(pairs, scores) if p.first.colour != p.second.colour]
    result["swapped_of_distinct"] = float(np.mean(distinct)) if distinct else float("nan")
    return result


def synonym_caption(scene: world.Scene | world.Pair, rng: np.random.Generator) -> str | None:
    """The full caption with every word that has synonyms replaced by another member of its group, chosen
    by `rng`; None when no word of the caption has a synonym (e.g. "a green square in the center")."""
    words = scene.caption().split()
    changed = False
    for i, word in enumerate(words):
        if word in world.SYNONYMS:
            others = [w for w in world.SYNONYMS[word] if w != word]
            words[i] = others[rng.integers(len(others))]
            changed = True
    return " ".join(words) if changed else None


def synonym_agreement(pipe, judge: SlotJudge, n: int = 200, guidance_scale: float = DEFAULT_GUIDANCE, steps: int = 25, seed: int = 0) -> dict:
    """For held-out one- and two-object scenes with a synonym, the picture of the synonym prompt and of the
    canonical prompt from the same seed: the share judged the same (every occupied place, and the shape,
    colour and size read there, equal). Also returns a few example prompt pairs."""
    rng = np.random.default_rng(world.HELD_OUT_SEED + 5)
    result: dict = {"examples": []}
    for kind, scenes in (("one", held_out_scenes(2 * n)), ("two", held_out_pairs(2 * n))):
        pairs = [(s.caption(), c) for s in scenes if (c := synonym_caption(s, rng)) is not None][:n]
        canonical = generate_latents_to_images(pipe, [a for a, _ in pairs], guidance_scale, steps, seed)
        synonym = generate_latents_to_images(pipe, [b for _, b in pairs], guidance_scale, steps, seed)
        same = [a == b for a, b in zip(read_places(judge, canonical), read_places(judge, synonym))]
        result[kind] = float(np.mean(same))
        result[f"{kind}_prompts"] = len(pairs)
        result["examples"] += pairs[:2]
    return result


@dataclass
class Neighbour:
    word: str
    nearest: str  # the nearest other vocabulary word by cosine
    cosine: float
    partner: bool  # nearest is a synonym of word


def embedding_neighbours(tokenizer, text_encoder, words: list[str] | None = None) -> list[Neighbour]:
    """Each word's nearest other whole word (cosine) in the text encoder's input-embedding table — the
    table the article's "man / gentleman / guy" lives in. Candidates are the world's words (one token each)."""
    vocab = sorted(set(world.all_words(world.V2)))
    ids = []
    for word in vocab:
        token_ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(token_ids) != 1:
            raise ValueError(f"{word!r} is {len(token_ids)} tokens in this tokenizer, not one: is it world 2's?")
        ids.append(token_ids[0])
    table = text_encoder.get_input_embeddings().weight.detach().float()[ids]  # (V, d)
    unit = table / table.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    cos.fill_diagonal_(-2.0)
    out = []
    for word in words or [w for w in world.CANONICAL if w in vocab]:
        i = vocab.index(word)
        j = int(cos[i].argmax())
        out.append(Neighbour(word, vocab[j], float(cos[i, j]), world.CANONICAL.get(vocab[j], vocab[j]) == world.CANONICAL.get(word, word)))
    return out


def object_masks_from_picture(picture: np.ndarray, pair: world.Pair) -> np.ndarray | None:
    """bool (2, 64, 64): the generated picture's object pixels (not floor) on each object's side of the
    pair's dividing line, in caption order; None when a side holds no object pixels."""
    from sdexplain.attention_metrics import object_mask

    drawn = object_mask(picture)  # (64, 64)
    half = world.IMAGE_SIZE // 2
    sides = {"left": np.s_[:, :half], "right": np.s_[:, half:], "top": np.s_[:half, :], "bottom": np.s_[half:, :]}
    masks = np.zeros((2, world.IMAGE_SIZE, world.IMAGE_SIZE), dtype=bool)
    for k, obj in enumerate(pair.objects):
        masks[k][sides[obj.position]] = drawn[sides[obj.position]]
    return masks if masks.any(axis=(1, 2)).all() else None


@dataclass
class WordOnObjects:
    position: int  # the token's slot
    word: str
    owner: int  # 0: the first object's phrase, 1: the second's
    own: float  # attention density on its own object's mask (1 = no preference)
    other: float  # ... on the other object's mask

    @property
    def score(self) -> float:
        return self.own / max(self.other, 1e-6)


def pair_word_attention(run, pair: world.Pair, masks: np.ndarray, batch_index: int = 0, step: int | None = None) -> list[WordOnObjects]:
    """For every word of `pair`'s caption in a traced run, its attention density (`attention_metrics.overlap`'s
    ratio) on each object's mask (`masks` (2, H, W) in caption order); words before "and" belong to the
    first object, after it to the second. `step=None`: maps averaged over steps."""
    from sdexplain.attention_metrics import overlap

    rows, owner = [], 0
    for label, heat in run.attention.word_maps(batch_index=batch_index, step=step).items():
        position, word = label.split(":", 1)
        if word == "and":
            owner = 1
            continue
        rows.append(WordOnObjects(int(position), word, owner, overlap(heat, masks[owner]).ratio, overlap(heat, masks[1 - owner]).ratio))
    return rows


def word_attention(pipe, n: int = 100, guidance_scale: float = DEFAULT_GUIDANCE, steps: int = 25, seed: int = 0, batch_size: int = 25) -> dict:
    """Per word role of two-object prompts, its cross-attention on its own object against the other object.

    For each held-out pair whose picture has something on both sides, the masks are the picture's own object
    pixels on each side (`object_masks_from_picture`). A word's density on a mask is its share of attention
    mass there divided by the mask's share of the picture (`attention_metrics.overlap`'s ratio), averaged over
    steps; the word's score is density on its object ÷ density on the other object, so small and large
    objects compare fairly. Returns {role: geometric mean score, role + "_n": words}, with roles shape,
    colour, size, and "pictures": prompts measured of n."""
    from sdexplain import images as sd_images
    from sdexplain.attention_metrics import word_role
    from sdexplain.trace import trace

    pairs = held_out_pairs(n)
    scores: dict[str, list[float]] = {"shape": [], "colour": [], "size": []}
    measured = 0
    for start in range(0, n, batch_size):
        chunk = pairs[start : start + batch_size]
        generator = torch.Generator(device="cpu").manual_seed(seed + start)
        with trace(pipe, preview_every=0) as run:
            pictures = pipe([p.caption() for p in chunk], num_inference_steps=steps, guidance_scale=guidance_scale, generator=generator).images
        for b, (pair, picture) in enumerate(zip(chunk, pictures)):
            masks = object_masks_from_picture(sd_images.to_uint8(picture), pair)
            if masks is None:
                continue
            measured += 1
            for row in pair_word_attention(run, pair, masks, batch_index=b):
                role = word_role(row.word)
                if role in scores:
                    scores[role].append(row.score)
    result: dict = {"pictures": measured, "of": n}
    for role, values in scores.items():
        result[role] = float(np.exp(np.mean(np.log(values)))) if values else float("nan")
        result[f"{role}_n"] = len(values)
    return result


def pair_report(pipe, judge: SlotJudge, prompts: int = 200, scales=(1.0, DEFAULT_GUIDANCE), attention_prompts: int = 100) -> dict:
    """Every measure above, for `evaluate.evaluate` on a world-2 model."""
    return {
        "pairs": {scale: pair_adherence(pipe, judge, prompts, scale) for scale in scales},
        "synonyms": synonym_agreement(pipe, judge, prompts),
        "neighbours": [vars(nb) for nb in embedding_neighbours(pipe.tokenizer, pipe.text_encoder)],
        "attention": word_attention(pipe, attention_prompts),
    }


def format_pair_report(report: dict) -> str:
    lines = ["Two objects (held-out prompts, 25 steps, SlotJudge at each named place):",
             "  CFG scale | both right | place | shape | colour | colours swapped (of distinct) | extra object"]
    for scale, r in report["pairs"].items():
        lines.append(f"  {float(scale):9.1f} | {r['both']:10.1%} | {r['place']:5.1%} | {r['shape']:5.1%} | {r['colour']:6.1%} | {r['swapped']:5.1%} ({r['swapped_of_distinct']:.1%}) | {r['extra']:.1%}")
    s = report["synonyms"]
    lines.append(f"Synonym prompt judged as the canonical prompt (same seed): one object {s['one']:.1%} of {s['one_prompts']}, two objects {s['two']:.1%} of {s['two_prompts']}")
    nb = report["neighbours"]
    lines.append(f"Nearest word in the input-embedding table is a synonym: {sum(x['partner'] for x in nb)} of {len(nb)} — "
                 + ", ".join(f"{x['word']}→{x['nearest']} {x['cosine']:.2f}" for x in nb))
    a = report["attention"]
    lines.append(f"Cross-attention on own object ÷ on the other object (density, geometric mean, {a['pictures']} of {a['of']} pictures): "
                 + ", ".join(f"{role} words {a[role]:.2f} (n={a[role + '_n']})" for role in ("shape", "colour", "size")))
    return "\n".join(lines)

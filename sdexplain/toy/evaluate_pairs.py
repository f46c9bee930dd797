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

from dataclasses import dataclass, replace

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
    table the article's "man / gentleman / guy" lives in. Candidates are the world's words (one token each).
    The search itself is `tokens.nearest_neighbours` (notebook 05's), here with k = 1."""
    from types import SimpleNamespace

    from sdexplain.tokens import nearest_neighbours

    vocab = sorted(set(world.all_words(world.V2)))
    for word in vocab:
        token_ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(token_ids) != 1:
            raise ValueError(f"{word!r} is {len(token_ids)} tokens in this tokenizer, not one: is it world 2's?")
    pipe = SimpleNamespace(tokenizer=tokenizer, text_encoder=text_encoder)
    out = []
    for word in words or [w for w in world.CANONICAL if w in vocab]:
        ((name, cosine),) = nearest_neighbours(pipe, word, k=1, candidates=vocab)
        nearest = name.removesuffix("</w>")
        out.append(Neighbour(word, nearest, cosine, world.CANONICAL.get(nearest, nearest) == world.CANONICAL.get(word, word)))
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
    colour, size, position (left, right, top, bottom) and other ("a", "on", "the", …), and "pictures":
    prompts measured of n."""
    from sdexplain import images as sd_images
    from sdexplain.attention_metrics import word_role
    from sdexplain.trace import trace

    pairs = held_out_pairs(n)
    scores: dict[str, list[float]] = {"shape": [], "colour": [], "size": [], "position": [], "other": []}
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


def pair_from_prompt(prompt: str) -> world.Pair:
    """The two objects a two-object prompt names, e.g. "a red cat on the left and a blue dog on the right",
    as a `world.Pair` in the prompt's order (synonyms read as their canonical word). A phrase that names no
    size gets "large" and one without a colour is refused: the pair's masks and colours are read from it."""
    objects = world.parse_objects(prompt)
    if len(objects) != 2:
        raise ValueError(f"a two-object prompt joins two phrases with 'and', got {len(objects)} phrase(s) in {prompt!r}")
    scenes = []
    for found in objects:
        missing = [name for name in ("shape", "colour", "position") if found[name] is None]
        if missing:
            raise ValueError(f"each phrase of {prompt!r} must name a shape, a colour and a place; one names no {', '.join(missing)}")
        scenes.append(world.make_scene(found["shape"], found["colour"], found["position"], found["size"] or "large"))
    return world.Pair(*scenes)


def phrase_slots(tokenizer, prompt: str) -> list[dict[str, int]]:
    """For each phrase of a two-object prompt, in order, the token slot (0 = the start token) of the word
    it uses for each role it names: [{"colour": 2, "shape": 3, "position": 6, ...}, {...}] (roles as
    `attention_metrics.word_role`; "other" words left out). Every world word is one token of the toy's tokenizer."""
    from sdexplain.attention_metrics import word_role
    from sdexplain.tokens import tokenize

    tokenization = tokenize(tokenizer, prompt)
    phrases: list[dict[str, int]] = [{}]
    for info in tokenization.tokens[1 : tokenization.length - 1]:
        word = info.token.removesuffix("</w>")
        if word == "and":
            phrases.append({})
            continue
        role = word_role(word)
        if role != "other":
            phrases[-1].setdefault(role, info.position)
    if len(phrases) != 2:
        raise ValueError(f"a two-object prompt has two phrases joined by 'and', {prompt!r} has {len(phrases)}")
    return phrases


@dataclass
class NounOnColours:
    prompt: str
    noun: str
    colour: str  # its own colour word
    other_colour: str  # the other phrase's colour word
    own: float  # the noun slot's self-attention weight on its colour word (text layers and heads averaged)
    other: float  # ... on the other phrase's colour word (0 for the first noun: the causal mask hides it)


def noun_colour_attention(pipe, prompts: list[str]) -> list[NounOnColours]:
    """In the text transformer, how much each noun's slot attends to its own colour word and to the other
    phrase's colour word (`tokens.text_self_attention`, layers and heads averaged): the path by which the
    noun's output vector comes to carry its colour. Two rows per prompt, in phrase order."""
    from sdexplain.tokens import text_self_attention

    rows = []
    for prompt in prompts:
        slots = phrase_slots(pipe.tokenizer, prompt)
        attention = text_self_attention(pipe, prompt)
        weights = attention.weights.mean(0)  # (n, n), row = the slot that looks
        label = lambda slot: attention.labels[slot].removesuffix("</w>")  # noqa: E731
        for k in range(2):
            noun, own, other = slots[k]["shape"], slots[k]["colour"], slots[1 - k]["colour"]
            rows.append(NounOnColours(prompt, label(noun), label(own), label(other), float(weights[noun, own]), float(weights[noun, other])))
    return rows


def colour_or_neighbour(pipe) -> dict:
    """Does a noun's slot collect its *colour*, or just its *left neighbour*? In the toy's grammar the colour
    word always stands right before its noun, so "a red cat" cannot tell. Here every shape × colour × size
    is read in two orders: "a large red cat" (in the grammar: colour next to the noun, size two back) and
    "a red large cat" (outside it: the order the toy never saw in training, size next to the noun, colour
    two back). The noun's self-attention weight (`tokens.text_self_attention`, layers and heads averaged)
    on each word, by its distance from the noun. Returns {"colour_1", "size_1", "colour_2", "size_2":
    mean weight on the colour / size word at distance 1 / 2; "colour_over_size_1", "colour_over_size_2":
    share of the combinations where the colour word gets more than the size word at that distance;
    "near_over_far": share of (combination, kind) where a word gets more next to the noun than two back;
    "n": combinations}."""
    from sdexplain.tokens import text_self_attention

    weights: dict[str, list[float]] = {"colour_1": [], "size_1": [], "colour_2": [], "size_2": []}
    for shape in world.SHAPES:
        for colour in world.COLOUR_NAMES:
            for size in world.SIZE_NAMES:
                for order in ((size, colour), (colour, size)):  # slots: <start> a w1 w2 noun
                    attention = text_self_attention(pipe, f"a {order[0]} {order[1]} {shape}")
                    if len(attention.labels) != 6:
                        raise ValueError(f"{attention.labels}: every world word must be one token of this tokenizer")
                    row = attention.weights.mean(0)[4]  # the noun's row, layers averaged
                    for distance, word in ((2, order[0]), (1, order[1])):
                        kind = "colour" if word == colour else "size"
                        weights[f"{kind}_{distance}"].append(float(row[4 - distance]))
    values = {key: np.array(v) for key, v in weights.items()}
    result: dict = {key: float(v.mean()) for key, v in values.items()}
    for d in (1, 2):
        result[f"colour_over_size_{d}"] = float(np.mean(values[f"colour_{d}"] > values[f"size_{d}"]))
    result["near_over_far"] = float(np.mean(np.concatenate([values["colour_1"] > values["colour_2"], values["size_1"] > values["size_2"]])))
    result["n"] = len(values["colour_1"])
    return result


def swap_colours(pair: world.Pair) -> world.Pair:
    """The same pair with its two objects' colours exchanged (the binding test's other prompt)."""
    first, second = pair.objects
    return world.Pair(replace(first, colour=second.colour), replace(second, colour=first.colour))


def exchange_places(pair: world.Pair) -> world.Pair:
    """The same two objects (shape, colour, size) at each other's place."""
    first, second = pair.objects
    return world.Pair(replace(first, position=second.position, cx=second.cx, cy=second.cy),
                      replace(second, position=first.position, cx=first.cx, cy=first.cy))


SWAPS = ("colour", "shape", "position", "shape+position", "rest")  # colour_slot_swap's slot sets, taken from B


@torch.no_grad()
def colour_slot_swap(pipe, judge: SlotJudge, n: int = 40, guidance_scale: float = DEFAULT_GUIDANCE, steps: int = 20, seed: int = 0) -> dict:
    """Where does the U-Net read the colours? For `n` held-out pairs of two different colours, prompt A is
    the caption and prompt B the same caption with the colours swapped (`swap_colours`): the two differ
    only at the two colour words' tokens, but B's text-encoder *outputs* differ from every colour word on
    (the causal transformer). Each picture is drawn from A's output with ONE set of slots taken from B's
    (`SWAPS`), from the same seed, and judged at each place:

    - "colour": the two colour words' slots;
    - "shape": the two nouns' slots;  "position": the two place words' slots ("left", "right", …);
    - "shape+position": both;  "rest": every slot but the colour words' (start, words, end and padding).

    Returns "swaps": {name: {"b": share of pictures with B's colours at both places, "a": with A's;
    among the pairs of two different shapes ("distinct_shapes" of them): "kept": A's shapes at A's places,
    "moved": A's two objects, each with its shape and colour, at each other's place (`exchange_places`)}};
    "plain_a", "plain_b": the same seeds from A's and from B's output unmixed (the control); the first
    swap's shares also as "follow_colour_slots" (= swaps["colour"]["b"]) and "follow_the_rest"
    (= swaps["colour"]["a"]); "pictures": pairs measured; "pairs": A's pairs; "images": {"plain_a",
    "plain_b", "mixed" (the colour swap), and each swap name} -> (n, 3, H, W) in [-1, 1]."""
    from sdexplain.tokens import encode

    pairs = [p for p in held_out_pairs(4 * n) if p.first.colour != p.second.colour][:n]
    swapped = [swap_colours(p) for p in pairs]
    _, hidden_a = encode(pipe, [p.caption() for p in pairs])  # (n, 77, D)
    _, hidden_b = encode(pipe, [p.caption() for p in swapped])  # (n, 77, D)
    ids_a = pipe.tokenizer([p.caption() for p in pairs], padding="max_length", max_length=hidden_a.shape[1], return_tensors="pt").input_ids
    ids_b = pipe.tokenizer([p.caption() for p in swapped], padding="max_length", max_length=hidden_a.shape[1], return_tensors="pt").input_ids
    colour_slots = ids_a != ids_b  # (n, 77): exactly the two colour words of each prompt
    if not (colour_slots.sum(1) == 2).all():
        raise ValueError("a colour word is more than one token in this tokenizer: the swap needs one slot per colour")
    role_slots = {role: torch.zeros_like(colour_slots) for role in ("shape", "position")}
    for i, pair in enumerate(pairs):
        for phrase in phrase_slots(pipe.tokenizer, pair.caption()):
            for role in role_slots:
                role_slots[role][i, phrase[role]] = True
    taken = {"colour": colour_slots, "shape": role_slots["shape"], "position": role_slots["position"],
             "shape+position": role_slots["shape"] | role_slots["position"], "rest": ~colour_slots}
    runs = {name: torch.where(taken[name][..., None], hidden_b, hidden_a) for name in SWAPS}  # A's output, B's slots
    runs.update(plain_a=hidden_a, plain_b=hidden_b)
    shaped = [i for i, a in enumerate(pairs) if a.first.shape != a.second.shape]  # where shapes can be told apart
    result: dict = {"pictures": len(pairs), "pairs": pairs, "swaps": {}, "images": {}, "distinct_shapes": len(shaped)}
    for name, embeds in runs.items():
        generator = torch.Generator(device="cpu").manual_seed(seed)
        images = pipe(prompt_embeds=embeds.to(pipe.device, pipe.unet.dtype), num_inference_steps=steps, guidance_scale=guidance_scale,
                      generator=generator, output_type="pt").images.float().cpu() * 2 - 1  # (n, 3, H, W)
        result["images"][name] = images
        readings = read_places(judge, images)
        follow_b = float(np.mean([score_pair(b, r)["colour"] for b, r in zip(swapped, readings)]))
        scores_a = [score_pair(a, r) for a, r in zip(pairs, readings)]
        follow_a = float(np.mean([score["colour"] for score in scores_a]))
        if name in SWAPS:
            kept = [scores_a[i]["shape"] for i in shaped]
            moved = [score_pair(exchange_places(pairs[i]), readings[i])["both"] for i in shaped]
            result["swaps"][name] = {"b": follow_b, "a": follow_a,
                                     "kept": float(np.mean(kept)) if shaped else float("nan"),
                                     "moved": float(np.mean(moved)) if shaped else float("nan")}
        else:
            result[name] = follow_a if name == "plain_a" else follow_b
    result["images"]["mixed"] = result["images"]["colour"]
    result["follow_colour_slots"], result["follow_the_rest"] = result["swaps"]["colour"]["b"], result["swaps"]["colour"]["a"]
    return result


def recolour_second(pipe, judge: SlotJudge, prompt: str, colour: str, steps: int = 20, guidance_scale: float = DEFAULT_GUIDANCE, seed: int = 0) -> dict:
    """Change ONLY the second object's colour word of a two-object prompt and draw both prompts from the
    same seed (each generated alone, so both start from the same noise), traced. What moves?

    Returns "prompts" (A, B); "images" (A's, B's PIL pictures); "runs" (their traces); "readings": the
    judge at each place of each picture (`read_places`); "pairs" (A's, B's `world.Pair`); "pixel_change":
    per object, the mean |B − A| of the RGB values (0–255) over that object's pixels in either picture
    (`object_masks_from_picture`); "map_change": per word slot of A, (word, owner 0/1, Σ|map_B − map_A| ÷
    Σ map_A) — its cross-attention map averaged over the steps; "colour_own_over_other": the second
    colour word's own ÷ other density (`pair_word_attention`) in A and in B."""
    from sdexplain import images as sd_images
    from sdexplain.generate import generate

    pair_a = pair_from_prompt(prompt)
    if colour not in world.COLOURS:
        raise ValueError(f"colour must be one of {', '.join(world.COLOUR_NAMES)}, got {colour!r}")
    if world.CANONICAL.get(colour, colour) == pair_a.second.colour:
        raise ValueError(f"the second object of {prompt!r} is already {colour}: pick another colour")
    words = prompt.split()
    slot = phrase_slots(pipe.tokenizer, prompt)[1]["colour"] - 1  # the word's index (slot 0 is the start token)
    other = " ".join(words[:slot] + [colour] + words[slot + 1 :])
    pair_b = pair_from_prompt(other)
    drawn = [generate(pipe, text, steps=steps, cfg=guidance_scale, seed=seed) for text in (prompt, other)]
    pictures = [images[0] for images, _ in drawn]
    runs = [run for _, run in drawn]
    arrays = [sd_images.to_uint8(picture).astype(np.float32) for picture in pictures]  # (64, 64, 3)
    masks = [object_masks_from_picture(array.astype(np.uint8), pair) for array, pair in zip(arrays, (pair_a, pair_b))]
    if any(m is None for m in masks):
        raise ValueError(f"a picture of {prompt!r} / {other!r} has nothing on one side: no objects to compare")
    change = np.abs(arrays[1] - arrays[0]).mean(-1)  # (64, 64)
    pixel_change = [float(change[masks[0][k] | masks[1][k]].mean()) for k in range(2)]
    maps_a, maps_b = runs[0].attention.word_maps(0), runs[1].attention.word_maps(0)
    map_change, owner = [], 0
    for (label, heat_a), heat_b in zip(maps_a.items(), maps_b.values()):
        word = label.split(":", 1)[1]
        if word == "and":
            owner = 1
            continue
        map_change.append((word, owner, float((heat_b - heat_a).abs().sum() / heat_a.sum())))
    readings = read_places(judge, torch.cat([sd_images.pil_to_tensor(p) for p in pictures]))
    colour_scores = []
    for run, pair, mask in zip(runs, (pair_a, pair_b), masks):
        rows = [r for r in pair_word_attention(run, pair, mask) if r.owner == 1 and r.position == slot + 1]
        colour_scores.append(rows[0].score)
    return {"prompts": (prompt, other), "images": pictures, "runs": runs, "readings": readings, "pairs": (pair_a, pair_b),
            "pixel_change": pixel_change, "map_change": map_change, "colour_own_over_other": colour_scores}


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

"""The toy world: procedural 64×64 scenes of cats, dogs and simple shapes, with captions.

This is the article's thought experiment made real: "suppose we trained a diffusion model on
only two kinds of images, cats and dogs". Every scene is generated from a seed, so every claim
the notebooks make about the toy model can be checked against ground truth: the object's mask
(does a word's attention map cover its object?) and a depth map (for depth-to-image).

Caption grammar (part of the toy model's contract — prompts outside it are out of distribution):

    caption  := "a" [size] [colour] shape [place]
    size     := "small" | "large"
    colour   := "red" | "orange" | "yellow" | "green" | "blue" | "purple"
    shape    := "cat" | "dog" | "circle" | "square" | "triangle"
    place    := "on the left" | "on the right" | "at the top" | "at the bottom" | "in the center"

e.g. "a large red cat on the left", "a small blue square at the top", "a green dog in the center".
Training captions always name the shape; size, colour and place are each left out 10 % of the
time, so shorter prompts ("a red cat") are in distribution too. In the second training stage the
captions are also noisy, as web captions are: each word of shape, colour, place and size names
another value with probability `CAPTION_NOISE` (`mislabel`), so "a red cat" is a red cat only most
of the time — which is what classifier-free guidance has to sharpen.

World v2 (`V2`, the next toy; `V1` is the shipped model's world, kept bit for bit): half the scenes
hold two objects, one at each end of a pair of places — left and right, or top and bottom — and
their caption joins the two single-object phrases with "and", each with its own place:

    caption2 := phrase "and" phrase                 (each phrase names its place; either order)
    phrase   := "a" [size] [colour] shape place

e.g. "a large red cat on the left and a small blue dog on the right"; the two objects may share a
shape ("a red cat on the left and a blue cat on the right": which colour goes with which cat is the
binding test) or a colour. Every object has its own ground-truth mask (`object_masks`), so a word's
attention map can be measured against *its* object. Captions also use synonyms interchangeably
(`SYNONYMS`: big = large, little = small, crimson = scarlet = red, navy = blue, kitty = cat,
puppy = dog, ball = circle), each word of a group drawn with equal chance; `parse_caption` reads them
back to the canonical value. Single-object captions are the same grammar as V1. A quarter of the
VAE's training pictures in world 2 lie on a floor of a random colour (`vary_floor`): no caption names
it and the U-Net never sees one, so the VAE can draw what a LoRA may teach later (`NIGHT_FLOOR`).

Not here: the model itself (`sdexplain.toy.model`), training (`sdexplain.toy.train`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch

IMAGE_SIZE = 64

SHAPES = ("cat", "dog", "circle", "square", "triangle")
COLOURS = {  # name -> RGB
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (235, 210, 35),
    "green": (45, 165, 65),
    "blue": (40, 90, 220),
    "purple": (140, 60, 190),
}
COLOUR_NAMES = tuple(COLOURS)
POSITIONS = {  # name -> (x, y) of the object's centre, and the words that place it
    "left": ((17, 32), "on the left"),
    "right": ((47, 32), "on the right"),
    "top": ((32, 17), "at the top"),
    "bottom": ((32, 47), "at the bottom"),
    "center": ((32, 32), "in the center"),
}
POSITION_NAMES = tuple(POSITIONS)
SIZES = {"small": 8, "large": 13}  # name -> radius in pixels
SIZE_NAMES = tuple(SIZES)

BACKGROUND = (235, 235, 228)  # plain, light, neutral
DETAIL = (30, 30, 30)  # eyes and noses
JITTER = 2  # pixels the centre may move in x and y
DROP_RATE = 0.1  # chance that a training caption leaves out size, colour or place (each)
CAPTION_NOISE = 0.2  # stage 2: chance that a caption names the wrong shape, colour, place or size (each)
HELD_OUT_SEED = 10**9  # scenes from this seed on are never trained on (evaluation and tests draw from here)

# World v2: synonyms (canonical word -> every word a caption may use for it, the canonical one first)
SYNONYMS = {
    "small": ("small", "little"),
    "large": ("large", "big"),
    "red": ("red", "crimson", "scarlet"),
    "blue": ("blue", "navy"),
    "cat": ("cat", "kitty"),
    "dog": ("dog", "puppy"),
    "circle": ("circle", "ball"),
}
CANONICAL = {word: canonical for canonical, words in SYNONYMS.items() for word in words}
PAIR_PLACES = (("left", "right"), ("top", "bottom"))  # the places two objects of one scene take


@dataclass(frozen=True)
class WorldSpec:
    """Which world a training run draws from."""

    version: int
    pair_rate: float  # share of scenes with two objects
    synonyms: bool  # captions draw each word from its synonym group
    floor_variety: float = 0.0  # share of the VAE's training pictures drawn on a floor of a random colour


V1 = WorldSpec(1, 0.0, False)  # the shipped model's world: one object, no synonyms
V2 = WorldSpec(2, 0.5, True, floor_variety=0.25)  # one or two objects, synonyms; a VAE that can draw any floor
NIGHT_FLOOR = (24, 28, 52)  # a dark blue-black floor: a style no caption names and the U-Net never sees
SKY_FLOOR = (150, 190, 235)  # a sky-blue floor: the same, light enough for the judge to read the objects on it


def vary_floor(images: torch.Tensor, masks: torch.Tensor, rate: float, seed: int) -> torch.Tensor:
    """`images` (B, 3, H, W) in [-1, 1] with a share `rate` of them redrawn on a floor of a uniformly random
    colour (the objects, `masks` (B, H, W), untouched). Deterministic in `seed`; rate 0 returns `images`.

    Only the VAE (encoder and decoder) trains on these. Stable Diffusion's VAE was trained on far more
    kinds of picture than any prompt asks for, so it can draw a style the U-Net was never taught; a VAE
    trained only on this world's light floor could not (it decoded every style tried back to the plain
    render), and a LoRA (notebook 16) would have nothing to show. No caption names the floor."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"floor variety rate {rate} is not in [0, 1]")
    if rate == 0.0:
        return images
    rng = np.random.default_rng(seed)
    chosen = torch.from_numpy(rng.random(len(images)) < rate)
    floors = torch.from_numpy(rng.integers(0, 256, size=(len(images), 3))).float().div(127.5).sub(1.0)
    floor = chosen.view(-1, 1, 1) & ~masks  # (B, H, W)
    return torch.where(floor.unsqueeze(1), floors.view(-1, 3, 1, 1).to(images.dtype), images)
WORLDS = {1: V1, 2: V2}

# Depth as MiDaS reports it: relative inverse depth ("nearness"), larger = closer, in [0, 1].
FLOOR_NEAR, FLOOR_FAR = 0.35, 0.05  # the background is a floor receding towards the top
OBJECT_NEARNESS = {"small": 0.65, "large": 0.9}


@dataclass(frozen=True)
class Scene:
    """One object on a plain background: what it is, and exactly where it was drawn."""

    shape: str
    colour: str
    position: str
    size: str
    cx: int  # centre, pixels
    cy: int
    radius: int

    def caption(self, rng: np.random.Generator | None = None, synonyms: bool = False, keep_place: bool = False) -> str:
        """The full caption, or (given an rng) one with size/colour/place dropped at DROP_RATE; with
        `synonyms` (and an rng) each word is drawn from its synonym group. `keep_place`: never drop the place."""
        keep = lambda: rng is None or rng.random() >= DROP_RATE  # noqa: E731
        word = lambda w: w if rng is None or not synonyms or w not in SYNONYMS else SYNONYMS[w][rng.integers(len(SYNONYMS[w]))]  # noqa: E731
        words = ["a"]
        if keep():
            words.append(word(self.size))
        if keep():
            words.append(word(self.colour))
        words.append(word(self.shape))
        if keep_place or keep():
            words.append(POSITIONS[self.position][1])
        return " ".join(words)

    @property
    def objects(self) -> tuple[Scene, ...]:
        return (self,)

    @property
    def labels(self) -> dict[str, int]:
        return {
            "shape": SHAPES.index(self.shape),
            "colour": COLOUR_NAMES.index(self.colour),
            "position": POSITION_NAMES.index(self.position),
            "size": SIZE_NAMES.index(self.size),
        }


@dataclass(frozen=True)
class Pair:
    """Two objects on one background (world v2), in the order their caption names them."""

    first: Scene
    second: Scene

    def __post_init__(self):
        places = {self.first.position, self.second.position}
        if not any(places == set(pair) for pair in PAIR_PLACES):
            allowed = " or ".join("/".join(pair) for pair in PAIR_PLACES)
            raise ValueError(f"a pair's objects must take {allowed}, got {self.first.position}/{self.second.position}")

    @property
    def objects(self) -> tuple[Scene, Scene]:
        return (self.first, self.second)

    def caption(self, rng: np.random.Generator | None = None, synonyms: bool = False) -> str:
        """Both phrases joined by "and", each with its place (places are never dropped: they bind)."""
        return " and ".join(o.caption(rng, synonyms, keep_place=True) for o in self.objects)


def make_scene(shape: str, colour: str, position: str, size: str, rng: np.random.Generator | None = None) -> Scene:
    """A scene from its attributes; with an rng the centre and radius get a little jitter."""
    for value, allowed, what in (
        (shape, SHAPES, "shape"),
        (colour, COLOUR_NAMES, "colour"),
        (position, POSITION_NAMES, "position"),
        (size, SIZE_NAMES, "size"),
    ):
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
    (cx, cy), _ = POSITIONS[position]
    radius = SIZES[size]
    if rng is not None:
        cx += int(rng.integers(-JITTER, JITTER + 1))
        cy += int(rng.integers(-JITTER, JITTER + 1))
        radius += int(rng.integers(-1, 2))
    return Scene(shape, colour, position, size, cx, cy, radius)


def mislabel(scene: Scene | Pair, rng: np.random.Generator, rate: float = CAPTION_NOISE) -> Scene | Pair:
    """The scene as a noisy caption describes it: each of shape, colour, position and size replaced by
    another value (uniformly) with probability `rate`. Only the names change; the drawing doesn't."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"caption noise rate must be in [0, 1], got {rate!r}")
    if isinstance(scene, Pair):  # each object named wrongly on its own; the places stay (they bind)
        first, second = (replace(mislabel(o, rng, rate), position=o.position) for o in scene.objects)
        return Pair(first, second)
    names = {"shape": SHAPES, "colour": COLOUR_NAMES, "position": POSITION_NAMES, "size": SIZE_NAMES}
    wrong = {}
    for attribute, allowed in names.items():
        if rng.random() < rate:
            others = [v for v in allowed if v != getattr(scene, attribute)]
            wrong[attribute] = others[rng.integers(len(others))]
    return replace(scene, **wrong)


def sample_scenes(n: int, seed: int, spec: WorldSpec = V1) -> list[Scene | Pair]:
    """n random scenes of world `spec`, the same ones for the same seed (V1: exactly as before V2 existed)."""
    rng = np.random.default_rng(seed)
    if spec.pair_rate:
        return [sample_pair(rng) if rng.random() < spec.pair_rate else _random_scene(rng) for _ in range(n)]
    return [
        make_scene(
            SHAPES[rng.integers(len(SHAPES))],
            COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))],
            POSITION_NAMES[rng.integers(len(POSITION_NAMES))],
            SIZE_NAMES[rng.integers(len(SIZE_NAMES))],
            rng,
        )
        for _ in range(n)
    ]


def _random_scene(rng: np.random.Generator, position: str | None = None) -> Scene:
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
    if position is None:
        position = POSITION_NAMES[rng.integers(len(POSITION_NAMES))]
    return make_scene(shape, colour, position, SIZE_NAMES[rng.integers(len(SIZE_NAMES))], rng)


def sample_pair(rng: np.random.Generator) -> Pair:
    """Two random objects at a random pair of places, named in a random order."""
    places = PAIR_PLACES[rng.integers(len(PAIR_PLACES))]
    if rng.random() < 0.5:
        places = places[::-1]
    return Pair(*(_random_scene(rng, place) for place in places))


_Y, _X = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    return (_X - cx) ** 2 + (_Y - cy) ** 2 <= r * r


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((_X - cx) / rx) ** 2 + ((_Y - cy) / ry) ** 2 <= 1.0


def _triangle(apex_x: float, apex_y: float, base_y: float, half_width: float) -> np.ndarray:
    """An isoceles triangle with its apex above (or below) a horizontal base."""
    height = base_y - apex_y
    frac = (_Y - apex_y) / height  # 0 at the apex, 1 at the base
    return (frac >= 0) & (frac <= 1) & (np.abs(_X - apex_x) <= half_width * frac)


@lru_cache(maxsize=4096)
def _parts(shape: str, cx: int, cy: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(body, shade, detail) boolean masks: body in the colour, shade darker, detail near-black."""
    empty = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    shade, detail = empty, empty
    if shape == "circle":
        body = _disc(cx, cy, r)
    elif shape == "square":
        body = (np.abs(_X - cx) <= 0.85 * r) & (np.abs(_Y - cy) <= 0.85 * r)
    elif shape == "triangle":
        body = _triangle(cx, cy - r, cy + 0.8 * r, r)
    elif shape == "cat":  # round head, two pointed ears on top
        head = _disc(cx, cy + 0.15 * r, 0.78 * r)
        ears = _triangle(cx - 0.55 * r, cy - r, cy - 0.2 * r, 0.33 * r) | _triangle(cx + 0.55 * r, cy - r, cy - 0.2 * r, 0.33 * r)
        body = head | ears
        detail = _disc(cx - 0.3 * r, cy + 0.05 * r, 0.13 * r + 0.5) | _disc(cx + 0.3 * r, cy + 0.05 * r, 0.13 * r + 0.5)
        detail = detail | _disc(cx, cy + 0.38 * r, 0.08 * r + 0.5)
    elif shape == "dog":  # round head, two floppy ears hanging at the sides, a big nose
        body = _disc(cx, cy + 0.05 * r, 0.72 * r)
        shade = (_ellipse(cx - 0.78 * r, cy + 0.15 * r, 0.28 * r, 0.62 * r) | _ellipse(cx + 0.78 * r, cy + 0.15 * r, 0.28 * r, 0.62 * r)) & ~body
        detail = _disc(cx - 0.28 * r, cy - 0.08 * r, 0.12 * r + 0.5) | _disc(cx + 0.28 * r, cy - 0.08 * r, 0.12 * r + 0.5)
        detail = detail | _disc(cx, cy + 0.38 * r, 0.17 * r + 0.5)
    else:
        raise ValueError(f"unknown shape {shape!r}; allowed: {', '.join(SHAPES)}")
    return body & ~detail, shade & ~detail, detail


def parts(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(body, shade, detail) boolean masks (64, 64) of one scene; detail = a cat's or dog's eyes and nose."""
    return _parts(scene.shape, scene.cx, scene.cy, scene.radius)


def render(scene: Scene | Pair) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8 (64, 64, 3), mask of every object bool (64, 64), depth float32 (64, 64)) of a scene."""
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    depth = floor_depth().copy()
    for obj in scene.objects:
        body, shade, detail = parts(obj)
        colour = np.array(COLOURS[obj.colour], dtype=np.uint8)
        image[body] = colour
        image[shade] = (colour * 0.6).astype(np.uint8)
        image[detail] = DETAIL
        own = body | shade | detail
        depth[own] = OBJECT_NEARNESS[obj.size]
        mask |= own
    return image, mask, depth


def detail_mask(scene: Scene | Pair) -> np.ndarray:
    """bool (64, 64): the eye and nose pixels of every cat and dog in the scene."""
    return np.logical_or.reduce([parts(obj)[2] for obj in scene.objects])


def object_masks(scene: Scene | Pair) -> np.ndarray:
    """One mask per object, bool (k, 64, 64), in the order the caption names them."""
    return np.stack([np.logical_or.reduce(parts(obj)) for obj in scene.objects])


def slot_labels(scene: Scene | Pair) -> dict[str, np.ndarray]:
    """What a reader of the picture should find at each place (POSITION_NAMES order): `present` (0/1)
    and the shape, colour and size indices of the object there (-100, the ignored label, where none)."""
    labels = {"present": np.zeros(len(POSITION_NAMES), dtype=np.int64)}
    for attribute in ("shape", "colour", "size"):
        labels[attribute] = np.full(len(POSITION_NAMES), -100, dtype=np.int64)
    for obj in scene.objects:
        slot = POSITION_NAMES.index(obj.position)
        labels["present"][slot] = 1
        for attribute in ("shape", "colour", "size"):
            labels[attribute][slot] = obj.labels[attribute]
    return labels


def crude_drawing(colour: str = "orange") -> np.ndarray:
    """A child's drawing of a cat, uint8 (64, 64, 3): the article's "amateur drawing" for image-to-image.

    Drawn with flat strokes on white paper and the wrong proportions on purpose: a head as big as the
    body, a stick tail, ears that are too tall, outlines instead of the world's filled shapes. It is
    not a toy-world render, so the toy model has never seen anything like it.
    """
    from PIL import Image, ImageDraw

    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; allowed: {', '.join(COLOURS)}")
    ink = COLOURS[colour]
    picture = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255))  # white paper, not the world's background
    draw = ImageDraw.Draw(picture)
    draw.ellipse([14, 34, 50, 56], outline=ink, width=3)  # body: a flat oval
    draw.ellipse([18, 8, 46, 38], outline=ink, width=3)  # head: as big as the body
    draw.line([(20, 16), (17, 0), (29, 10)], fill=ink, width=3)  # ears: far too tall
    draw.line([(36, 10), (46, 0), (44, 16)], fill=ink, width=3)
    draw.line([(50, 46), (62, 30)], fill=ink, width=2)  # tail: one stick
    draw.point([(27, 22), (37, 22)], fill=DETAIL)  # eyes: two dots
    draw.line([(28, 30), (36, 30)], fill=DETAIL, width=1)  # mouth: a dash
    return np.asarray(picture, dtype=np.uint8).copy()


@lru_cache(maxsize=1)
def floor_depth() -> np.ndarray:
    """Nearness of the empty floor: far at the top of the picture, near at the bottom."""
    return (FLOOR_FAR + (FLOOR_NEAR - FLOOR_FAR) * _Y / (IMAGE_SIZE - 1)).astype(np.float32)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1], as diffusers' VAE expects."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def batch(n: int, seed: int, drop_rate_captions: bool = True, spec: WorldSpec = V1) -> dict:
    """A batch of n scenes of world `spec`: images in [-1, 1], masks, depths, labels and captions.

    Deterministic in `seed`. Captions drop words at DROP_RATE when `drop_rate_captions` (and use
    synonyms when the world has them). `labels` (one object's attributes) only where every scene has
    one object; `slots` (what is at each place, `slot_labels`) always.
    """
    scenes = sample_scenes(n, seed, spec)
    rng = np.random.default_rng(seed + 1_000_003)
    rendered = [render(s) for s in scenes]
    images = np.stack([r[0] for r in rendered])
    slots = [slot_labels(s) for s in scenes]
    data = {
        "scenes": scenes,
        "images": to_tensor(images),  # (n, 3, 64, 64)
        "masks": torch.from_numpy(np.stack([r[1] for r in rendered])),  # (n, 64, 64) bool
        "depths": torch.from_numpy(np.stack([r[2] for r in rendered])),  # (n, 64, 64)
        "slots": {k: torch.from_numpy(np.stack([s[k] for s in slots])) for k in slots[0]},  # each (n, 5)
        "captions": [s.caption(rng if drop_rate_captions else None, spec.synonyms) for s in scenes],
    }
    if all(isinstance(s, Scene) for s in scenes):
        data["labels"] = {k: torch.tensor([s.labels[k] for s in scenes]) for k in ("shape", "colour", "position", "size")}
    return data


def parse_caption(caption: str) -> dict[str, str | None]:
    """The attributes a one-object caption names (None where it names none), synonyms read as their
    canonical word — the inverse of Scene.caption. For two-object captions see `parse_objects`."""
    words = caption.lower().split()
    found: dict[str, str | None] = {"shape": None, "colour": None, "position": None, "size": None}
    for word in words:
        word = CANONICAL.get(word, word)
        if word in SHAPES:
            found["shape"] = word
        elif word in COLOURS:
            found["colour"] = word
        elif word in SIZES:
            found["size"] = word
        elif word in POSITIONS:
            found["position"] = word
    return found


def parse_objects(caption: str) -> list[dict[str, str | None]]:
    """The attributes of each object a caption names, in its order (phrases joined by "and")."""
    return [parse_caption(phrase) for phrase in caption.lower().split(" and ")]


def all_words(spec: WorldSpec = V1) -> list[str]:
    """Every word the caption grammar of world `spec` can produce (the toy tokenizer's core vocabulary)."""
    words = {"a"} | set(SHAPES) | set(COLOURS) | set(SIZES)
    for _, phrase in POSITIONS.values():
        words |= set(phrase.split())
    if spec.synonyms:
        words |= set(CANONICAL)
    if spec.pair_rate:
        words.add("and")
    return sorted(words)

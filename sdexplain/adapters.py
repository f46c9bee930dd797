"""Embeddings and LoRA, trained live on the toy and saved as the files WebUI users load.

    # textual inversion: one new word, learned from a few pictures
    result = train_textual_inversion(pipe, "<my-cat>", images, captions, init_word="cat")
    save_embedding(result.vector, "my-cat.safetensors")
    load_embedding(pipe, "my-cat.safetensors", token="<my-cat>")   # pipe.load_textual_inversion underneath

    # LoRA: a low-rank update of the U-Net's attention, learned from pictures in a new style
    images, captions = styled_batch(256, 0, "sky")                  # the world's scenes on a sky-blue floor
    lora = train_lora(pipe, images, captions, rank=4, targets="both")
    save_lora(lora, "sky.safetensors")                              # StableDiffusionPipeline.save_lora_weights
    load_lora(pipe, "sky.safetensors", "sky")                       # pipe.load_lora_weights
    pipe.set_adapters(["sky"], adapter_weights=[0.5])               # WebUI's <lora:sky:0.5>

Everything that diffusers or peft already does is theirs: the adapter layers (peft's `LoraConfig`
through `unet.add_adapter`), the file formats (`save_lora_weights`, kohya key conversion inside
`load_lora_weights`), adding a token (`load_textual_inversion`), scaling and fusing. What is here:
the two training loops (the article's noise-prediction loss, with everything but the new row or the
LoRA matrices frozen), the toy's styles as a render option ("sky", the one notebook 16 trains; "night", which the
VAE keeps but the judge cannot read objects on; "shadowed", which the toy's VAE all but erases), the measures the notebook shows,
and checks that name the file and the mismatch before a bad file reaches diffusers — and take the
adapter out again when a load fails half-way.

File formats:
- embedding: one safetensors tensor `emb_params` of shape (vectors, width) — the single-key layout
  both WebUI (AUTOMATIC1111, Forge) and diffusers read; WebUI takes the word from the file name.
- LoRA: diffusers' layout (`unet.<module>.lora_A.weight` / `lora_B.weight`, written by
  `save_lora_weights`); kohya's (`lora_unet_<module>.lora_down.weight`, `.alpha`) loads through the
  same `load_lora_weights`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sdexplain import diffusion
from sdexplain.quiet import quiet_libraries
from sdexplain.toy import world

# ----------------------------------------------------------------------------- the styles

STYLES = ("plain", "shadowed", "night", "sky")
FLOORS = {"night": world.NIGHT_FLOOR, "sky": world.SKY_FLOOR}  # the styles that redraw the floor
SHADOW_OFFSET = 3  # pixels down and to the right
SHADOW = (170, 170, 165)  # a grey drop shadow on the floor
FLOOR_LUMA, FLOOR_SATURATION = 0.85, 0.1  # bare floor: lighter than this and less colourful (max − min of RGB, 0–1)


class AdapterFileError(ValueError):
    """A LoRA or embedding file that cannot go into this pipeline: the message names the file and the mismatch."""


def render_styled(scene: world.Scene, style: str = "shadowed") -> np.ndarray:
    """uint8 (64, 64, 3): the scene as `world.render` draws it, in `style`.

    "plain" is the world's own render; "shadowed" adds a grey drop shadow on the floor, SHADOW_OFFSET
    pixels down and right of the object. The world's defaults are untouched: the base model has only ever
    seen objects without shadows. Other styles were tried first, each through the VAE round trip
    (`sdexplain.toy.model.vae_round_trip`): stripes, a night background, the lower half of each object in
    its shade colour (0.6× or 0.4×), the whole object at 0.6×, pastel colours, a 1- or 2-pixel dark outline,
    an inner outline, eyes and a nose on every object, a longer and darker shadow. The toy's VAE, trained only
    on the world's flat renders, decodes all of them back to a plain object of a palette colour (or smears
    them into the object); cat ears on every object survive as bumps, but a LoRA trained on them turns
    squares into cats and triangles into squares. The 3-pixel grey shadow survives faintly (about half of
    its floor darkening), the most any of them kept.

    "night" and "sky" draw the floor in `world.NIGHT_FLOOR` / `world.SKY_FLOOR`. World 2's VAE saw floors of
    every colour in training (`world.vary_floor`; no caption names them and its U-Net never sees one), so it
    keeps both: the room a LoRA needs, as SD's VAE can draw far more than any prompt asks for. The judge
    was trained on light floors: it reads objects on the sky floor, not on the night one.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; allowed: {', '.join(STYLES)}")
    image, mask, _ = world.render(scene)
    if style in FLOORS:  # world 2's VAE learnt to draw any floor colour; world 1's decodes these light again
        image = image.copy()
        image[~mask] = FLOORS[style]
    if style == "shadowed":
        image = image.copy()
        shadow = np.roll(np.roll(mask, SHADOW_OFFSET, 0), SHADOW_OFFSET, 1) & ~mask
        image[shadow] = SHADOW
    return image


def styled_batch(n: int, seed: int, style: str = "shadowed") -> tuple[torch.Tensor, list[str]]:
    """n random scenes in `style`: images (n, 3, 64, 64) in [-1, 1] and their full captions."""
    scenes = world.sample_scenes(n, seed)
    return world.to_tensor(np.stack([render_styled(s, style) for s in scenes])), [s.caption() for s in scenes]


def _luma(pictures: torch.Tensor) -> torch.Tensor:
    return (pictures * torch.tensor((0.299, 0.587, 0.114)).view(1, 3, 1, 1)).sum(1)  # (B, H, W)


def darkening(images: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """(B,) how much darker each image is than `base` (the same prompt and seed without the style) on the
    pixels that are bare floor in `base` (light and colourless) — where a shadow can only darken.
    Images (B, 3, H, W) in [-1, 1]; luminance on a 0–1 scale."""
    now, before = (images.float().clamp(-1, 1) + 1) / 2, (base.float().clamp(-1, 1) + 1) / 2
    floor = (_luma(before) > FLOOR_LUMA) & ((before.amax(1) - before.amin(1)) < FLOOR_SATURATION)
    drop = (_luma(before) - _luma(now)) * floor
    return drop.flatten(1).sum(1) / floor.flatten(1).sum(1).clamp(min=1)


def shadow_reference(vae=None, n: int = 64, seed: int = world.HELD_OUT_SEED, style: str = "shadowed") -> float:
    """The darkening of renders in `style` (a darkening style: "shadowed", "night" or "sky") against plain renders
    of the same held-out scenes — both through `vae` when given, since every generated picture is decoded
    by it. Style strength 1 means this much."""
    from sdexplain.toy.model import vae_round_trip

    if style not in STYLES or style == "plain":
        raise ValueError(f"unknown darkening style {style!r}; allowed: {', '.join(s for s in STYLES if s != 'plain')}")
    pair = []
    for style in (style, "plain"):
        images, _ = styled_batch(n, seed, style)
        if vae is not None:
            images = vae_round_trip(vae, images.to(vae.device, vae.dtype)).float().cpu()
        pair.append(images)
    return float(darkening(*pair).mean())


def style_strength(images: torch.Tensor, base: torch.Tensor, reference: float | None = None) -> torch.Tensor:
    """(B,) each image's darkening against `base`, as a share of the shadowed training pictures' (1)."""
    return darkening(images, base) / (reference if reference is not None else shadow_reference())


# ----------------------------------------------------------------------------- textual inversion

MY_CAT = "<my-cat>"
MY_CAT_COLOUR = "orange"  # the concept: "my cat" is always an orange cat — no single word of the toy's vocabulary says that
TRAIN_PLACES = ("left", "right", "center")  # where the ≤ 8 training pictures show it; "top" and "bottom" stay new


def concept_scenes(n: int = 8, seed: int = 0, places=TRAIN_PLACES, sizes=world.SIZE_NAMES) -> list[world.Scene]:
    """n orange cats at the given places and sizes (cycled), with the world's jitter."""
    rng = np.random.default_rng(seed)
    combos = [(p, s) for p in places for s in sizes]
    return [world.make_scene("cat", MY_CAT_COLOUR, *combos[i % len(combos)], rng) for i in range(n)]


def concept_caption(scene: world.Scene, token: str = MY_CAT) -> str:
    """The scene's caption with the token in place of its colour and shape: "a large <my-cat> on the left"."""
    return f"a {scene.size} {token} {world.POSITIONS[scene.position][1]}"


@dataclass
class TextualInversion:
    """A trained embedding: the new token's vector and what training did."""

    token: str
    vector: torch.Tensor  # (width,) the new row of the token-embedding table
    init_word: str
    losses: list[float]
    seconds: float
    text_encoder: torch.nn.Module  # the trained copy (the pipeline's own is untouched)
    tokenizer: object  # the copy that knows the token
    token_id: int
    cpu_seconds: float = 0.0  # processor time of the training loop (time.process_time): the wall time on an otherwise idle machine


def _one_token(tokenizer, word: str) -> int:
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"init_word {word!r} is {len(ids)} tokens for this tokenizer; it must be exactly one")
    return ids[0]


def _check_new_token(tokenizer, token: str, source: str = "") -> None:
    if not isinstance(token, str) or not token.strip():
        raise ValueError(f"token must be a non-empty string, got {token!r}")
    if token in tokenizer.get_vocab():
        where = f"{source}: " if source else ""
        raise AdapterFileError(f"{where}the token {token!r} is already in the vocabulary (id {tokenizer.get_vocab()[token]}); choose a new word, e.g. '<{token.strip('<>')}-1>'")


def train_textual_inversion(
    pipe,
    token: str,
    images: torch.Tensor,
    captions: list[str],
    *,
    init_word: str = "cat",
    steps: int = 300,
    batch_size: int = 8,
    learning_rate: float = 5e-2,
    seed: int = 0,
) -> TextualInversion:
    """Learn one new token's embedding from images (N, 3, H, W) in [-1, 1] whose captions use it.

    The pipeline is not changed: a copy of its tokenizer and text encoder gets the token (its row
    starts as `init_word`'s), and only that row can move — every other gradient is masked to zero,
    AdamW has no weight decay, the U-Net and the VAE are frozen. The loss is the article's:
    ‖ε̂(x_t, t, text) − ε‖², the same as training the U-Net, differentiated with respect to one vector.
    """
    from sdexplain.training import training_data

    if not any(token in c for c in captions):
        raise ValueError(f"no caption uses the token {token!r}: {captions[:2]} …")
    tokenizer = copy.deepcopy(pipe.tokenizer)
    _check_new_token(tokenizer, token)
    init_id = _one_token(tokenizer, init_word)
    text_encoder = copy.deepcopy(pipe.text_encoder).float()
    tokenizer.add_tokens(token)
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    token_id = tokenizer.convert_tokens_to_ids(token)
    table = text_encoder.get_input_embeddings().weight  # (V + 1, width)
    with torch.no_grad():
        table[token_id] = table[init_id]
    text_encoder.requires_grad_(False)
    table.requires_grad_(True)
    keep = torch.zeros(table.shape[0], 1)
    keep[token_id] = 1.0
    unet = pipe.unet
    unet_flags = [p.requires_grad for p in unet.parameters()]
    unet.requires_grad_(False)

    latents = training_data(pipe, images, captions).latents  # (N, 4, h, w), the frozen VAE's
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    alphas_cumprod = diffusion.alphas_cumprod(pipe.scheduler)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW([table], lr=learning_rate, weight_decay=0.0)
    hook = table.register_hook(lambda grad: grad * keep.to(grad))  # only the new row gets a gradient
    losses, start, cpu_start = [], time.perf_counter(), time.process_time()
    try:
        for _ in range(steps):
            index = torch.randint(len(latents), (batch_size,), generator=generator)
            x0 = latents[index]
            noise = torch.randn(x0.shape, generator=generator)
            t = torch.randint(len(alphas_cumprod), (batch_size,), generator=generator)
            x_t = diffusion.q_sample(x0, t, noise, alphas_cumprod)
            hidden = text_encoder(ids[index].to(text_encoder.device))[0]
            pred = unet(x_t.to(unet.device, unet.dtype), t.to(unet.device), encoder_hidden_states=hidden.to(unet.dtype)).sample
            loss = F.mse_loss(pred.float(), noise.to(pred.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        hook.remove()
        table.requires_grad_(False)
        for p, flag in zip(unet.parameters(), unet_flags):
            p.requires_grad_(flag)
    text_encoder.eval()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return TextualInversion(token, table[token_id].detach().clone(), init_word, losses, seconds, text_encoder, tokenizer, token_id, cpu_seconds)


def save_embedding(vector: torch.Tensor, path: str | Path) -> Path:
    """Write an embedding as WebUI and diffusers both read it: {'emb_params': (vectors, width)} in safetensors."""
    from safetensors.torch import save_file

    vector = vector.detach().float().cpu()
    if vector.dim() == 1:
        vector = vector[None]
    if vector.dim() != 2:
        raise ValueError(f"an embedding is (width,) or (vectors, width); got shape {tuple(vector.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": vector.contiguous()}, str(path))
    return path


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for a bad header or a truncated file
        raise AdapterFileError(f"{path}: not a readable safetensors file ({type(err).__name__}: {err})") from err


def embedding_vectors(path: str | Path) -> torch.Tensor:
    """(vectors, width) from an embedding file: the single-key layout (diffusers, WebUI .safetensors) or
    WebUI's .pt layout ({'string_to_param': {'*': tensor}}, read without unpickling code)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        data = _read_safetensors(path)
    else:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise AdapterFileError(f"{path}: not a readable embedding file ({type(err).__name__}: {str(err).splitlines()[0]})") from err
    if isinstance(data, dict) and "string_to_param" in data:
        data = data["string_to_param"]
        tensor = data.get("*") if isinstance(data, dict) else None
    elif isinstance(data, dict) and len(data) == 1:
        tensor = next(iter(data.values()))
    else:
        keys = list(data)[:5] if isinstance(data, dict) else type(data).__name__
        raise AdapterFileError(f"{path}: not an embedding — expected one tensor or WebUI's 'string_to_param', found {keys}")
    if not isinstance(tensor, torch.Tensor) or tensor.dim() not in (1, 2):
        raise AdapterFileError(f"{path}: the embedding must be a (width,) or (vectors, width) tensor, found {getattr(tensor, 'shape', type(tensor).__name__)}")
    return tensor if tensor.dim() == 2 else tensor[None]


def load_embedding(pipe, path: str | Path, token: str) -> int:
    """Load an embedding file into the pipeline with diffusers' `pipe.load_textual_inversion(path, token=...)`.

    Checked first, so a bad file leaves the pipeline exactly as it was: the file is readable, holds an
    embedding, its width is the text encoder's, and the token is new. Returns the token's id.
    """
    path = Path(path)
    vectors = embedding_vectors(path)
    width = pipe.text_encoder.get_input_embeddings().weight.shape[-1]
    if vectors.shape[-1] != width:
        raise AdapterFileError(
            f"{path}: the embedding's vectors are {vectors.shape[-1]} wide but this text encoder's are {width} "
            f"(SD 1.x: 768, SD 2.x: 1024, the toy: 64) — the file was made for another model"
        )
    _check_new_token(pipe.tokenizer, token, str(path))
    if vectors.shape[0] > 1:  # diffusers adds token_1, token_2 … for the extra vectors
        taken = [f"{token}_{i}" for i in range(1, vectors.shape[0]) if f"{token}_{i}" in pipe.tokenizer.get_vocab()]
        if taken:
            raise AdapterFileError(f"{path}: a {vectors.shape[0]}-vector embedding needs the words {token}_1 … but {taken} are taken")
    with quiet_libraries():  # transformers explains how it initialises the new row, which diffusers then overwrites
        pipe.load_textual_inversion(str(path), token=token)
    return pipe.tokenizer.convert_tokens_to_ids(token)


def embedding_file_summary(path: str | Path) -> dict:
    """What is inside an embedding file: its keys, the vectors' count and width, dtype, and the file's size in bytes."""
    from safetensors import safe_open

    path = Path(path)
    vectors = embedding_vectors(path)
    keys = []
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    return {"keys": keys, "vectors": vectors.shape[0], "width": vectors.shape[1], "dtype": str(vectors.dtype).replace("torch.", ""), "bytes": path.stat().st_size}


def nearest_words(text_encoder, tokenizer, vector: torch.Tensor, words: list[str], k: int = 5) -> list[tuple[str, float]]:
    """The k of `words` whose token-embedding rows are closest to `vector` by cosine similarity."""
    table = text_encoder.get_input_embeddings().weight.detach().float()
    ids = [_one_token(tokenizer, w) for w in words]
    cosine = F.cosine_similarity(table[ids], vector.detach().float()[None], dim=-1)
    order = cosine.argsort(descending=True)[:k]
    return [(words[i], float(cosine[i])) for i in order]


# ----------------------------------------------------------------------------- LoRA

ATTENTION_PROJECTIONS = r"(to_q|to_k|to_v|to_out\.0)"
TARGETS = {  # peft target_modules as regular expressions over the U-Net's module names
    "cross": rf".*\.attn2\.{ATTENTION_PROJECTIONS}",  # cross-attention: queries from the image, keys/values from the text
    "self": rf".*\.attn1\.{ATTENTION_PROJECTIONS}",  # self-attention: the image attending to itself
    "both": rf".*\.attn[12]\.{ATTENTION_PROJECTIONS}",
}


@dataclass
class Lora:
    """A trained LoRA: diffusers' state dict (ready for `save_lora_weights`) and what training did."""

    state_dict: dict[str, torch.Tensor]  # diffusers key names, U-Net only
    config: dict  # the peft LoraConfig it was trained with (rank, alpha, targets)
    losses: list[float]
    seconds: float
    parameters: int  # LoRA parameters trained
    unet_parameters: int  # the U-Net's own parameters (frozen)
    modules: list[str] = field(default_factory=list)  # the layers it adapts
    cpu_seconds: float = 0.0  # processor time of the training loop (time.process_time): the wall time on an otherwise idle machine


@contextlib.contextmanager
def _several_adapters_expected():
    """Without peft's "Already found a `peft_config` attribute" warning: a model may carry several adapters here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        yield


def lora_config(rank: int = 4, targets: str = "both"):
    """peft's LoraConfig for the U-Net's attention projections: `targets` 'cross', 'self' or 'both'.

    lora_alpha = rank, so the update is exactly B·A at weight 1 — as a kohya file whose alpha equals its rank."""
    from peft import LoraConfig

    if targets not in TARGETS:
        raise ValueError(f"unknown targets {targets!r}; allowed: {', '.join(TARGETS)}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive int, got {rank!r}")
    return LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=TARGETS[targets])


def train_lora(
    pipe,
    images: torch.Tensor,
    captions: list[str],
    *,
    rank: int = 4,
    targets: str = "both",
    steps: int = 300,
    batch_size: int = 16,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> Lora:
    """Train a LoRA on a copy of the pipeline's U-Net (the pipeline is not changed).

    peft adds the low-rank matrices (`unet.add_adapter(LoraConfig(...))`); the U-Net's own weights are
    frozen; `sdexplain.training.train_noise_predictor` runs the article's loop, whose optimiser only
    finds the LoRA matrices trainable. Returns diffusers' state dict for `save_lora`.
    """
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    from sdexplain.training import train_noise_predictor, training_data

    config = lora_config(rank, targets)
    data = training_data(pipe, images, captions)
    unet = copy.deepcopy(pipe.unet).float()
    unet.requires_grad_(False)
    unet_parameters = sum(p.numel() for p in unet.parameters())
    torch.manual_seed(seed)  # peft's gaussian init of A
    with _several_adapters_expected():
        # a copy of a U-Net that already carries adapters: add_adapter makes the new adapter the only
        # active one, and only it is saved
        unet.add_adapter(config)
    trainable = [p for p in unet.parameters() if p.requires_grad]
    start, cpu_start = time.perf_counter(), time.process_time()
    losses = [r.loss for r in train_noise_predictor(unet, data, pipe.scheduler, steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed)]
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    modules = sorted({k.rsplit(".lora", 1)[0] for k in state})
    # what a loader needs to rebuild the adapter (diffusers stores it in the file's metadata)
    saved = {"r": config.r, "lora_alpha": config.lora_alpha, "target_modules": config.target_modules, "init_lora_weights": config.init_lora_weights}
    return Lora(
        {k: v.detach().clone().contiguous() for k, v in state.items()},
        saved,
        losses,
        seconds,
        sum(p.numel() for p in trainable),
        unet_parameters,
        modules,
        cpu_seconds,
    )


def save_lora(lora: Lora, path: str | Path) -> Path:
    """Write the LoRA with diffusers' `StableDiffusionPipeline.save_lora_weights` (one .safetensors file)."""
    from diffusers import StableDiffusionPipeline

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"a LoRA file should end in .safetensors, got {path.name!r}")
    StableDiffusionPipeline.save_lora_weights(
        save_directory=str(path.parent),
        unet_lora_layers=lora.state_dict,
        weight_name=path.name,
        safe_serialization=True,
        unet_lora_adapter_metadata=lora.config,
    )
    return path


def _module_shapes(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """{module name: (in, out)} of every Linear or Conv2d (the layers a LoRA can adapt)."""
    shapes = {}
    for name, module in model.named_modules():
        name = name.removesuffix(".base_layer")  # a layer peft has wrapped keeps its name outside
        if isinstance(module, torch.nn.Linear):
            shapes[name] = (module.in_features, module.out_features)
        elif isinstance(module, torch.nn.Conv2d):
            shapes[name] = (module.in_channels, module.out_channels)
    return shapes


def check_lora(pipe, path: str | Path) -> dict[str, torch.Tensor]:
    """The file's LoRA in diffusers' naming (kohya's converted by diffusers' own `lora_state_dict`), after
    checking that every layer it adapts exists in this pipeline with the same shape. Raises AdapterFileError
    naming the file and the first mismatches (e.g. an SDXL LoRA: layers SD 1.5 doesn't have, 2048-wide text)."""
    path = Path(path)
    _read_safetensors(path)  # readable at all?
    try:
        state_dict, _ = pipe.lora_state_dict(str(path))
    except Exception as err:
        raise AdapterFileError(f"{path}: diffusers cannot read it as a LoRA ({type(err).__name__}: {str(err).splitlines()[0]})") from err
    if not state_dict:
        raise AdapterFileError(f"{path}: holds no LoRA weights")
    components = {"unet": _module_shapes(pipe.unet), "text_encoder": _module_shapes(pipe.text_encoder)}
    missing, wrong = [], []
    for key, tensor in state_dict.items():
        if ".lora_A." not in key and ".lora_B." not in key and ".lora.down." not in key and ".lora.up." not in key:
            continue
        component, _, rest = key.partition(".")
        module = rest.split(".lora_")[0].split(".lora.")[0]
        shapes = components.get(component)
        if shapes is None:
            missing.append(key)
            continue
        if module not in shapes:
            missing.append(f"{component}.{module}")
            continue
        fan_in, fan_out = shapes[module]
        is_down = ".lora_A." in key or ".lora.down." in key
        size = tensor.shape[1] if is_down else tensor.shape[0]
        expected = fan_in if is_down else fan_out
        if size != expected:
            wrong.append(f"{component}.{module} is {fan_in}→{fan_out} here, the file's {'down (A)' if is_down else 'up (B)'} matrix is {tuple(tensor.shape)}")
    if missing or wrong:
        missing = sorted(set(missing))
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches, e.g. {wrong[0]}")
        if missing:
            parts.append(f"{len(missing)} layers this pipeline doesn't have, e.g. {missing[0]}")
        raise AdapterFileError(f"{path}: made for another architecture — " + "; ".join(parts))
    return state_dict


def load_lora(pipe, path: str | Path, name: str) -> None:
    """Load a LoRA file as adapter `name` with diffusers' `pipe.load_lora_weights` (diffusers or kohya naming).

    Checked first (`check_lora`); if diffusers still fails, whatever it had added under `name` is deleted,
    so the pipeline is left as it was.
    """
    path = Path(path)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if name in _adapter_names(pipe):
        raise ValueError(f"an adapter named {name!r} is already loaded ({', '.join(_adapter_names(pipe))}); pick another name or pipe.delete_adapters({name!r})")
    state_dict = check_lora(pipe, path)
    others = _adapter_names(pipe)
    try:
        # diffusers notes that a U-Net-only LoRA has no text-encoder keys (true of every file here), and
        # peft that a second adapter joins the first (what named adapters are for: set_adapters picks)
        with quiet_libraries(), _several_adapters_expected():
            pipe.load_lora_weights(state_dict, adapter_name=name)
    except Exception as err:
        if not others:
            pipe.unload_lora_weights()  # no LoRA before: take peft's layers out entirely
        elif name in _adapter_names(pipe):
            pipe.delete_adapters(name)
        raise AdapterFileError(f"{path}: diffusers could not load it ({type(err).__name__}: {str(err).splitlines()[0]}); the pipeline was left as it was") from err


def _adapter_names(pipe) -> list[str]:
    try:
        listed = pipe.get_list_adapters()
    except Exception:  # no adapter ever loaded: peft's config is absent
        return []
    return sorted({name for names in listed.values() for name in names})


def lora_file_summary(path: str | Path) -> dict:
    """What is inside a LoRA file: how many tensors and layers, its rank, parameters, bytes, and its metadata."""
    from safetensors import safe_open

    path = Path(path)
    tensors = _read_safetensors(path)
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    downs = [v for k, v in tensors.items() if ".lora_A." in k or ".lora.down." in k or ".lora_down." in k]
    return {
        "tensors": len(tensors),
        "layers": len(downs),
        "rank": sorted({int(v.shape[0]) for v in downs}),
        "parameters": sum(v.numel() for v in tensors.values()),
        "bytes": path.stat().st_size,
        "metadata_keys": sorted(metadata),
        "example_key": sorted(tensors)[0] if tensors else None,
    }


def lora_metadata(path: str | Path) -> dict:
    """The adapter config diffusers stored in the file's metadata (rank, alpha, target modules), or {}."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    stored = json.loads(metadata.get("lora_adapter_metadata", "{}"))  # {"unet.r": 4, "unet.lora_alpha": 4, …}
    return {key.split(".", 1)[1]: value for key, value in stored.items() if key.startswith("unet.")}


# ----------------------------------------------------------------------------- measures the notebook shows


def frozen_report(pipe, ti: TextualInversion) -> dict:
    """Compare the trained text encoder copy with the pipeline's own, weight by weight: which rows of the
    token table moved, and how many other weights changed (an independent check of the freezing)."""
    before, after = pipe.text_encoder.state_dict(), ti.text_encoder.state_dict()
    table_key = next(k for k in after if k.endswith("token_embedding.weight"))
    old = before[table_key].shape[0]
    moved_rows = [i for i in range(old) if not torch.equal(after[table_key][i], before[table_key][i])]
    other = sum(int((after[k] != before[k]).sum()) for k in before if k != table_key)
    return {
        "old_rows_moved": moved_rows,
        "new_rows": after[table_key].shape[0] - old,
        "other_weights_changed": other,
        "trained_values": int(after[table_key].shape[1]),
        "frozen_values": sum(v.numel() for v in before.values()) + sum(p.numel() for p in pipe.unet.parameters()),
    }


def generate(pipe, prompts: list[str], *, steps: int = 20, guidance_scale: float = 3.0, seed: int = 0) -> torch.Tensor:
    """Images in [-1, 1] (N, 3, H, W) from the stock pipeline, one generator seeded per call (same noise for the same seed)."""
    from sdexplain.toy.samples import generate_latents_to_images

    return generate_latents_to_images(pipe, prompts, guidance_scale, steps, seed)


def concept_contexts(places=("top", "bottom"), sizes=world.SIZE_NAMES, repeats: int = 4) -> list[world.Scene]:
    """Scenes of the concept in contexts its training pictures never showed (by default: places)."""
    return [world.make_scene("cat", MY_CAT_COLOUR, p, s) for _ in range(repeats) for p in places for s in sizes]


def judged_as(judge, images: torch.Tensor, scenes: list[world.Scene]) -> dict[str, float]:
    """Share of images the judge reads as each scene's colour, shape, position and size, and all four at once."""
    from sdexplain.toy.evaluate import judge_images

    verdict = judge_images(judge, images)
    hits = {name: verdict[name]["predicted"] == torch.tensor([s.labels[name] for s in scenes]) for name in ("colour", "shape", "position", "size")}
    shares = {name: hit.float().mean().item() for name, hit in hits.items()}
    shares["all"] = torch.stack(list(hits.values())).all(0).float().mean().item()
    return shares


@dataclass
class WeightSweep:
    """One LoRA at several weights, the same prompts and seed: images, style strength and judged adherence per weight."""

    weights: list[float]
    images: list[torch.Tensor]  # per weight (N, 3, H, W) in [-1, 1]
    strength: list[float]  # mean style strength per weight
    adherence: list[dict[str, float]]  # judged_as per weight


def weight_sweep(pipe, name: str, weights, scenes: list[world.Scene], judge, *, steps: int = 20, guidance_scale: float = 3.0, seed: int = 0, reference: float | None = None) -> WeightSweep:
    """Generate the scenes' captions with adapter `name` set to each weight (`pipe.set_adapters`, WebUI's
    <lora:name:w>), then put the weight back to 1. The first weight must be 0: the base pictures the style
    strength is measured against."""
    reference = reference or shadow_reference(pipe.vae)
    prompts = [s.caption() for s in scenes]
    result = WeightSweep([float(w) for w in weights], [], [], [])
    if not result.weights or result.weights[0] != 0.0:
        raise ValueError(f"weights must start with 0 (the base pictures), got {list(weights)}")
    try:
        for w in result.weights:
            pipe.set_adapters([name], adapter_weights=[w])
            images = generate(pipe, prompts, steps=steps, guidance_scale=guidance_scale, seed=seed)
            result.images.append(images)
            result.strength.append(float(style_strength(images, result.images[0], reference).mean()))
            result.adherence.append(judged_as(judge, images, scenes))
    finally:
        pipe.set_adapters([name], adapter_weights=[1.0])
    return result


def lora_share(lora: Lora) -> float:
    """LoRA parameters as a share of the U-Net's."""
    return lora.parameters / lora.unet_parameters


def pictures(images: torch.Tensor) -> list[np.ndarray]:
    """Images (N, 3, H, W) in [-1, 1] -> uint8 (H, W, 3) arrays, for figures and sliders."""
    return list(((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())


def amplified_difference(images: torch.Tensor, base: torch.Tensor, gain: float = 4.0) -> list[np.ndarray]:
    """uint8 (H, W, 3) pictures of |images − base| × gain, per pixel and channel (0 = black: unchanged;
    a change of 1/gain of the full range or more = full brightness) — what a weight changed, made visible."""
    if images.shape != base.shape:
        raise ValueError(f"images {tuple(images.shape)} and base {tuple(base.shape)} must have the same shape")
    if not gain > 0:
        raise ValueError(f"gain must be positive, got {gain!r}")
    change = (images.float().clamp(-1, 1) - base.float().clamp(-1, 1)).abs() / 2  # 0–1 of the full range
    return list((change * gain).clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).numpy())


def carried_by(strengths: dict[str, float]) -> str:
    """Which of 'cross' and 'self' attention reaches more of the 'both' LoRA's style strength."""
    return max(("cross", "self"), key=lambda k: strengths[k])

"""What every part of the toy's training shares: checkpoints, the one resumable loop, the diffusion loss.

    resumable_loop(...)   resume from a checkpoint, set a cosine learning rate, step, show progress,
                          write atomic checkpoints; every part of `sdexplain.toy.train` and
                          `sdexplain.toy.train_extras` is one call of it (new parts too)
    diffusion_loss(...)   the noise predictors' ε-prediction loss: offset noise, min-SNR-5 weighting
    save_checkpoint / load_checkpoint / require_checkpoint   tensors and plain values only,
                          read with torch.load(weights_only=True)
    dataset(workdir)      the U-Nets' training set: latents encoded once by the frozen VAE, and scenes
    UNetStage, CLEAN, NOISY   the two stages of the U-Net's training (and their captions)

The recipe itself (which part, in which order, with which numbers) is in `sdexplain.toy.train`.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sdexplain.toy import model as toy_model
from sdexplain.toy import world
from sdexplain.toy.tokenizer import build_tokenizer


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a stopped run never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict | None:
    """A checkpoint of this script (tensors and plain values only), or None when there is none yet.

    Read with `weights_only=True`, so loading runs no pickled code. A checkpoint written by an older
    version of this script (which pickled the dataset's Scene objects) is read once the old way, from
    the workdir this script wrote, and rewritten in the plain format.
    """
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError:
        state = torch.load(path, weights_only=False)  # our own legacy file: see the docstring
        if "scenes" in state:
            state["scenes"] = [_plain_scene(s) for s in state["scenes"]]
        save_checkpoint(path, state)
        print(f"{path}: rewritten as plain tensors and values (readable with weights_only=True)")
        return state


def _plain_scene(scene) -> tuple:
    """A world.Scene as a tuple of its fields, a world.Pair as a tuple of two such tuples (what
    checkpoints store); tuples pass through."""
    return dataclasses.astuple(scene) if dataclasses.is_dataclass(scene) else tuple(scene)


def _scene_from_plain(fields: tuple):
    """The inverse of `_plain_scene`."""
    if isinstance(fields[0], (tuple, list)):
        return world.Pair(*(world.Scene(*obj) for obj in fields))
    return world.Scene(*fields)


def require_checkpoint(path: Path, part: str) -> dict:
    """The checkpoint at `path`, or a clear error naming the `--part` that makes it."""
    state = load_checkpoint(path)
    if state is None:
        raise FileNotFoundError(f"{path} does not exist: train that part first (python -m sdexplain.toy.train --part {part})")
    return state


# ----------------------------------------------------------------------------- the training loop


def cosine_lr(step: int, total: int, peak: float, warmup: int, floor: float = 0.1) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then a cosine down to `floor`·peak at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def resume(path: Path, modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer) -> tuple[int, dict]:
    """Load the checkpoint at `path`, if any, into `modules` (checkpoint key -> module) and `opt`.

    Returns (the step to continue from, the checkpoint or {}): 0 and {} for a fresh start.
    """
    state = load_checkpoint(path)
    if state is None:
        return 0, {}
    for key, module in modules.items():
        module.load_state_dict(state[key])
    opt.load_state_dict(state["opt"])
    return state["step"], state


def resumable_loop(
    name: str,
    path: Path,
    modules: dict[str, torch.nn.Module],
    opt: torch.optim.Optimizer,
    train_step: Callable[[int], dict[str, str]],
    *,
    steps: int,
    start: int,
    lr: Callable[[int], float],
    checkpoint_every: int,
    stop_at: int | None = None,
    extra: Callable[[int], dict] | None = None,
) -> None:
    """The one training loop of every part: steps `start` … `end`−1 of a `steps`-long schedule.

    name: the part's name, on the progress bar (and "<name>: done" when `start` >= `steps`).
    path, modules, opt: where the checkpoint goes and what it holds: {key: module.state_dict()},
        "opt" and "step" (see `resume`, which loads the same keys back and gives `start`).
    train_step(step): one step — compute the loss, backward, `opt.step()`; returns the progress
        bar's readout, e.g. {"loss": "0.123"}. It draws its randomness from seeds derived from
        `step`, so a resumed run takes the same steps as an uninterrupted one.
    lr(step): the learning rate set on every parameter group before the step.
    checkpoint_every: write the checkpoint after this many steps, and after the last one.
    stop_at: end this run early at that step (`end` = min(steps, stop_at)); run again without it
        to continue the schedule.
    extra(done): more values for the checkpoint, computed when it is written (e.g. a loss history).
    """
    if start >= steps:
        print(f"{name}: done ({start} steps)")
        return
    end = steps if stop_at is None else min(steps, stop_at)
    bar = tqdm(range(start, end), initial=start, total=steps, desc=name)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr(step)
        bar.set_postfix(train_step(step))
        done = step + 1
        if done % checkpoint_every == 0 or done == end:
            state = {key: module.state_dict() for key, module in modules.items()}
            save_checkpoint(path, {**state, "opt": opt.state_dict(), "step": done, **(extra(done) if extra else {})})


def optimise(opt: torch.optim.Optimizer, loss: torch.Tensor, clip: list | None = None) -> None:
    """One optimiser step on `loss` (gradients clipped to norm 1 over `clip`'s parameters, if given)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(clip, 1.0)
    opt.step()


# ----------------------------------------------------------------------------- the noise predictors' loss


OFFSET_NOISE = 0.1  # std of the per-channel constant added to the noise (hides a latent's mean colour)
MIN_SNR_GAMMA = 5.0  # min-SNR loss weighting: weight(t) = min(SNR(t), γ) / SNR(t) for ε-prediction


def ddpm_schedule():
    """SD v1's training noise schedule (the same betas the shipped PNDM scheduler samples with)."""
    from diffusers import DDPMScheduler

    from sdexplain.architectures import SD_SCHEDULE

    return DDPMScheduler.from_config(SD_SCHEDULE)


def diffusion_loss(unet, x0: torch.Tensor, t: torch.Tensor, context: torch.Tensor, schedule, generator: torch.Generator, condition: torch.Tensor | None = None) -> torch.Tensor:
    """The ε-prediction loss of one batch, as the toy's noise predictors learn it.

    ε = N(0, I) + OFFSET_NOISE·N(0, I) per (sample, channel) (offset noise), drawn from `generator`;
    x_t = sqrt(ᾱ_t)·x_0 + sqrt(1−ᾱ_t)·ε; the U-Net sees x_t (with `condition`, e.g. a depth map,
    as extra input channels) and `context`; the loss is the mean over the batch of
    min(SNR(t), 5)/SNR(t) · ‖ε̂ − ε‖² (mean over pixels), SNR(t) = ᾱ_t / (1 − ᾱ_t).
    """
    batch, channels = x0.shape[:2]
    noise = torch.randn(x0.shape, generator=generator) + OFFSET_NOISE * torch.randn((batch, channels, 1, 1), generator=generator)
    x_t = schedule.add_noise(x0, noise, t)  # x_t = sqrt(ᾱ_t)·x_0 + sqrt(1-ᾱ_t)·ε
    model_input = x_t if condition is None else torch.cat([x_t, condition], dim=1)  # (B, 4 [+1], 8, 8)
    eps = unet(model_input, t, context).sample  # (B, 4, 8, 8)
    snr = schedule.alphas_cumprod[t] / (1 - schedule.alphas_cumprod[t])  # SNR(t) = ᾱ_t / (1 - ᾱ_t)
    weight = torch.clamp(snr, max=MIN_SNR_GAMMA) / snr
    return (weight * (eps - noise).pow(2).mean(dim=(1, 2, 3))).mean()


def text_model(spec: world.WorldSpec = world.V1):
    """The toy tokenizer of world `spec` and a fresh text encoder for it (its weights drawn from torch's global RNG)."""
    tokenizer = build_tokenizer(world.all_words(spec))
    return tokenizer, toy_model.make_text_encoder(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    """Token ids (B, 77) of captions, padded to the text encoder's 77 slots."""
    return tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, max_decay: float = 0.999) -> None:
    """ema ← decay·ema + (1 − decay)·model, the decay warmed up so early random weights fade fast."""
    decay = min(max_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def load_vae(workdir: Path):
    vae = toy_model.make_vae()
    vae.load_state_dict(require_checkpoint(workdir / "vae.pt", "vae")["model"])
    return vae.eval().requires_grad_(False)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur and noise, so a model trained on renders also reads decoded (slightly soft) samples."""
    blur = torch.rand((), generator=generator).item() < 0.5
    if blur:
        images = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return images + 0.05 * torch.randn(images.shape, generator=generator)


# ----------------------------------------------------------------------------- the U-Nets' data and stages


def encode_dataset(vae, n: int, seed: int, batch_size: int = 256, spec: world.WorldSpec = world.V1) -> tuple[torch.Tensor, list]:
    """Render n scenes of world `spec` and encode them once: (latents (n, 4, 8, 8) unscaled, scenes)."""
    latents, scenes = [], []
    for i in tqdm(range(0, n, batch_size), desc="encode"):
        data = world.batch(min(batch_size, n - i), seed=seed * 31337 + i, spec=spec)
        with torch.no_grad():
            latents.append(vae.encode(data["images"]).latent_dist.mode())
        scenes += data["scenes"]
    return torch.cat(latents), scenes


def dataset(workdir: Path, dataset_size: int | None = None, seed: int = 0, spec: world.WorldSpec = world.V1) -> tuple[torch.Tensor, list, float]:
    """The U-Nets' training set: (latents (N, 4, 8, 8) scaled to unit variance, their scenes, the scale).

    Encoded once by the frozen VAE into workdir/latents.pt; with `dataset_size`, made there when
    missing (else the U-Net part must have made it).
    """
    path = workdir / "latents.pt"
    data = load_checkpoint(path)
    if data is None:
        if dataset_size is None:
            data = require_checkpoint(path, "unet")  # raises: the U-Net part makes the dataset
        latents, scenes = encode_dataset(load_vae(workdir), dataset_size, seed, spec=spec)
        data = {"latents": latents, "scenes": [_plain_scene(s) for s in scenes], "scaling_factor": float(1.0 / latents.std())}
        if spec.version != 1:  # world 1's file predates the key (and keeps its fingerprint)
            data["world"] = spec.version
        save_checkpoint(path, data)
    if data.get("world", 1) != spec.version:
        raise ValueError(f"{path} holds world {data.get('world', 1)}'s scenes, not world {spec.version}'s: use that world's --workdir")
    scenes = [_scene_from_plain(fields) for fields in data["scenes"]]
    return data["latents"] * data["scaling_factor"], scenes, data["scaling_factor"]  # latents (N, 4, 8, 8), std 1


@dataclass(frozen=True)
class UNetStage:
    """One stage of the U-Net's training: where it starts, what it learns from, how fast."""

    name: str  # the checkpoint is workdir/<name>.pt
    peak_lr: float
    warmup: int
    caption_noise: float = 0.0  # each caption word names a wrong value with this chance (world.mislabel)
    base: UNetStage | None = None  # start from this finished stage's EMA weights, not from scratch
    train_text: bool = True  # False: the text encoder is frozen (as SD's CLIP always is)

    @property
    def part(self) -> str:
        """The `--part` that trains this stage."""
        return self.name.replace("_", "-")

    def checkpoint(self, workdir: Path) -> Path:
        return workdir / f"{self.name}.pt"

    def require(self, workdir: Path) -> dict:
        """This stage's checkpoint, or a clear error naming the part that makes it."""
        return require_checkpoint(self.checkpoint(workdir), self.part)

    def captions(self, scenes: list, indices: list[int], rng: np.random.Generator, synonyms: bool = False) -> list[str]:
        """Training captions for scenes[indices]: mislabelled at `caption_noise`, then sampled from the
        grammar (words dropped at world.DROP_RATE, synonyms drawn when `synonyms`) and EMPTY_CAPTION_RATE
        of them replaced by the empty caption."""
        named = [scenes[i] if not self.caption_noise else world.mislabel(scenes[i], rng, self.caption_noise) for i in indices]
        return [scene.caption(rng, synonyms) if rng.random() >= EMPTY_CAPTION_RATE else "" for scene in named]


EMPTY_CAPTION_RATE = 0.1  # share of training captions replaced by "" (the unconditional model CFG needs)

# Stage 1: text encoder + U-Net from scratch on true captions (the model learns what the words mean).
CLEAN = UNetStage("unet", peak_lr=5e-4, warmup=500)
# Stage 2: the U-Net alone on noisy captions, as web captions are: the model learns that "a red cat" is
# only usually a red cat, so without guidance it follows the prompt only as often as its data did.
NOISY_STEPS = 1000
DEPTH_UNET_STEPS = 1200  # the depth U-Net's fine-tuning (train_extras), from the last stage's U-Net
NOISY = UNetStage("unet_noisy", peak_lr=1e-4, warmup=100, caption_noise=world.CAPTION_NOISE, base=CLEAN, train_text=False)


# ----------------------------------------------------------------------------- finished stages, committed


def save_stage(workdir: Path, name: str, folder: Path, keep: tuple[str, ...] | None = None) -> Path:
    """Write the finished part `workdir/<name>.pt` as `folder/<name>.safetensors`: its weights only
    (every module's state dict, or only the modules in `keep`, flattened as "<module>.<key>"), the step
    (and the U-Net's latent scaling factor, where the checkpoint has one) in the metadata.

    A retrain longer than one working session is split into stages; a finished stage is committed
    this way so the next stage can resume on another machine (`load_stage`). Optimiser state is not
    kept: a finished stage is never trained again.
    """
    from safetensors.torch import save_file

    state = require_checkpoint(workdir / f"{name}.pt", name.replace("_", "-"))
    modules = {module: weights for module, weights in state.items() if module != "opt" and isinstance(weights, dict) and (keep is None or module in keep)}
    tensors = {f"{module}.{key}": value.contiguous() for module, weights in modules.items() for key, value in weights.items() if isinstance(value, torch.Tensor)}
    metadata = {"step": str(state["step"])}
    if "scaling_factor" in state:
        metadata["scaling_factor"] = repr(float(state["scaling_factor"]))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file(tensors, path, metadata=metadata)
    return path


def read_stage(path: Path, metadata: dict | None = None) -> tuple[dict[str, dict[str, torch.Tensor]], int]:
    """A committed stage (`save_stage`): ({module: its state dict}, the step it finished at); the file's
    metadata (strings) is copied into `metadata` when given."""
    from safetensors import safe_open

    weights: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(path, "pt") as f:
        step = int(f.metadata()["step"])
        if metadata is not None:
            metadata.update(f.metadata())
        for key in f.keys():
            module, name = key.split(".", 1)
            weights.setdefault(module, {})[name] = f.get_tensor(key)
    return weights, step


def load_stage(path: Path, workdir: Path, modules: dict[str, torch.nn.Module], params: list[torch.nn.Parameter], aliases: dict[str, str] | None = None) -> None:
    """Recreate `workdir/<name>.pt` from a committed stage (`save_stage`): `modules` ({checkpoint key:
    a module of the right class}) get the weights, with a fresh optimiser state over `params` (the
    parameters the part's own optimiser covers), so `resume` reads it and the part's loop sees it
    finished. `aliases` ({key: module key}) store a module's weights under a second key too (a U-Net
    stage's EMA weights stand for its raw ones); a scaling factor in the file's metadata is kept.
    Refuses to overwrite a checkpoint that exists."""
    target = workdir / f"{path.stem}.pt"
    if target.exists():
        raise FileExistsError(f"{target} exists: loading {path} would overwrite a real checkpoint; use another --workdir")
    metadata: dict = {}
    weights, step = read_stage(path, metadata)
    state: dict = {}
    for name, module in modules.items():
        module.load_state_dict(weights[name])
        state[name] = module.state_dict()
    for alias, name in (aliases or {}).items():
        state[alias] = state[name]
    if "scaling_factor" in metadata:
        state["scaling_factor"] = float(metadata["scaling_factor"])
    workdir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(target, {**state, "opt": torch.optim.AdamW(params).state_dict(), "step": step})

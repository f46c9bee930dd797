"""Train the toy model's extras: `python -m sdexplain.toy.train --part classifier|depth|export-extras`.

Part 6 of the recipe in `sdexplain.toy.train` (the same loop and checkpoints, from
`sdexplain.toy.train_common`), for the lessons
beyond text-to-image; the models themselves are in `sdexplain.toy.extras`.

    classifier       the noisy-latent classifier p(y | x_t, t), for classifier guidance (notebook 09)
    depth estimator  image -> depth, the MiDaS stand-in (notebook 12)
    depth U-Net      a 5-channel copy of the trained U-Net fine-tuned on [latent, depth], as SD 2 depth
                     was made from SD 2
    export-extras    all three beside the model, in diffusers' layout
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sdexplain.toy import model as toy_model
from sdexplain.toy import world
from sdexplain.toy.extras import DepthEstimator, NoisyLatentClassifier, depth_to_latent_input, make_depth_unet
from sdexplain.toy.train_common import (
    NOISY,
    UNetStage,
    augment,
    cosine_lr,
    dataset,
    ddpm_schedule,
    diffusion_loss,
    ema_update,
    optimise,
    require_checkpoint,
    resumable_loop,
    resume,
    load_checkpoint,
    text_model,
    tokenize,
)


def train_classifier(workdir: Path, steps: int, batch_size: int, checkpoint_every: int, seed: int, spec: world.WorldSpec = world.V1) -> None:
    """The noisy-latent classifier p(y | x_t, t) for classifier guidance: noise at every t, as the U-Net sees.
    It reads one object's attributes, so it learns from the one-object scenes only (all of world 1's)."""
    latents, scenes, _ = dataset(workdir, spec=spec)
    singles = [i for i, s in enumerate(scenes) if isinstance(s, world.Scene)]
    latents, scenes = latents[singles], [scenes[i] for i in singles]
    labels = {k: torch.tensor([s.labels[k] for s in scenes]) for k in NoisyLatentClassifier.HEADS}
    torch.manual_seed(seed)
    classifier = NoisyLatentClassifier()
    opt = torch.optim.AdamW(classifier.parameters(), lr=1e-3, weight_decay=0.01)
    path = workdir / "classifier.pt"
    start, _ = resume(path, {"model": classifier}, opt)
    schedule = ddpm_schedule()

    def train_step(step: int) -> dict[str, str]:
        g = torch.Generator().manual_seed(seed * 13 + step)
        idx = torch.randint(len(scenes), (batch_size,), generator=g)
        t = torch.randint(0, 1000, (batch_size,), generator=g)
        x_t = schedule.add_noise(latents[idx], torch.randn((batch_size, 4, 8, 8), generator=g), t)
        logits = classifier(x_t, t)
        loss = sum(F.cross_entropy(logits[k], labels[k][idx]) for k in logits)
        optimise(opt, loss)
        return {"loss": f"{loss.item():.3f}"}

    resumable_loop("classifier", path, {"model": classifier}, opt, train_step, steps=steps, start=start, lr=lambda step: cosine_lr(step, steps, 1e-3, 100), checkpoint_every=checkpoint_every)


def train_depth_estimator(workdir: Path, steps: int, batch_size: int, checkpoint_every: int, seed: int, spec: world.WorldSpec = world.V1) -> None:
    """Image -> depth (the MiDaS stand-in), L1 against the world's true depth maps."""
    torch.manual_seed(seed)
    estimator = DepthEstimator()
    opt = torch.optim.AdamW(estimator.parameters(), lr=2e-3)
    path = workdir / "depth_estimator.pt"
    start, _ = resume(path, {"model": estimator}, opt)
    generator = torch.Generator().manual_seed(seed)

    def train_step(step: int) -> dict[str, str]:
        data = world.batch(batch_size, seed=seed * 15485863 + step, spec=spec)
        loss = (estimator(augment(data["images"], generator)) - data["depths"]).abs().mean()
        optimise(opt, loss)
        return {"l1": f"{loss.item():.4f}"}

    resumable_loop("depth estimator", path, {"model": estimator}, opt, train_step, steps=steps, start=start, lr=lambda step: cosine_lr(step, steps, 2e-3, 50), checkpoint_every=checkpoint_every)


PLACE_DROP = 0.5  # depth fine-tuning: share of captions whose place words are removed


def without_place(caption: str) -> str:
    """'a red cat on the left' -> 'a red cat' (the place words of the caption grammar removed)."""
    for _, words in world.POSITIONS.values():
        caption = caption.replace(" " + words, "")
    return caption


def train_depth_unet(workdir: Path, steps: int, batch_size: int, checkpoint_every: int, seed: int, base_stage: UNetStage = NOISY, spec: world.WorldSpec = world.V1) -> None:
    """Fine-tune a 5-channel copy of the trained U-Net on [latent, depth] (text encoder frozen), as SD 2
    depth was made from SD 2: from the last stage's weights, on captions as noisy as that stage's."""
    path = workdir / "depth_unet.pt"
    state = load_checkpoint(path)
    if state is not None and state["step"] >= steps:  # before the depth maps are rendered
        print(f"depth unet: done ({state['step']} steps)")
        return
    latents, scenes, _ = dataset(workdir, spec=spec)
    depths = depth_to_latent_input(torch.from_numpy(np.stack([world.render(s)[2] for s in scenes])), (8, 8))  # (N, 1, 8, 8)
    base = base_stage.require(workdir)
    tokenizer, text_encoder = text_model(spec)
    text_encoder.load_state_dict(base["ema_text"])
    text_encoder.requires_grad_(False).eval()
    unet = toy_model.make_unet()
    unet.load_state_dict(base["ema_unet"])
    unet = make_depth_unet(unet)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-4, betas=(0.9, 0.99), weight_decay=0.01)
    modules = {"unet": unet, "ema_unet": ema}
    start, _ = resume(path, modules, opt)
    schedule = ddpm_schedule()
    unet.train()

    def train_step(step: int) -> dict[str, str]:
        rng = np.random.default_rng(seed * 999_983 + step)
        idx = torch.from_numpy(rng.integers(len(scenes), size=batch_size))
        captions = base_stage.captions(scenes, idx.tolist(), rng, spec.synonyms)
        # half the captions lose their place words: where the object stands must then come from the depth map
        captions = [without_place(c) if rng.random() < PLACE_DROP else c for c in captions]
        g = torch.Generator().manual_seed(seed * 11 + step)
        t = torch.randint(0, 1000, (batch_size,), generator=g)
        with torch.no_grad():
            context = text_encoder(tokenize(tokenizer, captions)).last_hidden_state
        loss = diffusion_loss(unet, latents[idx], t, context, schedule, g, condition=depths[idx])  # (B, 5, 8, 8) in
        optimise(opt, loss, clip=list(unet.parameters()))
        ema_update(ema, unet, step, max_decay=0.995)
        return {"loss": f"{loss.item():.4f}"}

    resumable_loop("depth unet", path, modules, opt, train_step, steps=steps, start=start, lr=lambda step: cosine_lr(step, steps, 2e-4, 100), checkpoint_every=checkpoint_every)


def export_extras(workdir: Path, out: Path) -> Path:
    """Write the extras beside the model: classifier/, depth_estimator/, depth_unet/ (diffusers layout)."""
    classifier = NoisyLatentClassifier()
    classifier.load_state_dict(require_checkpoint(workdir / "classifier.pt", "classifier")["model"])
    classifier.save(out / "classifier")
    estimator = DepthEstimator()
    estimator.load_state_dict(require_checkpoint(workdir / "depth_estimator.pt", "depth")["model"])
    estimator.save(out / "depth_estimator")
    depth_unet = make_depth_unet(toy_model.make_unet())
    depth_unet.load_state_dict(require_checkpoint(workdir / "depth_unet.pt", "depth")["ema_unet"])
    depth_unet.save_pretrained(out / "depth_unet", safe_serialization=True)
    print(f"exported extras to {out}")
    return out

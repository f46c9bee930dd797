"""A VAE file for the toy: fine-tune only the decoder, as Stable Diffusion's VAE files are made.

    python -m sdexplain.toy.train --part vae-decoder          # train (resumable, checkpointed)
    python -m sdexplain.toy.train --part export-vae-decoder   # write model/vae (new) and model_extras/vae-original

Stable Diffusion's "VAE files" (stabilityai/sd-vae-ft-ema, sd-vae-ft-mse) are the original
AutoencoderKL with the same encoder and a decoder fine-tuned to draw eyes and faces better. Because
the encoder is frozen, the latent space does not move: the U-Net, the text encoder and every extra
trained on those latents stay valid, and swapping the decoder is one line:

    pipe.vae = AutoencoderKL.from_pretrained(...)

The toy's first decoder kept ~4 % of a cat's or dog's face contrast (eyes and nose against the
body). The information is still in the 4×8×8 latent; the decoder only had to learn to draw it. The
recipe (measured on this world while building it):
- decoder + post_quant_conv trained, encoder + quant_conv frozen (the latent space is unchanged);
- trained on latents between the posterior's mode (what the U-Net learnt to produce: it was trained on
  modes) and full samples z ~ q(z|x), so it is robust to the U-Net's small errors;
- loss: L1 with the object weighted up and the eye/nose pixels (and a ring around them) weighted
  up strongly, + the L1 of the image gradients (edges) with the same weights, + MSE (PSNR);
- world 1: bfloat16 autocast on the CPU (weights and optimiser in float32); later worlds float32; EMA weights shipped.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sdexplain.toy import model as toy_model
from sdexplain.toy import world
from sdexplain.toy.train_common import cosine_lr, ema_update, load_vae, optimise, require_checkpoint, resumable_loop, resume

CHECKPOINT = "vae_decoder.pt"
DETAIL_WEIGHT = 100.0  # eye and nose pixels (dilated by one pixel) count this much more than the floor
OBJECT_WEIGHT = 2.0  # the object's other pixels


def detail_masks(scenes: list[world.Scene | world.Pair]) -> torch.Tensor:
    """(B, 64, 64) bool: the eye/nose pixels of each scene (empty for circles, squares, triangles)."""
    return torch.from_numpy(np.stack([world.detail_mask(s) for s in scenes]))


def pixel_weights(masks: torch.Tensor, details: torch.Tensor) -> torch.Tensor:
    """(B, 1, 64, 64): 1 on the floor, more on the object, most on (and just around) eyes and noses."""
    ring = F.max_pool2d(details.unsqueeze(1).float(), 3, stride=1, padding=1)  # detail dilated by 1 px
    return 1.0 + OBJECT_WEIGHT * masks.unsqueeze(1).float() + DETAIL_WEIGHT * ring


def decoder_loss(recon: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Weighted L1 + weighted L1 of image gradients (edges) + MSE. Shapes (B, 3, H, W), weight (B, 1, H, W)."""
    l1 = ((recon - target).abs() * weight).mean()
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    edges = ((dx(recon) - dx(target)).abs() * weight[..., :, 1:]).mean() + ((dy(recon) - dy(target)).abs() * weight[..., 1:, :]).mean()
    mse = (recon - target).pow(2).mean()
    return l1 + 0.5 * edges + 4.0 * mse, {"l1": l1.item(), "edges": edges.item(), "mse": mse.item()}


def decoder_parts(vae) -> torch.nn.ModuleDict:
    """The parts a VAE file changes, as one module: the decoder and post_quant_conv."""
    return torch.nn.ModuleDict({"decoder": vae.decoder, "post_quant_conv": vae.post_quant_conv})


def trainable(vae) -> list[torch.nn.Parameter]:
    """The parameters a VAE file changes, made trainable; the encoder (and quant_conv) frozen."""
    vae.requires_grad_(False)
    parts = decoder_parts(vae).requires_grad_(True)
    return list(parts.parameters())


def train_vae_decoder(workdir: Path, steps: int, batch_size: int, checkpoint_every: int, seed: int, peak_lr: float = 2e-3, spec: world.WorldSpec = world.V1, bfloat16: bool | None = None) -> None:
    """Fine-tune the decoder of the stage-1 VAE (`workdir/vae.pt`) into `workdir/vae_decoder.pt`.

    `bfloat16` (default: on for world 1, which reproduces the shipped decoder; off for later worlds)
    runs the decoder under bfloat16 autocast. It pays only on CPUs with native bfloat16: measured on a
    2-core AVX-512 machine without it, a step took 0.92 s in bfloat16 and 0.50 s in float32.

    One uninterrupted run draws its latents' noise from one generator (this is how the shipped
    decoder was made); a resumed run continues from the checkpoint with a generator seeded anew."""
    if bfloat16 is None:
        bfloat16 = spec.version == 1
    torch.manual_seed(seed)
    vae = load_vae(workdir).train()
    opt = torch.optim.AdamW(trainable(vae), lr=peak_lr, weight_decay=0.0)
    ema = copy.deepcopy(decoder_parts(vae)).requires_grad_(False)
    path = workdir / CHECKPOINT
    start, _ = resume(path, {"model": vae, "ema": ema}, opt)
    parts = decoder_parts(vae)
    generator = torch.Generator().manual_seed(seed * 7 + start)

    def train_step(step: int) -> dict[str, str]:
        data = world.batch(batch_size, seed=seed * 15485863 + step, spec=spec)
        x = world.vary_floor(data["images"], data["masks"], spec.floor_variety, seed=seed * 15485863 + step)  # (B, 3, 64, 64)
        weight = pixel_weights(data["masks"], detail_masks(data["scenes"]))  # (B, 1, 64, 64)
        with torch.no_grad():
            posterior = vae.encode(x).latent_dist
            # between the posterior's mode (what round trips and the U-Net's latents are) and a full sample
            scale = torch.rand((batch_size, 1, 1, 1), generator=generator)
            z = posterior.mean + scale * posterior.std * torch.randn(posterior.mean.shape, generator=generator)  # (B, 4, 8, 8)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            recon = vae.decode(z).sample
        loss, terms = decoder_loss(recon.float(), x, weight)
        optimise(opt, loss)
        ema_update(ema, parts, step, max_decay=0.995)
        return {"l1": f"{terms['l1']:.4f}", "mse": f"{terms['mse']:.5f}"}

    lr = lambda step: cosine_lr(step, steps, peak_lr, 50)  # noqa: E731
    resumable_loop("vae-decoder", path, {"model": vae, "ema": ema}, opt, train_step, steps=steps, start=start, lr=lr, checkpoint_every=checkpoint_every)


def load_vae_decoder(workdir: Path, use_ema: bool = True):
    """The stage-1 VAE with the fine-tuned decoder (EMA weights by default), ready to save."""
    state = require_checkpoint(workdir / CHECKPOINT, "vae-decoder")
    vae = load_vae(workdir)
    vae.load_state_dict(state["model"])
    if use_ema:
        decoder_parts(vae).load_state_dict(state["ema"])
    return vae.eval().requires_grad_(False)


def export_vae_decoder(workdir: Path, model_dir: Path = toy_model.MODEL_DIR, extras_dir: Path = toy_model.EXTRAS_DIR) -> None:
    """Write the fine-tuned VAE as the model's `vae/` and the stage-1 VAE as `vae-original/` beside it.

    The scaling factor is the shipped one: the encoder, hence the latents' spread, is unchanged."""
    from diffusers import AutoencoderKL

    scaling = AutoencoderKL.load_config(model_dir / "vae")["scaling_factor"]
    original = load_vae(workdir)
    original.register_to_config(scaling_factor=scaling)
    original.save_pretrained(extras_dir / toy_model.VAE_ORIGINAL, safe_serialization=True)
    tuned = load_vae_decoder(workdir)
    tuned.register_to_config(scaling_factor=scaling)
    tuned.save_pretrained(model_dir / "vae", safe_serialization=True)
    print(f"exported the fine-tuned VAE to {model_dir / 'vae'} and the original to {extras_dir / toy_model.VAE_ORIGINAL}")

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
- bfloat16 autocast on the CPU (weights and optimiser in float32) for speed; EMA weights shipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sdexplain.toy import model as toy_model
from sdexplain.toy import world

CHECKPOINT = "vae_decoder.pt"
DETAIL_WEIGHT = 100.0  # eye and nose pixels (dilated by one pixel) count this much more than the floor
OBJECT_WEIGHT = 2.0  # the object's other pixels


def detail_masks(scenes: list[world.Scene]) -> torch.Tensor:
    """(B, 64, 64) bool: the eye/nose pixels of each scene (empty for circles, squares, triangles)."""
    return torch.from_numpy(np.stack([world.parts(s)[2] for s in scenes]))


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


def trainable(vae) -> list[torch.nn.Parameter]:
    """The parameters a VAE file changes: the decoder and post_quant_conv. The encoder stays frozen."""
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    return list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())


def train_vae_decoder(workdir: Path, steps: int, batch_size: int, checkpoint_every: int, seed: int, peak_lr: float = 2e-3) -> None:
    """Fine-tune the decoder of the stage-1 VAE (`workdir/vae.pt`) into `workdir/vae_decoder.pt`."""
    from sdexplain.toy.train import _cosine_lr, _ema_update, _load, _save, load_vae

    path = workdir / CHECKPOINT
    state = _load(path)
    torch.manual_seed(seed)
    vae = load_vae(workdir).train()
    params = trainable(vae)
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=peak_lr, weight_decay=0.0)
    start = 0
    if state is not None:
        vae.load_state_dict(state["model"])
        ema = [t.clone() for t in state["ema"]]
        opt.load_state_dict(state["opt"])
        start = state["step"]
    if start >= steps:
        print(f"vae-decoder: done ({start} steps)")
        return
    generator = torch.Generator().manual_seed(seed * 7 + start)  # posterior samples; resumed runs draw on
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="vae-decoder")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, steps, peak_lr, 50)
        data = world.batch(batch_size, seed=seed * 15485863 + step)
        x = data["images"]  # (B, 3, 64, 64)
        weight = pixel_weights(data["masks"], detail_masks(data["scenes"]))
        with torch.no_grad():
            posterior = vae.encode(x).latent_dist
            # between the posterior's mode (what round trips and the U-Net's latents are) and a full sample
            scale = torch.rand((batch_size, 1, 1, 1), generator=generator)
            z = posterior.mean + scale * posterior.std * torch.randn(posterior.mean.shape, generator=generator)  # (B, 4, 8, 8)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            recon = vae.decode(z).sample
        loss, parts = decoder_loss(recon.float(), x, weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            decay = min(0.995, (1 + step) / (10 + step))
            for e, p in zip(ema, params):
                e.lerp_(p, 1 - decay)
        bar.set_postfix(l1=f"{parts['l1']:.4f}", mse=f"{parts['mse']:.5f}")
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            _save(path, {"model": vae.state_dict(), "ema": ema, "opt": opt.state_dict(), "step": step + 1})


def load_vae_decoder(workdir: Path, use_ema: bool = True):
    """The stage-1 VAE with the fine-tuned decoder (EMA weights by default), ready to save."""
    from sdexplain.toy.train import _require, load_vae

    state = _require(workdir / CHECKPOINT, "vae-decoder")
    vae = load_vae(workdir)
    vae.load_state_dict(state["model"])
    if use_ema:
        with torch.no_grad():
            for p, e in zip(trainable(vae), state["ema"]):
                p.copy_(e)
    return vae.eval().requires_grad_(False)


def export_vae_decoder(workdir: Path, model_dir: Path = toy_model.MODEL_DIR, extras_dir: Path = toy_model.EXTRAS_DIR) -> None:
    """Write the fine-tuned VAE as the model's `vae/` and the stage-1 VAE as `vae-original/` beside it.

    The scaling factor is the shipped one: the encoder, hence the latents' spread, is unchanged."""
    from diffusers import AutoencoderKL

    from sdexplain.toy.train import load_vae

    scaling = AutoencoderKL.load_config(model_dir / "vae")["scaling_factor"]
    original = load_vae(workdir)
    original.register_to_config(scaling_factor=scaling)
    original.save_pretrained(extras_dir / toy_model.VAE_ORIGINAL, safe_serialization=True)
    tuned = load_vae_decoder(workdir)
    tuned.register_to_config(scaling_factor=scaling)
    tuned.save_pretrained(model_dir / "vae", safe_serialization=True)
    print(f"exported the fine-tuned VAE to {model_dir / 'vae'} and the original to {extras_dir / toy_model.VAE_ORIGINAL}")

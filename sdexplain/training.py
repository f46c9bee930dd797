"""Training the noise predictor, live: the four steps of the article as one readable loop.

    unet = fresh_unet(pipe)                       # same architecture, random weights
    data = training_data(pipe, images, captions)  # VAE latents x0 and text embeddings, computed once
    for record in train_noise_predictor(unet, data, pipe.scheduler, steps=150):
        ...                                       # record.loss, record.t, record.noise, record.noise_pred

Each training step does what the article says (Ho et al. 2020, Algorithm 1; Rombach et al. 2022):

    1. pick training images x0 (here: their VAE latents) and their captions
    2. draw noise ε ~ N(0, I)
    3. corrupt them to a random timestep t:  x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε
    4. let the U-Net predict the noise ε̂ = ε_θ(x_t, t, text) and nudge its weights to make
       ‖ε̂ − ε‖² smaller (one optimiser step)

Only the U-Net learns; the VAE and the text encoder stay frozen, as in Stable Diffusion, so their
outputs are computed once, up front (`training_data`). A caption is replaced by the empty prompt
with probability `caption_dropout` (SD's trick that makes classifier-free guidance possible).
For a v-prediction model (SD 2.x 768) the target is v = sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x0 instead of ε.

What it is not: the toy model's real training (`sdexplain.toy.train`, minutes to hours, with a
learning-rate schedule, EMA and checkpoints). This is the same idea in seconds, for a notebook.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

from sdexplain import diffusion


@dataclass
class TrainingData:
    """What the U-Net trains on, precomputed with the frozen VAE and text encoder (CPU, float32)."""

    latents: torch.Tensor  # (N, C, h, w) x0 = VAE latents of the images, scaled as the U-Net sees them
    hidden: torch.Tensor  # (N, 77, D) text encoder output for each caption
    hidden_empty: torch.Tensor  # (1, 77, D) text encoder output for the empty prompt (caption dropout)
    captions: list  # [str] * N

    def __len__(self) -> int:
        return len(self.latents)


@dataclass
class TrainingRecord:
    """One training step: what was drawn, what the U-Net predicted, and the loss (CPU tensors)."""

    step: int  # 0-based
    loss: float  # mean squared error of this step's batch, before the update
    t: torch.Tensor  # (B,) timesteps drawn
    index: torch.Tensor  # (B,) which training examples were picked
    noise: torch.Tensor  # (B, C, h, w) the true noise ε
    x_t: torch.Tensor  # (B, C, h, w) the corrupted latents
    target: torch.Tensor  # (B, C, h, w) what the U-Net should output (ε, or v for v-prediction)
    noise_pred: torch.Tensor  # (B, C, h, w) what it did output


def fresh_unet(pipe, seed: int = 0) -> UNet2DConditionModel:
    """A new U-Net with the architecture of `pipe.unet` and random weights (seeded), in float32 on pipe's device."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(pipe.unet.config)
    return unet.to(pipe.device).train()  # from_config builds float32 weights


@torch.no_grad()
def training_data(pipe, images: torch.Tensor, captions: Sequence[str], batch_size: int = 64) -> TrainingData:
    """Encode images (N, 3, H, W) in [-1, 1] with the VAE (posterior mean) and captions with the text encoder."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (N, 3, H, W) in [-1, 1], got {shape}")
    if isinstance(captions, str) or len(captions) != len(images):
        raise ValueError(f"need one caption per image: {len(images)} images, {1 if isinstance(captions, str) else len(captions)} captions")
    factor = pipe.vae_scale_factor
    if images.shape[-1] % factor or images.shape[-2] % factor:
        raise ValueError(f"image size {tuple(images.shape[-2:])} is not a multiple of the VAE factor {factor}")
    vae = pipe.vae
    scale = float(vae.config.scaling_factor)
    latents = []
    for chunk in torch.split(images, batch_size):
        posterior = vae.encode(chunk.to(vae.device, vae.dtype)).latent_dist
        latents.append((posterior.mean * scale).float().cpu())  # (b, C, h, w)
    hidden = torch.cat([_encode_text(pipe, list(captions[i : i + batch_size])) for i in range(0, len(captions), batch_size)])
    return TrainingData(torch.cat(latents), hidden, _encode_text(pipe, [""]), list(captions))


def _encode_text(pipe, prompts: list[str]) -> torch.Tensor:
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    return pipe.text_encoder(ids.to(pipe.text_encoder.device))[0].float().cpu()  # (b, 77, D)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def train_noise_predictor(
    unet: UNet2DConditionModel,
    data: TrainingData,
    scheduler,
    *,
    steps: int = 150,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    caption_dropout: float = 0.1,
    seed: int = 0,
) -> Iterator[TrainingRecord]:
    """Train `unet` in place for `steps` optimiser steps (AdamW), yielding one `TrainingRecord` per step.

    `scheduler` supplies the noise schedule ᾱ_t (its training timesteps 0 … T−1) and the
    prediction type. The random draws (examples, noise, t, dropout) come from one generator seeded
    with `seed`, so a run is repeatable.
    """
    _check_positive_int("steps", steps)
    _check_positive_int("batch_size", batch_size)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real) or not learning_rate > 0:
        raise ValueError(f"learning_rate must be a number > 0, got {learning_rate!r}")
    if isinstance(caption_dropout, bool) or not isinstance(caption_dropout, numbers.Real) or not 0.0 <= caption_dropout <= 1.0:
        raise ValueError(f"caption_dropout must be a number in [0, 1], got {caption_dropout!r}")
    if not isinstance(data, TrainingData) or len(data) == 0:
        raise ValueError("data must be a non-empty TrainingData (make it with training_data(pipe, images, captions))")
    if data.latents.shape[1] != unet.config.in_channels:
        raise ValueError(f"the latents have {data.latents.shape[1]} channels but the U-Net takes {unet.config.in_channels}")
    if data.hidden.shape[-1] != unet.config.cross_attention_dim:
        raise ValueError(f"the text embeddings are {data.hidden.shape[-1]} wide but the U-Net's cross-attention expects {unet.config.cross_attention_dim}")
    prediction_type = scheduler.config.get("prediction_type", "epsilon")
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"training here supports prediction_type 'epsilon' or 'v_prediction', not {prediction_type!r}")

    device = unet.device
    alphas_cumprod = diffusion.alphas_cumprod(scheduler)  # (T,)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=float(learning_rate), weight_decay=0.0)
    unet.train()
    for step in range(steps):
        # 1. pick training images (their latents x0) and captions; some captions dropped to ""
        index = torch.randint(len(data), (batch_size,), generator=generator)  # (B,)
        x0 = data.latents[index]  # (B, C, h, w)
        hidden = data.hidden[index].clone()  # (B, 77, D)
        dropped = torch.rand(batch_size, generator=generator) < caption_dropout  # (B,)
        hidden[dropped] = data.hidden_empty
        # 2. draw noise ε ~ N(0, I)
        noise = torch.randn(x0.shape, generator=generator)  # (B, C, h, w)
        # 3. corrupt to a random timestep t:  x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε
        t = torch.randint(len(alphas_cumprod), (batch_size,), generator=generator)  # (B,)
        x_t = diffusion.q_sample(x0, t, noise, alphas_cumprod)  # (B, C, h, w)
        target = noise if prediction_type == "epsilon" else diffusion.v_target(x0, noise, alphas_cumprod[t])
        # 4. predict the noise and take one step downhill on ‖ε̂ − ε‖²
        noise_pred = unet(x_t.to(device), t.to(device), encoder_hidden_states=hidden.to(device)).sample  # (B, C, h, w)
        loss = F.mse_loss(noise_pred.float(), target.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        yield TrainingRecord(step, float(loss.detach()), t, index, noise, x_t, target, noise_pred.detach().float().cpu())
    unet.eval()


@torch.no_grad()
def noise_prediction_loss(unet: UNet2DConditionModel, data: TrainingData, scheduler, *, batches: int = 4, batch_size: int = 16, seed: int = 1) -> float:
    """The mean training loss of `unet` on `batches` fixed random draws (no update): compare U-Nets on equal terms."""
    _check_positive_int("batches", batches)
    _check_positive_int("batch_size", batch_size)
    alphas_cumprod = diffusion.alphas_cumprod(scheduler)
    prediction_type = scheduler.config.get("prediction_type", "epsilon")
    generator = torch.Generator().manual_seed(seed)
    was_training = unet.training
    unet.eval()
    total = 0.0
    for _ in range(batches):
        index = torch.randint(len(data), (batch_size,), generator=generator)
        x0, hidden = data.latents[index], data.hidden[index]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(len(alphas_cumprod), (batch_size,), generator=generator)
        x_t = diffusion.q_sample(x0, t, noise, alphas_cumprod)
        target = noise if prediction_type == "epsilon" else diffusion.v_target(x0, noise, alphas_cumprod[t])
        pred = unet(x_t.to(unet.device, unet.dtype), t.to(unet.device), encoder_hidden_states=hidden.to(unet.device, unet.dtype)).sample
        total += float(F.mse_loss(pred.float().cpu(), target))
    unet.train(was_training)
    return total / batches

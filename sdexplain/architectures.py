"""Random-weight Stable Diffusion pipelines built from component configs — no download needed.

Used where the shapes of a model matter but its weights don't: tests of every trace feature on
real layouts, and benchmarks (compute cost equals the real model's).

    build_pipeline("tiny")   a few-hundred-kB pipeline for fast unit tests (toy tokenizer)
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from sdexplain.toy.model import SCHEDULER_CONFIG
from sdexplain.toy.tokenizer import build_tokenizer


def build_tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """A tiny randomly initialised SD pipeline: 2 U-Net resolutions with cross-attention, VAE factor 8."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    return StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=PNDMScheduler(**SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_pipeline(name: str, seed: int = 0) -> StableDiffusionPipeline:
    """A random-weight pipeline of a known architecture. Known: 'tiny'."""
    builders = {"tiny": build_tiny_pipeline}
    if name not in builders:
        raise ValueError(f"unknown architecture {name!r}; allowed: {', '.join(builders)}")
    return builders[name](seed)

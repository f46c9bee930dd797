"""Random-weight Stable Diffusion pipelines built from component configs — no download needed.

Used where the shapes of a model matter but its weights don't: tests of every trace feature on
real layouts, and benchmarks (compute cost equals the real model's).

    build_pipeline("tiny")       a few-hundred-kB pipeline for fast unit tests (toy tokenizer)
    build_pipeline("tiny-depth") the same as a depth checkpoint (stabilityai/stable-diffusion-2-depth's
                                 layout in miniature): a 5-channel U-Net and its own tiny DPT depth estimator
    build_pipeline("sd15")       Stable Diffusion v1.5's exact layout, random weights (~1.07 B parameters)
    build_pipeline("sd21")       Stable Diffusion v2.1 (768-v), random weights (~1.29 B parameters)
    build_pipeline("sd21-base")  Stable Diffusion v2.1-base (512, epsilon), random weights
    build_pipeline("tiny-sdxl")  SDXL's layout in miniature: two text encoders (the second with a
                                 projection, giving the pooled embedding), a U-Net with SDXL's
                                 "text_time" added conditioning, toy tokenizers (the second pads with "!")
    build_pipeline("sdxl")       Stable Diffusion XL base 1.0's exact layout, random weights (~3.5 B
                                 parameters: ~14 GB in float32; count it with
                                 sdexplain.versions.parameter_counts("sdxl") instead, on the meta device)

`ARCHITECTURES` keeps the published component configs (the numbers in each Hub repository's
`unet/config.json`, `text_encoder/config.json`, `vae/config.json`, `scheduler/scheduler_config.json`
and `tokenizer/tokenizer_config.json`) as plain dicts, so a notebook can show them side by side.

The tokenizer is CLIP's real one (49,408 BPE tokens, ids identical to OpenAI's), rebuilt offline
from the vocabulary that the `instant-clip-tokenizer` package bundles. Without that package the
toy tokenizer stands in (with a warning); the text encoder keeps CLIP's vocab_size of 49,408 either way.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import diffusers
import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionDepth2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from sdexplain.toy.tokenizer import build_tokenizer  # the tiny pipeline speaks the toy world's words


# ----------------------------------------------------------------------------- published configs

_SD_DOWN_BLOCKS = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_SD_UP_BLOCKS = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")

# Shared by every SD v1/v2 VAE (the v2 repositories say sample_size 768, v1.5 says 512).
_SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

_SD_UNET = dict(
    in_channels=4,
    out_channels=4,
    down_block_types=_SD_DOWN_BLOCKS,
    up_block_types=_SD_UP_BLOCKS,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    act_fn="silu",
    center_input_sample=False,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    mid_block_scale_factor=1,
    norm_eps=1e-5,
    norm_num_groups=32,
)

# scaled_linear betas 0.00085–0.012 over 1000 steps: the schedule every SD v1/v2 model was trained with
# (stable-diffusion-v1-5/scheduler/scheduler_config.json); the toy model uses it too.
SD_SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,  # not a PNDM argument, but DDIM/DDPM derived from this config read it
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    trained_betas=None,
    prediction_type="epsilon",  # SD 2's 768-v models override this with "v_prediction"
)

# CLIP ViT-L/14's text tower (openai/clip-vit-large-patch14), as in stable-diffusion-v1-5/text_encoder.
# bos/eos/pad ids 0/2/1 are what the published config says (a leftover of its conversion); with
# eos_token_id == 2 transformers pools at the highest token id, which is the real end token 49407.
_CLIP_VIT_L14_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=768,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

# OpenCLIP ViT-H/14's text tower as shipped in stabilityai/stable-diffusion-2-1*/text_encoder:
# 23 of its 24 layers — SD 2 conditions on the penultimate layer, so the last one is simply left out.
_OPENCLIP_VIT_H14_TEXT = dict(
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    projection_dim=512,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

ARCHITECTURES: dict[str, dict] = {
    "sd15": dict(
        hub_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
        unet=dict(_SD_UNET, sample_size=64, attention_head_dim=8, cross_attention_dim=768),
        text_encoder=_CLIP_VIT_L14_TEXT,
        vae=_SD_VAE,
        scheduler=dict(SD_SCHEDULE, _class_name="PNDMScheduler", prediction_type="epsilon"),
        tokenizer=dict(pad_token="<|endoftext|>", model_max_length=77),
    ),
    "sd21": dict(
        hub_id="stabilityai/stable-diffusion-2-1",
        unet=dict(
            _SD_UNET,
            sample_size=96,
            attention_head_dim=(5, 10, 20, 20),  # diffusers reads these as head COUNTS: 64 channels per head
            cross_attention_dim=1024,
            use_linear_projection=True,
            upcast_attention=True,  # 2.1-768 overflows in float16 attention otherwise
        ),
        text_encoder=_OPENCLIP_VIT_H14_TEXT,
        vae=dict(_SD_VAE, sample_size=768),
        scheduler=dict(SD_SCHEDULE, _class_name="DDIMScheduler", prediction_type="v_prediction"),
        tokenizer=dict(pad_token="!", model_max_length=77),  # OpenCLIP pads with "!" (id 0)
    ),
    "sd21-base": dict(
        hub_id="stabilityai/stable-diffusion-2-1-base",
        unet=dict(
            _SD_UNET,
            sample_size=64,
            attention_head_dim=(5, 10, 20, 20),
            cross_attention_dim=1024,
            use_linear_projection=True,
            upcast_attention=False,
        ),
        text_encoder=_OPENCLIP_VIT_H14_TEXT,
        vae=dict(_SD_VAE, sample_size=768),
        scheduler=dict(SD_SCHEDULE, _class_name="PNDMScheduler", prediction_type="epsilon"),
        tokenizer=dict(pad_token="!", model_max_length=77),
    ),
}

# Stable Diffusion XL base 1.0, as published in stabilityai/stable-diffusion-xl-base-1.0 (unet/config.json,
# text_encoder/config.json, text_encoder_2/config.json, vae/config.json, scheduler/scheduler_config.json,
# tokenizer*/tokenizer_config.json, model_index.json). Kept apart from `ARCHITECTURES` (the v1/v2 family,
# one text encoder each, which notebooks 00–08 iterate over). Sources: Podell et al. 2023, "SDXL: Improving
# Latent Diffusion Models for High-Resolution Image Synthesis" (arXiv:2307.01952), §2.1–2.2 and Table 1;
# the model card of stabilityai/stable-diffusion-xl-base-1.0.
_OPENCLIP_VIT_BIGG14_TEXT = dict(  # OpenCLIP ViT-bigG/14's text tower, with its projection (pooled output)
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    projection_dim=1280,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

XL_ARCHITECTURES: dict[str, dict] = {
    "sdxl": dict(
        hub_id="stabilityai/stable-diffusion-xl-base-1.0",
        unet=dict(
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280),
            layers_per_block=2,
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),  # head COUNTS in diffusers: 64 channels per head
            cross_attention_dim=2048,  # 768 (CLIP ViT-L) + 1280 (OpenCLIP ViT-bigG), concatenated
            use_linear_projection=True,
            addition_embed_type="text_time",  # pooled text embedding + the size/crop "micro-conditioning"
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,  # 6 numbers × 256 + the 1280-wide pooled embedding
            act_fn="silu",
            center_input_sample=False,
            downsample_padding=1,
            flip_sin_to_cos=True,
            freq_shift=0,
            mid_block_scale_factor=1,
            norm_eps=1e-5,
            norm_num_groups=32,
            sample_size=128,  # 128×128 latents = 1024×1024 pixels
        ),
        text_encoder=_CLIP_VIT_L14_TEXT,  # CLIPTextModel: the penultimate layer's hidden states are used
        text_encoder_2=_OPENCLIP_VIT_BIGG14_TEXT,  # CLIPTextModelWithProjection: penultimate layer + pooled
        vae=dict(_SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
        scheduler=dict(
            SD_SCHEDULE,
            _class_name="EulerDiscreteScheduler",
            interpolation_type="linear",
            timestep_spacing="leading",
            use_karras_sigmas=False,
            sample_max_value=1.0,
        ),
        tokenizer=dict(pad_token="<|endoftext|>", model_max_length=77),
        tokenizer_2=dict(pad_token="!", model_max_length=77),
        force_zeros_for_empty_prompt=True,  # model_index.json: no negative prompt → an all-zero unconditional input
    ),
}
# float16 users: SDXL's own VAE overflows in float16 (NaN/black images), so diffusers runs it in float32
# (vae.config.force_upcast). This community VAE was finetuned to give the same images in float16:
SDXL_FP16_VAE = "madebyollin/sdxl-vae-fp16-fix"


# ----------------------------------------------------------------------------- CLIP's tokenizer, offline

_CLIP_MERGES = 49152 - 256 - 2  # CLIP keeps the first 48,894 merges of its BPE file: 49,408 tokens in all


def _clip_byte_chars() -> list[str]:
    """CLIP's byte -> unicode table in CLIP's vocabulary order (printable bytes first)."""
    order = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = [chr(b) for b in order]
    extra = 0
    for b in range(256):
        if b not in order:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


@lru_cache(maxsize=1)
def _clip_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of OpenAI's CLIP tokenizer, read from the data bundled in instant-clip-tokenizer.

    That package embeds OpenAI's `bpe_simple_vocab_16e6.txt` verbatim in its compiled module; the
    vocabulary is then built exactly as CLIP's `SimpleTokenizer` builds it.
    """
    import instant_clip_tokenizer  # optional dependency (extras "notebooks" and "test")

    blob = open(instant_clip_tokenizer.instant_clip_tokenizer.__file__, "rb").read()
    start = blob.find(b"#version: 0.2\n")
    if start < 0:
        raise RuntimeError("instant-clip-tokenizer no longer bundles CLIP's BPE file in the expected form")
    lines = blob[start : start + 2_000_000].split(b"\n")[1 : 1 + _CLIP_MERGES]
    merges = [tuple(line.decode("utf-8").split(" ")) for line in lines]
    if len(merges) != _CLIP_MERGES or any(len(m) != 2 for m in merges):
        raise RuntimeError("could not read CLIP's BPE merges from instant-clip-tokenizer")
    chars = _clip_byte_chars()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def clip_tokenizer(pad_token: str = "<|endoftext|>", model_max_length: int = 77) -> CLIPTokenizer:
    """CLIP's real tokenizer (SD v1 pads with the end token, SD v2 with "!"), built offline.

    Raises ImportError when the optional package instant-clip-tokenizer is not installed.
    """
    vocab, merges = _clip_bpe()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=model_max_length)


# ----------------------------------------------------------------------------- builders


def _tiny_unet(in_channels: int = 4) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=32,
    )


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
    unet = _tiny_unet()
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
        scheduler=PNDMScheduler.from_config(SD_SCHEDULE),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_depth_pipeline(seed: int = 0) -> StableDiffusionDepth2ImgPipeline:
    """The tiny pipeline as a depth checkpoint: a 5-channel U-Net (4 latent + 1 depth) and its own DPT.

    The depth estimator is transformers' `DPTForDepthEstimation` (the class of SD 2-depth's
    Intel/dpt-hybrid-midas) in a 4-layer ViT version of ~120k parameters, with its image processor
    at 32×32; weights are random (seeded), so its depth maps are noise of the right shape.
    """
    from transformers import DPTConfig, DPTForDepthEstimation
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil  # PIL-only: no torchvision needed

    base = build_tiny_pipeline(seed)
    torch.manual_seed(seed + 1)
    depth_estimator = DPTForDepthEstimation(
        DPTConfig(
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
            backbone_out_indices=[0, 1, 2, 3],
            neck_hidden_sizes=[8, 16, 32, 32],
            reassemble_factors=[4, 2, 1, 0.5],
            fusion_hidden_size=16,
        )
    )
    return StableDiffusionDepth2ImgPipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=_tiny_unet(in_channels=5).eval(),
        scheduler=base.scheduler,
        depth_estimator=depth_estimator.eval(),
        feature_extractor=DPTImageProcessorPil(size={"height": 32, "width": 32}, keep_aspect_ratio=False),
    )


def _tiny_text_config(tokenizer, hidden_size: int, projection_dim: int = 32) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,  # two, so the penultimate layer SDXL reads differs from the last
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


TINY_SDXL_WIDTHS = (32, 48)  # text_encoder, text_encoder_2: the U-Net attends to both, concatenated (80)


def build_tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """SDXL's layout in miniature, random weights: what differs from SD 1.x/2.x is all there.

    Two text encoders (a CLIPTextModel, and a CLIPTextModelWithProjection whose projected end-token
    output is the pooled embedding) of different widths, the U-Net attending to their penultimate
    layers concatenated (32 + 48 = 80 channels) and adding the pooled embedding plus the six
    micro-conditioning numbers to its time embedding ("text_time"), SDXL's block order (no attention
    at the first level, more transformer layers deeper), SDXL's VAE scaling factor and Euler sampler.
    Both tokenizers are the toy's; the second pads with "!" as OpenCLIP's does.
    """
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    tokenizer_2 = build_tokenizer()
    tokenizer_2.pad_token = "!"
    width, width_2 = TINY_SDXL_WIDTHS
    text_encoder = CLIPTextModel(_tiny_text_config(tokenizer, width))
    text_encoder_2 = CLIPTextModelWithProjection(_tiny_text_config(tokenizer_2, width_2, projection_dim=width_2))
    time_dim = 8
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        cross_attention_dim=width + width_2,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + width_2,
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
        scaling_factor=XL_ARCHITECTURES["sdxl"]["vae"]["scaling_factor"],
    )
    scheduler_config = {k: v for k, v in XL_ARCHITECTURES["sdxl"]["scheduler"].items() if k != "_class_name"}
    return StableDiffusionXLPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet.eval(),
        scheduler=EulerDiscreteScheduler.from_config(scheduler_config),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def _real_tokenizer(spec: dict):
    try:
        return clip_tokenizer(**spec)
    except ImportError:
        warnings.warn(
            "instant-clip-tokenizer is not installed, so CLIP's vocabulary is unavailable offline: using the toy "
            "tokenizer instead (the text encoder still has CLIP's 49,408-token embedding). "
            "pip install instant-clip-tokenizer for the real one.",
            stacklevel=4,
        )
        return build_tokenizer()


def _build_xl_from_config(name: str) -> StableDiffusionXLPipeline:
    arch = XL_ARCHITECTURES[name]
    scheduler_config = dict(arch["scheduler"])
    scheduler_class = getattr(diffusers, scheduler_config.pop("_class_name"))
    return StableDiffusionXLPipeline(
        vae=AutoencoderKL(**arch["vae"]).eval(),
        text_encoder=CLIPTextModel(CLIPTextConfig(**arch["text_encoder"])).eval(),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**arch["text_encoder_2"])).eval(),
        tokenizer=_real_tokenizer(arch["tokenizer"]),
        tokenizer_2=_real_tokenizer(arch["tokenizer_2"]),
        unet=UNet2DConditionModel(**arch["unet"]).eval(),
        scheduler=scheduler_class.from_config(scheduler_config),
        force_zeros_for_empty_prompt=arch["force_zeros_for_empty_prompt"],
        add_watermarker=False,
    )


def _build_from_config(name: str) -> StableDiffusionPipeline:
    arch = ARCHITECTURES[name]
    try:
        tokenizer = clip_tokenizer(**arch["tokenizer"])
    except ImportError:
        warnings.warn(
            "instant-clip-tokenizer is not installed, so CLIP's vocabulary is unavailable offline: using the toy "
            "tokenizer instead (the text encoder still has CLIP's 49,408-token embedding). "
            "pip install instant-clip-tokenizer for the real one.",
            stacklevel=3,
        )
        tokenizer = build_tokenizer()
    scheduler_config = dict(arch["scheduler"])
    scheduler_class = getattr(diffusers, scheduler_config.pop("_class_name"))
    return StableDiffusionPipeline(
        vae=AutoencoderKL(**arch["vae"]).eval(),
        text_encoder=CLIPTextModel(CLIPTextConfig(**arch["text_encoder"])).eval(),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**arch["unet"]).eval(),
        scheduler=scheduler_class.from_config(scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_pipeline(
    name: str, seed: int = 0, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> StableDiffusionPipeline:
    """A random-weight pipeline of a known architecture: 'tiny', 'tiny-depth', 'tiny-sdxl', 'sd15', 'sd21',
    'sd21-base' or 'sdxl' (about 14 GB in float32).

    The real layouts take about 4–5 GB in float32 and several seconds to initialise. Weights are
    random (seeded), so images are noise — but every shape, cost and hook point is the real model's.
    """
    names = ["tiny", "tiny-depth", "tiny-sdxl", *ARCHITECTURES, *XL_ARCHITECTURES]
    if name not in names:
        raise ValueError(f"unknown architecture {name!r}; allowed: {', '.join(names)}")
    if name == "tiny":
        pipe = build_tiny_pipeline(seed)
    elif name == "tiny-depth":
        pipe = build_tiny_depth_pipeline(seed)
    elif name == "tiny-sdxl":
        pipe = build_tiny_sdxl_pipeline(seed)
    elif name in XL_ARCHITECTURES:
        torch.manual_seed(seed)
        pipe = _build_xl_from_config(name)
    else:
        torch.manual_seed(seed)
        pipe = _build_from_config(name)
    if dtype != torch.float32:  # built in float32; casting only when asked keeps diffusers quiet
        pipe.to(dtype=dtype)
    return pipe.to(device)


def count_parameters(pipe) -> dict[str, int]:
    """Parameters per neural-network component of a pipeline (unet, text_encoder, vae, …) plus 'total'."""
    counts = {
        name: sum(p.numel() for p in component.parameters())
        for name, component in pipe.components.items()
        if isinstance(component, torch.nn.Module)
    }
    counts["total"] = sum(counts.values())
    return counts

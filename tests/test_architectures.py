"""sdexplain.architectures: published SD configs, CLIP's tokenizer offline, random-weight builds."""

import gc

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig

from sdexplain.architectures import ARCHITECTURES, build_pipeline, build_tiny_pipeline, clip_tokenizer, count_parameters

PROMPTS = [
    "A person riding a motorcycle",
    "a photo of an astronaut riding a horse on mars, 4k, trending on artstation!!",
    "Hello   WORLD ünïcödé 😀 it's 3.14 — don't",
]


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_configs_are_complete_and_accepted_by_their_classes(name):
    arch = ARCHITECTURES[name]
    for cls, key in ((UNet2DConditionModel, "unet"), (AutoencoderKL, "vae")):
        _, unused, _ = cls.extract_init_dict(dict(arch[key]))
        assert not unused, f"{name}.{key}: keys its class doesn't know: {unused}"
    text = CLIPTextConfig(**arch["text_encoder"])
    assert text.vocab_size == 49408 and text.max_position_embeddings == 77
    assert text.hidden_size == arch["unet"]["cross_attention_dim"]  # what the U-Net attends to is the text width
    assert arch["unet"]["block_out_channels"] == (320, 640, 1280, 1280)


def test_sd2_attention_heads_are_64_channels_wide():
    for name in ("sd21", "sd21-base"):
        unet = ARCHITECTURES[name]["unet"]
        widths = [c // heads for c, heads in zip(unet["block_out_channels"], unet["attention_head_dim"])]
        assert widths == [64, 64, 64, 64]


def test_sd21_and_base_differ_where_the_published_models_do():
    v, base = ARCHITECTURES["sd21"], ARCHITECTURES["sd21-base"]
    assert (v["unet"]["sample_size"], base["unet"]["sample_size"]) == (96, 64)  # 768 px vs 512 px
    assert (v["scheduler"]["prediction_type"], base["scheduler"]["prediction_type"]) == ("v_prediction", "epsilon")
    assert (v["unet"]["upcast_attention"], base["unet"]["upcast_attention"]) == (True, False)
    assert v["text_encoder"] is base["text_encoder"]
    assert ARCHITECTURES["sd15"]["text_encoder"]["hidden_act"] == "quick_gelu"
    assert v["text_encoder"]["hidden_act"] == "gelu" and v["text_encoder"]["num_hidden_layers"] == 23


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown architecture 'sd3'; allowed: tiny, tiny-depth, tiny-sdxl, sd15, sd21, sd21-base, sdxl"):
        build_pipeline("sd3")


# ----------------------------------------------------------------------------- tokenizer


def test_clip_tokenizer_matches_openai_ids():
    reference = pytest.importorskip("instant_clip_tokenizer").Tokenizer()
    tokenizer = clip_tokenizer()
    assert len(tokenizer) == 49408
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 49407)
    for prompt in PROMPTS:
        expected = [reference.start_of_text(), *reference.encode(prompt), reference.end_of_text()]
        assert tokenizer(prompt).input_ids == expected, prompt


def test_sd2_tokenizer_pads_with_exclamation_mark():
    pytest.importorskip("instant_clip_tokenizer")
    tokenizer = clip_tokenizer(**ARCHITECTURES["sd21"]["tokenizer"])
    ids = tokenizer("a cat", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[:4] == [49406, 320, 2368, 49407] and set(ids[4:]) == {0}


# ----------------------------------------------------------------------------- building


def test_tiny_through_build_pipeline_with_dtype(tiny_pipe):
    pipe = build_pipeline("tiny", seed=0, dtype=torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16 and pipe.text_encoder.dtype == torch.bfloat16
    assert count_parameters(pipe) == count_parameters(tiny_pipe)
    a, b = build_pipeline("tiny", seed=1).unet.conv_in.weight, build_tiny_pipeline(seed=1).unet.conv_in.weight
    assert torch.equal(a, b)


def test_count_parameters(tiny_pipe):
    counts = count_parameters(tiny_pipe)
    assert set(counts) == {"unet", "vae", "text_encoder", "total"}
    assert counts["unet"] == sum(p.numel() for p in tiny_pipe.unet.parameters())
    assert counts["total"] == counts["unet"] + counts["vae"] + counts["text_encoder"]


def _run_one_step(pipe, size: int = 64):
    """Embeddings, the U-Net's down-path resolutions and the output of one 1-step run at size×size."""
    resolutions = []

    def record(module, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        resolutions.append(tuple(hidden.shape[-3:]))  # (channels, h, w) entering the block

    hooks = [block.register_forward_pre_hook(record, with_kwargs=True) for block in pipe.unet.down_blocks]
    try:
        with torch.no_grad():
            embeds, _ = pipe.encode_prompt("a red circle", "cpu", 1, False)
            images = pipe(
                "a red circle",
                height=size,
                width=size,
                num_inference_steps=1,
                guidance_scale=7.5,
                output_type="np",
                generator=torch.Generator().manual_seed(0),
            ).images
    finally:
        for hook in hooks:
            hook.remove()
    return embeds, resolutions, images


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, width, counts",
    [
        ("sd15", 768, {"unet": 859.5e6, "text_encoder": 123.1e6, "vae": 83.7e6}),
        ("sd21", 1024, {"unet": 865.9e6, "text_encoder": 340.4e6, "vae": 83.7e6}),
    ],
)
def test_real_architecture_runs_one_step(name, width, counts):
    pipe = build_pipeline(name, seed=0)
    try:
        params = count_parameters(pipe)
        for component, expected in counts.items():
            assert params[component] == pytest.approx(expected, rel=0.002), component
        assert pipe.scheduler.config.prediction_type == ARCHITECTURES[name]["scheduler"]["prediction_type"]
        embeds, resolutions, images = _run_one_step(pipe, size=64)
        assert embeds.shape == (1, 77, width)
        # one U-Net call (1 step, the CFG pair batched), 4 resolutions: 8×8 latents halved three times
        assert resolutions == [(320, 8, 8), (320, 4, 4), (640, 2, 2), (1280, 1, 1)]
        assert images.shape == (1, 64, 64, 3) and bool(torch.isfinite(torch.from_numpy(images)).all())
    finally:
        del pipe
        gc.collect()


# ----------------------------------------------------------------------------- SDXL


def test_sdxl_config_is_accepted_by_its_classes_and_consistent():
    from sdexplain.architectures import XL_ARCHITECTURES
    from sdexplain.latents import latent_geometry

    arch = XL_ARCHITECTURES["sdxl"]
    for cls, key in ((UNet2DConditionModel, "unet"), (AutoencoderKL, "vae")):
        _, unused, _ = cls.extract_init_dict(dict(arch[key]))
        assert not unused, f"sdxl.{key}: keys its class doesn't know: {unused}"
    text, text_2, unet = CLIPTextConfig(**arch["text_encoder"]), CLIPTextConfig(**arch["text_encoder_2"]), arch["unet"]
    assert (text.hidden_size, text_2.hidden_size) == (768, 1280)  # CLIP ViT-L + OpenCLIP ViT-bigG
    assert text.hidden_size + text_2.hidden_size == unet["cross_attention_dim"] == 2048
    # the U-Net's added embedding: 6 micro-conditioning numbers × 256 + the pooled 1280-wide text embedding
    assert unet["projection_class_embeddings_input_dim"] == 6 * unet["addition_time_embed_dim"] + text_2.projection_dim
    geometry = latent_geometry(arch)
    assert (geometry.height, geometry.width) == (1024, 1024) and geometry.latent_shape == (4, 128, 128)


def test_tiny_sdxl_has_sdxls_parts():
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    pipe = build_pipeline("tiny-sdxl")
    assert isinstance(pipe, StableDiffusionXLPipeline) and isinstance(pipe.text_encoder_2, CLIPTextModelWithProjection)
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    assert pipe.unet.config.addition_embed_type == "text_time" and pipe.vae.config.scaling_factor == 0.13025
    assert pipe.tokenizer_2.pad_token == "!" and pipe.tokenizer.pad_token == "<|endoftext|>"
    counts = count_parameters(pipe)
    assert set(counts) == {"unet", "vae", "text_encoder", "text_encoder_2", "total"} and counts["total"] < 2_000_000

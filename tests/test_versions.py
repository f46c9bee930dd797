"""SD v1 vs v2 from the configs: counts without weights, the table, ε- and v-targets."""

import pytest
import torch
from diffusers import DDPMScheduler

from sdexplain import versions
from sdexplain.architectures import build_pipeline, count_parameters
from sdexplain.architectures import SD_SCHEDULE
from sdexplain.toy.model import make_unet


def test_meta_build_allocates_nothing_and_counts_like_a_real_module():
    real = make_unet()
    meta = versions.meta_build(make_unet)
    assert all(p.device.type == "meta" for p in meta.parameters())
    assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in real.parameters())


def test_table_reads_the_published_differences():
    header, rows = versions.comparison_table(("sd15", "sd21"), counts=False)
    table = {row[0]: row[1:] for row in rows}
    assert header == ["property", "sd15", "sd21"]
    assert table["text width (embedding size)"] == [768, 1024]
    assert table["U-Net cross-attention width"] == [768, 1024]
    assert table["native resolution (px)"] == [512, 768]
    assert table["latent (C×h×w)"] == ["4×64×64", "4×96×96"]
    assert table["prediction type"] == ["epsilon", "v_prediction"]
    assert table["text encoder layers"] == [12, 23]


def test_parameter_counts_have_the_published_sizes():
    sd15 = versions.parameter_counts("sd15")
    assert sd15["unet"] == 859_520_964  # SD v1.5's U-Net, as its model card rounds it: 860 M
    assert sd15["text_encoder"] == 123_060_480  # CLIP ViT-L/14 text tower
    assert versions.parameter_counts("sd21")["text_encoder"] > 2.5 * sd15["text_encoder"]  # OpenCLIP ViT-H: 340 M


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd15", "sd21"])
def test_meta_counts_equal_counts_of_real_random_weight_instances(name):
    pipe = build_pipeline(name)
    real = count_parameters(pipe)
    del pipe
    assert versions.parameter_counts(name) == {k: real[k] for k in ("unet", "text_encoder", "vae", "total")}


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown architecture .sd3.; allowed: sd15, sd21, sd21-base, sdxl"):
        versions.parameter_counts("sd3")


def test_pipeline_row_matches_the_config_row_for_a_built_architecture(tiny_pipe):
    row = versions.pipeline_row(tiny_pipe)
    assert row["text width (embedding size)"] == tiny_pipe.text_encoder.config.hidden_size
    assert row["native resolution (px)"] == 64
    assert row["parameters: total"] == f"{count_parameters(tiny_pipe)['total']:,}"


def test_v_target_matches_diffusers_get_velocity():
    scheduler = DDPMScheduler.from_config(SD_SCHEDULE)
    x0 = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(1))
    targets = versions.prediction_targets(x0, 600, scheduler, seed=3)
    reference = scheduler.get_velocity(targets.x0[None], targets.noise[None], torch.tensor([600]))[0]
    assert torch.allclose(targets.v_target, reference, atol=1e-6)
    assert torch.equal(targets.eps_target, targets.noise)
    a = targets.alpha_bar
    assert torch.allclose(targets.x_t, a**0.5 * x0 + (1 - a) ** 0.5 * targets.noise, atol=1e-6)
    assert torch.allclose(a**0.5 * targets.x_t - (1 - a) ** 0.5 * targets.v_target, x0, atol=1e-5)  # x0 back from v


def test_whole_clip_models_have_their_published_sizes():
    counts = versions.clip_parameter_counts()
    v1, v2 = counts.values()
    assert 427e6 < v1 < 429e6  # openai/clip-vit-large-patch14: 428 M parameters (model card)
    assert 985e6 < v2 < 988e6  # laion/CLIP-ViT-H-14-laion2B-s32B-b79K: 986 M (OpenCLIP's results table)


# ----------------------------------------------------------------------------- SDXL


def test_xl_table_reads_sdxls_published_layout():
    header, rows = versions.comparison_table(("sd15", "sd21", "sdxl"), counts=False)
    table = {row[0]: row[1:] for row in rows}
    assert header == ["property", "sd15", "sd21", "sdxl"]
    assert table["text encoder"][2] == "CLIP ViT-L/14 (OpenAI) + OpenCLIP ViT-bigG/14 (LAION)"
    assert table["text width (embedding size)"] == [768, 1024, "768 + 1280 = 2048"]
    assert table["U-Net cross-attention width"] == [768, 1024, 2048]  # the two encoders side by side
    assert table["text encoder layers"] == [12, 23, "12 + 32"]
    assert table["native resolution (px)"] == [512, 768, 1024]
    assert table["latent (C×h×w)"][2] == "4×128×128"
    assert table["pooled text width added to the time embedding"] == ["—", "—", 1280]
    assert table["micro-conditioning numbers"] == ["—", "—", 6]
    assert table["U-Net channels"][2] == "320/640/1280"
    assert table["U-Net attention layers per level"] == ["1/1/1/0", "1/1/1/0", "0/2/10"]  # SDXL: none at the first level
    assert table["VAE scaling factor"] == [0.18215, 0.18215, 0.13025]


def test_sdxl_parameter_counts_match_the_paper():
    counts = versions.parameter_counts("sdxl")
    # Podell et al. 2023 (SDXL), §2.1: a 2.6 B-parameter U-Net; 817 M parameters in the two text encoders
    assert 2.55e9 < counts["unet"] < 2.65e9
    assert counts["text_encoder"] == 123_060_480  # the same CLIP ViT-L/14 text tower as SD v1
    assert round((counts["text_encoder"] + counts["text_encoder_2"]) / 1e6) == 818  # 817.7 M: "817 M" in the paper
    assert counts["total"] == counts["unet"] + counts["text_encoder"] + counts["text_encoder_2"] + counts["vae"]


def test_pipeline_row_of_a_tiny_sdxl_equals_its_config_reading():
    pipe = build_pipeline("tiny-sdxl")
    row = versions.pipeline_row(pipe)
    assert row["text width (embedding size)"] == "32 + 48 = 80" == f"32 + 48 = {pipe.unet.config.cross_attention_dim}"
    assert row["pooled text width added to the time embedding"] == 48
    assert row["micro-conditioning numbers"] == 6
    assert row["parameters: text_encoder_2"] == f"{count_parameters(pipe)['text_encoder_2']:,}"



@pytest.mark.parametrize("t", [1, 250, 500, 999])
def test_x0_error_gains_match_their_closed_forms(t):
    scheduler = DDPMScheduler.from_config(SD_SCHEDULE)
    x0 = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(2))
    targets = versions.prediction_targets(x0, t, scheduler, seed=0)
    eps_gain, v_gain = versions.x0_error_gains(targets)
    a = targets.alpha_bar
    assert eps_gain == pytest.approx(((1 - a) / a) ** 0.5, rel=1e-3)  # not 1/√ᾱ: at t = 1 it is 0.04, not 1.00
    assert v_gain == pytest.approx((1 - a) ** 0.5, rel=1e-3) and v_gain <= 1

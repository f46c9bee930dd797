"""sdexplain.loading on Stable Diffusion XL: folders, single files, tasks, float16 and the VAE, bad input."""

import json

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from safetensors.torch import save_file

from sdexplain import loading
from sdexplain.architectures import SDXL_FP16_VAE, build_pipeline, build_tiny_pipeline, count_parameters
from sdexplain.loading import checkpoint_architecture, derive, describe, load_pipeline


@pytest.fixture(scope="module")
def xl_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sdxl") / "tiny-sdxl"
    build_pipeline("tiny-sdxl").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd") / "tiny-sd"
    build_tiny_pipeline(seed=0).save_pretrained(folder)
    return folder


def test_sdxl_folder_is_recognised_from_model_index_and_loads_its_weights(xl_folder):
    assert json.loads((xl_folder / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
    pipe = load_pipeline(xl_folder, device="cpu")
    reference = build_pipeline("tiny-sdxl")
    assert type(pipe) is StableDiffusionXLPipeline and loading.is_xl(pipe)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        loaded, original = getattr(pipe, name).state_dict(), getattr(reference, name).state_dict()
        assert loaded.keys() == original.keys() and all(torch.equal(loaded[k], original[k]) for k in original), name
    assert pipe.tokenizer_2.pad_token == "!"
    info = describe(pipe)
    assert info["text_widths"] == [32, 48] and info["cross_attention_dim"] == 80


@pytest.mark.parametrize(
    "task, cls",
    [("text-to-image", StableDiffusionXLPipeline), ("image-to-image", StableDiffusionXLImg2ImgPipeline), ("inpainting", StableDiffusionXLInpaintPipeline)],
)
def test_sdxl_tasks_share_the_components(xl_folder, task, cls):
    pipe = load_pipeline(xl_folder, device="cpu")
    derived = derive(pipe, task)
    assert type(derived) is cls
    assert all(getattr(derived, n) is getattr(pipe, n) for n in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer_2"))


def test_depth_to_image_on_sdxl_is_refused_by_name(xl_folder):
    pipe = load_pipeline(xl_folder, device="cpu")
    with pytest.raises(ValueError, match="depth-to-image is not available for SDXL.*allowed for SDXL: text-to-image, image-to-image, inpainting"):
        derive(pipe, "depth-to-image")


def test_fp16_variant_is_asked_for_first(tmp_path, monkeypatch):
    """float16 reads the fp16 variant files where a folder has them (half the download)."""
    folder = tmp_path / "fp16"
    build_pipeline("tiny-sdxl", dtype=torch.float16).save_pretrained(folder, variant="fp16")
    assert list((folder / "unet").glob("*.fp16.safetensors"))
    calls = []
    original = StableDiffusionXLPipeline.from_pretrained.__func__

    def spy(cls, source, **kwargs):
        calls.append(kwargs.get("variant"))
        return original(cls, source, **kwargs)

    monkeypatch.setattr(StableDiffusionXLPipeline, "from_pretrained", classmethod(spy))
    pipe = loading._from_pretrained(StableDiffusionXLPipeline, folder, torch.float16, False, local_files_only=True)
    assert calls == ["fp16"] and pipe.unet.dtype == torch.float16


def test_float16_sdxl_names_the_fp16_safe_vae(xl_folder, monkeypatch):
    monkeypatch.setattr(loading, "resolve_dtype", lambda dtype, device, toy=False: torch.float16)
    with pytest.warns(UserWarning, match=f"vae='{SDXL_FP16_VAE}'"):
        pipe = load_pipeline(xl_folder, device="cpu", dtype="float16")
    assert pipe.vae.config.force_upcast


def _vae_folder(tmp_path, scaling_factor):
    folder = tmp_path / f"vae-{scaling_factor}"
    AutoencoderKL(block_out_channels=(8, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, layers_per_block=1,
                  scaling_factor=scaling_factor, force_upcast=False).save_pretrained(folder)  # fmt: skip
    return folder


def test_a_vae_of_the_same_latent_space_is_used(xl_folder, tmp_path):
    vae = _vae_folder(tmp_path, 0.13025)
    pipe = load_pipeline(xl_folder, device="cpu", vae=vae)
    assert pipe.vae.config.force_upcast is False and pipe.vae.config.scaling_factor == 0.13025


def test_an_sdxl_vae_on_sd1_and_the_reverse_are_refused(xl_folder, sd_folder, tmp_path):
    with pytest.raises(ValueError, match=r"scaling_factor=0.13025, but this SD 1.x/2.x model's own VAE has scaling_factor=0.18215.*is for SDXL only"):
        load_pipeline(sd_folder, device="cpu", vae=_vae_folder(tmp_path, 0.13025))
    with pytest.raises(ValueError, match=r"scaling_factor=0.18215, but this SDXL model's own VAE has scaling_factor=0.13025.*float16: 'madebyollin"):
        load_pipeline(xl_folder, device="cpu", vae=_vae_folder(tmp_path, 0.18215))
    with pytest.raises(ValueError, match="vae= is for real models"):
        load_pipeline("toy", vae=_vae_folder(tmp_path, 0.18215))


# ----------------------------------------------------------------------------- single checkpoint files


def _checkpoint(tmp_path, *keys):
    path = tmp_path / "model.safetensors"
    save_file({k: torch.zeros(2, 2) for k in keys}, str(path))
    return path


XL_KEYS = ("model.diffusion_model.label_emb.0.0.weight", "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
           "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight")  # fmt: skip


def test_checkpoint_architecture_from_its_keys(tmp_path):
    assert checkpoint_architecture(_checkpoint(tmp_path, *XL_KEYS)) == "sdxl"
    assert checkpoint_architecture(_checkpoint(tmp_path, "conditioner.embedders.0.model.ln_final.weight", "model.diffusion_model.label_emb.0.0.weight")) == "sdxl-refiner"
    assert checkpoint_architecture(_checkpoint(tmp_path, "model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.transformer.text_model.final_layer_norm.weight")) == "sd"
    with pytest.raises(ValueError, match=r"model\.safetensors: its tensor names match neither an SD 1\.x/2\.x checkpoint .* nor an SDXL one .*starts with lora_unet_down"):
        checkpoint_architecture(_checkpoint(tmp_path, "lora_unet_down_blocks_0.alpha"))


def test_a_checkpoint_matching_neither_is_refused_before_loading(tmp_path, sd_folder):
    path = _checkpoint(tmp_path, "lora_unet_down_blocks_0.alpha")
    with pytest.raises(ValueError, match="match neither"):
        load_pipeline(path, device="cpu", config=sd_folder)


def test_an_sdxl_file_loads_as_sdxl_with_its_config_folder(xl_folder, tmp_path, monkeypatch):
    calls = []

    def fake(cls, path, **kwargs):
        calls.append((cls, kwargs))
        return build_pipeline("tiny-sdxl")

    monkeypatch.setattr(StableDiffusionXLPipeline, "from_single_file", classmethod(fake))
    pipe = load_pipeline(_checkpoint(tmp_path, *XL_KEYS), device="cpu", config=xl_folder)
    [(cls, kwargs)] = calls
    assert cls is StableDiffusionXLPipeline and isinstance(pipe, StableDiffusionXLPipeline)
    assert kwargs["config"] == str(xl_folder) and kwargs["local_files_only"] is True and "safety_checker" not in kwargs


def test_a_checkpoint_and_a_config_folder_of_different_families_are_refused(xl_folder, sd_folder, tmp_path):
    with pytest.raises(ValueError, match=r"is an SDXL checkpoint \(by its tensor names\) but the config folder .* is SD 1\.x/2\.x \(StableDiffusionPipeline\).*stable-diffusion-xl-base-1\.0"):
        load_pipeline(_checkpoint(tmp_path, *XL_KEYS), device="cpu", config=sd_folder)
    with pytest.raises(ValueError, match=r"is an SD 1\.x/2\.x checkpoint .* but the config folder .* is SDXL \(StableDiffusionXLPipeline\)"):
        load_pipeline(_checkpoint(tmp_path, "model.diffusion_model.input_blocks.0.0.weight"), device="cpu", config=xl_folder)


def test_sd_parameters_unchanged_by_the_xl_branch(sd_folder):
    pipe = load_pipeline(sd_folder, device="cpu")
    assert type(pipe) is StableDiffusionPipeline and not loading.is_xl(pipe)
    assert count_parameters(pipe) == count_parameters(build_tiny_pipeline(seed=0))


def test_offload_is_for_cuda_only_and_says_so(xl_folder):
    with pytest.raises(ValueError, match=r"offload=True moves each component to a CUDA GPU while it runs; the device here is cpu"):
        load_pipeline(xl_folder, device="cpu", offload=True)

"""Real checkpoints' layouts, offline: depth checkpoints load with their own estimator, float16 asks for
the fp16 variant files, the CLI refuses U-Nets that are not text-to-image, loading prints no notice."""

import shutil

import pytest
import torch
from diffusers import StableDiffusionDepth2ImgPipeline
from PIL import Image
from transformers import DPTForDepthEstimation

import sdexplain
from sdexplain import cli, editing, loading
from sdexplain.architectures import _tiny_unet, build_pipeline


@pytest.fixture(scope="module")
def depth_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-depth")
    build_pipeline("tiny-depth").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def inpaint_folder(tmp_path_factory):
    """The tiny pipeline with a 9-channel U-Net (latent + mask + masked-image latent), as an inpainting checkpoint."""
    folder = tmp_path_factory.mktemp("tiny-inpaint")
    pipe = build_pipeline("tiny")
    pipe.register_modules(unet=_tiny_unet(in_channels=9).eval())
    pipe.save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------- depth checkpoints


def test_a_depth_checkpoint_loads_as_depth_to_image_with_its_own_estimator(depth_folder):
    pipe = sdexplain.load_pipeline(str(depth_folder), device="cpu")
    assert isinstance(pipe, StableDiffusionDepth2ImgPipeline)
    assert isinstance(pipe.depth_estimator, DPTForDepthEstimation) and pipe.feature_extractor is not None
    assert pipe.unet.config.in_channels == 5
    assert editing.has_own_depth_estimator(pipe)


def test_the_own_estimator_is_what_the_pipeline_itself_uses(depth_folder):
    """Depth from `own_depth_estimator` equals the depth map diffusers' pipeline computes when given none."""
    pipe = sdexplain.load_pipeline(str(depth_folder), device="cpu")
    picture = Image.fromarray((torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy())
    depth = editing.estimate_depth(editing.own_depth_estimator(pipe), picture)  # (64, 64)
    assert depth.shape == (64, 64)
    # diffusers' own path: feature extractor + DPT, then resized to the latent and normalised to [-1, 1]
    with torch.no_grad():
        own = pipe.prepare_depth_map(picture, None, 1, False, torch.float32, torch.device("cpu"))  # (1, 1, 8, 8)
    ours = torch.nn.functional.interpolate(depth[None, None], size=own.shape[-2:], mode="bicubic", align_corners=False)
    ours = 2.0 * (ours - ours.amin()) / (ours.amax() - ours.amin()) - 1.0
    assert editing.pearson(ours, own) > 0.9


def test_generate_runs_a_depth_checkpoint_with_its_own_depth(depth_folder):
    pipe = sdexplain.load_pipeline(str(depth_folder), device="cpu")
    picture = Image.new("RGB", (64, 64), (200, 30, 30))
    depth = editing.estimate_depth(editing.own_depth_estimator(pipe), picture)
    images, run = sdexplain.generate(pipe, "a red circle", image=picture, depth_map=depth, strength=1.0, steps=2, cfg=2.0, seed=0)
    assert images[0].size == (64, 64) and run.pipeline == "StableDiffusionDepth2ImgPipeline" and len(run.steps) >= 2


def test_a_text_to_image_model_has_no_own_depth_estimator(tmp_path):
    pipe = build_pipeline("tiny")
    assert not editing.has_own_depth_estimator(pipe)
    with pytest.raises(ValueError, match="stabilityai/stable-diffusion-2-depth"):
        editing.own_depth_estimator(pipe)


# ----------------------------------------------------------------------------- the CLI and U-Net channels


@pytest.mark.parametrize("fixture, channels, what", [("depth_folder", 5, "depth"), ("inpaint_folder", 9, "inpainting")])
def test_cli_refuses_u_nets_that_are_not_text_to_image(request, tmp_path, capsys, fixture, channels, what):
    folder = request.getfixturevalue(fixture)
    out = tmp_path / "x.png"
    with pytest.raises(SystemExit) as info:
        cli.main(["generate", "--prompt", "a red circle", "--model", str(folder), "--device", "cpu", "--steps", "2", "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"U-Net with {channels} input channels" in err and what in err and "text-to-image only, which needs 4" in err
    assert not out.exists()


# ----------------------------------------------------------------------------- float16: the fp16 variant


def _fp16_variant_copy(src, dst):
    """`src` with only fp16 variant weights (diffusion_pytorch_model.fp16.safetensors, ...), of a different seed."""
    shutil.copytree(src, dst)
    pipe = build_pipeline("tiny", seed=1)
    for name in ("unet", "vae", "text_encoder"):
        for weights in (dst / name).glob("*.safetensors"):
            weights.unlink()
        getattr(pipe, name).to(torch.float16).save_pretrained(dst / name, variant="fp16")
    return pipe


def test_float16_loads_the_fp16_variant_where_there_is_one(tmp_path):
    full = tmp_path / "full"
    build_pipeline("tiny", seed=0).save_pretrained(full)
    variant_pipe = _fp16_variant_copy(full, tmp_path / "with-fp16")
    assert sorted(p.name for p in (tmp_path / "with-fp16" / "unet").glob("*.safetensors")) == ["diffusion_pytorch_model.fp16.safetensors"]
    pipe = loading._load_folder(tmp_path / "with-fp16", torch.float16, allow_pickle=False)
    assert pipe.unet.dtype == torch.float16
    # the weights are the variant's (seed 1), not the full files' (seed 0, deleted anyway)
    torch.testing.assert_close(pipe.unet.conv_in.weight, variant_pipe.unet.conv_in.weight.to(torch.float16))


def test_float16_falls_back_to_the_full_files_without_a_variant(tmp_path, recwarn):
    full = tmp_path / "full"
    reference = build_pipeline("tiny", seed=0)
    reference.save_pretrained(full)
    pipe = loading._load_folder(full, torch.float16, allow_pickle=False)
    assert pipe.unet.dtype == torch.float16
    torch.testing.assert_close(pipe.unet.conv_in.weight, reference.unet.conv_in.weight.to(torch.float16))
    float32 = loading._load_folder(full, torch.float32, allow_pickle=False)  # float32 never asks for a variant
    torch.testing.assert_close(float32.unet.conv_in.weight, reference.unet.conv_in.weight)


def test_loading_prints_no_accelerate_notice(tmp_path, capfd):
    from diffusers.utils import is_accelerate_available

    folder = tmp_path / "tiny"
    build_pipeline("tiny").save_pretrained(folder)
    capfd.readouterr()
    sdexplain.load_pipeline(str(folder), device="cpu")
    captured = capfd.readouterr()
    assert "accelerate" not in captured.out + captured.err, "diffusers' notice about accelerate came back"
    if not is_accelerate_available():
        assert "low cpu memory" not in (captured.out + captured.err).lower()

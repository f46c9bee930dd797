"""sdexplain.loading: every kind of model source, offline, and the helpers notebooks use."""

import warnings

import numpy as np
import pytest
import torch
from diffusers import (
    StableDiffusionDepth2ImgPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file

from sdexplain import loading
from sdexplain.architectures import build_tiny_pipeline, count_parameters
from sdexplain.loading import ModelNotFoundError, UnsafeCheckpointError, derive, describe, load_pipeline


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_pipeline")
    build_tiny_pipeline(seed=0).save_pretrained(folder)
    return folder


@pytest.fixture
def hub_offline(monkeypatch, tmp_path):
    """huggingface_hub refusing the network at once, with an empty cache (both read at import time)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


# ----------------------------------------------------------------------------- sources


def test_local_folder_loads_the_saved_weights(tiny_folder):
    pipe = load_pipeline(tiny_folder, device="cpu")
    reference = build_tiny_pipeline(seed=0)
    assert type(pipe) is StableDiffusionPipeline
    assert pipe.dtype == torch.float32 and pipe.device.type == "cpu"
    assert pipe.safety_checker is None
    for name in ("unet", "vae", "text_encoder"):
        loaded, original = getattr(pipe, name).state_dict(), getattr(reference, name).state_dict()
        assert loaded.keys() == original.keys()
        assert all(torch.equal(loaded[k], original[k]) for k in original), name
    assert pipe.tokenizer("a red circle").input_ids == reference.tokenizer("a red circle").input_ids


def test_toy_not_built_says_how_to_build_it(tmp_path, monkeypatch):
    from sdexplain.toy import model as toy_model

    monkeypatch.setattr(toy_model, "MODEL_DIR", tmp_path / "model")
    with pytest.raises(ModelNotFoundError, match=r"toy model isn't built.*python -m sdexplain\.toy\.train"):
        load_pipeline("toy", device="cpu")


def test_toy_loads_from_its_model_dir_in_float32(tiny_folder, monkeypatch):
    from sdexplain.toy import model as toy_model

    monkeypatch.setattr(toy_model, "MODEL_DIR", tiny_folder)
    pipe = load_pipeline(device="cpu")
    assert pipe.safety_checker is None
    assert pipe.dtype == torch.float32
    assert loading.resolve_dtype("auto", "cuda", toy=True) == torch.float32  # even where real models get float16


def test_hub_id_offline_names_the_model_and_how_to_get_it(hub_offline):
    import time

    model_id = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        load_pipeline(model_id, device="cpu")
    assert time.perf_counter() - start < 20  # failed at once, no network retries
    message = str(info.value)
    assert model_id in message and "huggingface-cli download" in message and "local" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no stack of HTTP errors
    assert isinstance(info.value, OSError)


@pytest.mark.parametrize("name", ["./no/such/folder", "no/such/folder", "missing.safetensors"])
def test_missing_paths_are_not_sent_to_the_hub(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="no such file or folder"):
        load_pipeline(name, device="cpu")


def test_folder_without_model_index_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="model_index.json"):
        load_pipeline(tmp_path, device="cpu")


@pytest.mark.parametrize("suffix", [".ckpt", ".bin"])
def test_pickled_checkpoint_files_are_refused_by_default(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"not even a pickle")
    with pytest.raises(UnsafeCheckpointError, match=rf"model\{suffix}.*only \.safetensors.*allow_pickle=True"):
        load_pipeline(path, device="cpu")


def test_folder_with_only_pickled_weights_needs_allow_pickle(tmp_path):
    build_tiny_pipeline(seed=0).save_pretrained(tmp_path, safe_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match=r"\.bin.*only safetensors.*allow_pickle=True"):
        load_pipeline(tmp_path, device="cpu")
    pipe = load_pipeline(tmp_path, device="cpu", allow_pickle=True)
    assert count_parameters(pipe) == count_parameters(build_tiny_pipeline(seed=0))


def test_single_file_offline_without_config_explains_config(hub_offline, tmp_path):
    path = tmp_path / "model.safetensors"  # an original-layout key, so diffusers takes it for SD v1
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ModelNotFoundError, match=r"model\.safetensors.*config=") as info:
        load_pipeline(path, device="cpu")
    assert info.value.__cause__ is None


def test_single_file_uses_a_local_config_folder_offline(tiny_folder, tmp_path, monkeypatch):
    calls = []

    def fake_from_single_file(path, **kwargs):
        calls.append((path, kwargs))
        return build_tiny_pipeline(seed=0)

    monkeypatch.setattr(StableDiffusionPipeline, "from_single_file", fake_from_single_file)
    path = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, str(path))
    pipe = load_pipeline(path, device="cpu", config=tiny_folder)
    assert isinstance(pipe, StableDiffusionPipeline)
    [(called_path, kwargs)] = calls
    assert called_path == str(path)
    assert kwargs["config"] == str(tiny_folder) and kwargs["local_files_only"] is True
    assert kwargs["safety_checker"] is None and kwargs["dtype"] == torch.float32


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "empty"])
def test_a_corrupt_safetensors_file_is_named_not_blamed_on_the_network(hub_offline, tiny_folder, tmp_path, damage):
    path = tmp_path / "c.safetensors"
    if damage == "random bytes":
        path.write_bytes(np.random.RandomState(0).bytes(5000))
    elif damage == "truncated":
        save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(64, 64)}, str(path))
        path.write_bytes(path.read_bytes()[:-100])
    else:
        path.write_bytes(b"")
    for config in (tiny_folder, None):
        with pytest.raises(ValueError, match=r"c\.safetensors is not a readable \.safetensors file \(.*\): it is truncated or corrupt") as info:
            load_pipeline(path, device="cpu", config=config)
        assert "offline" not in str(info.value) and "config=" not in str(info.value)


def test_a_checkpoint_that_does_not_fit_its_local_config_says_so(tiny_folder, tmp_path):
    path = tmp_path / "model.safetensors"  # readable, but not the weights the config describes
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ValueError, match=r"model\.safetensors is not a complete Stable Diffusion checkpoint: .*missing") as info:
        load_pipeline(path, device="cpu", config=tiny_folder)
    assert "could not be fetched" not in str(info.value) and "offline" not in str(info.value)


def test_config_is_only_for_single_files(tiny_folder):
    with pytest.raises(ValueError, match="config= is only used with a single .safetensors"):
        load_pipeline(tiny_folder, device="cpu", config=tiny_folder)


def test_scheduler_name_is_applied(tiny_folder):
    names = [name for name in loading.SCHEDULERS if name.lower() not in ("pndm", "default")]
    pipe = load_pipeline(tiny_folder, device="cpu", scheduler=names[0])
    reference = build_tiny_pipeline()
    loading.set_scheduler(reference, names[0])
    assert type(pipe.scheduler) is type(reference.scheduler)
    assert type(pipe.scheduler).__name__ != "PNDMScheduler"


def test_unknown_scheduler_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(loading, "_load_hub", lambda *a: pytest.fail("loaded a model for a bad scheduler name"))
    with pytest.raises(ValueError, match=r"unknown scheduler 'warp'; allowed: .*ddim"):
        load_pipeline("stabilityai/stable-diffusion-2-1-base", device="cpu", scheduler="warp")


# ----------------------------------------------------------------------------- device and dtype


@pytest.mark.parametrize("device", ["gpu", "cuda0", "mps:0", "tpu", ""])
def test_unknown_device_names_the_value(device):
    with pytest.raises(ValueError, match=rf"unknown device {device!r}.*allowed: auto, cpu, cuda"):
        loading.resolve_device(device)


@pytest.mark.parametrize("dtype", ["half", "float64", "int8", torch.float64])
def test_unknown_dtype_names_the_value(dtype):
    with pytest.raises(ValueError, match=r"dtype .*allowed: auto, float32"):
        loading.resolve_dtype(dtype, "cpu")


def test_bad_device_and_dtype_reach_load_pipeline_as_value_errors(tiny_folder):
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        load_pipeline(tiny_folder, device="gpu")
    with pytest.raises(ValueError, match="unknown dtype 'fp64'"):
        load_pipeline(tiny_folder, device="cpu", dtype="fp64")


def test_auto_device_follows_what_is_available():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert loading.resolve_device("auto").type == expected
    assert loading.resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_without_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        loading.resolve_device("cuda")


@pytest.mark.parametrize(
    "device, expected", [("cuda", torch.float16), ("mps", torch.float32), ("cpu", torch.float32)]
)
def test_auto_dtype_per_device(device, expected):
    assert loading.resolve_dtype("auto", device) == expected


def test_float16_on_cpu_falls_back_to_float32_with_a_warning(tiny_folder):
    with pytest.warns(UserWarning, match="float16 asked for on CPU.*float32"):
        assert loading.resolve_dtype("fp16", "cpu") == torch.float32
    with pytest.warns(UserWarning, match="float16 asked for on CPU"):
        pipe = load_pipeline(tiny_folder, device="cpu", dtype=torch.float16)
    assert pipe.dtype == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert loading.resolve_dtype("bfloat16", "cpu") == torch.bfloat16  # bfloat16 is fine on CPU


# ----------------------------------------------------------------------------- derived pipelines


@pytest.mark.parametrize(
    "task, cls",
    [
        ("text-to-image", StableDiffusionPipeline),
        ("image-to-image", StableDiffusionImg2ImgPipeline),
        ("inpainting", StableDiffusionInpaintPipeline),
    ],
)
def test_derive_shares_the_components(tiny_pipe, task, cls):
    derived = derive(tiny_pipe, task)
    assert type(derived) is cls
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert getattr(derived, name) is getattr(tiny_pipe, name), name


def test_derive_keeps_the_dtype(tiny_pipe):
    tiny_pipe.to(dtype=torch.bfloat16)
    derived = derive(tiny_pipe, "image-to-image")
    assert derived.unet is tiny_pipe.unet
    assert tiny_pipe.unet.dtype == torch.bfloat16 and derived.dtype == torch.bfloat16


def test_derive_unknown_task(tiny_pipe):
    with pytest.raises(ValueError, match=r"unknown task 'upscale'.*text-to-image, image-to-image, inpainting, depth-to-image"):
        derive(tiny_pipe, "upscale")


def test_depth2img_needs_a_five_channel_unet(tiny_pipe):
    with pytest.raises(ValueError, match="5 input channels.*has 4"):
        derive(tiny_pipe, "depth-to-image")
    tiny_pipe.unet = UNet2DConditionModel.from_config(tiny_pipe.unet.config, in_channels=5)
    derived = derive(tiny_pipe, "depth-to-image")
    assert type(derived) is StableDiffusionDepth2ImgPipeline
    assert derived.unet is tiny_pipe.unet and derived.vae is tiny_pipe.vae
    assert derived.depth_estimator is None


# ----------------------------------------------------------------------------- facts


def test_describe_summarises_the_tiny_pipeline(tiny_pipe):
    info = describe(tiny_pipe)
    assert info["pipeline"] == "StableDiffusionPipeline"
    assert info["parameters"] == count_parameters(tiny_pipe)
    params = info["parameters"]
    assert params["total"] == params["unet"] + params["vae"] + params["text_encoder"] > 0
    assert info["text_width"] == 32 and info["max_tokens"] == 77
    assert info["unet_blocks"] == ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert info["unet_channels"] == [32, 64]
    assert info["latent_channels"] == 4 and info["vae_scale_factor"] == 8 and info["default_size"] == 64
    assert info["prediction_type"] == "epsilon" and info["scheduler"] == "PNDMScheduler"
    assert info["dtype"] == "float32" and info["device"] == "cpu"


def test_depth2img_checks_the_unet_it_is_given(tiny_pipe):
    depth_unet = UNet2DConditionModel.from_config(tiny_pipe.unet.config, in_channels=5)
    derived = derive(tiny_pipe, "depth-to-image", unet=depth_unet)  # the text-only pipe keeps its 4-channel U-Net
    assert derived.unet is depth_unet and tiny_pipe.unet.config.in_channels == 4
    with pytest.raises(ValueError, match="has 4"):
        derive(tiny_pipe, "depth-to-image", unet=tiny_pipe.unet)

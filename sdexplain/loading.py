"""Load a Stable Diffusion pipeline (v1, v2 or XL) — the toy, a Hub model, a local folder or one checkpoint file.

    load_pipeline()                                   the toy model shipped in sdexplain/toy/model/
    load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5")    a Hub id (downloaded or cached)
    load_pipeline("path/to/folder")                   a diffusers `save_pretrained` folder
    load_pipeline("model.safetensors", config=...)    one original-format checkpoint file

Whatever the source, the result is a stock diffusers pipeline — `StableDiffusionPipeline` for SD 1.x/2.x,
`StableDiffusionXLPipeline` for SDXL (recognised from model_index.json, or from a checkpoint file's keys):
every trace and plot of sdexplain works on it, and so does everything diffusers documents.

SDXL in float16: SDXL's own VAE overflows in float16, so diffusers decodes with it in float32
(`vae.config.force_upcast`), which costs memory and time; `vae="madebyollin/sdxl-vae-fp16-fix"` (`SDXL_FP16_VAE`)
swaps in a VAE finetuned to run in float16. A VAE whose latent space doesn't fit the model (SDXL's on SD 1.x,
or the reverse) is refused.

Choices made here (all overridable through the arguments):
- device "auto": CUDA, else Apple MPS, else CPU.
- dtype "auto": float16 on CUDA (half the memory, the usual way SD runs on GPUs); float32 on MPS
  (float16 there has given black or NaN images with some PyTorch releases, and an explainer must
  show correct numbers first) and on CPU (float16 is slow and poorly supported there). The toy
  model is float32 everywhere: it is tiny, and float32 keeps its traces identical across devices.
- float16 asked for on CPU falls back to float32 with a warning rather than failing: the same
  notebook then runs on a laptop and on a GPU machine.
- Only safetensors weights are read unless `allow_pickle=True`: a pickled `.ckpt`/`.bin` file can
  run arbitrary code when loaded.
- No safety checker is loaded (see `_NO_SAFETY_CHECKER`).
"""

from __future__ import annotations

import warnings
import weakref
from pathlib import Path

import torch

from sdexplain.quiet import quiet_libraries
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionDepth2ImgPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)

from sdexplain.architectures import ARCHITECTURES, SDXL_FP16_VAE, XL_ARCHITECTURES, count_parameters

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
# What one set of components can do, and the diffusers pipeline class that does it (see `derive`).
TASKS = {
    "text-to-image": StableDiffusionPipeline,
    "image-to-image": StableDiffusionImg2ImgPipeline,
    "inpainting": StableDiffusionInpaintPipeline,
    "depth-to-image": StableDiffusionDepth2ImgPipeline,
}
# The same for SDXL components (diffusers has no SDXL depth-to-image pipeline).
XL_TASKS = {
    "text-to-image": StableDiffusionXLPipeline,
    "image-to-image": StableDiffusionXLImg2ImgPipeline,
    "inpainting": StableDiffusionXLInpaintPipeline,
}
# Samplers by name, each built with `Cls.from_config(pipe.scheduler.config)` (same training schedule).
SCHEDULERS = {
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "dpm++2m": DPMSolverMultistepScheduler,
    "pndm": PNDMScheduler,
    "ddpm": DDPMScheduler,
    "lms": LMSDiscreteScheduler,  # needs scipy
    "heun": HeunDiscreteScheduler,
}
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
TOY_BUILD_COMMAND = "python -m sdexplain.toy.train"

# The explainer's job is to show intermediate tensors, and it never hides a generated image, so no
# safety checker is loaded (it also costs a 1.2 GB download and memory). Users of real models
# remain responsible for what they generate and show, as the models' licences say.
_NO_SAFETY_CHECKER = dict(safety_checker=None, requires_safety_checker=False)


class ModelNotFoundError(OSError):
    """The model asked for is neither built, nor on disk, nor reachable on the Hub."""


class UnsafeCheckpointError(ValueError):
    """Pickled weights (.ckpt, .bin, …) were found and `allow_pickle` is off."""


# ----------------------------------------------------------------------------- device and dtype


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' → CUDA, else MPS, else CPU; otherwise the named device, checked to exist."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise ValueError(f"device must be a string or torch.device, got {device!r}; allowed: {', '.join(DEVICES)}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda", "mps") or (kind != "cuda" and ":" in device):
        raise ValueError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but PyTorch sees no CUDA GPU here; use device='auto' or 'cpu'")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {device!r} asked for, but Apple MPS is not available here; use device='auto' or 'cpu'")
    return resolved


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | str = "cpu", toy: bool = False) -> torch.dtype:
    """'auto' → float16 on CUDA, float32 elsewhere (and for the toy); float16 on CPU → float32 + warning."""
    device = torch.device(device)
    if isinstance(dtype, str):
        if dtype == "auto":
            return torch.float16 if device.type == "cuda" and not toy else torch.float32
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; allowed: auto, {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    if dtype not in DTYPES.values():
        raise ValueError(f"unsupported dtype {dtype!r}; allowed: auto, {', '.join(DTYPES)}")
    if dtype == torch.float16 and device.type == "cpu":
        warnings.warn("float16 asked for on CPU, where it is slow and partly unsupported: using float32 instead", stacklevel=3)
        return torch.float32
    return dtype


# ----------------------------------------------------------------------------- loading


def load_pipeline(
    model: str | Path = "toy",
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    scheduler: str | None = None,
    *,
    config: str | Path | None = None,
    allow_pickle: bool = False,
    vae: str | Path | None = None,
    offload: bool = False,
) -> StableDiffusionPipeline:
    """A `StableDiffusionPipeline` (SDXL: `StableDiffusionXLPipeline`) on `device`, ready to run.

    model: "toy", a Hub id ("stabilityai/stable-diffusion-2-1-base"), a diffusers folder, or a
        `.safetensors` checkpoint file in the original (CompVis/Stability) layout.
    device, dtype: see the module docstring ("auto" picks for you).
    scheduler: a name from `SCHEDULERS` (ddim, euler, …) to swap the model's own scheduler for.
    config: for a single checkpoint file only — a diffusers folder or Hub id holding the component
        configs that the file lacks (offline, a local folder is the only way).
    allow_pickle: also read `.ckpt`/`.bin` weights, which can run code when unpickled. Only for files you trust.
    vae: a Hub id or diffusers folder of another VAE (AutoencoderKL) to use, e.g. `SDXL_FP16_VAE` for SDXL in
        float16; refused when its latent space (channels, scaling factor) differs from the model's own VAE.
    offload: keep the components in CPU memory and move each to the GPU only while it runs (diffusers'
        `enable_model_cpu_offload`, which needs the accelerate package; CUDA only): slower, but SDXL then
        needs GPU memory for its largest component (the U-Net) instead of all of them.
    """
    from sdexplain.toy import model as toy_model  # read at call time, so MODEL_DIR can be redirected

    resolved_device = resolve_device(device)
    is_toy = model == "toy"
    resolved_dtype = resolve_dtype(dtype, resolved_device, toy=is_toy)
    if config is not None and (is_toy or not str(model).endswith(".safetensors")):
        raise ValueError(f"config= is only used with a single .safetensors checkpoint file, not with model={str(model)!r}")
    if scheduler is not None:
        _check_scheduler_name(scheduler)  # before a long load
    if vae is not None and is_toy:
        raise ValueError("vae= is for real models; the toy model has its own VAE only")
    if offload and resolved_device.type != "cuda":
        raise ValueError(f"offload=True moves each component to a CUDA GPU while it runs; the device here is {resolved_device}")

    if is_toy:
        folder = Path(toy_model.MODEL_DIR)
        if not (folder / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"the toy model isn't built yet: {folder} holds no model_index.json. "
                f"Build it with `{TOY_BUILD_COMMAND}` (it trains on CPU and resumes when stopped), "
                "or pass model=<Hub id or diffusers folder> to use another model."
            )
        with quiet_libraries():  # a few MB: loads before a progress bar could be read
            pipe = _load_folder(folder, resolved_dtype, allow_pickle)
    else:
        path = Path(model).expanduser()
        if path.is_dir():
            pipe = _load_folder(path, resolved_dtype, allow_pickle)
        elif path.is_file():
            pipe = _load_file(path, resolved_dtype, allow_pickle, config)
        elif _looks_like_path(str(model)):
            hint = f"; for a random-weight {model} use sdexplain.architectures.build_pipeline({str(model)!r})" if model in ARCHITECTURES else ""
            raise ModelNotFoundError(
                f"no such file or folder: {str(model)!r} (model may be 'toy', a Hub id, a folder or a .safetensors file){hint}"
            )
        else:
            pipe = _load_hub(str(model), resolved_dtype, allow_pickle)

    if vae is not None:
        pipe.vae = _load_vae(vae, pipe, resolved_dtype)
    elif is_xl(pipe) and resolved_dtype == torch.float16 and pipe.vae.config.get("force_upcast", False):
        warnings.warn(
            "SDXL's VAE overflows in float16, so diffusers decodes in float32 (more memory, slower); pass "
            f"vae={SDXL_FP16_VAE!r} to load_pipeline for a VAE finetuned to decode in float16",
            stacklevel=2,
        )
    if offload:
        pipe.enable_model_cpu_offload(device=resolved_device)  # ImportError from diffusers without accelerate
    else:
        pipe = pipe.to(resolved_device)
    if scheduler is not None:
        set_scheduler(pipe, scheduler)
    return pipe


def is_xl(pipe) -> bool:
    """Whether a pipeline is Stable Diffusion XL's (two text encoders, or the refiner's second one only)."""
    return "text_encoder_2" in getattr(pipe, "components", {})


def _load_vae(source, pipe, dtype: torch.dtype):
    """The VAE at `source` (Hub id or folder), refused unless its latent space is the model's own."""
    from diffusers import AutoencoderKL

    path = Path(source).expanduser()
    try:
        vae = AutoencoderKL.from_pretrained(str(path) if path.is_dir() else str(source), dtype=dtype, local_files_only=path.is_dir())
    except OSError as err:
        raise ModelNotFoundError(f"could not load the VAE {str(source)!r} ({_short_reason(err)}); pass a Hub id or a local AutoencoderKL folder") from None
    mine, theirs = pipe.vae.config, vae.config
    for key in ("latent_channels", "scaling_factor"):
        if mine.get(key) != theirs.get(key):
            family = "SDXL" if is_xl(pipe) else "SD 1.x/2.x"
            raise ValueError(
                f"the VAE {str(source)!r} has {key}={theirs.get(key)}, but this {family} model's own VAE has "
                f"{key}={mine.get(key)}: its latents would be misread. Use a VAE made for {family}"
                + (f" (for float16: {SDXL_FP16_VAE!r})" if family == "SDXL" else f" ({SDXL_FP16_VAE!r} is for SDXL only)")
            )
    return vae


def _looks_like_path(model: str) -> bool:
    """Not a Hub id ("owner/name"): an explicit path, a file name, or more than one folder level."""
    return (
        model.startswith((".", "/", "~", "\\"))
        or model.endswith((".safetensors", *PICKLE_SUFFIXES))
        or model.count("/") != 1
        or "\\" in model
    )


def _check_weights_are_safetensors(folder: Path) -> None:
    """Refuse a diffusers folder whose components only come as pickled weights."""
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = [f for f in sub.iterdir() if f.is_file()]
        pickled = [f for f in files if f.suffix in PICKLE_SUFFIXES]
        if pickled and not any(f.suffix == ".safetensors" for f in files):
            raise UnsafeCheckpointError(
                f"{pickled[0]} is a pickled weights file and {sub} has no .safetensors weights: only safetensors "
                "are loaded by default, since unpickling can run arbitrary code. Convert the weights, or pass "
                "allow_pickle=True if you trust the file."
            )


def _load_folder(folder: Path, dtype: torch.dtype, allow_pickle: bool) -> StableDiffusionPipeline:
    if not (folder / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"{folder} is not a diffusers pipeline folder (no model_index.json); "
            "make one with pipe.save_pretrained(folder), or pass a Hub id or a .safetensors file"
        )
    if not allow_pickle:
        _check_weights_are_safetensors(folder)
    cls = pipeline_class(StableDiffusionPipeline.load_config(folder))
    return _from_pretrained(cls, folder, dtype, allow_pickle, local_files_only=True)


_BY_CLASS_NAME = {
    cls.__name__: cls
    for cls in (StableDiffusionDepth2ImgPipeline, StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline)
}


def pipeline_class(model_index: dict):
    """The pipeline class to load a checkpoint as, from its model_index.json: a depth checkpoint
    (stabilityai/stable-diffusion-2-depth) is a `StableDiffusionDepth2ImgPipeline`, so its own DPT depth
    estimator comes with it; SDXL base a `StableDiffusionXLPipeline`, SDXL's refiner (which says
    StableDiffusionXLImg2ImgPipeline) and SDXL inpainting checkpoints their own classes; anything else —
    SD 1.x/2.x, whatever task its index names — a `StableDiffusionPipeline`."""
    return _BY_CLASS_NAME.get(model_index.get("_class_name"), StableDiffusionPipeline)


def checkpoint_architecture(path: str | Path) -> str:
    """"sd" (1.x/2.x), "sdxl" or "sdxl-refiner" for an original-layout (CompVis / Stability) checkpoint file,
    read from its tensor names (only the file's header is read). Anything else is refused by name."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    if any(k.startswith("conditioner.embedders.1.") for k in keys):  # OpenCLIP ViT-bigG next to CLIP ViT-L
        return "sdxl"
    if any(k.startswith("conditioner.embedders.0.model.") for k in keys):  # ViT-bigG alone: the refiner
        return "sdxl-refiner"
    if any(k.startswith("model.diffusion_model.label_emb.") for k in keys):  # SDXL's added-conditioning U-Net, text encoders left out
        return "sdxl"
    if any(k.startswith(("model.diffusion_model.", "cond_stage_model.", "first_stage_model.")) for k in keys):
        return "sd"
    shown = ", ".join(keys[:3]) or "no tensors at all"
    raise ValueError(
        f"{path}: its tensor names match neither an SD 1.x/2.x checkpoint (model.diffusion_model.*, "
        f"cond_stage_model.*) nor an SDXL one (conditioner.embedders.*, model.diffusion_model.label_emb.*); "
        f"it starts with {shown}. Is it a LoRA, an embedding or a VAE rather than a full model?"
    )


def _from_pretrained(cls, source, dtype: torch.dtype, allow_pickle: bool, **kwargs):
    """`cls.from_pretrained(source)`: float16 asks for the repository's fp16 variant files first (half the
    download), and falls back to the full-precision files where there are none."""
    from diffusers.utils import is_accelerate_available

    kwargs.update(
        dtype=dtype,
        use_safetensors=None if allow_pickle else True,
        # without accelerate, diffusers would print a notice on every load and then do just this
        low_cpu_mem_usage=is_accelerate_available(),
    )
    if cls is StableDiffusionPipeline:
        kwargs.update(_NO_SAFETY_CHECKER)
    if dtype == torch.float16:
        try:
            return cls.from_pretrained(source, variant="fp16", **kwargs)
        except ValueError as err:  # diffusers: "... variant=fp16, but no such modeling files are available"
            if "variant" not in str(err):
                raise
    return cls.from_pretrained(source, **kwargs)


def _load_file(path: Path, dtype: torch.dtype, allow_pickle: bool, config: str | Path | None) -> StableDiffusionPipeline:
    if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise UnsafeCheckpointError(
            f"{path} is a pickled checkpoint: only .safetensors files are loaded by default, since unpickling "
            "can run arbitrary code. Use a .safetensors version of it, or pass allow_pickle=True if you trust the file."
        )
    if path.suffix != ".safetensors" and path.suffix not in PICKLE_SUFFIXES:
        raise ValueError(f"{path}: unknown checkpoint type {path.suffix!r}; allowed: .safetensors (or {', '.join(PICKLE_SUFFIXES)} with allow_pickle=True)")
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    cls, extra = StableDiffusionPipeline, _NO_SAFETY_CHECKER
    if path.suffix == ".safetensors":
        _check_safetensors_header(path)
        architecture = checkpoint_architecture(path)
        if architecture != "sd":
            cls, extra = (StableDiffusionXLPipeline if architecture == "sdxl" else StableDiffusionXLImg2ImgPipeline), {}
    local_config = config is not None and Path(config).expanduser().is_dir()
    if local_config:
        _check_config_family(path, cls, Path(config).expanduser())
    try:
        return cls.from_single_file(
            str(path),
            config=str(Path(config).expanduser()) if local_config else config,
            dtype=dtype,
            local_files_only=local_config,
            **extra,
        )
    except SingleFileComponentError as err:  # readable, but a component's weights are not in it
        raise ValueError(
            f"{path} is not a complete Stable Diffusion checkpoint: {_first_line(err)} Pass a full checkpoint "
            "(U-Net, VAE and text encoder in one file), or load a diffusers folder instead."
        ) from None
    except OSError as err:  # the Hub (config files) is unreachable, or the config repo isn't cached
        if local_config:  # nothing had to be fetched: the file and the configs don't fit together
            raise ValueError(
                f"{path} could not be loaded with the component configs in {config} ({_first_line(err)}). "
                "Is the checkpoint complete, and is the config folder of the same architecture (SD v1 / v2)?"
            ) from None
        raise ModelNotFoundError(
            f"{path} is a single checkpoint file, which holds weights but no component configs, and those "
            f"could not be fetched ({_short_reason(err)}). Pass config=<a local diffusers folder of the same "
            "architecture> (one saved with save_pretrained, or the configs only: `huggingface-cli download "
            "stable-diffusion-v1-5/stable-diffusion-v1-5 --include '*.json' '*.txt' --local-dir DIR`), "
            "or run once with internet access so the configs get cached."
        ) from None


def _check_config_family(path: Path, cls, config: Path) -> None:
    """Refuse a config folder of the other family (SD 1.x/2.x vs SDXL) than the checkpoint's keys say."""
    index = config / "model_index.json"
    if not index.is_file():
        return  # diffusers names what is missing
    config_cls = pipeline_class(StableDiffusionPipeline.load_config(config))
    file_xl, config_xl = cls in XL_TASKS.values(), config_cls in XL_TASKS.values()
    if file_xl != config_xl:
        family = {True: "SDXL", False: "SD 1.x/2.x"}
        raise ValueError(
            f"{path} is an {family[file_xl]} checkpoint (by its tensor names) but the config folder {config} is "
            f"{family[config_xl]} ({config_cls.__name__}); pass the configs of an {family[file_xl]} model"
            + (f", e.g. {XL_ARCHITECTURES['sdxl']['hub_id']}'s" if file_xl else "")
        )


def _check_safetensors_header(path: Path) -> None:
    """Refuse a truncated or corrupt .safetensors file, naming what is wrong, before any loading."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except SafetensorError as err:
        raise ValueError(
            f"{path} is not a readable .safetensors file ({err}; {path.stat().st_size} bytes): it is truncated or "
            "corrupt. Download or copy it again (compare its size or checksum with the source)."
        ) from None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    reason = lines[0] if lines else type(err).__name__
    return reason if len(reason) <= 200 else reason[:200] + "…"


def _short_reason(err: OSError) -> str:
    """One line on why the Hub failed, instead of diffusers' nested messages."""
    import huggingface_hub.constants

    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return "offline mode is on: HF_HUB_OFFLINE is set"
    lines = str(err).strip().splitlines()
    reason = lines[0] if lines else type(err).__name__
    return reason if len(reason) <= 200 else reason[:200] + "…"


def _load_hub(model_id: str, dtype: torch.dtype, allow_pickle: bool) -> StableDiffusionPipeline:
    try:
        cls = pipeline_class(StableDiffusionPipeline.load_config(model_id))
        return _from_pretrained(cls, model_id, dtype, allow_pickle)
    except OSError as err:  # diffusers reports "not cached and the Hub unreachable" (and 404s) as OSError
        raise ModelNotFoundError(
            f"could not load model {model_id!r}: it is not in the local Hugging Face cache and the Hub could not "
            f"provide it ({_short_reason(err)}). To get it: run once where there is internet access (it is cached), or "
            f"`huggingface-cli download {model_id}` and copy the cache over, or pass the path of a local diffusers "
            "folder or .safetensors file instead."
        ) from None


# ----------------------------------------------------------------------------- samplers, derived pipelines and facts


def _check_scheduler_name(name) -> None:
    if not isinstance(name, str) or name.lower() not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; allowed: {', '.join(SCHEDULERS)}")


def make_scheduler(pipe, name: str):
    """A new scheduler of the named kind (a key of `SCHEDULERS`), configured from the pipeline's current one."""
    _check_scheduler_name(name)
    return SCHEDULERS[name.lower()].from_config(pipe.scheduler.config)


def set_scheduler(pipe, name: str):
    """Replace `pipe.scheduler` by the named kind (same training schedule); returns the pipeline."""
    pipe.scheduler = make_scheduler(pipe, name)
    return pipe


def check_depth_unet(unet) -> None:
    """Refuse a U-Net that can't do depth-to-image: it needs 5 input channels (4 latent + 1 depth)."""
    in_channels = unet.config.in_channels
    if in_channels != 5:
        raise ValueError(
            f"depth-to-image needs a depth-conditioned U-Net with 5 input channels (4 latent + 1 depth, as in "
            f"stabilityai/stable-diffusion-2-depth); this U-Net has {in_channels}"
        )


_DERIVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # pipe -> {task: derived pipeline}
_SHARED = ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "text_encoder_2", "tokenizer_2")


def derive(pipe, task: str, scheduler: str | None = None, **components):
    """The pipeline for `task` (a key of `TASKS`) on `pipe`'s components: no reload, no copy.

    `pipe` itself when it already is that pipeline. Otherwise diffusers' `from_pipe`, cached per `pipe`
    (the same derived pipeline comes back while it shares `pipe`'s modules). `scheduler` (a name from
    `SCHEDULERS`) or replaced `components` (e.g. `unet=`) give a fresh, uncached pipeline.
    depth-to-image needs a U-Net with a depth channel (`check_depth_unet`); its depth estimator is
    left out unless passed (`depth_estimator=`, `feature_extractor=`), so call it with `depth_map=`.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    table = XL_TASKS if is_xl(pipe) else TASKS
    if task not in table:
        raise ValueError(f"{task} is not available for SDXL (diffusers has no SDXL pipeline for it); allowed for SDXL: {', '.join(XL_TASKS)}")
    cls = table[task]
    if task == "depth-to-image":
        check_depth_unet(components.get("unet", pipe.unet))  # the U-Net the derived pipeline will run
        if not isinstance(pipe, cls):
            components = {"depth_estimator": None, "feature_extractor": None, **components}
    if scheduler is not None:
        components["scheduler"] = make_scheduler(pipe, scheduler)
    if components:
        return from_pipe(cls, pipe, **components)
    if type(pipe) is cls:
        return pipe
    cache = _DERIVED.setdefault(pipe, {})
    derived = cache.get(task)
    if derived is None or any(getattr(derived, n, None) is not getattr(pipe, n, None) for n in _SHARED):
        derived = cache[task] = from_pipe(cls, pipe)
        return derived
    return same_progress_bar(derived, pipe)  # the setting may have changed since it was cached


def from_pipe(cls, pipe, **components):
    """`cls.from_pipe(pipe, ...)`: another pipeline class on the same modules, as `pipe` was set up.

    Keeps `pipe`'s dtype (without `dtype=`, diffusers casts the SHARED modules to float32 in place, so a
    float16 pipeline would silently become float32), draws its progress bar as `pipe` was told to, and
    keeps diffusers' note about an empty list of float32 modules out of the output.
    """
    with quiet_libraries():
        derived = cls.from_pipe(pipe, dtype=pipe.dtype, **components)
    return same_progress_bar(derived, pipe)


def same_progress_bar(derived, pipe):
    """`derived` draws its progress bar as `pipe` was told to (e.g. not at all); returns `derived`."""
    derived.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    return derived


def describe(pipe) -> dict:
    """A short summary of a pipeline's architecture, for notebooks and `sdexplain info`."""
    encoders = [e for e in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)) if e is not None]
    unet, text = pipe.unet.config, encoders[0].config
    tokenizer = pipe.tokenizer if getattr(pipe, "tokenizer", None) is not None else pipe.tokenizer_2
    factor = pipe.vae_scale_factor  # diffusers': 2 ** (VAE levels - 1), 8 for every SD VAE
    return {
        "pipeline": type(pipe).__name__,
        "model": str(pipe.name_or_path or "(built in memory)"),
        "device": str(pipe.device),
        "dtype": str(pipe.dtype).removeprefix("torch."),
        "parameters": count_parameters(pipe),
        "text_width": text.hidden_size,
        "text_layers": text.num_hidden_layers,
        "text_widths": [e.config.hidden_size for e in encoders],  # SDXL: both encoders, concatenated for the U-Net
        "max_tokens": tokenizer.model_max_length,
        "vocab_size": len(tokenizer),
        "unet_blocks": list(unet.down_block_types),
        "unet_channels": list(unet.block_out_channels),
        "cross_attention_dim": unet.cross_attention_dim,
        "latent_channels": pipe.vae.config.latent_channels,
        "vae_scale_factor": factor,
        "default_size": unet.sample_size * factor,
        "prediction_type": pipe.scheduler.config.get("prediction_type", "epsilon"),
        "scheduler": type(pipe.scheduler).__name__,
    }

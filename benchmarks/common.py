"""Shared helpers of the benchmarks: building the model, timing side by side, describing the machine.

Every benchmark here compares two ways of doing the same work (A and B) in ONE process, on the
same model, seed and number of steps, and reports the ratio of their medians:

    times = interleaved({"A": run_a, "B": run_b}, repeats=5)   # one untimed warm-up of each, then
                                                               # A B, B A, A B, ... (order alternates)
    ratio = median(times["B"]) / median(times["A"])

Alternating the order means a slow patch of the machine (another job, thermal throttling, a
cache going cold) falls on both sides equally, so the ratio stays fair even when absolute times
move. On CUDA every timed call is bracketed by `torch.cuda.synchronize`, so a time is the time
until the GPU has finished, not until the kernels were queued.

Each call is timed twice: wall-clock (`time.perf_counter`, what a reader waits) and the process's
CPU time (`time.process_time`, summed over its threads). On a CPU shared with other jobs the wall
time stretches with the competition while the CPU time stays close to the work actually done, so
on CPU the benchmarks report both; on a GPU the wall time is the one that counts.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

MODELS = ("tiny", "toy", "sd15")
DEVICES = ("cpu", "cuda")
DTYPES = {"float32": torch.float32, "float16": torch.float16}
TRAINING_JOB = "sdexplain.toy.train"  # pgrep pattern of the toy model's training job


# ----------------------------------------------------------------------------- options and models


def add_model_arguments(parser, model: str = "toy", steps: int = 20, repeats: int = 3) -> None:
    """The options every single benchmark takes: --model --device --dtype --size --steps --repeats."""
    parser.add_argument("--model", default=model, choices=MODELS)
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES))
    parser.add_argument("--size", type=int, help="image side in px (default: the model's own)")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--repeats", type=int, default=repeats)


def check_options(model: str, device: str, dtype: str) -> None:
    """Raise ValueError/RuntimeError naming the bad option and what is allowed."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; allowed: {', '.join(MODELS)}")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but PyTorch sees no CUDA GPU on this machine; use --device cpu")
    if device == "cpu" and dtype == "float16":
        raise ValueError("float16 on CPU is slow and partly unsupported, so its timings mean nothing; use --dtype float32")


def toy_model_exists() -> bool:
    """Whether the shipped toy model has been built (sdexplain/toy/model/model_index.json)."""
    from sdexplain.toy import model as toy_model

    return (Path(toy_model.MODEL_DIR) / "model_index.json").is_file()


def build_model(model: str, device: str = "cpu", dtype: str = "float32"):
    """The pipeline to measure: 'tiny' or 'sd15' (random weights from their configs) or 'toy' (the shipped model).

    'sd15' is Stable Diffusion 1.5's exact layout with random weights: the compute cost of the
    real model without downloading it. Progress bars are switched off.
    """
    check_options(model, device, dtype)
    if model == "toy":
        if not toy_model_exists():
            raise FileNotFoundError("the toy model isn't built yet (sdexplain/toy/model/model_index.json is missing); use --model tiny")
        from sdexplain import load_pipeline

        pipe = load_pipeline("toy", device=device, dtype=DTYPES[dtype])
    else:
        from sdexplain.architectures import build_pipeline

        pipe = build_pipeline(model, seed=0, dtype=DTYPES[dtype], device=device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def native_size(pipe) -> int:
    """The image side in pixels the pipeline makes by default (U-Net sample size × VAE factor)."""
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def size_multiple(pipe) -> int:
    """Image sides must be multiples of this: VAE factor × 2 per U-Net downsampling."""
    return pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)


def check_size(pipe, size: int) -> None:
    multiple = size_multiple(pipe)
    if size < multiple or size % multiple:
        raise ValueError(f"image size {size} px is not a positive multiple of {multiple} (VAE factor × U-Net downsamplings)")


# ----------------------------------------------------------------------------- timing


def sync(device) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device="cpu"):
    """(wall seconds, CPU seconds of this process, result) of one call of `fn()`, synchronised on CUDA."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def interleaved(fns: dict, repeats: int, device="cpu", warmup: int = 1) -> tuple[dict, dict, dict]:
    """Time each function in `fns` `repeats` times, interleaved, after `warmup` untimed calls of each.

    Returns ({name: [wall seconds]}, {name: [CPU seconds]}, {name: result of its last call}). The
    order within a repetition alternates (A B, B A, …) so neither side always runs first.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(fns)
    results = {}
    for _ in range(warmup):
        for name in names:
            results[name] = fns[name]()
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            seconds, cpu_seconds, results[name] = timed(fns[name], device)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    return wall, cpu, results


def median(values) -> float:
    return float(statistics.median(values))


# ----------------------------------------------------------------------------- the machine


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else platform.processor())."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def training_job_running() -> bool:
    """Whether the toy model's training job runs on this machine right now (it competes for the CPU)."""
    try:
        found = subprocess.run(["pgrep", "-f", TRAINING_JOB], capture_output=True, text=True, check=False)
    except FileNotFoundError:  # no pgrep (e.g. macOS without procps): say we could not tell
        return False
    own = {str(os.getpid())}
    return any(pid and pid not in own for pid in found.stdout.split())


def describe_machine(device: str = "cpu", dtype: str = "float32") -> dict:
    """CPU model, cores, threads, library versions, device and dtype: what the timings depend on."""
    import diffusers

    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": device,
        "dtype": dtype,
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["sdpa"] = "yes (diffusers' default AttnProcessor2_0)"
    info["training job running"] = "yes" if training_job_running() else "no"
    return info

"""SDXL at 1024²: peak GPU memory and time of one generation — stock, traced, and with CPU offload.

    python benchmarks/sdxl_memory.py --device cuda                      # SDXL base's layout, float16, 1024², 25 steps
    python benchmarks/sdxl_memory.py --model tiny-sdxl --size 64 --steps 2   # the same code on CPU, in seconds

The model is `sdexplain.architectures.build_pipeline("sdxl")`: SDXL base 1.0's published layout with
random weights (3.47 B parameters; the real model's shapes, memory and compute, nothing downloaded; the
images are noise). Its VAE config keeps `force_upcast=True`, so the decode runs in float32 as with the
real SDXL VAE in float16 (the fp16-fix VAE, `sdexplain.architectures.SDXL_FP16_VAE`, would not).

Three runs, one after the other, each starting from a reset peak counter:
  stock     pipe(prompt, 1024×1024, N steps) with the whole pipeline on the GPU
  traced    the same call inside `sdexplain.trace(pipe)`: must give the same image (checked), and the
            trace's own bytes (host memory) are reported next to its budget
  offload   `pipe.enable_model_cpu_offload()` (needs accelerate): each component moves to the GPU only
            while it runs — how SDXL fits a 16 GB Colab T4 if it does not otherwise
Reported per run: peak GPU memory (torch.cuda.max_memory_allocated and max_memory_reserved), wall time.
Writes a markdown table (--out, default benchmarks/results-sdxl-gpu.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import describe_machine  # noqa: E402

GiB = 2**30
MODELS = ("sdxl", "tiny-sdxl")


def _peak_reset(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peaks(device: str) -> tuple[float | None, float | None]:
    if device != "cuda":
        return None, None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / GiB, torch.cuda.max_memory_reserved() / GiB


def measure(model: str = "sdxl", device: str = "cuda", dtype: str = "float16", size: int = 1024, steps: int = 25, offload: bool = True) -> dict:
    """{"rows": [{run, peak_allocated_gib, peak_reserved_gib, seconds, ...}], "same_image": bool, "trace_bytes": int, ...}."""
    from sdexplain.architectures import build_pipeline
    from sdexplain.trace import DEFAULT_BUDGET, trace

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; allowed: {', '.join(MODELS)}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; allowed: cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for, but PyTorch sees no CUDA GPU here")
    torch_dtype = {"float16": torch.float16, "float32": torch.float32}[dtype]
    if device == "cpu" and torch_dtype == torch.float16:
        raise ValueError("float16 on CPU is not measured here; use --dtype float32 on CPU")
    pipe = build_pipeline(model, seed=0, dtype=torch_dtype, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    counts = sum(p.numel() for name, c in pipe.components.items() if isinstance(c, torch.nn.Module) for p in c.parameters())
    weights_gib = sum(p.numel() * p.element_size() for name, c in pipe.components.items() if isinstance(c, torch.nn.Module) for p in c.parameters()) / GiB
    args = dict(prompt="a photo of a cat sitting on a sofa", height=size, width=size, num_inference_steps=steps, output_type="pt")

    def call(p):
        return p(**args, generator=torch.Generator(device if device == "cuda" and p.device.type == "cuda" else "cpu").manual_seed(0)).images

    rows = []
    pipe.to(device)
    _peak_reset(device)
    start = time.perf_counter()
    stock = call(pipe).float().cpu()
    allocated, reserved = _peaks(device)
    rows.append(dict(run="stock (all on the device)", peak_allocated_gib=allocated, peak_reserved_gib=reserved, seconds=time.perf_counter() - start))

    _peak_reset(device)
    start = time.perf_counter()
    with trace(pipe) as run:
        traced = call(pipe).float().cpu()
    allocated, reserved = _peaks(device)
    rows.append(dict(run="traced (sdexplain.trace, default budget)", peak_allocated_gib=allocated, peak_reserved_gib=reserved, seconds=time.perf_counter() - start))
    same = torch.equal(stock, traced)

    if offload and device == "cuda":
        pipe.to("cpu")
        torch.cuda.empty_cache()
        pipe.enable_model_cpu_offload()
        _peak_reset(device)
        start = time.perf_counter()
        call(pipe)
        allocated, reserved = _peaks(device)
        rows.append(dict(run="stock with enable_model_cpu_offload()", peak_allocated_gib=allocated, peak_reserved_gib=reserved, seconds=time.perf_counter() - start))
    return dict(
        rows=rows,
        same_image=same,
        trace_bytes=run.nbytes(),
        trace_budget=DEFAULT_BUDGET,
        reductions=list(run.reductions),
        parameters=counts,
        weights_gib=weights_gib,
        latent=tuple(run.steps[0].latent_in.shape[1:]),
        words=[key.split(":", 1)[1] for key in run.attention.word_maps(0)] if run.attention.per_step else [],
        model=model,
        size=size,
        steps=steps,
        dtype=dtype,
        machine=describe_machine(device, dtype),
    )


def report(result: dict) -> str:
    def gib(v):
        return "—" if v is None else f"{v:.2f}"

    lines = [
        f"# SDXL memory: {result['model']} at {result['size']}×{result['size']}, {result['steps']} steps, {result['dtype']}",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()),
        "",
        f"Parameters: {result['parameters']:,} ({result['weights_gib']:.2f} GiB of weights); latent {result['latent']}.",
        "",
        "| run | peak allocated (GiB) | peak reserved (GiB) | seconds |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['run']} | {gib(r['peak_allocated_gib'])} | {gib(r['peak_reserved_gib'])} | {r['seconds']:.1f} |" for r in result["rows"]]
    lines += [
        "",
        f"Traced image identical to the stock one: {result['same_image']}. Trace keeps {result['trace_bytes'] / 2**20:.1f} MiB "
        f"(host memory; budget {result['trace_budget'] / 2**20:.0f} MiB); reductions: {result['reductions'] or 'none'}.",
        f"Words named in the attention maps: {result['words']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sdxl", choices=MODELS)
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--no-offload", action="store_true", help="skip the enable_model_cpu_offload run")
    parser.add_argument("--out", default="benchmarks/results-sdxl-gpu.md")
    args = parser.parse_args(argv)
    result = measure(args.model, args.device, args.dtype, args.size, args.steps, offload=not args.no_offload)
    text = report(result)
    print(text)
    Path(args.out).write_text(text)
    return 0 if result["same_image"] else 1


if __name__ == "__main__":
    sys.exit(main())

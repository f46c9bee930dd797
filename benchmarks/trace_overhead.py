"""How much slower is a traced run than a stock one, and how many bytes does the trace keep?

    python benchmarks/trace_overhead.py                 # tiny random pipeline (fast, CPU)
    python benchmarks/trace_overhead.py --model toy     # sdexplain.load_pipeline("toy")
    python benchmarks/trace_overhead.py --model sd15 --size 512 --steps 50   # SD-1.5 shapes, random

Stock and traced runs are interleaved (alternating which goes first) with the same seed and
steps, so drifts in machine load hit both equally; the ratio is of the medians. The traced run
records everything: attention maps, per-step tensors and previews every `preview_every` steps.
Target: ratio ≤ 1.10 on real model sizes (the tiny pipeline's U-Net is so small that the fixed
per-step cost of the trace weighs much more than it would on SD).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import sync  # noqa: E402
from sdexplain.trace import DEFAULT_BUDGET, trace  # noqa: E402


def _run(pipe, args: dict, seed: int, traced: bool, options: dict):
    generator = torch.Generator(device=pipe.device).manual_seed(seed)
    sync(pipe.device)
    start = time.perf_counter()
    if traced:
        with trace(pipe, **options) as run:
            images = pipe(generator=generator, **args).images
    else:
        run, images = None, pipe(generator=generator, **args).images
    sync(pipe.device)
    return time.perf_counter() - start, images, run


def measure(
    pipe,
    prompt: str = "a red circle on the left",
    *,
    steps: int = 20,
    height: int = 64,
    width: int = 64,
    repeats: int = 5,
    seed: int = 0,
    preview_every: int = 5,
    budget_bytes: int = DEFAULT_BUDGET,
) -> dict:
    """Median stock and traced wall times (interleaved), their ratio, and the trace's bytes."""
    pipe.set_progress_bar_config(disable=True)
    args = dict(prompt=prompt, num_inference_steps=steps, height=height, width=width, output_type="pt")
    options = dict(preview_every=preview_every, budget_bytes=budget_bytes)
    _run(pipe, args, seed, False, options)  # warm-up both paths
    _, _, run = _run(pipe, args, seed, True, options)
    stock_times, traced_times, same = [], [], True
    for r in range(repeats):
        order = (False, True) if r % 2 == 0 else (True, False)
        results = {}
        for traced in order:
            seconds, images, _ = _run(pipe, args, seed, traced, options)
            results[traced] = images
            (traced_times if traced else stock_times).append(seconds)
        same = same and torch.equal(results[False], results[True])
    stock, traced = statistics.median(stock_times), statistics.median(traced_times)
    attention_bytes = sum(t.numel() * t.element_size() for t in run.attention.tensors())
    return {
        "device": str(pipe.device),
        "size": f"{width}x{height}",
        "steps": steps,
        "unet_calls": len(run.steps),
        "repeats": repeats,
        "stock_s": stock,
        "traced_s": traced,
        "ratio": traced / stock,
        "identical": same,
        "trace_bytes": run.nbytes(),
        "attention_bytes": attention_bytes,
        "budget_bytes": budget_bytes,
        "previews": len(run.previews),
        "reductions": list(run.reductions),
    }


def _pipeline(model: str, device: str):
    if model == "tiny":
        from sdexplain.architectures import build_tiny_pipeline

        return build_tiny_pipeline(seed=0).to(device)
    if model == "sd15":
        from sdexplain.architectures import build_pipeline

        return build_pipeline("sd15", seed=0).to(device)  # SD-1.5's published shapes, random weights
    from sdexplain import load_pipeline

    return load_pipeline(model, device=device)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny or sd15 (random weights, built here) or a load_pipeline name such as toy")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64, help="height = width in pixels")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--preview-every", type=int, default=5)
    parser.add_argument("--budget-mb", type=float, default=DEFAULT_BUDGET / 2**20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = _pipeline(args.model, args.device)
    result = measure(
        pipe,
        steps=args.steps,
        height=args.size,
        width=args.size,
        repeats=args.repeats,
        preview_every=args.preview_every,
        budget_bytes=int(args.budget_mb * 2**20),
    )
    print(f"model {args.model} on {result['device']}, {result['size']}, {result['steps']} steps "
          f"({result['unet_calls']} U-Net calls), {result['repeats']} interleaved repeats")  # fmt: skip
    print(f"  stock   {result['stock_s'] * 1000:8.1f} ms (median)")
    print(f"  traced  {result['traced_s'] * 1000:8.1f} ms (median)   ratio {result['ratio']:.3f}  (target <= 1.10)")
    print(f"  images identical: {result['identical']}")
    print(f"  trace keeps {result['trace_bytes'] / 2**20:.3f} MiB of {result['budget_bytes'] / 2**20:.0f} MiB budget "
          f"(attention {result['attention_bytes'] / 2**20:.3f} MiB, {result['previews']} previews)")  # fmt: skip
    for reduction in result["reductions"]:
        print(f"  reduced: {reduction}")
    return result


if __name__ == "__main__":
    main()

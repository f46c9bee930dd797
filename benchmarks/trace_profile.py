"""Where does the trace's overhead go? The stock call vs the trace with one part switched on at a time.

    python benchmarks/trace_profile.py --model toy                       # the shipped toy, 64 px, 20 steps
    python benchmarks/trace_profile.py --model sd15 --size 256 --steps 4  # SD-1.5's layout, random weights

Five variants of the same call (same seed and steps), timed interleaved in one process
(benchmarks/common.py), medians, each as a ratio to the stock call:

    stock          the pipeline call, no trace
    steps only     trace(attention=False, preview_every=0): per-step tensors, one device→host copy per step
    + attention    trace(attention=True,  preview_every=0): + cross-attention maps recomputed per layer
    + previews     trace(attention=False, preview_every=k): + a VAE decode of x0 every k steps
    everything     trace(attention=True,  preview_every=k): what notebooks and benchmark 1 use

The differences between rows are the cost of each part: this is the profile that explains
benchmark 1's ratio. Images are checked identical to the stock call's in every variant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from sdexplain.trace import trace  # noqa: E402


def variants(preview_every: int) -> dict:
    """name -> trace options (None = the stock call)."""
    return {
        "stock": None,
        "steps only": dict(attention=False, preview_every=0),
        "+ attention": dict(attention=True, preview_every=0),
        "+ previews": dict(attention=False, preview_every=preview_every),
        "everything": dict(attention=True, preview_every=preview_every),
    }


def measure(pipe, *, size: int, steps: int, repeats: int = 3, preview_every: int = 5, seed: int = 0, prompt: str = "a red circle on the left") -> dict:
    """{variant: {"wall_s", "cpu_s", "ratio", "ratio_cpu", "identical"}} for the five variants."""
    pipe.set_progress_bar_config(disable=True)
    args = dict(prompt=prompt, num_inference_steps=steps, height=size, width=size, output_type="pt")

    def call(options):
        def run():
            generator = torch.Generator(device=pipe.device).manual_seed(seed)
            if options is None:
                return pipe(generator=generator, **args).images
            with trace(pipe, **options):
                return pipe(generator=generator, **args).images

        return run

    fns = {name: call(options) for name, options in variants(preview_every).items()}
    wall, cpu, results = common.interleaved(fns, repeats, device=pipe.device)
    stock_wall, stock_cpu = common.median(wall["stock"]), common.median(cpu["stock"])
    return {
        name: {
            "wall_s": common.median(wall[name]),
            "cpu_s": common.median(cpu[name]),
            "ratio": common.median(wall[name]) / stock_wall,
            "ratio_cpu": common.median(cpu[name]) / stock_cpu,
            "identical": bool(torch.equal(results[name], results["stock"])),
        }
        for name in fns
    }


def table(result: dict) -> str:
    lines = [f"{'variant':14s} {'wall s':>9s} {'CPU s':>9s} {'× stock':>8s} {'× (CPU)':>8s}  identical"]
    for name, r in result.items():
        lines.append(f"{name:14s} {r['wall_s']:9.3f} {r['cpu_s']:9.3f} {r['ratio']:8.3f} {r['ratio_cpu']:8.3f}  {'yes' if r['identical'] else 'NO'}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_model_arguments(parser, model="toy")
    parser.add_argument("--preview-every", type=int, default=5)
    args = parser.parse_args(argv)
    common.check_options(args.model, args.device, args.dtype)
    pipe = common.build_model(args.model, args.device, args.dtype)
    size = args.size or common.native_size(pipe)
    common.check_size(pipe, size)
    result = measure(pipe, size=size, steps=args.steps, repeats=args.repeats, preview_every=args.preview_every)
    print(f"trace overhead by part: {args.model}, {size}x{size} px, {args.steps} steps, previews every {args.preview_every}, "
          f"{args.device} {args.dtype}, {args.repeats} interleaved repeats, torch threads {torch.get_num_threads()}")
    print(table(result))
    return result


if __name__ == "__main__":
    main()

"""How do time per denoising step and trace size grow with the image size and the number of steps?

    python benchmarks/scaling.py                                 # tiny random pipeline, 32→128 px
    python benchmarks/scaling.py --model toy                     # the shipped toy model, 32→128 px
    python benchmarks/scaling.py --model sd15 --size 256         # SD-1.5 layout on CPU, 128→256 px (slow)
    python benchmarks/scaling.py --model sd15 --device cuda --dtype float16   # 256→768 px on a GPU

Two sweeps, each with a stock and a traced run side by side (interleaved, same seed):

- by resolution, at a fixed number of steps: the time of one denoising step (one iteration of
  the pipeline's loop: U-Net on the CFG batch of 2, guidance, scheduler step), taken between
  consecutive `callback_on_step_end` calls, so text encoding and VAE decoding are left out; and
  the bytes the trace keeps (`sdexplain.trace(pipe)` → `run.nbytes()`). The U-Net's cost grows
  with the latent's h×w (its attention layers even with (h×w)²), which the plot shows.
- by number of steps, at the model's own size: the whole call's time and the trace's bytes.

The traced side uses `sdexplain.trace`'s defaults (previews every 5 steps, 256 MiB budget); its
target is to stay within that budget at every size (`run.reductions` says what it thinned out to
get there). Without `sdexplain.trace` only times are measured and bytes read "n/a".

``measure(pipe, ...) -> dict`` does the work; ``plot(result, path)`` writes the PNG;
``table(result)`` formats it; ``main()`` does all three.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

PROMPT = "a large red cat on the left"
MiB = 2**20
# Image sides (px) per model and device; SD-1.5 on a CPU stops at 256 px (a step at 512 px takes minutes there).
SIZES = {"small": (32, 64, 96, 128), "sd15-cuda": (256, 384, 512, 640, 768), "sd15-cpu": (128, 192, 256)}
STEPS = (5, 10, 20, 40)
QUICK_STEPS = (2, 4, 8)


def _trace_function():
    """`sdexplain.trace`, or None while the package has none (then bytes read "n/a")."""
    try:
        from sdexplain.trace import DEFAULT_BUDGET, trace
    except ImportError:
        return None, None
    return trace, DEFAULT_BUDGET


def default_sizes(pipe, quick: bool = False) -> tuple[int, ...]:
    """32→128 px for small models; SD-sized U-Nets 256→768 px on CUDA, 128→256 px on a CPU."""
    if pipe.unet.config.block_out_channels[0] < 320:
        sizes = SIZES["small"]
    else:
        sizes = SIZES["sd15-cuda"] if pipe.device.type == "cuda" else SIZES["sd15-cpu"]
    return tuple(dict.fromkeys(sizes[::2] + sizes[-1:])) if quick else sizes  # quick: every other one and the largest


class _StepClock:
    """A `callback_on_step_end` that notes the wall and CPU time at the end of every step."""

    def __init__(self, device):
        self.device = device
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __call__(self, pipe, step, timestep, kwargs):
        common.sync(self.device)
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())
        return kwargs

    def step_times(self) -> tuple[list[float], list[float]]:
        """Seconds between consecutive step ends (wall, CPU): one per step after the first."""
        return [b - a for a, b in zip(self.wall, self.wall[1:])], [b - a for a, b in zip(self.cpu, self.cpu[1:])]


def _runner(pipe, trace, *, size: int, steps: int, seed: int, traced: bool):
    """A function doing one pipeline call; returns (per-step wall times, per-step CPU times, trace or None)."""

    def run():
        clock = _StepClock(pipe.device)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        args = dict(num_inference_steps=steps, height=size, width=size, generator=generator, output_type="pt", callback_on_step_end=clock)
        if traced:
            with trace(pipe) as recorded:
                pipe(PROMPT, **args)
        else:
            recorded = None
            pipe(PROMPT, **args)
        return (*clock.step_times(), recorded)

    return run


def _side_by_side(pipe, trace, *, size: int, steps: int, seed: int, repeats: int) -> dict:
    """Stock and (if available) traced calls, interleaved: medians per step and per call, trace bytes."""
    fns = {"stock": _runner(pipe, trace, size=size, steps=steps, seed=seed, traced=False)}
    if trace is not None:
        fns["traced"] = _runner(pipe, trace, size=size, steps=steps, seed=seed, traced=True)
    # one repetition's per-step times are kept through the result of its last call; gather all of them
    per_step = {name: ([], []) for name in fns}

    def collecting(name):
        def call():
            wall, cpu, recorded = fns[name]()
            per_step[name][0].extend(wall)
            per_step[name][1].extend(cpu)
            return recorded

        return call

    wall, cpu, results = common.interleaved({name: collecting(name) for name in fns}, repeats, pipe.device, warmup=1)
    row = {"size": size, "latent": f"{size // pipe.vae_scale_factor}x{size // pipe.vae_scale_factor}", "steps": steps}
    for name in fns:
        step_wall, step_cpu = per_step[name]
        # drop the warm-up's steps: they are the first len/(repeats+1) entries
        skip = len(step_wall) // (repeats + 1)
        row[f"{name}_step_ms"] = common.median(step_wall[skip:]) * 1000
        row[f"{name}_step_cpu_ms"] = common.median(step_cpu[skip:]) * 1000
        row[f"{name}_s"] = common.median(wall[name])
        row[f"{name}_cpu_s"] = common.median(cpu[name])
    recorded = results.get("traced")
    row["trace_bytes"] = recorded.nbytes() if recorded is not None else None
    row["reductions"] = list(recorded.reductions) if recorded is not None else []
    return row


def measure(pipe, *, sizes=None, steps_list=None, steps: int = 10, steps_size: int | None = None, repeats: int = 2, seed: int = 0, quick: bool = False) -> dict:
    """Time per step and trace bytes vs image size, and call time and trace bytes vs number of steps.

    sizes: image sides in pixels (default `default_sizes(pipe, quick)`); steps: sampling steps of
    the size sweep. steps_list: step counts of the steps sweep (default 5, 10, 20, 40; quick 2, 4, 8)
    at `steps_size` px (default the model's own size, at most the largest of `sizes`). Returns {device, dtype, traced, budget_bytes,
    by_size: [row], by_steps: [row], within_budget}; a row has size, latent, steps, stock_step_ms,
    stock_step_cpu_ms, stock_s, stock_cpu_s, the same with traced_ (when traced), trace_bytes
    (None without a trace) and reductions.
    """
    trace, budget = _trace_function()
    sizes = tuple(sizes or default_sizes(pipe, quick))
    steps_list = tuple(steps_list or (QUICK_STEPS if quick else STEPS))
    steps_size = steps_size or min(common.native_size(pipe), max(sizes))
    for size in (*sizes, steps_size):
        common.check_size(pipe, size)
    if min(steps_list) < 2 or steps < 2:
        raise ValueError("every step count must be >= 2: a time per step needs two step ends")
    pipe.set_progress_bar_config(disable=True)
    by_size = [_side_by_side(pipe, trace, size=size, steps=steps, seed=seed, repeats=repeats) for size in sizes]
    by_steps = [_side_by_side(pipe, trace, size=steps_size, steps=n, seed=seed, repeats=repeats) for n in steps_list]
    rows = by_size + by_steps
    return {
        "device": str(pipe.device),
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "traced": trace is not None,
        "budget_bytes": budget,
        "repeats": repeats,
        "by_size": by_size,
        "by_steps": by_steps,
        "within_budget": None if trace is None else all(r["trace_bytes"] <= budget for r in rows),
    }


# ----------------------------------------------------------------------------- output


def _mib(value) -> str:
    return "n/a" if value is None else f"{value / MiB:.2f}"


def table(result: dict) -> str:
    """Both sweeps as plain-text tables: medians of wall time and of this process's CPU time, traced/stock of each."""
    traced = result["traced"]

    lines = [f"time per denoising step and trace size vs image size ({result['device']} {result['dtype']}, "
             f"{result['by_size'][0]['steps']} steps, {result['repeats']} interleaved repeats; ms per step, wall / CPU time)"]  # fmt: skip
    lines.append(f"{'size px':>8} {'latent':>7}" + _header(traced) + f" {'trace MiB':>10}")
    for r in result["by_size"]:
        line = f"{r['size']:>8} {r['latent']:>7}" + _cells(r, "step_ms", "step_cpu_ms", traced, 2)
        lines.append(line + f" {_mib(r['trace_bytes']):>10}" + _reduced(r))
    lines.append("")
    lines.append(f"whole call and trace size vs number of steps (at {result['by_steps'][0]['size']} px; seconds per call, wall / CPU time)")
    lines.append(f"{'steps':>8} {'':>7}" + _header(traced) + f" {'trace MiB':>10}")
    for r in result["by_steps"]:
        line = f"{r['steps']:>8} {'':>7}" + _cells(r, "s", "cpu_s", traced, 3)
        lines.append(line + f" {_mib(r['trace_bytes']):>10}" + _reduced(r))
    if traced:
        lines.append(f"trace within its {result['budget_bytes'] / MiB:.0f} MiB budget at every size: {'yes' if result['within_budget'] else 'NO'}")
    return "\n".join(lines)


def _header(traced: bool) -> str:
    head = f" {'stock wall':>10} {'stock CPU':>10}"
    return head + (f" {'traced wall':>11} {'traced CPU':>10} {'ratio wall':>10} {'ratio CPU':>10}" if traced else "")


def _cells(r: dict, wall: str, cpu: str, traced: bool, digits: int) -> str:
    cells = f" {r['stock_' + wall]:>10.{digits}f} {r['stock_' + cpu]:>10.{digits}f}"
    if traced:
        cells += f" {r['traced_' + wall]:>11.{digits}f} {r['traced_' + cpu]:>10.{digits}f}"
        cells += f" {r['traced_' + wall] / r['stock_' + wall]:>10.2f} {r['traced_' + cpu] / r['stock_' + cpu]:>10.2f}"
    return cells


def _reduced(r: dict) -> str:
    return f"   reduced: {'; '.join(r['reductions'])}" if r["reductions"] else ""


def plot(result: dict, path, title: str = "") -> Path:
    """Write a 2×2 PNG: ms/step vs latent cells, trace MiB vs size, call time vs steps, trace MiB vs steps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(11, 8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    on_cpu = result["device"] == "cpu"
    by_size, by_steps = result["by_size"], result["by_steps"]
    cells = [int(r["latent"].split("x")[0]) ** 2 for r in by_size]

    ax = axes[0, 0]
    ax.plot(cells, [r["stock_step_ms"] for r in by_size], "o-", label="stock (wall)")
    if result["traced"]:
        ax.plot(cells, [r["traced_step_ms"] for r in by_size], "s-", label="traced (wall)")
    if on_cpu:
        ax.plot(cells, [r["stock_step_cpu_ms"] for r in by_size], "o--", color="grey", label="stock (CPU time)")
    for x, r in zip(cells, by_size):
        ax.annotate(f"{r['size']} px", (x, r["stock_step_ms"]), textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.set(xlabel="latent cells (h × w)", ylabel="ms per denoising step", title="time per step vs latent size")
    ax.legend()

    ax = axes[0, 1]
    if result["traced"]:
        mib = [r["trace_bytes"] / MiB for r in by_size]
        ax.plot([r["size"] for r in by_size], mib, "s-", color="C1")
        if max(mib) > result["budget_bytes"] / MiB / 4:  # the budget line only where it doesn't flatten the curve
            ax.axhline(result["budget_bytes"] / MiB, color="red", linestyle=":", label="budget")
            ax.legend()
    else:
        ax.text(0.5, 0.5, "trace bytes: n/a\n(no sdexplain.trace)", ha="center", va="center", transform=ax.transAxes)
    budget = f", budget {result['budget_bytes'] / MiB:.0f} MiB" if result["traced"] else ""
    ax.set(xlabel="image side (px)", ylabel="trace MiB", title=f"trace size vs image size ({by_size[0]['steps']} steps{budget})")

    ax = axes[1, 0]
    steps = [r["steps"] for r in by_steps]
    ax.plot(steps, [r["stock_s"] for r in by_steps], "o-", label="stock (wall)")
    if result["traced"]:
        ax.plot(steps, [r["traced_s"] for r in by_steps], "s-", label="traced (wall)")
    if on_cpu:
        ax.plot(steps, [r["stock_cpu_s"] for r in by_steps], "o--", color="grey", label="stock (CPU time)")
    ax.set(xlabel="sampling steps", ylabel="seconds per call", title=f"whole call vs steps ({by_steps[0]['size']} px)")
    ax.legend()

    ax = axes[1, 1]
    if result["traced"]:
        ax.plot(steps, [r["trace_bytes"] / MiB for r in by_steps], "s-", color="C1")
    else:
        ax.text(0.5, 0.5, "trace bytes: n/a", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="sampling steps", ylabel="trace MiB", title="trace size vs steps")

    fig.suptitle(title or f"sdexplain scaling on {result['device']} ({result['dtype']})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", choices=common.MODELS)
    parser.add_argument("--device", default="cpu", choices=common.DEVICES)
    parser.add_argument("--dtype", default="float32", choices=list(common.DTYPES))
    parser.add_argument("--sizes", type=int, nargs="+", help="image sides in px (default: by model and device)")
    parser.add_argument("--size", type=int, help="largest image side in px (default sizes above it are dropped) and the size of the steps sweep")
    parser.add_argument("--steps", type=int, default=10, help="sampling steps of the size sweep")
    parser.add_argument("--steps-list", type=int, nargs="+", help=f"step counts of the steps sweep (default {' '.join(map(str, STEPS))})")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and steps")
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/scaling.png"), help="PNG to write")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    pipe = common.build_model(args.model, args.device, args.dtype)
    sizes = args.sizes or default_sizes(pipe, args.quick)
    if args.size:
        sizes = [s for s in sizes if s <= args.size] or [args.size]
    result = measure(pipe, sizes=sizes, steps_list=args.steps_list, steps=args.steps, steps_size=args.size, repeats=args.repeats, quick=args.quick)
    print(table(result))
    print(f"plot: {plot(result, args.plot, f'sdexplain scaling: {args.model} on {args.device} ({args.dtype})')}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

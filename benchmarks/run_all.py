"""Run every benchmark on one model and print ONE markdown table: what is compared, measured, target, met?

    python benchmarks/run_all.py                                  # toy model if built, else tiny; CPU
    python benchmarks/run_all.py --quick                          # fewer steps and repeats (a minute or two)
    python benchmarks/run_all.py --out benchmarks/results-cpu.md  # also write the table (and details) there
    python benchmarks/run_all.py --model sd15 --size 256 --steps 3 --only trace --out benchmarks/results-cpu.md --append
    bash benchmarks/gpu.sh                                        # SD-1.5 layout, float16, 512², CUDA

The four benchmarks, each comparing two things side by side in one process (same model, seed
and steps; repetitions interleaved; medians — see benchmarks/common.py):

    trace     benchmarks/trace_overhead.py   traced vs stock pipeline call       target: ratio ≤ 1.10
    cfg       benchmarks/cfg_sweep.py        8 scales batched vs 8 stock calls   target: ≥ 1.5× CPU, ≥ 3× GPU, same images
    slider    benchmarks/slider_latency.py   slider change → new image bytes     target: median ≤ 50 ms per view
    scaling   benchmarks/scaling.py          time/step, trace bytes vs size      target: trace within budget; PNG plot

trace_overhead and slider_latency are maintained separately; when one can't be imported its row
says why and the others still run. Models: "tiny" (random weights, hundreds of kB), "toy" (the
shipped trained model, sdexplain/toy/model/), "sd15" (Stable Diffusion 1.5's layout with random
weights: the real model's compute cost, nothing downloaded). Bad options fail before any work.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import cfg_sweep, common, scaling  # noqa: E402

BENCHMARKS = ("trace", "cfg", "slider", "scaling")
MiB = 2**20


def defaults(model: str, device: str, quick: bool) -> dict:
    """Image size, steps and repeats per model and device (what --size/--steps/--repeats override)."""
    if model == "sd15" and device == "cpu":  # SD-1.5's U-Net on a CPU: a few steps at 256 px at most
        return dict(size=256, steps=2 if quick else 4, repeats=1 if quick else 2, slider_repeats=10)
    if model == "sd15":
        return dict(size=512, steps=10 if quick else 25, repeats=2 if quick else 5, slider_repeats=20)
    return dict(size=None, steps=8 if quick else 20, repeats=1 if quick else 3, slider_repeats=20 if quick else 100)


def _optional_module(name: str):
    """benchmarks.<name>, or (None, why) when it can't be imported (it is written by someone else)."""
    try:
        return importlib.import_module(f"benchmarks.{name}"), None
    except ImportError as error:
        print(f"warning: benchmarks/{name}.py is not importable, its row is skipped: {error}", file=sys.stderr)
        return None, f"{type(error).__name__}: {error}"


# ----------------------------------------------------------------------------- one row per benchmark


def run_trace(pipe, size: int, steps: int, repeats: int) -> tuple[dict, list[str]]:
    module, why = _optional_module("trace_overhead")
    if module is None:
        return dict(measured=f"not run ({why})", met="n/a"), []
    r = module.measure(pipe, steps=steps, height=size, width=size, repeats=repeats)
    measured = (f"{r['ratio']:.3f}× (stock {r['stock_s']:.3f} s, traced {r['traced_s']:.3f} s); "
                f"images identical: {'yes' if r['identical'] else 'NO'}; trace {r['trace_bytes'] / MiB:.2f} MiB")  # fmt: skip
    details = [f"{key}: {value}" for key, value in r.items()]
    return dict(measured=measured, met="yes" if r["ratio"] <= 1.10 and r["identical"] else "no"), details


def run_cfg(pipe, size: int, steps: int, repeats: int) -> tuple[dict, list[str]]:
    r = cfg_sweep.measure(pipe, steps=steps, height=size, width=size, repeats=repeats)
    measured = (f"{r['speedup']:.2f}× (batched {r['batched_s']:.3f} s, sequential {r['sequential_s']:.3f} s)")
    if pipe.device.type == "cpu":
        measured += f"; {r['speedup_cpu_time']:.2f}× in CPU time"
    measured += f"; max pixel diff {r['max_abs_diff']}/255"
    return dict(measured=measured, target=f"≥ {r['target']:g}×, max diff ≤ {r['tolerance']}/255", met="yes" if r["met"] else "no"), cfg_sweep.report(r).splitlines()


def run_slider(pipe, model: str, steps: int, repeats: int) -> tuple[dict, list[str]]:
    module, why = _optional_module("slider_latency")
    if module is None:
        return dict(measured=f"not run ({why})", met="n/a"), []
    results = module.measure(model, repeats=repeats, steps=steps, pipe=pipe)
    worst = max(results, key=lambda view: results[view]["median_ms"])
    measured = f"worst median {results[worst]['median_ms']:.1f} ms ({worst}) over {len(results)} views"
    return dict(measured=measured, met="yes" if all(r["ok"] for r in results.values()) else "no"), module.table(results, model).splitlines()


def run_scaling(pipe, size: int, steps: int, repeats: int, quick: bool, plot_path: Path, title: str) -> tuple[dict, list[str]]:
    sizes, steps_list = scaling.default_sizes(pipe, quick), None
    if pipe.device.type == "cpu":  # no sizes above the one asked for (SD-1.5 on a CPU), nor long step sweeps there
        sizes = [s for s in sizes if s <= max(size, 128)]
        steps_list = scaling.QUICK_STEPS if pipe.unet.config.block_out_channels[0] >= 320 else None
    r = scaling.measure(pipe, sizes=sizes, steps=min(steps, 10), steps_list=steps_list, steps_size=size, repeats=repeats, quick=quick)
    first, last = r["by_size"][0], r["by_size"][-1]
    measured = f"{first['size']}→{last['size']} px: {first['stock_step_ms']:.1f}→{last['stock_step_ms']:.1f} ms/step stock"
    if r["traced"]:
        measured += f", {first['traced_step_ms']:.1f}→{last['traced_step_ms']:.1f} traced"
    if pipe.device.type == "cpu":
        measured += f" (CPU time {first['stock_step_cpu_ms']:.1f}→{last['stock_step_cpu_ms']:.1f} stock"
        measured += f", {first['traced_step_cpu_ms']:.1f}→{last['traced_step_cpu_ms']:.1f} traced)" if r["traced"] else ")"
    if r["traced"]:
        measured += f"; trace {_mib(first)}→{_mib(last)} MiB"
    else:
        measured += "; trace bytes n/a (no sdexplain.trace)"
    at_size = next((row for row in r["by_size"] if row["size"] == size), None)
    if at_size is not None:
        measured += f"; at {size} px {1000 / at_size['stock_step_ms']:.1f} it/s stock"
        measured += f", {1000 / at_size['traced_step_ms']:.1f} traced" if r["traced"] else ""
    path = scaling.plot(r, plot_path, title)
    measured += f"; plot {path}"
    met = "n/a" if r["within_budget"] is None else ("yes" if r["within_budget"] else "no")
    return dict(measured=measured, met=met), scaling.table(r).splitlines()


def _mib(row) -> str:
    return f"{row['trace_bytes'] / MiB:.2f}"


# ----------------------------------------------------------------------------- the report


def markdown(rows: list[dict], machine: dict, settings: str, details: dict[str, list[str]], title: str) -> str:
    lines = [f"# sdexplain benchmarks: {title}", "", settings, "", "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()), ""]
    if machine.get("training job running") == "yes":
        lines += [
            "**Note:** the toy model's training job (`sdexplain.toy.train`) was running on this machine during the",
            "measurement and competing for its CPU cores, so absolute wall-clock times are inflated and noisy. Ratios",
            "of runs measured side by side (interleaved) are still fair; the CPU-time figures are closer to the work done.",
            "",
        ]
    lines += ["| benchmark | what is compared | measured | target | met? |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['benchmark']} | {row['compared']} | {row['measured']} | {row['target']} | {row['met']} |")
    for name, text in details.items():
        if text:
            lines += ["", f"### {name} ({title})", "", "```", *text, "```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=common.MODELS, help="default: toy if it is built, else tiny")
    parser.add_argument("--device", default="cpu", choices=common.DEVICES)
    parser.add_argument("--dtype", default="float32", choices=list(common.DTYPES))
    parser.add_argument("--size", type=int, help="image side in px (default: the model's own; sd15 on CPU: 256)")
    parser.add_argument("--steps", type=int, help="sampling steps (default: 20; sd15 25 on CUDA, 4 on CPU; fewer with --quick)")
    parser.add_argument("--repeats", type=int, help="interleaved repetitions per comparison")
    parser.add_argument("--quick", action="store_true", help="fewer steps, repeats and sizes")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, help="also write the markdown here, e.g. benchmarks/results-cpu.md")
    parser.add_argument("--append", action="store_true", help="add to --out instead of replacing it (e.g. a second model's run)")
    parser.add_argument("--plot", type=Path, help="PNG of the scaling benchmark (default: next to --out, else benchmarks/scaling-<model>-<device>.png)")
    args = parser.parse_args(argv)

    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown or not only:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown) or '(none given)'}; allowed: {', '.join(BENCHMARKS)}")
    model = args.model or ("toy" if common.toy_model_exists() else "tiny")
    try:
        common.check_options(model, args.device, args.dtype)
    except (ValueError, RuntimeError) as error:
        parser.error(str(error))
    for name in ("size", "steps", "repeats"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")

    start = time.perf_counter()
    training_at_start = common.training_job_running()
    pipe = common.build_model(model, args.device, args.dtype)
    chosen = defaults(model, args.device, args.quick)
    size = args.size or chosen["size"] or common.native_size(pipe)
    try:
        common.check_size(pipe, size)
    except ValueError as error:
        parser.error(f"--size: {error}")
    steps = args.steps or chosen["steps"]
    repeats = args.repeats or chosen["repeats"]
    stem = f"scaling-{model}-{args.device}"
    plot_path = args.plot or (args.out.with_name(f"{args.out.stem}-{stem}.png") if args.out else Path(__file__).parent / f"{stem}.png")
    settings = (f"Model **{model}** on {args.device} ({args.dtype}), {size}×{size} px, {steps} steps, seed 0, "
                f"{repeats} interleaved repetitions per comparison{' (--quick)' if args.quick else ''}; "
                f"command: `python benchmarks/run_all.py {' '.join(argv if argv is not None else sys.argv[1:])}`")  # fmt: skip

    compared = {
        "trace": ("trace overhead", "`sdexplain.trace` around a pipeline call vs the stock call", "≤ 1.10× (real model sizes)"),
        "cfg": ("CFG sweep", "8 guidance scales (1.5…10) in one batched `cfg_sweep` vs 8 stock `pipe(guidance_scale=s)` calls", ""),
        "slider": ("slider latency", "slider value change → new image bytes, per explorer view", "median ≤ 50 ms per view"),
        "scaling": ("scaling", "time per step and trace bytes vs image size and steps, stock vs traced", "trace within its budget; plot"),
    }
    rows, details = [], {}
    for name in BENCHMARKS:
        title, what, target = compared[name]
        if name not in only:
            rows.append(dict(benchmark=title, compared=what, measured="not run (--only)", target=target, met="n/a"))
            continue
        print(f"running {title} ...", file=sys.stderr, flush=True)
        if name == "trace":
            row, text = run_trace(pipe, size, steps, repeats)
        elif name == "cfg":
            row, text = run_cfg(pipe, size, steps, repeats)
        elif name == "slider":
            row, text = run_slider(pipe, model, steps, chosen["slider_repeats"])
        else:
            row, text = run_scaling(pipe, size, steps, repeats, args.quick, plot_path, f"sdexplain scaling: {model} on {args.device} ({args.dtype})")
        rows.append(dict(dict(benchmark=title, compared=what, target=target), **row))
        details[title] = text

    machine = common.describe_machine(args.device, args.dtype)
    if training_at_start:  # running at the start or at the end counts: it competed for part of the run at least
        machine["training job running"] = "yes"
    machine["total time"] = f"{time.perf_counter() - start:.0f} s"
    report = markdown(rows, machine, settings, details, f"{model} on {args.device}")
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a" if args.append else "w") as out:
            out.write(("\n" if args.append and args.out.stat().st_size else "") + report)
        print(f"{'appended to' if args.append else 'written'}: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

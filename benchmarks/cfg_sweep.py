"""Is a guidance sweep in ONE batched pass faster than one stock pipeline call per scale?

    python benchmarks/cfg_sweep.py                               # tiny random pipeline, CPU
    python benchmarks/cfg_sweep.py --model toy                   # the shipped toy model
    python benchmarks/cfg_sweep.py --model sd15 --device cuda --dtype float16 --size 512 --steps 25

A. batched:    `sdexplain.guidance.cfg_sweep(pipe, prompt, scales)` — every U-Net call evaluates
               all N latents, unconditional and conditional halves together (batch 2N), and the
               prompt is encoded once.
B. sequential: N calls `pipe(prompt, guidance_scale=s)` of the stock diffusers pipeline (batch 2
               per U-Net call, the prompt encoded N times).

Same model, prompt, seed, steps and size; both return PIL images, so both pay for decoding and
post-processing. The scales are all > 1 because the stock pipeline turns classifier-free
guidance off for guidance_scale ≤ 1 (then it runs the conditional half only, which would not be
like for like). Repetitions are interleaved (A B, B A, …) after one warm-up of each; the ratio is
of the medians. The images of the two sides are compared pixel by pixel (8-bit levels), so a
speed-up can't come from computing something else. Target: ≥ 1.5× on the toy model on a CPU,
≥ 3× on a GPU (where one batch of 16 fills the device far better than 8 batches of 2).

``measure(pipe, ...) -> dict`` does the work; ``main()`` prints the result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from sdexplain.guidance import cfg_sweep  # noqa: E402

PROMPT = "a large red cat on the left"
SCALES = (1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.5, 10.0)  # N = 8, all > 1 (see the module docstring)
TARGET_CPU = 1.5
TARGET_GPU = 3.0
# Largest pixel difference (8-bit levels) still counted as "the same image": batched and unbatched
# float math round differently; float16 on a GPU drifts more over many steps than float32.
TOLERANCE_LEVELS = {torch.float32: 2, torch.float16: 8, torch.bfloat16: 16}


def target_for(device) -> float:
    return TARGET_GPU if torch.device(device).type == "cuda" else TARGET_CPU


def measure(
    pipe,
    prompt: str = PROMPT,
    *,
    scales=SCALES,
    steps: int = 20,
    height: int | None = None,
    width: int | None = None,
    repeats: int = 3,
    seed: int = 0,
    keep_steps: bool = False,
) -> dict:
    """Median times of the batched sweep and of N sequential stock calls, their ratio, and the images' agreement.

    keep_steps: let the batched sweep also keep its per-step tensors (what the guidance notebook
    asks for: one device→host copy per step). Off by default, as the stock calls keep nothing.
    Returns the keys: n_scales, scales, steps, size, device, dtype, repeats, batched_s,
    sequential_s, speedup (wall-clock), batched_cpu_s, sequential_cpu_s, speedup_cpu_time (this
    process's CPU time, see benchmarks/common.py), max_abs_diff (8-bit levels), mean_abs_diff,
    tolerance, agree, target, met (wall-clock speed-up ≥ target and the images agree).
    """
    scales = [float(s) for s in scales]
    if any(s <= 1 for s in scales):
        raise ValueError(f"all scales must be > 1 (the stock pipeline disables guidance at ≤ 1), got {scales}")
    height = height or common.native_size(pipe)
    width = width or common.native_size(pipe)
    common.check_size(pipe, height)
    common.check_size(pipe, width)
    pipe.set_progress_bar_config(disable=True)
    device = pipe.device

    def batched():
        sweep = cfg_sweep(pipe, prompt, scales, steps=steps, seed=seed, height=height, width=width, keep_steps=keep_steps, progress=False)
        return sweep.images

    def sequential():
        images = []
        for scale in scales:
            generator = torch.Generator(device="cpu").manual_seed(seed)  # cfg_sweep draws its noise on the CPU too
            out = pipe(prompt, guidance_scale=scale, num_inference_steps=steps, height=height, width=width, generator=generator)
            images.append(out.images[0])
        return images

    wall, cpu, images = common.interleaved({"batched": batched, "sequential": sequential}, repeats, device)
    diffs = [np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)) for a, b in zip(images["batched"], images["sequential"])]
    batched_s, sequential_s = common.median(wall["batched"]), common.median(wall["sequential"])
    batched_cpu_s, sequential_cpu_s = common.median(cpu["batched"]), common.median(cpu["sequential"])
    tolerance = TOLERANCE_LEVELS[pipe.unet.dtype]
    max_diff = int(max(d.max() for d in diffs))
    speedup = sequential_s / batched_s
    target = target_for(device)
    return {
        "n_scales": len(scales),
        "scales": scales,
        "steps": steps,
        "size": f"{width}x{height}",
        "device": str(device),
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "repeats": repeats,
        "batched_s": batched_s,
        "sequential_s": sequential_s,
        "speedup": speedup,
        "batched_cpu_s": batched_cpu_s,
        "sequential_cpu_s": sequential_cpu_s,
        "speedup_cpu_time": sequential_cpu_s / batched_cpu_s,
        "max_abs_diff": max_diff,
        "mean_abs_diff": float(np.mean([d.mean() for d in diffs])),
        "tolerance": tolerance,
        "agree": max_diff <= tolerance,
        "target": target,
        "met": bool(speedup >= target and max_diff <= tolerance),
    }


def report(result: dict) -> str:
    r = result
    return "\n".join(
        [
            f"CFG sweep: {r['n_scales']} scales {r['scales']}, {r['size']}, {r['steps']} steps, {r['device']} {r['dtype']}, "
            f"{r['repeats']} interleaved repeats",
            f"  {'':22}  {'wall s':>8}  {'CPU s':>8}   (medians)",
            f"  {'batched (1 pass)':22}  {r['batched_s']:8.3f}  {r['batched_cpu_s']:8.3f}",
            f"  {'sequential (%d calls)' % r['n_scales']:22}  {r['sequential_s']:8.3f}  {r['sequential_cpu_s']:8.3f}",
            f"  speed-up {r['speedup']:.2f}x wall, {r['speedup_cpu_time']:.2f}x CPU time (target >= {r['target']}x)",
            f"  images: max |diff| {r['max_abs_diff']} / 255, mean {r['mean_abs_diff']:.3f} (agree if max <= {r['tolerance']}): "
            f"{'agree' if r['agree'] else 'DIFFER'}",
        ]
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_model_arguments(parser, model="tiny")
    parser.add_argument("--keep-steps", action="store_true", help="let the sweep keep its per-step tensors too")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    pipe = common.build_model(args.model, args.device, args.dtype)
    result = measure(pipe, steps=args.steps, height=args.size, width=args.size, repeats=args.repeats, keep_steps=args.keep_steps)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())

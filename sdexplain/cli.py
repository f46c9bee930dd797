"""The `sdexplain` command: run a model, trace it, and save the step-by-step strip as a PNG.

    sdexplain generate --prompt "a red circle on the left" --out steps.png [--model toy] [--steps 20]
                       [--cfg S] [--seed 0] [--scheduler NAME] [--negative-prompt TEXT]
                       [--height H --width W] [--device auto] [--dtype auto] [--config DIR]
    sdexplain info [--model toy] [--config DIR]

`python -m sdexplain …` is the same command. The strip (`step_strip`) has one column per
denoising step and two rows: the latent the sampler holds at that step (x_t) and the clean image
the model predicts from it (x0), both decoded by the model's own VAE.

Exit codes: 0 done, 2 bad arguments (including a model that can't be found or loaded safely).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from sdexplain import images as sd_images
from sdexplain.loading import ModelNotFoundError, UnsafeCheckpointError, describe, load_pipeline, resolve_device

ROWS = ("x_t (now)", "x0 (predicted)")
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed's range (sdexplain.generate checks the same; not imported at start-up)


# ----------------------------------------------------------------------------- the strip


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _vp_latent(pipe, step) -> torch.Tensor:
    """The step's input latent in the variance-preserving scale the VAE expects.

    Sigma (Euler/LMS/Heun) schedulers hold x_t / sqrt(ᾱ_t), whose scale grows with the noise
    level; multiplying by sqrt(ᾱ_t) gives the DDPM-style x_t = sqrt(ᾱ)·x0 + sqrt(1−ᾱ)·ε.
    """
    latent = step.latent_in
    if float(getattr(pipe.scheduler, "init_noise_sigma", 1.0)) > 1.0 + 1e-6:
        latent = latent * step.alpha_bar**0.5
    return latent


def step_strip(pipe, run, *, batch_index: int = 0, tile: int = 128, columns: int = 10) -> Image.Image:
    """A labelled grid of decoded x_t and predicted x0 for every step the trace kept.

    All latents are decoded through `pipe.vae` in one batched call (in chunks of 16). Tiles are
    resized to `tile` pixels (nearest-neighbour when enlarging, so small images stay crisp); long
    runs wrap after `columns` steps.
    """
    if not run.steps:
        raise ValueError("the trace holds no steps: nothing to draw")
    batch = run.steps[0].x0.shape[0] if run.steps[0].x0 is not None else None
    if batch is not None and not 0 <= batch_index < batch:
        raise ValueError(f"batch_index {batch_index} is out of range for a batch of {batch}")
    kept = [s for s in run.steps if s.x0 is not None and s.latent_in is not None]
    if not kept:
        raise ValueError("the trace kept no step latents (its memory budget thinned them all out)")

    latents = torch.stack(
        [z for s in kept for z in (_vp_latent(pipe, s)[batch_index], s.x0[batch_index])]
    )  # (2N, C, h, w): x_t and x0 of each step, interleaved
    decoded = sd_images.to_uint8(sd_images.vae_decode(pipe.vae, latents))  # (2N, H, W, 3)
    if decoded.ndim == 3:  # to_uint8 drops a batch of one
        decoded = decoded[None]

    font, pad, label_h = _font(12), 4, 34
    row_label_w = max(int(_font(12).getlength(r)) for r in ROWS) + 2 * pad
    cols = min(columns, len(kept))
    blocks = -(-len(kept) // cols)
    cell_w, block_h = tile + pad, label_h + len(ROWS) * (tile + pad)
    canvas = Image.new("RGB", (row_label_w + cols * cell_w + pad, blocks * block_h + pad), "white")
    draw = ImageDraw.Draw(canvas)

    for n, step in enumerate(kept):
        block, col = divmod(n, cols)
        x, y = row_label_w + col * cell_w, pad + block * block_h
        draw.text((x, y), f"step {step.index}", fill="black", font=font)
        draw.text((x, y + 15), f"t={step.timestep:g}", fill="dimgray", font=font)
        for r in range(len(ROWS)):
            picture = Image.fromarray(decoded[2 * n + r])
            resample = Image.Resampling.NEAREST if picture.width < tile else Image.Resampling.LANCZOS
            canvas.paste(picture.resize((tile, tile * picture.height // picture.width), resample), (x, y + label_h + r * (tile + pad)))
    for block in range(blocks):
        for r, name in enumerate(ROWS):
            y = pad + block * block_h + label_h + r * (tile + pad) + tile // 2 - 6
            draw.text((pad, y), name, fill="black", font=font)
    return canvas


def _cannot_write(out: Path) -> str | None:
    """Why `out` can't be written, found before the run by creating (and removing) the file the save will use; else None."""
    if out.exists() and not os.access(out, os.W_OK):
        return "the file is read-only"
    probe = _temporary_name(out)
    try:
        with open(probe, "xb"):
            pass
    except OSError as err:
        return err.strerror or type(err).__name__
    probe.unlink()
    return None


def _temporary_name(out: Path) -> Path:
    return out.with_name(f".{out.name}.{os.getpid()}.tmp")  # same folder, so the rename is atomic


def save_png_atomically(image: Image.Image, out: Path) -> None:
    """Write to a temporary file next to `out`, then rename: `out` is never half-written."""
    tmp = _temporary_name(out)
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- arguments


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in 0 … 2**64 - 1 = {MAX_SEED} (torch.Generator's range), got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < math.inf:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _pixels(text: str) -> int:
    value = _positive_int(text)
    if value % 8:
        raise argparse.ArgumentTypeError(f"must be a multiple of 8 (the VAE's factor), got {value}")
    return value


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="toy", help="'toy' (default), a Hub id, a diffusers folder or a .safetensors file")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="auto", help="auto (default), float32, float16 or bfloat16")
    parser.add_argument(
        "--config",
        default=None,
        help="only with a .safetensors --model: a local diffusers folder (or Hub id) of the same architecture, for the component configs the file lacks",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdexplain", description="Watch Stable Diffusion work, step by step.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{generate,info}")

    gen = commands.add_parser("generate", help="generate an image and save the step-by-step strip as a PNG")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--negative-prompt", default=None)
    _add_model_arguments(gen)
    gen.add_argument("--steps", type=_positive_int, default=20, help="denoising steps (default 20)")
    gen.add_argument(
        "--cfg",
        type=_non_negative_float,
        default=None,
        help="classifier-free guidance scale (default: the model's own, sdexplain.default_guidance: 7, the WebUI's default, the toy's measured scale for --model toy)",
    )
    gen.add_argument("--seed", type=_seed, default=0, help="0 … 2**64 - 1 (default 0)")
    gen.add_argument("--scheduler", default=None, help="a scheduler name from sdexplain.loading.SCHEDULERS")
    gen.add_argument("--height", type=_pixels, default=None, help="pixels, a multiple of 8 (default: the model's size)")
    gen.add_argument("--width", type=_pixels, default=None, help="pixels, a multiple of 8 (default: the model's size)")
    gen.add_argument("--tile", type=_positive_int, default=128, help="pixels per picture in the strip (default 128)")
    gen.add_argument("--out", type=Path, required=True, help="where to write the strip (.png)")

    info = commands.add_parser("info", help="describe a model: parameters, text width, U-Net, VAE, scheduler")
    _add_model_arguments(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _load(parser: argparse.ArgumentParser, args, scheduler: str | None = None):
    """load_pipeline, with every problem of the arguments reported as a usage error (exit code 2)."""
    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as err:  # an unknown name, or CUDA/MPS asked for and absent
        parser.error(f"--device: {err}")
    try:
        return load_pipeline(args.model, device=device, dtype=args.dtype, scheduler=scheduler, config=args.config)
    except (ModelNotFoundError, UnsafeCheckpointError) as err:
        parser.error(f"--model: {err}")
    except ValueError as err:  # an unknown dtype or scheduler name, --config misused, a corrupt checkpoint file
        parser.error(str(err))


# ----------------------------------------------------------------------------- commands


def _generate(parser: argparse.ArgumentParser, args) -> int:
    out: Path = args.out.expanduser()
    if out.suffix.lower() != ".png":
        parser.error(f"--out must name a .png file, got {str(args.out)!r}")
    if not out.parent.is_dir():
        parser.error(f"--out: folder {str(out.parent)!r} does not exist")
    if out.is_dir():
        parser.error(f"--out: {str(out)!r} is a folder; name a .png file (e.g. {str(out / 'steps.png')!r})")
    problem = _cannot_write(out)
    if problem:
        parser.error(f"--out: cannot write {str(out)!r} ({problem})")
    try:
        from sdexplain.generate import check_steps, default_guidance, generate
        from sdexplain.loading import SCHEDULERS
    except ImportError as err:
        print(f"sdexplain: error: generation is unavailable in this installation ({err})", file=sys.stderr)
        return 1
    if args.scheduler is not None and args.scheduler.lower() not in SCHEDULERS:
        parser.error(f"--scheduler: unknown scheduler {args.scheduler!r}; allowed: {', '.join(SCHEDULERS)}")

    pipe = _load(parser, args, scheduler=args.scheduler)
    try:
        check_steps(pipe, args.steps)
    except ValueError as err:
        parser.error(f"--steps: {err}")
    _check_text_to_image_unet(parser, args.model, pipe)
    _, run = generate(
        pipe,
        args.prompt,
        negative_prompt=args.negative_prompt,
        steps=args.steps,
        cfg=default_guidance(args.model) if args.cfg is None else args.cfg,
        seed=args.seed,
        height=args.height,
        width=args.width,
        preview_every=0,  # the strip decodes every step itself
    )
    strip = step_strip(pipe, run, tile=args.tile)
    save_png_atomically(strip, out)
    print(summary(args.model, pipe, run, out))
    return 0


# What the extra U-Net input channels of the SD checkpoints that have them hold.
_EXTRA_CHANNELS = {5: "a depth-to-image U-Net: 4 latent + 1 depth", 9: "an inpainting U-Net: 4 latent + 1 mask + 4 masked-image latent"}


def _check_text_to_image_unet(parser: argparse.ArgumentParser, model: str, pipe) -> None:
    """`generate` is text-to-image: its U-Net must take exactly the latent's channels."""
    in_channels, latent_channels = pipe.unet.config.in_channels, pipe.vae.config.latent_channels
    if in_channels != latent_channels:
        what = _EXTRA_CHANNELS.get(in_channels, "not a text-to-image U-Net")
        parser.error(
            f"--model: {model!r} has a U-Net with {in_channels} input channels ({what}); `sdexplain generate` makes "
            f"text-to-image only, which needs {latent_channels} (the latent alone). Use a text-to-image checkpoint, "
            "or the Python API (sdexplain.generate with image=, mask_image= or depth_map=) for this one."
        )


def summary(model: str, pipe, run, out: Path) -> str:
    """A few lines on what a traced run did."""
    timesteps = [s.timestep for s in run.steps]
    tokens = run.tokens[0].words if run.tokens else []
    lines = [
        f"model     {model} ({type(pipe).__name__}, {type(pipe.scheduler).__name__}, {pipe.scheduler.config.get('prediction_type', 'epsilon')})",
        f"tokens    {len(tokens)}: {' '.join(tokens)}",
        f"steps     {len(run.steps)} U-Net evaluations, timesteps {timesteps[0]:g} → {timesteps[-1]:g}" if timesteps else "steps     0",
        f"guidance  {run.guidance_scale:g}" if run.guidance_scale is not None else "guidance  off",
        f"kept      {run.nbytes() / 2**20:.2f} MiB of tensors in the trace",
    ]
    lines += [f"reduced   {r}" for r in run.reductions]
    lines.append(f"wrote     {out}")
    return "\n".join(lines)


def format_description(info: dict) -> str:
    """`describe(pipe)` as aligned text, parameter counts in millions."""
    lines = []
    for key, value in info.items():
        if key == "parameters":
            value = ", ".join(f"{name} {count / 1e6:.2f} M" for name, count in value.items())
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        lines.append(f"{key:<20}{value}")
    return "\n".join(lines)


def _info(parser: argparse.ArgumentParser, args) -> int:
    info = describe(_load(parser, args))
    print(json.dumps(info, indent=2) if args.json else format_description(info))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "generate":
        return _generate(parser, args)
    return _info(parser, args)

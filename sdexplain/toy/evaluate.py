"""Measure the toy model: `python -m sdexplain.toy.evaluate [--model DIR] [--prompts 200]`.

Prints a table (and writes it as JSON with `--json`):

    vae        reconstruction error on held-out scenes (L1 and PSNR on [-1, 1] images), and the share of
               a cat's or dog's face contrast (eyes and nose against the body) that survives the round trip
    crisp      a judge trained on renders only reads round trips and generated images (do they look drawn?)
    judge      the judge's accuracy per attribute on held-out rendered scenes
    adherence  generated images (25 steps, judge-scored) follow the prompt's colour, shape,
               position and size — at several guidance scales, CFG 1 (no guidance) included
    uncond     empty-prompt samples: share judged confidently (a cat OR a dog, never in between)
    forward    cat-vs-dog accuracy of the judge on decoded x_t, falling to chance as t grows
    (world 2)  two-object adherence and binding, synonyms, embedding neighbours, per-object attention:
               `sdexplain.toy.evaluate_pairs`, added when the model's judge is a SlotJudge

Everything is computed from the loaded model and freshly rendered held-out scenes; the functions
are reused by the notebooks and the tests.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sdexplain.toy import world
from sdexplain.toy.model import DEFAULT_GUIDANCE, EXTRAS_DIR, JUDGE_CRISP, MODEL_DIR, Judge, SlotJudge, vae_round_trip
from sdexplain.toy.samples import generate_latents_to_images, held_out_pairs, held_out_scenes
from sdexplain.toy.world import HELD_OUT_SEED


def judge_images(judge: Judge, images: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """Judge images in [-1, 1] (B, 3, 64, 64): per attribute the predicted index and its probability."""
    with torch.no_grad():
        logits = judge(images.float().clamp(-1, 1))
    result = {}
    for name, value in logits.items():
        probs = value.softmax(-1)
        confidence, predicted = probs.max(-1)
        result[name] = {"predicted": predicted, "confidence": confidence, "probs": probs}
    return result


def judge_pictures(judge: Judge, pictures) -> list[dict[str, str]]:
    """What the judge reads off each picture (PIL images or uint8 arrays, 64×64): [{attribute: label name}]."""
    arrays = [np.asarray(p.convert("RGB") if hasattr(p, "convert") else p, dtype=np.float32) for p in pictures]  # (H, W, 3)
    batch = torch.from_numpy(np.stack(arrays) / 127.5 - 1.0).permute(0, 3, 1, 2)  # (B, 3, H, W) in [-1, 1]
    verdict = judge_images(judge, batch)
    return [{name: judge.HEADS[name][int(verdict[name]["predicted"][i])] for name in verdict} for i in range(len(arrays))]


def x0_readings(pipe, judge: Judge, run, attribute: str, batch_index: int = 0) -> tuple[list[str], int]:
    """The judge's reading of `attribute` on the decoded x̂0 of every step of a traced run, and the step it settles.

    Returns (readings, settled): `readings[i]` is what the judge reads off step i's x̂0; `settled` is the
    first step index from which every later reading equals the last one (the run's final answer).
    """
    from sdexplain import images

    if attribute not in judge.HEADS:
        raise ValueError(f"unknown attribute {attribute!r}; allowed: {', '.join(judge.HEADS)}")
    x0 = torch.stack([step.x0[batch_index] for step in run.steps]).float()  # (steps, 4, h, w)
    pictures = list(images.to_uint8(images.vae_decode(pipe.vae, x0)))  # (H, W, 3) each
    readings = [r[attribute] for r in judge_pictures(judge, pictures)]
    settled = len(readings) - 1
    while settled > 0 and readings[settled - 1] == readings[-1]:
        settled -= 1
    return readings, settled


def vae_error(vae, n: int = 256) -> dict[str, float]:
    """Round-trip error of `vae` (encode → decode) on n held-out scenes: L1 and PSNR on [-1, 1] images."""
    data = world.batch(n, HELD_OUT_SEED)
    x = data["images"].to(vae.device, vae.dtype)
    recon = vae_round_trip(vae, x).float().cpu()
    mse = (recon - data["images"]).pow(2).mean().item()
    return {"l1": (recon - data["images"]).abs().mean().item(), "psnr_db": 10 * np.log10(4.0 / mse)}


LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luminance weights of R, G, B


def face_contrast(images: torch.Tensor, scenes: list[world.Scene]) -> torch.Tensor:
    """(B,) per cat or dog: mean luminance of its body minus mean luminance of its eyes and nose.

    Images (B, 3, 64, 64) in [-1, 1]; the pixels are the ones `world.render` painted, so a picture
    that lost its face scores near 0 and a render scores its full contrast."""
    if any(s.shape not in ("cat", "dog") for s in scenes):
        raise ValueError(f"face contrast needs cats and dogs, got shapes {sorted({s.shape for s in scenes})}")
    luma = (images.float() * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1)  # (B, 64, 64)
    contrast = []
    for lum, scene in zip(luma, scenes):
        body, _, detail = world.parts(scene)
        contrast.append(lum[torch.from_numpy(body)].mean() - lum[torch.from_numpy(detail)].mean())
    return torch.stack(contrast)


def faces(n: int, seed: int = HELD_OUT_SEED) -> list[world.Scene]:
    """The first n held-out scenes that are cats or dogs."""
    scenes: list[world.Scene] = []
    batch = 0
    while len(scenes) < n:
        scenes += [s for s in world.sample_scenes(4 * n, seed + batch) if s.shape in ("cat", "dog")]
        batch += 1
    return scenes[:n]


def face_contrast_kept(vae, n: int = 256) -> float:
    """Share of a render's face contrast that survives the VAE round trip, averaged over n held-out
    cats and dogs (1.0 = eyes and nose as dark against the body as drawn; 0 = a faceless blob)."""
    scenes = faces(n)
    renders = world.to_tensor(np.stack([world.render(s)[0] for s in scenes]))
    device, dtype = vae.device, vae.dtype
    trips = torch.cat([vae_round_trip(vae, x.to(device, dtype)).float().cpu() for x in renders.split(128)])
    return (face_contrast(trips, scenes) / face_contrast(renders, scenes)).mean().item()


def round_trip_report(vae, scenes: list, faces_only: bool = False) -> dict[str, float]:
    """A VAE's round trip on `scenes` (one- or two-object): L1 and PSNR on [-1, 1] images, and the
    share of face contrast kept, averaged over every cat and dog in them (small ones included)."""
    renders = world.to_tensor(np.stack([world.render(s)[0] for s in scenes]))
    device, dtype = vae.device, vae.dtype
    trips = torch.cat([vae_round_trip(vae, x.to(device, dtype)).float().cpu() for x in renders.split(128)])
    mse = (trips - renders).pow(2).mean().item()
    kept = []
    for trip, render, scene in zip(trips, renders, scenes):
        animals = [o for o in scene.objects if o.shape in ("cat", "dog")]
        if animals:
            kept.append(face_contrast(trip.expand(len(animals), -1, -1, -1), animals) / face_contrast(render.expand(len(animals), -1, -1, -1), animals))
    return {
        "l1": (trips - renders).abs().mean().item(),
        "psnr_db": 10 * np.log10(4.0 / mse),
        "face_contrast_kept": torch.cat(kept).mean().item() if kept else float("nan"),
        "faces": sum(len(k) for k in kept),
    }


def slot_accuracy(judge, scenes: list, vae=None) -> dict[str, float]:
    """A SlotJudge on renders of `scenes` (or, given a `vae`, their round trips): the share of scenes whose
    occupied places it finds exactly, and per attribute the share of objects read right at their place."""
    pictures = world.to_tensor(np.stack([world.render(s)[0] for s in scenes]))
    if vae is not None:
        pictures = torch.cat([vae_round_trip(vae, p) for p in pictures.split(250)])
    with torch.no_grad():
        logits = judge.slots(pictures)
    labels = [world.slot_labels(s) for s in scenes]
    present = torch.from_numpy(np.stack([l["present"] for l in labels]))  # (N, 5)
    result = {"places": ((logits["present"] > 0).long() == present).all(1).float().mean().item()}
    for name in judge.SLOT_HEADS:
        truth = torch.from_numpy(np.stack([l[name] for l in labels]))  # (N, 5), -100 where no object
        occupied = truth != -100
        result[name] = (logits[name].argmax(-1)[occupied] == truth[occupied]).float().mean().item()
    return result


def judge_accuracy(judge: Judge, n: int = 1000, vae=None) -> dict[str, float]:
    """Per attribute, the judge's accuracy on held-out renders — or, given the model's `vae`, on their
    VAE round trips (encode → decode), which is what every generated image looks like."""
    data = world.batch(n, HELD_OUT_SEED + 1)
    pictures = data["images"]
    if vae is not None:
        pictures = torch.cat([vae_round_trip(vae, p) for p in pictures.split(250)])
    verdict = judge_images(judge, pictures)
    return {k: (verdict[k]["predicted"] == data["labels"][k]).float().mean().item() for k in verdict}


def adherence(pipe, judge: Judge | dict[str, Judge], n: int = 200, guidance_scale: float = DEFAULT_GUIDANCE, steps: int = 25, seed: int = 0) -> dict:
    """Share of generated images whose judged attributes match the prompt's (full captions).

    Given several judges ({name: judge}), the same images are scored by each: {name: shares}."""
    scenes = held_out_scenes(n)
    images = generate_latents_to_images(pipe, [s.caption() for s in scenes], guidance_scale, steps, seed)
    if isinstance(judge, dict):
        return {name: _matches(one, images, scenes) for name, one in judge.items()}
    return _matches(judge, images, scenes)


def _matches(judge: Judge, images: torch.Tensor, scenes: list[world.Scene]) -> dict[str, float]:
    verdict = judge_images(judge, images)
    result = {}
    for name in ("colour", "shape", "position", "size"):
        target = torch.tensor([s.labels[name] for s in scenes])
        result[name] = (verdict[name]["predicted"] == target).float().mean().item()
    return result


def unconditional(pipe, judge: Judge, n: int = 200, steps: int = 25, seed: int = 0, threshold: float = 0.9) -> dict:
    """Empty-prompt samples: how often the judge is confident of the shape, and the shares of each."""
    images = generate_latents_to_images(pipe, [""] * n, 1.0, steps, seed)
    verdict = judge_images(judge, images)["shape"]
    shares = {shape: (verdict["predicted"] == i).float().mean().item() for i, shape in enumerate(world.SHAPES)}
    return {"confident": (verdict["confidence"] >= threshold).float().mean().item(), "shares": shares}


@torch.no_grad()
def forward_accuracy(pipe, judge: Judge, timesteps=(0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999), n: int = 128, seed: int = 0) -> dict[int, float]:
    """Cat-vs-dog accuracy of the judge on decoded x_t = sqrt(ᾱ_t)·x_0 + sqrt(1-ᾱ_t)·ε (latent space).

    A `SlotJudge` is asked at the place where the object stands: decoded noise draws blobs anywhere, and
    the place it finds most likely to hold an object may be one of them."""
    rng = np.random.default_rng(seed)
    scenes = [
        world.make_scene(["cat", "dog"][i % 2], world.COLOUR_NAMES[rng.integers(6)], world.POSITION_NAMES[rng.integers(5)], world.SIZE_NAMES[rng.integers(2)], rng)
        for i in range(n)
    ]
    images = world.to_tensor(np.stack([world.render(s)[0] for s in scenes]))
    is_dog = torch.tensor([s.shape == "dog" for s in scenes])
    place = torch.tensor([world.POSITION_NAMES.index(s.position) for s in scenes])  # (n,) where each object stands
    vae = pipe.vae
    x0 = vae.encode(images.to(pipe.device, vae.dtype)).latent_dist.mode() * vae.config.scaling_factor
    alphas_cumprod = pipe.scheduler.alphas_cumprod.to(x0.device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    result = {}
    cat, dog = world.SHAPES.index("cat"), world.SHAPES.index("dog")
    for t in timesteps:
        a = alphas_cumprod[t]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise  # q_sample
        decoded = vae.decode(x_t / vae.config.scaling_factor).sample.float().cpu()
        if isinstance(judge, SlotJudge):
            scores = judge.slots(decoded.clamp(-1, 1))["shape"][torch.arange(n), place]  # (n, shapes) logits at the object's place
        else:
            scores = judge_images(judge, decoded)["shape"]["probs"]  # (n, shapes)
        says_dog = scores[:, dog] > scores[:, cat]  # the judge forced to choose between the two
        result[int(t)] = (says_dog == is_dog).float().mean().item()
    return result


def evaluate(model: str | Path = MODEL_DIR, prompts: int = 200, scales=(1.0, 2.0, DEFAULT_GUIDANCE, 4.0, 7.5), extras: str | Path = EXTRAS_DIR) -> dict:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model, local_files_only=True, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    judge = Judge.load(Path(model) / "judge")
    crisp = Judge.load(Path(extras) / JUDGE_CRISP)  # never saw a decoded picture: do decoded pictures look like renders?
    judged = {scale: adherence(pipe, {"judge": judge, "crisp": crisp}, prompts, scale) for scale in scales}
    report = {
        "vae": vae_error(pipe.vae),
        "face_contrast_kept": face_contrast_kept(pipe.vae),
        "judge": judge_accuracy(judge),
        "judge_round_trip": judge_accuracy(judge, vae=pipe.vae),
        "crisp_judge_round_trip": judge_accuracy(crisp, vae=pipe.vae),
        "adherence": {scale: both["judge"] for scale, both in judged.items()},
        "crisp_adherence": {scale: both["crisp"] for scale, both in judged.items()},
        "uncond": unconditional(pipe, judge, prompts),
        "forward": forward_accuracy(pipe, judge),
    }
    if isinstance(judge, SlotJudge):  # world 2: two objects, synonyms, attention per object
        from sdexplain.toy.evaluate_pairs import pair_report

        report.update(pair_report(pipe, judge, prompts, scales=(1.0, DEFAULT_GUIDANCE)))
    return report


def format_report(report: dict) -> str:
    lines = [
        f"VAE reconstruction (held-out): L1 {report['vae']['l1']:.4f} on [-1, 1], PSNR {report['vae']['psnr_db']:.1f} dB",
        "Judge accuracy (held-out rendered scenes): " + ", ".join(f"{k} {v:.1%}" for k, v in report["judge"].items()),
        "Judge accuracy (their VAE round trips): " + ", ".join(f"{k} {v:.1%}" for k, v in report["judge_round_trip"].items()),
        f"VAE file: face contrast kept on held-out cats and dogs {report['face_contrast_kept']:.1%}",
        "Renders-only judge on round trips: " + ", ".join(f"{k} {v:.1%}" for k, v in report["crisp_judge_round_trip"].items()),
        "Renders-only judge agrees with the prompt's shape on generated images: "
        + ", ".join(f"CFG {float(scale):g} {acc['shape']:.1%}" for scale, acc in report["crisp_adherence"].items()),
        "Prompt adherence (25 steps, judge-scored):",
        "  CFG scale | colour | shape  | position | size",
    ]
    for scale, acc in report["adherence"].items():
        lines.append(f"  {float(scale):9.1f} | {acc['colour']:6.1%} | {acc['shape']:6.1%} | {acc['position']:8.1%} | {acc['size']:5.1%}")
    shares = ", ".join(f"{k} {v:.0%}" for k, v in report["uncond"]["shares"].items())
    lines.append(f"Unconditional samples: judge confident (p ≥ 0.9) on {report['uncond']['confident']:.1%}; shapes: {shares}")
    lines.append("Forward diffusion, judge cat-vs-dog accuracy on decoded x_t: " + ", ".join(f"t={t}: {a:.0%}" for t, a in report["forward"].items()))
    if "pairs" in report:
        from sdexplain.toy.evaluate_pairs import format_pair_report

        lines.append(format_pair_report(report))
    return "\n".join(lines)


def load_any_vae(path: Path):
    """A diffusers AutoencoderKL folder, or a committed training stage (`toy-stages/v*/vae*.safetensors`)."""
    from diffusers import AutoencoderKL

    from sdexplain.toy.model import make_vae
    from sdexplain.toy.train_common import read_stage

    if path.is_dir():
        return AutoencoderKL.from_pretrained(path, local_files_only=True).eval()
    vae = make_vae()
    weights, _ = read_stage(path)
    vae.load_state_dict(weights["model"])
    if "ema" in weights:  # the decoder stage: its EMA decoder is the one shipped
        vae.load_state_dict(weights["ema"], strict=False)
    return vae.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--extras", type=Path, default=EXTRAS_DIR, help="the folder holding the model's judge-crisp/")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--round-trips", nargs="+", type=Path, default=None, metavar="VAE",
                        help="only measure these VAEs (diffusers folders, or committed stages such as toy-stages/v2/vae.safetensors) on 256 held-out one- and 256 two-object scenes")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.round_trips:
        for path in args.round_trips:
            vae = load_any_vae(path)
            for kind, scenes in (("one object", held_out_scenes(256)), ("two objects", held_out_pairs(256))):
                r = round_trip_report(vae, scenes)
                print(f"{path} · {kind}: PSNR {r['psnr_db']:.1f} dB, L1 {r['l1']:.3f}, face contrast kept {r['face_contrast_kept']:.0%} ({r['faces']} cats and dogs)")
        return
    report = evaluate(args.model, args.prompts, extras=args.extras)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()

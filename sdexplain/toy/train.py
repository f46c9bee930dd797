"""Train the toy model: `python -m sdexplain.toy.train [--part all|vae|judge|unet|unet-noisy|export]`.

The shipped weights in `sdexplain/toy/model/` come out of this command. Each part is seeded,
shows a progress bar, writes a checkpoint every `--checkpoint-every` steps to `--workdir`, and
resumes from it when run again (stop it whenever you like). A finished part is skipped.

    1. vae    AutoencoderKL on rendered scenes (L1, object pixels weighted up, tiny KL as SD)
       vae-decoder  its decoder fine-tuned with the encoder frozen, as SD's "VAE files" are
              (sdexplain.toy.train_decoder): shipped as model/vae, the first one as
              model_extras/vae-original; the latent space, hence every other part, is unchanged
    2. judge  a CNN reading colour/shape/position/size off clean images (for evaluation)
       judge-crisp  the same CNN on crisp renders only: the reference that tells whether decoded
              pictures look like renders (model_extras/judge-crisp)
    3. unet   text encoder + U-Net together, on latents encoded once by the frozen VAE:
              ε-prediction with SD v1's schedule, captions dropped 10 % of the time (this is what
              makes classifier-free guidance work, as in SD v1.4's last training stage),
              offset noise, min-SNR-5 loss weighting, timesteps biased to the noisy end, EMA.
    4. unet-noisy  stage 2: the U-Net alone (text encoder frozen, as SD's CLIP is) fine-tuned on
              noisy captions, as web captions are: each of shape, colour, place and size names a
              wrong value 20 % of the time (world.mislabel). Stage 1's model follows its prompt
              without guidance, because every caption it saw was true; after stage 2, "a red cat"
              means "usually a red cat", so CFG 1 follows the prompt only about as often as the
              captions did, and guidance — which samples ∝ p(x|c)·p(c|x)^(s−1) — sharpens it back.
    5. export the last stage's EMA weights as a diffusers StableDiffusionPipeline (safetensors)
    6. extras (sdexplain.toy.train_extras): the noisy-latent classifier for classifier guidance
       (`--part classifier`), the depth estimator and the 5-channel depth U-Net fine-tuned from
       the trained U-Net (`--part depth`), exported beside the model (`--part export-extras`)

Every part is one call of the same loop, `sdexplain.toy.train_common.resumable_loop` (resume,
progress bar, cosine learning rate, atomic checkpoints), and the noise predictors share one loss,
`train_common.diffusion_loss` (offset noise, min-SNR-5 weighting). Checkpoints hold only tensors
and plain Python values, and are read with `torch.load(weights_only=True)`.

Why the recipe has the extras (all measured on this world while building it):
- Flat-coloured 8×8 latents keep their colour far into the schedule: at most timesteps the model
  can read the colour off x_t and never needs the prompt. Offset noise (a random constant per
  channel added to the noise) hides the mean colour, and sampling more timesteps at the noisy
  end, where only the prompt can say what to draw, concentrates learning where the text matters.
- EMA with a warmed-up decay, so early random weights don't linger in the average.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sdexplain.toy import model as toy_model
from sdexplain.toy import world
from sdexplain.toy.train_common import (
    CLEAN,
    DEPTH_UNET_STEPS,
    NOISY,
    NOISY_STEPS,
    UNetStage,
    augment,
    cosine_lr,
    dataset,
    ddpm_schedule,
    diffusion_loss,
    ema_update,
    load_checkpoint,
    load_vae,
    optimise,
    require_checkpoint,
    resumable_loop,
    resume,
    load_stage,
    save_checkpoint,
    save_stage,
    text_model,
    tokenize,
)
from sdexplain.toy.train_decoder import CHECKPOINT as DECODER_CHECKPOINT
from sdexplain.toy.train_decoder import decoder_parts, export_vae_decoder, load_vae_decoder, train_vae_decoder
from sdexplain.toy.train_decoder import trainable as decoder_parameters

DEFAULT_WORKDIR = Path("runs/toy")


# ----------------------------------------------------------------------------- 1. VAE


def train_vae(workdir: Path, steps: int, batch_size: int, checkpoint_every: int, seed: int, spec: world.WorldSpec = world.V1) -> None:
    torch.manual_seed(seed)
    vae = toy_model.make_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    path = workdir / "vae.pt"
    start, _ = resume(path, {"model": vae}, opt)
    vae.train()

    def train_step(step: int) -> dict[str, str]:
        data = world.batch(batch_size, seed=seed * 7919 + step, spec=spec)
        x = world.vary_floor(data["images"], data["masks"], spec.floor_variety, seed=seed * 7919 + step)  # (B, 3, 64, 64)
        weight = 1.0 + 2.0 * data["masks"].unsqueeze(1).float()  # the object matters more than the floor
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        l1 = ((recon - x).abs() * weight).mean()
        kl = posterior.kl().mean()
        optimise(opt, l1 + 1e-6 * kl)
        return {"l1": f"{l1.item():.4f}"}

    resumable_loop("vae", path, {"model": vae}, opt, train_step, steps=steps, start=start, lr=lambda step: cosine_lr(step, steps, 1e-3, 100), checkpoint_every=checkpoint_every)


# ----------------------------------------------------------------------------- 2. judge


def train_judge(workdir: Path, steps: int, batch_size: int, checkpoint_every: int, seed: int, round_trips: bool = True, spec: world.WorldSpec = world.V1) -> None:
    """The judge of generated images: half of every batch is passed through the trained VAE first.

    Every generated image comes out of the VAE decoder. The first decoder kept a cat's ears but not
    its face, and a judge trained on crisp renders only called such cats circles (measured: 73 % shape
    accuracy on round trips), so this judge learns from both the renders and their VAE round trips.
    With `round_trips=False` it is that first recipe, renders only (`--part judge-crisp`): the
    reference that tells whether decoded pictures look like renders.

    World 1: `Judge`, round trips through the first VAE (the shipped judge). World 2: `SlotJudge`
    (what stands at each place, so it reads both objects of a pair), round trips through the VAE
    with its fine-tuned decoder — the one every generated picture goes through — which world 2
    trains before the judge.
    """
    vae = None
    if round_trips:
        vae = load_vae(workdir) if spec.version == 1 else load_vae_decoder(workdir)
    torch.manual_seed(seed)
    judge = toy_model.Judge() if spec.version == 1 else toy_model.SlotJudge()
    opt = torch.optim.AdamW(judge.parameters(), lr=2e-3)
    name = "judge" if round_trips else "judge-crisp"
    path = workdir / ("judge.pt" if round_trips else "judge_crisp.pt")
    start, _ = resume(path, {"model": judge}, opt)
    generator = torch.Generator().manual_seed(seed)

    def train_step(step: int) -> dict[str, str]:
        data = world.batch(batch_size, seed=seed * 104729 + step, spec=spec)
        images = data["images"]
        if round_trips:
            half = batch_size // 2
            images = torch.cat([toy_model.vae_round_trip(vae, images[:half]), images[half:]])  # (B, 3, 64, 64)
        if spec.version == 1:
            logits = judge(augment(images, generator))
            loss = sum(F.cross_entropy(logits[k], data["labels"][k]) for k in logits)
        else:
            loss = slot_loss(judge.slots(augment(images, generator)), data["slots"])
        optimise(opt, loss)
        return {"loss": f"{loss.item():.3f}"}

    resumable_loop(name, path, {"model": judge}, opt, train_step, steps=steps, start=start, lr=lambda step: cosine_lr(step, steps, 2e-3, 50), checkpoint_every=checkpoint_every)


def slot_loss(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    """SlotJudge's loss: is each place occupied (binary), and what is there (ignored where nothing is)."""
    loss = F.binary_cross_entropy_with_logits(logits["present"], labels["present"].float())
    for name in toy_model.SlotJudge.SLOT_HEADS:
        loss = loss + F.cross_entropy(logits[name].flatten(0, 1), labels[name].flatten(), ignore_index=-100)
    return loss


def train_unet(
    workdir: Path,
    steps: int,
    batch_size: int,
    checkpoint_every: int,
    seed: int,
    dataset_size: int,
    stop_at: int | None = None,
    stage: UNetStage = CLEAN,
    spec: world.WorldSpec = world.V1,
) -> None:
    """Train `stage` for `steps` (the learning-rate schedule's length); `stop_at` ends this run early
    at that step — the checkpoint stays resumable, and running again without it continues the schedule."""
    path = stage.checkpoint(workdir)
    state = load_checkpoint(path)
    if state is not None and state["step"] >= steps:  # before the dataset is encoded
        print(f"{stage.name}: done ({state['step']} steps)")
        return

    # 1. the frozen VAE's latents, encoded once, and the scale that brings them to unit variance
    latents, scenes, scaling_factor = dataset(workdir, dataset_size, seed, spec)  # (N, 4, 8, 8), std 1

    # 2. models (from scratch, or the base stage's EMA weights), optimiser, EMA copies
    torch.manual_seed(seed)
    tokenizer, text_encoder = text_model(spec)
    unet = toy_model.make_unet()
    if stage.base is not None:
        base = stage.base.require(workdir)
        unet.load_state_dict(base["ema_unet"])
        text_encoder.load_state_dict(base["ema_text"])
    text_encoder.requires_grad_(stage.train_text)
    params = list(unet.parameters()) + (list(text_encoder.parameters()) if stage.train_text else [])
    opt = torch.optim.AdamW(params, lr=stage.peak_lr, betas=(0.9, 0.99), weight_decay=0.01)
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    modules = {"unet": unet, "text_encoder": text_encoder, "ema_unet": ema_unet, "ema_text": ema_text}
    start, state = resume(path, modules, opt)
    history = state.get("history", [])
    schedule = ddpm_schedule()

    # a fixed probe batch: loss with the true caption vs the empty one, at t in [500, 900)
    probe_rng = torch.Generator().manual_seed(seed + 1)
    probe_idx = torch.randint(len(scenes), (256,), generator=probe_rng)
    probe_t = torch.randint(500, 900, (256,), generator=probe_rng)
    probe_noise = torch.randn((256, 4, 8, 8), generator=probe_rng)
    probe_x = schedule.add_noise(latents[probe_idx], probe_noise, probe_t)
    probe_ids = tokenize(tokenizer, [scenes[i].caption() for i in probe_idx.tolist()])
    probe_empty = tokenize(tokenizer, [""] * 256)

    def caption_gap() -> tuple[float, float]:
        with torch.no_grad():
            losses = []
            for ids in (probe_ids, probe_empty):
                ctx = ema_text(ids).last_hidden_state
                losses.append(F.mse_loss(ema_unet(probe_x, probe_t, ctx).sample, probe_noise).item())
        return losses[0], losses[1]

    # 3. the training loop
    unet.train()
    text_encoder.train(stage.train_text)
    loss = None

    def train_step(step: int) -> dict[str, str]:
        nonlocal loss
        rng = np.random.default_rng(seed * 1_000_003 + step + (0 if stage.base is None else 7_919_000))
        idx = torch.from_numpy(rng.integers(len(scenes), size=batch_size))
        captions = stage.captions(scenes, idx.tolist(), rng, spec.synonyms)
        g = torch.Generator().manual_seed(seed * 7 + step)
        # half the timesteps uniform over [0, 1000), half over the noisy end [400, 1000)
        t = torch.where(
            torch.rand(batch_size, generator=g) < 0.5,
            torch.randint(0, 1000, (batch_size,), generator=g),
            torch.randint(400, 1000, (batch_size,), generator=g),
        )
        with torch.set_grad_enabled(stage.train_text):
            context = text_encoder(tokenize(tokenizer, captions)).last_hidden_state  # (B, 77, 64)
        loss = diffusion_loss(unet, latents[idx], t, context, schedule, g)
        optimise(opt, loss, clip=params)
        ema_update(ema_unet, unet, step)
        ema_update(ema_text, text_encoder, step)
        return {"loss": f"{loss.item():.4f}"}

    def progress_record(done: int) -> dict:
        with_caption, empty = caption_gap()
        history.append({"step": done, "loss": loss.item(), "probe_caption": with_caption, "probe_empty": empty, "time": time.time()})
        tqdm.write(f"step {done}: probe loss with caption {with_caption:.4f}, empty {empty:.4f}, gap {empty - with_caption:.4f}")
        return {"history": history, "scaling_factor": scaling_factor}

    resumable_loop(
        stage.name, path, modules, opt, train_step,
        steps=steps, start=start, lr=lambda step: cosine_lr(step, steps, stage.peak_lr, stage.warmup),
        checkpoint_every=checkpoint_every, stop_at=stop_at, extra=progress_record,
    )  # fmt: skip


# ----------------------------------------------------------------------------- 4. export


def export_judge(workdir: Path, out: Path = toy_model.MODEL_DIR, crisp: bool = False) -> Path:
    """Write the judge into `out`/judge/ (safetensors + its labels); with `crisp`, the renders-only
    reference judge into `out`/judge-crisp/."""
    checkpoint, part, folder = ("judge_crisp.pt", "judge-crisp", toy_model.JUDGE_CRISP) if crisp else ("judge.pt", "judge", "judge")
    state = require_checkpoint(workdir / checkpoint, part)["model"]
    judge = toy_model.SlotJudge() if "heads.present.weight" in state else toy_model.Judge()  # world 2's judge, or world 1's
    judge.load_state_dict(state)
    judge.save(out / folder)
    return out / folder


def export(workdir: Path, out: Path = toy_model.MODEL_DIR, use_ema: bool = True, stage: UNetStage = NOISY, spec: world.WorldSpec = world.V1) -> Path:
    """Write the shipped model (`stage`'s weights): a StableDiffusionPipeline folder plus the judge."""
    from diffusers import StableDiffusionPipeline

    state = stage.require(workdir)
    tokenizer, text_encoder = text_model(spec)
    unet = toy_model.make_unet()
    unet.load_state_dict(state["ema_unet" if use_ema else "unet"])
    text_encoder.load_state_dict(state["ema_text" if use_ema else "text_encoder"])
    vae = load_vae(workdir)  # export-vae-decoder then writes the fine-tuned decoder as vae/
    vae.register_to_config(scaling_factor=state["scaling_factor"])
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=toy_model.make_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    export_judge(workdir, out)
    print(f"exported to {out} ({stage.name} step {state['step']}, {'EMA' if use_ema else 'raw'} weights)")
    return out


def seed_from_shipped(workdir: Path, model_dir: Path = toy_model.MODEL_DIR, unet_step: int = 6000, noisy_step: int = NOISY_STEPS) -> None:
    """Recreate training checkpoints from the shipped model, so a run can continue from it.

    The checkpoints of the original run live in the (git-ignored) workdir of the machine that trained
    it. On another machine this writes the VAE, the judge (and the extras' classifier and depth
    estimator) as finished parts, and the shipped U-Net — the last stage's EMA weights — as both
    U-Net checkpoints: stage 2 (`unet_noisy.pt`) at `noisy_step` and stage 1 (`unet.pt`) at
    `unet_step`, raw and EMA weights alike, with fresh optimisers (AdamW rebuilds its moment estimates
    within a few dozen steps). Stage 1's own weights are not shipped: what continues from the seeded
    `unet.pt` (`--part unet`, `--part depth`) starts from the stage-2 U-Net. The text encoder is the
    same in both stages (stage 2 freezes it). The latents are re-encoded by the shipped VAE from the
    same seeded scenes when a U-Net part first needs them.
    """
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    workdir.mkdir(parents=True, exist_ok=True)
    for stage in (CLEAN, NOISY):
        if stage.checkpoint(workdir).exists():
            raise FileExistsError(f"{stage.checkpoint(workdir)} exists: seeding would overwrite a real checkpoint; use another --workdir")
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    judge = toy_model.Judge.load(model_dir / "judge")
    from sdexplain.toy.extras import DepthEstimator, NoisyLatentClassifier

    extras = toy_model.EXTRAS_DIR
    original = extras / toy_model.VAE_ORIGINAL  # the stage-1 VAE; the shipped vae/ has the fine-tuned decoder
    stage1_vae = AutoencoderKL.from_pretrained(original, local_files_only=True) if original.exists() else pipe.vae
    finished = [("vae", stage1_vae), ("judge", judge)]
    if (extras / "classifier").exists() and (extras / "depth_estimator").exists():
        finished += [("classifier", NoisyLatentClassifier.load(extras / "classifier")), ("depth_estimator", DepthEstimator.load(extras / "depth_estimator"))]
    for name, module in finished:  # finished parts: a later run skips them
        fresh = torch.optim.AdamW(module.parameters()).state_dict()
        save_checkpoint(workdir / f"{name}.pt", {"model": module.state_dict(), "opt": fresh, "step": 10**9})
    if original.exists():  # the VAE file: its decoder is both the weights and their EMA
        fresh = torch.optim.AdamW(decoder_parameters(pipe.vae)).state_dict()
        save_checkpoint(workdir / DECODER_CHECKPOINT, {"model": pipe.vae.state_dict(), "ema": decoder_parts(pipe.vae).state_dict(), "opt": fresh, "step": 10**9})
    unet, text = pipe.unet.state_dict(), pipe.text_encoder.state_dict()
    for stage, step in ((CLEAN, unet_step), (NOISY, noisy_step)):
        params = list(pipe.unet.parameters()) + (list(pipe.text_encoder.parameters()) if stage.train_text else [])
        opt = torch.optim.AdamW(params, lr=stage.peak_lr, betas=(0.9, 0.99), weight_decay=0.01)
        checkpoint = {"unet": unet, "text_encoder": text, "ema_unet": unet, "ema_text": text, "opt": opt.state_dict(), "step": step}
        save_checkpoint(stage.checkpoint(workdir), {**checkpoint, "history": [], "scaling_factor": float(pipe.vae.config.scaling_factor)})
    print(f"seeded {workdir} from {model_dir} (unet at step {unet_step}, unet_noisy at step {noisy_step}; continue with --part unet-noisy --noisy-steps N)")


STAGES_DIR = Path(__file__).resolve().parents[2] / "toy-stages"  # in a clone: committed finished stages of a retrain in progress, toy-stages/v<world>/
STAGES = ("vae", "vae_decoder", "judge", "judge_crisp", "unet", "unet_noisy")  # the parts that can be committed as stages
UNET_STAGE_MODULES = ("ema_unet", "ema_text")  # a U-Net stage keeps its EMA weights only: what export and the next stage read


def save_stages(workdir: Path, folder: Path) -> list[Path]:
    """Every stage in `workdir` → `folder` (run it when they are finished: a stage is committed once)."""
    saved = []
    for name in STAGES:
        if not (workdir / f"{name}.pt").exists():
            continue
        saved.append(save_stage(workdir, name, folder, keep=UNET_STAGE_MODULES if name.startswith("unet") else None))
        print(f"saved {saved[-1]}")
    return saved


def load_stages(folder: Path, workdir: Path, spec: world.WorldSpec) -> None:
    """Recreate the checkpoints of the stages committed in `folder`, so the next stage resumes from them."""
    for name in STAGES:
        path = folder / f"{name}.safetensors"
        if not path.exists():
            continue
        if name == "vae":
            vae = toy_model.make_vae()
            load_stage(path, workdir, {"model": vae}, list(vae.parameters()))
        elif name == "vae_decoder":
            vae = toy_model.make_vae()
            ema = copy.deepcopy(decoder_parts(vae))
            load_stage(path, workdir, {"model": vae, "ema": ema}, decoder_parameters(vae))
        elif name.startswith("unet"):  # the EMA weights stand for the raw ones too, as in seed_from_shipped
            _, text_encoder = text_model(spec)
            unet = toy_model.make_unet()
            stage = CLEAN if name == CLEAN.name else NOISY
            params = list(unet.parameters()) + (list(text_encoder.parameters()) if stage.train_text else [])
            load_stage(path, workdir, {"ema_unet": unet, "ema_text": text_encoder}, params, aliases={"unet": "ema_unet", "text_encoder": "ema_text"})
        else:
            judge = toy_model.Judge() if spec.version == 1 else toy_model.SlotJudge()
            load_stage(path, workdir, {"model": judge}, list(judge.parameters()))
        print(f"{workdir / (name + '.pt')} from {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--part",
        choices=["all", "vae", "vae-decoder", "export-vae-decoder", "judge", "judge-crisp", "unet", "unet-noisy", "export", "export-judge", "classifier", "depth", "export-extras", "seed-from-shipped", "save-stages", "load-stages"],
        default="all",
    )
    parser.add_argument("--world", type=int, choices=sorted(world.WORLDS), default=1, help="1: the shipped model's world; 2: one or two objects, synonyms (the next toy)")
    parser.add_argument("--workdir", type=Path, default=None, help=f"default {DEFAULT_WORKDIR} (world 1), {DEFAULT_WORKDIR}-v2 (world 2)")
    parser.add_argument("--out", type=Path, default=toy_model.MODEL_DIR)
    parser.add_argument("--stages-dir", type=Path, default=STAGES_DIR, help="save-stages / load-stages: the committed stages live in <this>/v<world>/")
    parser.add_argument("--extras-out", type=Path, default=toy_model.EXTRAS_DIR)
    parser.add_argument("--classifier-steps", type=int, default=3000)
    parser.add_argument("--depth-estimator-steps", type=int, default=800)
    parser.add_argument("--depth-unet-steps", type=int, default=DEPTH_UNET_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=1200)
    parser.add_argument("--vae-decoder-steps", type=int, default=2400, help="the decoder's fine-tune (a VAE file)")
    parser.add_argument("--judge-steps", type=int, default=800)
    parser.add_argument("--unet-steps", type=int, default=8000, help="length of the U-Net's learning-rate schedule")
    parser.add_argument("--unet-stop-at", type=int, default=6000, help="end this run at this step (resumable); the shipped model stops here")
    parser.add_argument("--noisy-steps", type=int, default=NOISY_STEPS, help="stage 2: U-Net steps on noisy captions")
    parser.add_argument("--caption-noise", type=float, default=world.CAPTION_NOISE, help="stage 2: chance that a caption word is wrong (each)")
    parser.add_argument("--dataset-size", type=int, default=30000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    spec = world.WORLDS[args.world]
    if args.workdir is None:
        args.workdir = DEFAULT_WORKDIR if spec.version == 1 else DEFAULT_WORKDIR.with_name(f"{DEFAULT_WORKDIR.name}-v{spec.version}")
    if args.threads:
        torch.set_num_threads(args.threads)

    stages = args.stages_dir / f"v{spec.version}"
    if args.part == "save-stages":  # commit these, so the next stage can resume on another machine
        save_stages(args.workdir, stages)
        return
    if args.part == "load-stages":
        load_stages(stages, args.workdir, spec)
        return
    if args.part == "seed-from-shipped":
        seed_from_shipped(args.workdir, args.out, args.unet_stop_at, args.noisy_steps)
        return
    if args.part in ("all", "vae"):
        train_vae(args.workdir, args.vae_steps, 32, args.checkpoint_every, args.seed, spec)
    if args.part in ("all", "vae-decoder"):
        train_vae_decoder(args.workdir, args.vae_decoder_steps, 32, args.checkpoint_every, args.seed, spec=spec)
    if args.part in ("all", "judge"):
        train_judge(args.workdir, args.judge_steps, 64, args.checkpoint_every, args.seed, spec=spec)
    if args.part in ("all", "judge-crisp"):
        train_judge(args.workdir, args.judge_steps, 64, args.checkpoint_every, args.seed, round_trips=False, spec=spec)
        export_judge(args.workdir, args.extras_out, crisp=True)
    if args.part in ("all", "unet"):
        train_unet(args.workdir, args.unet_steps, args.batch_size, args.checkpoint_every, args.seed, args.dataset_size, args.unet_stop_at, spec=spec)
    noisy = replace(NOISY, caption_noise=args.caption_noise)
    if args.part in ("all", "unet-noisy"):
        train_unet(args.workdir, args.noisy_steps, args.batch_size, args.checkpoint_every, args.seed, args.dataset_size, stage=noisy, spec=spec)
    if args.part in ("all", "export"):
        export(args.workdir, args.out, stage=noisy, spec=spec)
    if args.part in ("all", "export-vae-decoder"):  # the fine-tuned VAE as vae/, the first one beside the model
        export_vae_decoder(args.workdir, args.out, args.extras_out)
    if args.part == "export-judge":  # only the judge, beside an existing model
        export_judge(args.workdir, args.out)
    if args.part in ("all", "classifier", "depth", "export-extras"):
        from sdexplain.toy import train_extras  # it builds on this module
    if args.part in ("all", "classifier"):
        train_extras.train_classifier(args.workdir, args.classifier_steps, 256, args.checkpoint_every, args.seed, spec)
    if args.part in ("all", "depth"):
        train_extras.train_depth_estimator(args.workdir, args.depth_estimator_steps, 32, args.checkpoint_every, args.seed, spec)
        train_extras.train_depth_unet(args.workdir, args.depth_unet_steps, args.batch_size, args.checkpoint_every, args.seed, noisy, spec)
    if args.part in ("all", "export-extras"):
        train_extras.export_extras(args.workdir, args.extras_out)


if __name__ == "__main__":
    main()

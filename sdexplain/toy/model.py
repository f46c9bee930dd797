"""The toy model's architecture: Stable Diffusion's own classes, shrunk to fit the toy world.

Same parts as SD v1, in the same diffusers/transformers classes, so every pipeline, hook and
scheduler that works on SD works here unchanged:

    part             class                   SD v1.5                      toy
    VAE              AutoencoderKL           3→4 channels, factor 8       3→4 channels, factor 8
    latent           -                       4×64×64 for 512² (48×)       4×8×8 for 64² (48×)
    text encoder     CLIPTextModel           12 layers, width 768         2 layers, width 64
    tokenizer        CLIPTokenizer           49,408 BPE tokens            our own (sdexplain.toy.tokenizer)
    noise predictor  UNet2DConditionModel    320/640/1280/1280            64/96, cross-attention at 8×8 and 4×4
    scheduler        PNDMScheduler           scaled_linear 0.00085–0.012  identical config

Also here: the judge, a small CNN that reads colour, shape, position and size off a clean 64×64
image — it measures prompt adherence in the evaluation and the notebooks.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from sdexplain.architectures import SD_SCHEDULE
from sdexplain.toy import world

MODEL_DIR = Path(__file__).parent / "model"  # the shipped model, diffusers save_pretrained layout
EXTRAS_DIR = Path(__file__).parent / "model_extras"  # classifier, depth estimator, depth U-Net, the first VAE
JUDGE_CRISP = "judge-crisp"  # EXTRAS_DIR / JUDGE_CRISP: a judge trained on crisp renders only (a reference)
VAE_ORIGINAL = "vae-original"  # EXTRAS_DIR / VAE_ORIGINAL: the VAE before its decoder was fine-tuned (model/vae)

# The toy's documented default CFG scale (SD's is 7.5), measured on the shipped model by
# `sdexplain.toy.evaluate` (README): the lowest scale at which every attribute meets the adherence
# bars; at CFG 1 the model follows its prompt only about as often as its noisy training captions were right.
DEFAULT_GUIDANCE = 3.0

TEXT_WIDTH = 64  # SD v1: 768


def make_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,  # 64 → 32 → 16 → 8: factor 8, as SD
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=world.IMAGE_SIZE,
    )


def vae_round_trip(vae, images: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] -> encoded (posterior mode) and decoded by `vae`, clamped to [-1, 1]:
    what every generated image goes through."""
    with torch.no_grad():
        return vae.decode(vae.encode(images).latent_dist.mode()).sample.clamp(-1, 1)


def make_text_encoder(vocab_size: int, bos_token_id: int, eos_token_id: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_WIDTH,
        intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="quick_gelu",  # as CLIP ViT-L/14
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )
    return CLIPTextModel(config)


def make_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=world.IMAGE_SIZE // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(64, 96),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=2,  # diffusers reads this as the NUMBER of heads (issue #2011)
        norm_num_groups=32,
    )


def make_scheduler() -> PNDMScheduler:
    return PNDMScheduler.from_config(SD_SCHEDULE)  # SD v1's own; from_config keeps clip_sample for derived schedulers


class Judge(nn.Module):
    """Reads colour, shape, position and size off a clean 64×64 image in [-1, 1].

    A plain CNN with one linear head per attribute; the labels are the toy world's.
    """

    HEADS = {
        "shape": world.SHAPES,
        "colour": world.COLOUR_NAMES,
        "position": world.POSITION_NAMES,
        "size": world.SIZE_NAMES,
    }

    def __init__(self, width: int = 32):
        super().__init__()
        layers, channels = [], 3
        for out in (width, 2 * width, 2 * width, 4 * width):  # 64 → 32 → 16 → 8 → 4
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.GroupNorm(8, out), nn.SiLU(), nn.MaxPool2d(2)]
            channels = out
        self.features = nn.Sequential(*layers, nn.Flatten())  # (B, 4w·4·4)
        self.heads = nn.ModuleDict({name: nn.Linear(channels * 16, len(labels)) for name, labels in self.HEADS.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(images)
        return {name: head(features) for name, head in self.heads.items()}  # logits per attribute

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / "judge.safetensors")
        (folder / "judge.json").write_text(json.dumps({"heads": {k: list(v) for k, v in self.HEADS.items()}}, indent=2))

    @classmethod
    def load(cls, folder: Path = MODEL_DIR / "judge") -> "Judge":
        """The judge saved in `folder`: a `SlotJudge` where its judge.json says so, else a `Judge`."""
        folder = Path(folder)
        if json.loads((folder / "judge.json").read_text()).get("kind") == "slots":
            cls = SlotJudge
        judge = cls()
        judge.load_state_dict(load_file(folder / "judge.safetensors"))
        return judge.eval()


class SlotJudge(Judge):
    """World v2's judge: reads what stands at each of the world's five places — is an object there,
    and its shape, colour and size — so it reads both objects of a two-object scene.

    `slots(images)` gives the per-place logits. `forward` keeps `Judge`'s interface for one-object
    pictures: position = the place most likely to hold an object, and the shape, colour and size read
    there, so every reader of the one-object judge works unchanged.
    """

    SLOT_HEADS = {"shape": world.SHAPES, "colour": world.COLOUR_NAMES, "size": world.SIZE_NAMES}
    PLACES = world.POSITION_NAMES

    def __init__(self, width: int = 32):
        super().__init__(width)
        features = self.heads["shape"].in_features
        places = len(self.PLACES)
        self.heads = nn.ModuleDict({"present": nn.Linear(features, places)})
        for name, labels in self.SLOT_HEADS.items():
            self.heads[name] = nn.Linear(features, places * len(labels))

    def slots(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits: present (B, 5), and per place shape (B, 5, 5), colour (B, 5, 6), size (B, 5, 2)."""
        features = self.features(images)
        out = {"present": self.heads["present"](features)}
        for name, labels in self.SLOT_HEADS.items():
            out[name] = self.heads[name](features).view(len(images), len(self.PLACES), len(labels))
        return out

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        slots = self.slots(images)
        place = slots["present"].argmax(dim=1)  # (B,) the most likely place of the one object
        rows = torch.arange(len(images))
        return {"position": slots["present"], **{name: slots[name][rows, place] for name in self.SLOT_HEADS}}

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / "judge.safetensors")
        heads = {"places": list(self.PLACES), **{k: list(v) for k, v in self.SLOT_HEADS.items()}}
        (folder / "judge.json").write_text(json.dumps({"kind": "slots", "heads": heads}, indent=2))

"""What the U-Net receives besides the latent and the timestep — for SD 1.x/2.x and SDXL alike.

SD 1.x/2.x: the text encoder's hidden states, `encoder_hidden_states` (B, 77, D). SDXL adds
`added_cond_kwargs`: the second text encoder's pooled embedding ("text_embeds", (B, P)) and the
micro-conditioning ("time_ids": original_size + crops_coords_top_left + target_size, (B, 6)).
`text_inputs` builds both as the stock pipeline's `__call__` does (its `encode_prompt`, and for SDXL its
`_get_add_time_ids` with original_size = target_size = the image's size, crop (0, 0)), so a hand-written
denoising loop that uses them reproduces the stock pipeline's image (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdexplain.loading import is_xl


@dataclass
class TextInputs:
    """One prompt's conditional and (with guidance) unconditional inputs to the U-Net."""

    cond: torch.Tensor  # (1, 77, D) the prompt's hidden states
    uncond: torch.Tensor | None  # (1, 77, D) the negative (or empty) prompt's; None without guidance
    added_cond: dict | None = None  # SDXL: {"text_embeds": (1, P), "time_ids": (1, 6)}; None on SD 1.x/2.x
    added_uncond: dict | None = None  # SDXL with guidance: the unconditional half's

    def extra(self, n: int = 1) -> dict:
        """U-Net keyword arguments beyond `encoder_hidden_states`, for a batch of n latents.

        With guidance the batch is [uncond × n, cond × n] (the order the pipeline concatenates), without it
        [cond × n]. SD 1.x/2.x: {} (the U-Net takes nothing else). SDXL: {"added_cond_kwargs": …}.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if self.added_cond is None:
            return {}
        halves = [self.added_cond] if self.uncond is None else [self.added_uncond, self.added_cond]
        return {"added_cond_kwargs": {key: torch.cat([h[key].expand(n, -1) for h in halves]) for key in self.added_cond}}

    def hidden(self, n: int = 1) -> torch.Tensor:
        """`encoder_hidden_states` for a batch of n latents, in the order of `extra`: (2n or n, 77, D)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        halves = [self.cond] if self.uncond is None else [self.uncond, self.cond]
        return torch.cat([h.expand(n, -1, -1) for h in halves])


def default_size(pipe) -> tuple[int, int]:
    """(height, width) in pixels the stock pipeline uses when none is given."""
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return side, side


def text_inputs(pipe, prompt: str, negative_prompt: str | None = None, *, guidance: bool = True, height: int | None = None, width: int | None = None) -> TextInputs:
    """The U-Net's text inputs for one prompt, exactly as the stock pipeline builds them.

    `height`/`width` (pixels, default the pipeline's) only matter on SDXL, whose micro-conditioning
    records the image size. Without `guidance` only the conditional half is encoded. `negative_prompt`
    None is the stock pipeline's default: SD 1.x/2.x encode the empty prompt, SDXL (its
    `force_zeros_for_empty_prompt`) gives zeros as the unconditional half.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be one string, got {type(prompt).__name__}")
    device = pipe._execution_device
    with torch.no_grad():
        if not is_xl(pipe):
            cond, uncond = pipe.encode_prompt(prompt, device, 1, guidance, negative_prompt)
            return TextInputs(cond, uncond if guidance else None)
        if pipe.config.get("requires_aesthetics_score", False) or getattr(pipe, "text_encoder", None) is None:
            raise ValueError("text_inputs builds SDXL base's inputs (two text encoders; time ids original_size, crop, target_size); "
                             f"this {type(pipe).__name__} has the refiner's layout, whose time ids carry an aesthetic score")  # fmt: skip
        cond, uncond, pooled, pooled_uncond = pipe.encode_prompt(
            prompt=prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=guidance, negative_prompt=negative_prompt
        )
        default_h, default_w = default_size(pipe)
        size = [height or default_h, width or default_w]
        # diffusers' pipeline_stable_diffusion_xl.py (0.42) __call__ and _get_add_time_ids: original_size = target_size
        # = (height, width), crops_coords_top_left = (0, 0), for both halves
        time_ids = torch.tensor([size + [0, 0] + size], device=device, dtype=cond.dtype)  # (1, 6)
        expected = pipe.unet.config.projection_class_embeddings_input_dim
        if pipe.unet.config.addition_time_embed_dim * time_ids.shape[1] + pooled.shape[-1] != expected:
            raise ValueError(f"this SDXL U-Net expects {expected} added-embedding numbers, not 6 time ids × "
                             f"{pipe.unet.config.addition_time_embed_dim} + a pooled text of {pooled.shape[-1]}")  # fmt: skip
        added = {"text_embeds": pooled, "time_ids": time_ids}
        if not guidance:
            return TextInputs(cond, None, added)
        return TextInputs(cond, uncond, added, {"text_embeds": pooled_uncond, "time_ids": time_ids})


def placeholder_extra(pipe, batch: int, height: int, width: int) -> dict:
    """U-Net keyword arguments beyond the text, with zero text, for timing a U-Net call (values don't change the cost).

    SD 1.x/2.x: {}. SDXL: zero pooled text (B, P) and the micro-conditioning of an image of height × width.
    """
    if not is_xl(pipe):
        return {}
    unet = pipe.unet
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], device=unet.device, dtype=unet.dtype).expand(batch, -1)
    pooled_width = unet.config.projection_class_embeddings_input_dim - unet.config.addition_time_embed_dim * time_ids.shape[1]
    pooled = torch.zeros(batch, pooled_width, device=unet.device, dtype=unet.dtype)
    return {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}

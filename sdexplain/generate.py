"""One call that makes an image and its trace: text-to-image, image-to-image, inpainting, depth.

    images, run = sdexplain.generate(pipe, "a red circle", steps=20, cfg=7.5, seed=0)

The mode follows from the arguments: `image` → image-to-image, `image` + `mask_image` →
inpainting, `image` + `depth_map` → depth-to-image (needs a depth U-Net with 5 input channels),
neither → text-to-image. The pipeline for the mode is `sdexplain.loading.derive(pipe, mode)`: the
same components under diffusers' `XxxPipeline.from_pipe(pipe)` (nothing is reloaded or copied).
Inputs are checked here, at the boundary, with errors that name the value and what is allowed.

`scheduler=` takes a name from `sdexplain.loading.SCHEDULERS`: ddim, euler, euler_a, dpm++2m, pndm,
ddpm, lms (needs scipy), heun.

After `import sdexplain`, `sdexplain.generate` is this module's `generate` function; import the
module's other names with `from sdexplain.generate import ...`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import PIL.Image
import torch

from sdexplain.loading import check_depth_unet, derive
from sdexplain.toy.model import DEFAULT_GUIDANCE
from sdexplain.trace import trace_with_prompts

SD_GUIDANCE = 7.0  # the WebUI's default CFG scale (AUTOMATIC1111 and Forge, txt2img "CFG Scale"); diffusers' pipelines default to 7.5


def default_guidance(model: str) -> float:
    """The CFG scale for `model` (a load_pipeline name): the toy's measured default, else the WebUI's 7."""
    return DEFAULT_GUIDANCE if model == "toy" else SD_GUIDANCE


def pick_mode(image=None, mask_image=None, depth_map=None) -> str:
    """The generation mode the arguments ask for (a key of `sdexplain.loading.TASKS`)."""
    if mask_image is not None and depth_map is not None:
        raise ValueError("pass mask_image (inpainting) or depth_map (depth-to-image), not both")
    if (mask_image is not None or depth_map is not None) and image is None:
        raise ValueError("mask_image and depth_map need an `image` to work on")
    if image is None:
        return "text-to-image"
    if mask_image is not None:
        return "inpainting"
    if depth_map is not None:
        return "depth-to-image"
    return "image-to-image"


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 0 … 2**64 − 1


def check_steps(pipe, steps: int) -> None:
    """Refuse more denoising steps than the schedule can give distinct timesteps for.

    SD's schedule has T = 1000 training timesteps (0 … 999) and its samplers add an offset of 1,
    so N = T would ask for timestep T (an IndexError) and N > T repeats t = 1 (noise comes out).
    """
    _check_int("steps", steps, 1)
    limit = int(pipe.scheduler.config.num_train_timesteps) - 1
    if steps > limit:
        raise ValueError(
            f"steps must be at most {limit}, one fewer than the {limit + 1} timesteps the model was trained on, got {steps}"
        )


def _check_size(name: str, value, factor: int) -> None:
    if value is None:
        return
    _check_int(name, value, factor)
    if value % factor:
        raise ValueError(f"{name}={value} is not a multiple of the VAE factor {factor}; try {value // factor * factor or factor}")


def _rgb(image, name: str = "image") -> PIL.Image.Image:
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"{name} must be a PIL.Image.Image, got {type(image).__name__}")
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "L"):
        return image.convert("RGB")
    raise ValueError(f"{name} has mode {image.mode!r}; allowed: RGB (RGBA and L are converted)")


def _mask(mask_image, size) -> PIL.Image.Image:
    if not isinstance(mask_image, PIL.Image.Image):
        raise TypeError(f"mask_image must be a PIL.Image.Image, got {type(mask_image).__name__}")
    if mask_image.size != size:
        raise ValueError(f"mask_image size {mask_image.size} differs from the image size {size}")
    if mask_image.mode not in ("L", "1", "RGB", "RGBA"):
        raise ValueError(f"mask_image has mode {mask_image.mode!r}; allowed: L, 1, RGB, RGBA (white = repaint)")
    return mask_image.convert("L")


def _depth(depth_map) -> torch.Tensor:
    """(B, H, W) float tensor from a tensor / array / PIL depth map (any size: the pipeline resizes it)."""
    if isinstance(depth_map, PIL.Image.Image):
        depth = torch.from_numpy(np.asarray(depth_map.convert("F"), dtype=np.float32).copy())
    elif isinstance(depth_map, np.ndarray):
        depth = torch.from_numpy(depth_map.astype(np.float32))
    elif isinstance(depth_map, torch.Tensor):
        depth = depth_map.float()
    else:
        raise TypeError(f"depth_map must be a torch.Tensor, numpy array or PIL image, got {type(depth_map).__name__}")
    if depth.dim() == 2:
        depth = depth[None]  # (1, H, W)
    if depth.dim() != 3:
        raise ValueError(f"depth_map must have shape (H, W) or (B, H, W), got {tuple(depth.shape)}")
    if float(depth.max() - depth.min()) == 0:
        raise ValueError("depth_map is constant; it needs some depth variation (it is normalised to [-1, 1])")
    return depth


def _prompts(prompt, what: str) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise TypeError(f"{what} must be a str or a non-empty list of str, got {prompt!r}")


def generate(
    pipe,
    prompt,
    *,
    negative_prompt=None,
    steps: int = 20,
    cfg: float = 7.5,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    scheduler: str | None = None,
    image=None,
    mask_image=None,
    depth_map=None,
    strength: float = 0.8,
    num_images: int = 1,
    **trace_options,
):
    """Generate with `pipe` while tracing; returns (images: list[PIL.Image], run: Trace).

    cfg = 1 turns classifier-free guidance off (the conditional prediction alone); below 1 is refused, since
    diffusers would run the same and not the formula. `trace_options` go to `sdexplain.trace`.
    """
    prompts = _prompts(prompt, "prompt")
    negatives = [""] * len(prompts) if negative_prompt is None else _prompts(negative_prompt, "negative_prompt")
    if len(negatives) == 1 and len(prompts) > 1:
        negatives = negatives * len(prompts)
    if len(negatives) != len(prompts):
        raise ValueError(f"negative_prompt has {len(negatives)} entries but prompt has {len(prompts)}")
    check_steps(pipe, steps)
    _check_int("seed", seed, 0)
    if seed > MAX_SEED:
        raise ValueError(f"seed must be at most 2**64 - 1 = {MAX_SEED} (torch.Generator's range), got {seed}")
    _check_int("num_images", num_images, 1)
    if isinstance(cfg, bool) or not isinstance(cfg, numbers.Real):
        raise TypeError(f"cfg must be a number >= 1 (1 = no guidance), got {cfg!r}")
    if not math.isfinite(cfg):  # inf gives NaN latents (a black image); nan would turn guidance off unnoticed
        raise ValueError(f"cfg must be a finite number >= 1 (1 = no guidance), got {cfg}")
    if cfg < 1:  # diffusers guides only above 1: below it, it runs the conditional prediction alone, not the formula
        raise ValueError(
            f"cfg must be >= 1 (1 = no guidance, WebUI's lowest CFG Scale), got {cfg}: below 1 diffusers runs the "
            "conditional prediction alone, not ε_uncond + cfg·(ε_cond − ε_uncond); guidance.cfg_sweep computes the "
            "formula at any scale, 0 included"
        )
    factor = pipe.vae_scale_factor  # pixels per latent cell along each side
    _check_size("height", height, factor)
    _check_size("width", width, factor)
    mode = pick_mode(image, mask_image, depth_map)

    args = dict(
        prompt=prompts,
        negative_prompt=negatives if negative_prompt is not None else None,
        num_inference_steps=steps,
        guidance_scale=float(cfg),
        num_images_per_prompt=num_images,
        output_type="pil",
    )
    if mode != "text-to-image":
        if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be a number in [0, 1], got {strength!r}")
        if int(steps * strength) < 1:
            raise ValueError(f"steps={steps} × strength={strength} leaves {int(steps * strength)} denoising steps; need at least 1")
        image = _rgb(image)
        if (width or height) and (width, height) != image.size:
            image = image.resize((width or image.size[0], height or image.size[1]), PIL.Image.BICUBIC)
            if mask_image is not None:
                mask_image = _mask(mask_image, mask_image.size).resize(image.size, PIL.Image.NEAREST)
        for name, value in zip(("image width", "image height"), image.size):
            if value % factor:
                raise ValueError(f"{name} {value} is not a multiple of the VAE factor {factor}; pass width/height to resize")
        args.update(image=image, strength=float(strength))
        if mode == "inpainting":
            args.update(mask_image=_mask(mask_image, image.size), height=image.size[1], width=image.size[0])
        if mode == "depth-to-image":
            check_depth_unet(pipe.unet)  # before the depth map is even read
            args.update(depth_map=_depth(depth_map))
    else:
        args.update(height=height, width=width)

    runner = derive(pipe, mode, scheduler)
    device = runner.device
    args["generator"] = torch.Generator(device=device).manual_seed(seed)
    texts = (prompts, negatives if cfg > 1 else None)
    with trace_with_prompts(runner, texts, **trace_options) as run:
        images = runner(**args).images
    return images, run

"""Cross-attention maps: which image regions look at which prompt token, recorded from a real run.

Mechanism (public PyTorch hook points only, the pipeline's own attention stays untouched):
forward hooks on the query and key projections (`attn2.to_q`, `attn2.to_k`, or the fused
`attn2.to_kv` after `pipe.fuse_qkv_projections()`) of every cross-attention layer in the U-Net. When the key arrives we recompute, for the conditional half
of the batch only, softmax(Q·Kᵀ·scale) per head — the same probabilities the pipeline's fused
scaled-dot-product attention uses — average the heads and add the result into a fixed-size
per-resolution buffer on the device. At the end of a step the per-resolution means are resized
to one common resolution and averaged, and that one small map per kept token is what leaves the
device. Nothing grows with the number of layers; memory is planned by `sdexplain.trace`.

`AttentionMaps` (what `run.attention` is):

    per_step[i]        (B, T, Rh, Rw)   maps for token positions 0..T-1 at step `steps[i]`
    padding_per_step[i](B, Rh, Rw)      the mean map of the padding positions (after the end token)
    per_resolution     {(h, w): (B, T, h, w)}   each resolution's own mean over steps, native size
    padding_per_resolution {(h, w): (B, h, w)}
    steps              step indices that have maps (all steps unless the budget thinned them)
    layers             {layer name: (h, w)} resolution of every cross-attention layer
    layer_calls        {layer name: number of maps accumulated} (every layer > 0 after a run)
    tokens             per batch entry, the token strings of positions 0..T-1
    lengths            per batch entry, positions up to and including the first end token

Position 0 is the start token, `lengths[b] - 1` the end token; the real words lie between. The
start, end and padding slots are kept apart from the words so that each map can be labelled by
what its slot holds (in real SD the start slot takes a large share of the attention).

`check_against_processor` checks the recomputation against the layers themselves: the recorded
probabilities, applied to each layer's own values, must give what the layer's attention processor
actually output (the input of its `to_out` projection), in every layer and every U-Net call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention


def cross_attention_layers(unet: torch.nn.Module) -> dict[str, Attention]:
    """Every cross-attention layer (`attn2` in SD's transformer blocks) of a U-Net, by module name."""
    layers = {name: m for name, m in unet.named_modules() if isinstance(m, Attention) and m.is_cross_attention}
    if not layers:
        raise ValueError(f"{type(unet).__name__} has no cross-attention layers to trace")
    return layers


def resolution_of(n_pixels: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of a layer whose queries cover `n_pixels` positions, for a latent of size `latent_hw`.

    Each U-Net level halves the size with a stride-2 convolution, i.e. rounds up.
    """
    h, w = latent_hw
    while h * w > n_pixels:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    if h * w != n_pixels:
        raise ValueError(f"cannot place {n_pixels} query positions on a {latent_hw} latent grid")
    return h, w


def clean_token(token: str) -> str:
    """A token string without CLIP's end-of-word marker."""
    return token.replace("</w>", "")


_NOTHING_RECORDED = (
    "no attention maps were recorded (attention=False, the run did not reach the U-Net, the memory budget "
    "dropped them — see run.reductions — or the U-Net's attention processors bypass the projections the "
    "trace observes — see the trace's warnings)"
)


@dataclass
class AttentionMaps:
    per_step: list = field(default_factory=list)  # [(B, T, Rh, Rw)] one per kept step
    padding_per_step: list = field(default_factory=list)  # [(B, Rh, Rw)]
    per_resolution: dict = field(default_factory=dict)  # {(h, w): (B, T, h, w)}
    padding_per_resolution: dict = field(default_factory=dict)  # {(h, w): (B, h, w)}
    steps: list = field(default_factory=list)  # step indices with maps
    layers: dict = field(default_factory=dict)  # {name: (h, w)}
    layer_calls: dict = field(default_factory=dict)  # {name: int}
    tokens: list = field(default_factory=list)  # [[str] * T] per batch entry
    lengths: list = field(default_factory=list)  # [int] per batch entry
    resolution: tuple = (0, 0)  # (Rh, Rw)

    # -- access -------------------------------------------------------------------------------

    def _maps(self, step: int | None) -> torch.Tensor:
        """(B, T, Rh, Rw) at step `step` (a step index), or the mean over the kept steps for None."""
        if not self.per_step:
            raise ValueError(_NOTHING_RECORDED)
        if step is None:
            return torch.stack(self.per_step).mean(0)
        if step not in self.steps:
            raise ValueError(f"no attention maps for step {step}; steps with maps: {self.steps}")
        return self.per_step[self.steps.index(step)]

    def _check_batch(self, batch_index: int) -> None:
        if not self.per_step:
            raise ValueError(_NOTHING_RECORDED)
        if not 0 <= batch_index < len(self.lengths):
            raise IndexError(f"batch_index {batch_index} out of range 0..{len(self.lengths) - 1}")

    def token_map(self, position: int, batch_index: int = 0, step: int | None = None) -> torch.Tensor:
        """(Rh, Rw) map of one token position (0 = start token)."""
        self._check_batch(batch_index)
        maps = self._maps(step)
        if not 0 <= position < maps.shape[1]:
            raise IndexError(f"token position {position} out of range 0..{maps.shape[1] - 1}")
        return maps[batch_index, position]

    def word_maps(self, batch_index: int = 0, step: int | None = None) -> dict[str, torch.Tensor]:
        """{"position:word": (Rh, Rw) map} for the real words only, in prompt order.

        `step=None` averages over the steps that have maps.
        """
        self._check_batch(batch_index)
        maps = self._maps(step)[batch_index]  # (T, Rh, Rw)
        length, tokens = self.lengths[batch_index], self.tokens[batch_index]
        return {f"{p}:{clean_token(tokens[p])}": maps[p] for p in range(1, length - 1)}

    def start_map(self, batch_index: int = 0, step: int | None = None) -> torch.Tensor:
        """(Rh, Rw) map of the start token."""
        return self.token_map(0, batch_index, step)

    def end_map(self, batch_index: int = 0, step: int | None = None) -> torch.Tensor:
        """(Rh, Rw) map of the (first) end token."""
        self._check_batch(batch_index)
        return self.token_map(self.lengths[batch_index] - 1, batch_index, step)

    def padding_map(self, batch_index: int = 0, step: int | None = None) -> torch.Tensor:
        """(Rh, Rw) mean map of the padding positions after the end token."""
        self._check_batch(batch_index)
        if step is None:
            return torch.stack(self.padding_per_step).mean(0)[batch_index]
        if step not in self.steps:
            raise ValueError(f"no attention maps for step {step}; steps with maps: {self.steps}")
        return self.padding_per_step[self.steps.index(step)][batch_index]

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor held (for byte accounting)."""
        return [
            *self.per_step,
            *self.padding_per_step,
            *self.per_resolution.values(),
            *self.padding_per_resolution.values(),
        ]


class CrossAttentionRecorder:
    """Hooks `to_q`/`to_k` of every cross-attention layer and reduces the maps on the device.

    Driven by the tracer: `begin_step(active)` before each U-Net call, `end_step()` after it
    (returns the step's reduced maps, still on the device), `finish()` for per-resolution means.
    """

    def __init__(self, unet: torch.nn.Module):
        self.layers = cross_attention_layers(unet)
        self.layer_res: dict[str, tuple[int, int]] = {}
        self.layer_calls = {name: 0 for name in self.layers}
        self.handles: list = []
        self._queries: dict[str, torch.Tensor] = {}
        self._sums: dict[tuple[int, int], torch.Tensor] = {}  # {(h, w): (B, 77, h, w)} this step
        self._counts: dict[tuple[int, int], int] = {}
        self._totals: dict[tuple[int, int], torch.Tensor] = {}  # {(h, w): (B, 77, h, w)} over steps
        self._total_steps = 0
        self.active = False
        self.cond_slice = slice(None)
        self.latent_hw = (0, 0)
        self.kept_probs: dict[str, torch.Tensor] | None = None  # {layer: (B, H, N, 77)}, only for check_against_processor
        self.unscaled = False  # False always, except where check_against_processor shows that a wrong scale fails

    def attach(self) -> None:
        for name, attn in self.layers.items():
            self.handles.append(attn.to_q.register_forward_hook(partial(self._on_query, name)))
            self.handles.append(attn.to_k.register_forward_hook(partial(self._on_key, name)))
            if getattr(attn, "to_kv", None) is not None:  # fused projections: key and value from one layer
                self.handles.append(attn.to_kv.register_forward_hook(partial(self._on_key_value, name)))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self._queries.clear()

    def begin_step(self, active: bool, cond_slice: slice, latent_hw: tuple[int, int]) -> None:
        self.active, self.cond_slice, self.latent_hw = active, cond_slice, latent_hw
        self._queries.clear()
        for name in self._sums:
            self._sums[name].zero_()
        self._counts = dict.fromkeys(self._counts, 0)

    def _on_query(self, name, module, inputs, output) -> None:
        if self.active:
            self._queries[name] = output  # (2B|B, N, inner), used when the key arrives

    def _on_key(self, name, module, inputs, output) -> None:
        if not self.active or name not in self._queries:
            return
        attn = self.layers[name]
        q = self._queries.pop(name)[self.cond_slice]  # (B, N, inner)
        k = output[self.cond_slice]  # (B, 77, inner)
        b, n, inner = q.shape
        heads, d = attn.heads, inner // attn.heads
        q = q.reshape(b, n, heads, d).transpose(1, 2)  # (B, H, N, d)
        k = k.reshape(b, k.shape[1], heads, d).transpose(1, 2)  # (B, H, 77, d)
        probs = (q.float() @ k.float().transpose(-1, -2) * (1.0 if self.unscaled else attn.scale)).softmax(-1)  # (B, H, N, 77)
        if self.kept_probs is not None:  # check_against_processor compares them with the layer's own output
            self.kept_probs[name] = probs
        if name not in self.layer_res:
            self.layer_res[name] = resolution_of(n, self.latent_hw)
        h, w = self.layer_res[name]
        maps = probs.mean(1).transpose(1, 2).reshape(b, -1, h, w)  # (B, 77, h, w), heads averaged
        if (h, w) in self._sums:
            self._sums[(h, w)] += maps
        else:
            self._sums[(h, w)] = maps.clone()
        self._counts[(h, w)] = self._counts.get((h, w), 0) + 1
        self.layer_calls[name] += 1

    def _on_key_value(self, name, module, inputs, output) -> None:
        self._on_key(name, module, inputs, output[..., : output.shape[-1] // 2])  # (2B|B, 77, inner): the key half

    def silent_layers(self) -> list[str]:
        """Layers that recorded no map at all, e.g. under a processor that skips the observed projections."""
        return [name for name, calls in self.layer_calls.items() if calls == 0]

    def end_step(self, resolution: tuple[int, int], keep: int, pad_mask: torch.Tensor):
        """This step's maps on the device: ((B, keep, Rh, Rw), (B, Rh, Rw)) or None if inactive.

        pad_mask: (B, 77) float, 1 at padding positions.
        """
        if not self.active or not any(self._counts.values()):
            return None
        resized = []
        for res, total in self._sums.items():
            if not self._counts.get(res):
                continue
            mean = total / self._counts[res]  # (B, 77, h, w), this resolution's layers averaged
            if res in self._totals:
                self._totals[res] += mean
            else:
                self._totals[res] = mean.clone()
            resized.append(_resize(mean, resolution))  # (B, 77, Rh, Rw)
        self._total_steps += 1
        maps = torch.stack(resized).mean(0)  # (B, 77, Rh, Rw), resolutions averaged
        return maps[:, :keep], _padding_mean(maps, pad_mask)

    def finish(self, keep: int, pad_mask: torch.Tensor) -> list[tuple[tuple[int, int], torch.Tensor, torch.Tensor]]:
        """[((h, w), (B, keep, h, w), (B, h, w))] each resolution's mean over the active steps (device)."""
        out = []
        for res, total in sorted(self._totals.items(), reverse=True):
            mean = total / self._total_steps
            out.append((res, mean[:, :keep], _padding_mean(mean, pad_mask)))
        return out


def _resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, T, h, w) → (B, T, *size): bilinear when enlarging, area averaging when shrinking."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if maps.shape[-2] >= size[0] and maps.shape[-1] >= size[1]:
        return F.interpolate(maps, size=size, mode="area")
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def _padding_mean(maps: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
    """(B, 77, h, w), (B, 77) → (B, h, w): mean over each row's padding positions (0 if none)."""
    weights = pad_mask / pad_mask.sum(1, keepdim=True).clamp(min=1)  # (B, 77)
    return torch.einsum("bthw,bt->bhw", maps, weights.to(maps.dtype))


# ----------------------------------------------------------------------------- the independent check


@dataclass
class ProcessorCheck:
    """The recorder's probabilities P against each cross-attention layer's real output O (per layer).

    layers: {name: {"calls": U-Net calls checked, "error": max |P·V − O|, "size": max |O|,
    "head_dim": d, "heads": h}}; `worst` = the largest error / size over all layers.
    """

    layers: dict
    unscaled: bool = False

    @property
    def worst(self) -> float:
        return max(v["error"] / v["size"] for v in self.layers.values())

    @property
    def calls(self) -> int:
        return sum(v["calls"] for v in self.layers.values())


def check_against_processor(pipe, prompt: str, *, steps: int = 2, cfg: float = 7.5, seed: int = 0, height: int | None = None, width: int | None = None, unscaled: bool = False) -> ProcessorCheck:
    """Run `pipe` once and compare, in every cross-attention layer and U-Net call, the weights the
    recorder computes (softmax(Q·Kᵀ/√d) from the layer's `to_q`/`to_k` outputs, heads apart) applied
    to the layer's own values (`to_v`) with what the layer's attention processor really output.

    This is what makes the recorded maps the pipeline's own weights: the processor (diffusers'
    fused scaled-dot-product attention) computes its output without the recorder, so a recorder
    with a wrong scale, a missed mask or a processor that changes the logits shows up as an error.
    The check covers the conditional and the unconditional halves of the CFG batch.
    `unscaled=True` makes the recorder leave out the 1/√d (its logits only, the pipeline is
    untouched): the check then fails, which shows that it can. Hooks are removed even when the run fails.
    """
    from sdexplain.diffusion import check_steps

    check_steps(steps)
    recorder = CrossAttentionRecorder(pipe.unet)
    recorder.kept_probs, recorder.unscaled = {}, bool(unscaled)
    values: dict[str, torch.Tensor] = {}
    layers = {name: {"calls": 0, "error": 0.0, "size": 0.0, "head_dim": 0, "heads": attn.heads} for name, attn in recorder.layers.items()}

    def on_unet(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        recorder.begin_step(True, slice(None), tuple(sample.shape[-2:]))

    def on_value(name, module, inputs, output):
        values[name] = output

    def on_key_value(name, module, inputs, output):
        values[name] = output[..., output.shape[-1] // 2 :]

    def on_output(name, module, args):
        probs, v, out = recorder.kept_probs.pop(name, None), values.pop(name, None), args[0]
        if probs is None or v is None:
            return
        b, heads = probs.shape[0], probs.shape[1]
        v = v.float().reshape(b, v.shape[1], heads, -1).transpose(1, 2)  # (B, H, 77, d)
        mixed = (probs @ v).transpose(1, 2).reshape(b, probs.shape[2], -1)  # (B, N, H·d): heads merged as the processor does
        entry = layers[name]
        entry["calls"] += 1
        entry["error"] = max(entry["error"], float((mixed - out.float()).abs().max()))
        entry["size"] = max(entry["size"], float(out.float().abs().max()))
        entry["head_dim"] = v.shape[-1]

    handles = [pipe.unet.register_forward_pre_hook(on_unet, with_kwargs=True)]
    try:
        recorder.attach()
        for name, attn in recorder.layers.items():
            if getattr(attn, "to_kv", None) is not None:
                handles.append(attn.to_kv.register_forward_hook(partial(on_key_value, name)))
            else:
                handles.append(attn.to_v.register_forward_hook(partial(on_value, name)))
            handles.append(attn.to_out[0].register_forward_pre_hook(partial(on_output, name)))
        device = getattr(pipe, "device", torch.device("cpu"))
        generator = torch.Generator(device="cpu" if device.type == "mps" else device).manual_seed(seed)
        with torch.no_grad():
            pipe(prompt, num_inference_steps=steps, guidance_scale=cfg, height=height, width=width, generator=generator, output_type="latent")
    finally:
        recorder.remove()
        for handle in handles:
            handle.remove()
    silent = [name for name, v in layers.items() if not v["calls"]]
    if silent:
        raise RuntimeError(f"{len(silent)} cross-attention layers were not checked (their processor bypassed to_q/to_k/to_v/to_out): {', '.join(silent)}")
    return ProcessorCheck(layers, bool(unscaled))

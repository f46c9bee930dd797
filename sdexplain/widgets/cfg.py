"""Classifier-free guidance, scrubbed: a precomputed sweep of scales and the four noise predictions at each step."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import ipywidgets as widgets
import numpy as np
import torch

from sdexplain import images
from sdexplain.diffusion import check_steps
from sdexplain.guidance import cfg_sweep, check_scales
from sdexplain.widgets.base import DISPLAY_SIZE, View, batch_entry, encoded, grid, image_widget, mosaic, mosaic_edge, put, titled, zoomed
from sdexplain.widgets.button import unet_progress
from sdexplain.i18n import t


@dataclass
class GuidanceResult:
    """One image of a guidance sweep: the scale, the image, and (optionally) its traced run."""

    scale: float
    image: object  # PIL image / array / tensor
    run: object = None  # a trace with `.steps`, or None
    batch_index: int = 0  # which batch entry of `run` this image is (a batched sweep shares one run)


def guidance_results(results) -> list[GuidanceResult]:
    """Normalise a guidance sweep to a list of ``GuidanceResult`` sorted by scale.

    Accepts: [(scale, image, run)] or [(scale, image, run, batch_index)]; {scale: (image, run)},
    {scale: (image, run, batch_index)} or {scale: image}; or objects with ``.scale``, ``.image``,
    ``.run`` (and optionally ``.batch_index``) attributes.
    """
    items = list(results.items()) if isinstance(results, Mapping) else list(results)
    out = []
    for item in items:
        if isinstance(item, GuidanceResult):
            out.append(item)
        elif hasattr(item, "scale") and hasattr(item, "image"):
            out.append(GuidanceResult(float(item.scale), item.image, getattr(item, "run", None), int(getattr(item, "batch_index", 0))))
        elif isinstance(results, Mapping):
            scale, value = item
            value = value if isinstance(value, tuple) else (value,)
            out.append(GuidanceResult(float(scale), *value))
        elif isinstance(item, (tuple, list)) and 2 <= len(item) <= 4:
            out.append(GuidanceResult(float(item[0]), *item[1:]))
        else:
            raise TypeError(f"cannot read a guidance result from {type(item).__name__}: give (scale, image, run) tuples")
    if not out:
        raise ValueError("the guidance sweep is empty")
    return sorted(out, key=lambda r: r.scale)


CFG_PANELS = ("unconditional ε̂(x_t, \"\")", "conditional ε̂(x_t, prompt)", "difference cond − uncond (own colour scale)", "guided = uncond + s·(cond − uncond)")


class CfgExplorer(View):
    """Classifier-free guidance, scrubbed: a slider over a precomputed sweep of guidance scales, and a step slider.

    ``scale_slider`` (also ``slider``) picks a scale and shows the image generated with it
    (``image``). ``step_slider`` picks a sampling step of that run and shows the four noise
    predictions there (``panel_images``: unconditional, conditional, their difference, guided)
    as 2×2 channel mosaics in red/blue (white = 0). The two noises and the guided noise share ONE
    colour scale; the difference, many times smaller (on the shared scale a blank white square),
    has its own, and its title says so; the read-out gives both ranges and the norms. Nothing is
    sampled here; the sweep is made beforehand (see ``guidance_results`` for the accepted shapes).
    """

    def __init__(self, results, step: int = 0, display: int = DISPLAY_SIZE, cmap: str = "RdBu_r"):
        super().__init__()
        self.display = display
        self.cmap = cmap
        self.scale_slider = widgets.SelectionSlider(options=[("-", 0)], value=0, description=t("guidance s"), continuous_update=True)
        self.slider = self.scale_slider
        self.step_slider = widgets.IntSlider(value=step, min=0, max=max(step, 0), description=t("step"), continuous_update=True)
        self.image = image_widget()
        self.panel_images = [image_widget() for _ in CFG_PANELS]
        self.readout = widgets.HTML()
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.scale_slider, self.step_slider]),
                widgets.HBox([titled(t("image at this scale"), self.image), grid([titled(t(n), p, width=display) for n, p in zip(CFG_PANELS, self.panel_images)], columns=2)]),
                self.readout,
                self.output,
            ]
        )
        self.on_change(self.scale_slider, self.show)
        self.on_change(self.step_slider, self.show)
        self.set_results(results)

    def set_results(self, results) -> None:
        """Use another sweep: pre-encode its images; the sliders keep their positions where they can."""
        self.results = guidance_results(results)
        pictures = [images.to_uint8(r.image) for r in self.results]
        self.image_bytes = [encoded(zoomed(p, self.display), max(p.shape[:2])) for p in pictures]  # (format, bytes)
        self._panel_cache: dict[tuple[int, int], list[tuple[str, bytes]]] = {}  # (result, step) -> 4 × (format, bytes)
        counts = {len(r.run.steps) for r in self.results if r.run is not None}
        self.num_steps = min(counts) if counts else 0
        with self.quietly():
            index = min(self.scale_slider.value, len(self.results) - 1)
            self.scale_slider.options = [(f"{r.scale:g}", i) for i, r in enumerate(self.results)]
            self.scale_slider.value = index
            self.step_slider.max = max(self.num_steps - 1, 0)  # clamps the value if it must
        self.show()

    def noises(self, index: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(uncond, cond, guided) noise (4, h, w) of result ``index`` at ``step``; None without guidance."""
        result = self.results[index]
        if result.run is None:
            return None
        record = result.run.steps[step]
        if record.noise_uncond is None or record.noise_cond is None:
            return None
        b = result.batch_index
        return batch_entry(record.noise_uncond, b).float(), batch_entry(record.noise_cond, b).float(), batch_entry(record.noise_guided, b).float()

    @staticmethod
    def shared_scale(uncond: torch.Tensor, cond: torch.Tensor, guided: torch.Tensor) -> float:
        """The colour scale (±vmax) shared by the unconditional, conditional and guided panels: their largest |value|."""
        return max(float(a.abs().max()) for a in (uncond, cond, guided)) or 1.0

    @staticmethod
    def difference_scale(uncond: torch.Tensor, cond: torch.Tensor) -> float:
        """The difference panel's own colour scale (±vmax): the largest |cond − uncond|."""
        return float((cond - uncond).abs().max()) or 1.0

    def panels(self, index: int, step: int) -> list[np.ndarray] | None:
        """The four panels as uint8 arrays (uncond, cond, cond − uncond, guided); the difference on its own scale."""
        noises = self.noises(index, step)
        if noises is None:
            return None
        uncond, cond, guided = noises
        vmax, dmax = self.shared_scale(uncond, cond, guided), self.difference_scale(uncond, cond)
        return [mosaic(a, limit, self.display, cmap=self.cmap) for a, limit in ((uncond, vmax), (cond, vmax), (cond - uncond, dmax), (guided, vmax))]

    def _encoded_panels(self, index: int, step: int) -> list[tuple[str, bytes]] | None:
        """The four panels' (format, bytes), made on first visit and cached: scrubbing back is free."""
        key = (index, step)
        if key not in self._panel_cache:
            panels = self.panels(index, step)
            if panels is None:
                return None
            edge = mosaic_edge(self.noises(index, step)[0])
            self._panel_cache[key] = [encoded(p, edge) for p in panels]
        return self._panel_cache[key]

    def show(self) -> None:
        index, step = self.scale_slider.value, self.step_slider.value
        result = self.results[index]
        put(self.image, self.image_bytes[index])
        shown = self._encoded_panels(index, step) if self.num_steps else None
        if shown is None:
            blank = ("png", images.encode_png(np.full((8, 8, 3), 235, dtype=np.uint8)))
            for part in self.panel_images:
                put(part, blank)
            if result.run is None:
                why = t("no trace for this image")
            elif result.run.steps[step].noise_cond is None:
                why = t("this step's tensors were not kept (the trace's memory budget; see run.reductions)")
            else:
                why = t("no unconditional pass at this scale (diffusers runs s ≤ 1 without guidance)")
            self.readout.value = f"s = {result.scale:g}: {why}"
            return
        for part, picture in zip(self.panel_images, shown):
            put(part, picture)
        uncond, cond, guided = self.noises(index, step)
        record = result.run.steps[step]
        self.readout.value = t(
            "s = {s} &nbsp; step {k} / {n}, t = {t} &nbsp; ‖cond − uncond‖ = {d:.3f} &nbsp; ‖guided − uncond‖ = {g:.3f} "
            "&nbsp; colour scale ±{scale:.2f}, difference ±{diff:.2f} (white = 0)"
        ).format(s=f"{result.scale:g}", k=step + 1, n=self.num_steps, t=int(record.timestep), d=float((cond - uncond).norm()), g=float((guided - uncond).norm()),
                 scale=self.shared_scale(uncond, cond, guided), diff=self.difference_scale(uncond, cond))


def sweep_sampler(pipe, scales, *, steps: int = 25, seed: int = 0, negative_prompt: str = ""):
    """A ``generate(prompt, progress)`` for ``GenerateButton``: one batched `sdexplain.guidance.cfg_sweep` per click.

    The sweep makes one U-Net call per step (all scales batched), so the progress bar counts steps.
    The result is the `CFGSweep`; pass it through `sdexplain.guidance.sweep_results` for `CfgExplorer`.
    """
    scales = check_scales(scales)
    check_steps(steps)

    def run(prompt: str, progress):
        with unet_progress(pipe, progress, steps):
            return cfg_sweep(pipe, prompt, scales, steps=steps, seed=seed, negative_prompt=negative_prompt, progress=False)

    return run

"""A slider over the resolutions of a `sdexplain.latents.resolution_sweep`: image, latent shape, measured cost."""

from __future__ import annotations

import html
from collections.abc import Sequence

import ipywidgets as widgets

from sdexplain import images
from sdexplain.latents import ResolutionResult
from sdexplain.widgets.base import View
from sdexplain.i18n import t


class ResolutionExplorer(View):
    """A slider over the resolutions of a `resolution_sweep`: the image made there, its latent shape and the measured cost.

    Nothing runs in the callback: every image was generated, and every step timed, by the sweep.
    Images are shown at their true relative size (one zoom for all), so bigger really looks bigger.
    Parts: ``slider``, ``image``, ``readout``, ``output``, ``widget``.
    """

    def __init__(self, results: Sequence[ResolutionResult], display: int = 256):
        super().__init__()
        if not results:
            raise ValueError("ResolutionExplorer needs at least one ResolutionResult")
        self.results = list(results)
        smallest = min(r.geometry.height for r in self.results)
        zoom = images.zoom_for(smallest, display // 2)
        self.frames = [images.encode_png(images.zoom(r.image, zoom)) if r.image is not None else b"" for r in self.results]
        options = [(f"{r.geometry.height}×{r.geometry.width}", i) for i, r in enumerate(self.results)]
        middle = len(options) // 2  # the model's own size, for a ladder around it
        self.slider = widgets.SelectionSlider(options=options, value=middle, description=t("resolution"), continuous_update=True)
        self.image = widgets.Image(format="png")
        self.readout = widgets.HTML()
        self.widget = widgets.VBox([self.slider, self.readout, self.image, self.output])
        self.on_change(self.slider, lambda: self.show(self.slider.value))
        self.show(middle)

    def show(self, index: int) -> None:
        result = self.results[index]
        if self.frames[index]:
            self.image.value = self.frames[index]
        self.readout.value = html.escape(result.label)

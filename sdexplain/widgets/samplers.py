"""Pick a sampler from finished runs: its final image and how its latent's noise level followed the schedule."""

from __future__ import annotations

import html

import ipywidgets as widgets

from sdexplain import images, plots
from sdexplain.schedules import LABELS, SamplerRun, noise_levels_figure
from sdexplain.widgets.base import View
from sdexplain.i18n import t


class SamplerSwitcher(View):
    """A Dropdown over finished sampler runs: the final image and its measured-vs-expected noise plot.

    Everything is rendered when the view is built; choosing a sampler only swaps PNG bytes.
    Parts: ``dropdown``, ``image``, ``plot``, ``readout``, ``output``, ``widget``.
    """

    def __init__(self, results: dict[str, SamplerRun], display: int = 256):
        super().__init__()
        if not results:
            raise ValueError("no sampler results to switch between")
        self.results = results
        self.frames = {}
        for name, result in results.items():
            picture = images.to_uint8(result.image)
            zoomed = images.zoom(picture, images.zoom_for(max(picture.shape[:2]), display))
            self.frames[name] = (images.encode_png(zoomed), images.encode_png(plots.figure_pixels(noise_levels_figure(result.levels, LABELS.get(name, name)))))
        self.dropdown = widgets.Dropdown(options=[(LABELS.get(n, n), n) for n in results], description=t("sampler"))
        self.image = widgets.Image(format="png")
        self.plot = widgets.Image(format="png")
        self.readout = widgets.HTML()
        self.widget = widgets.VBox([self.dropdown, widgets.HBox([self.image, self.plot]), self.readout, self.output])
        self.on_change(self.dropdown, self.show)
        self.show()

    def show(self) -> None:
        name = self.dropdown.value
        result = self.results[name]
        self.image.value, self.plot.value = self.frames[name]
        self.readout.value = t("{scheduler} · {n} U-Net calls · RMS gap between measured and expected noise level: {gap:.3f}").format(
            scheduler=html.escape(result.scheduler), n=len(result.run.steps), gap=result.levels.gap()
        )

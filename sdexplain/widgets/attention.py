"""Cross-attention of a traced run: pick a word and a step, see where the image looked at it."""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np

from sdexplain import images
from sdexplain.widgets.base import DISPLAY_SIZE, View, as_numpy, encoded, image_widget, put, titled, zoomed
from sdexplain.i18n import t


ALL_STEPS = -1  # the step slider's value for "mean over all steps"


class AttentionExplorer(View):
    """Cross-attention of a traced run: which pixels looked at which word, per step or over all steps.

    ``token`` (Dropdown over the prompt's words, plus the start and end tokens) and ``slider``
    (a SelectionSlider: "all steps", then each step) choose a map from ``run.attention``; it is
    enlarged (bilinear) and overlaid on the generated image in ``image``, and shown at its own
    resolution in ``raw_image``. Each map is normalised to its own min…max (where the attention
    goes, not how much; the readout gives the range). All maps are fetched when the view is built.
    """

    def __init__(self, run, image, batch_index: int = 0, alpha: float = 0.6, display: int = DISPLAY_SIZE, cmap: str = "jet"):
        super().__init__()
        self.display, self.alpha, self.cmap = display, alpha, cmap
        self.token = widgets.Dropdown(options=["-"], description=t("word"))
        self.slider = widgets.SelectionSlider(options=[(t("all steps"), ALL_STEPS)], value=ALL_STEPS, description=t("step"), continuous_update=True)
        self.image = image_widget()
        self.raw_image = image_widget()
        self.readout = widgets.HTML()
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.token, self.slider]),
                widgets.HBox([titled(t("attention over the image"), self.image), titled(t("the map at its own resolution"), self.raw_image)]),
                self.readout,
                self.output,
            ]
        )
        self.on_change(self.token, self.show)
        self.on_change(self.slider, self.show)
        self.set_run(run, image, batch_index)

    def set_run(self, run, image, batch_index: int = 0) -> None:
        """Show another run; fetch all of its maps for this batch entry."""
        attention = run.attention
        source = images.to_uint8(image)  # (H, W, 3)
        self.source_edge = max(source.shape[:2])
        self.picture = zoomed(source, self.display)  # (H·z, W·z, 3)
        self.maps: dict[int, dict[str, np.ndarray]] = {}  # step (or ALL_STEPS) -> {token label: (h, w)}
        for step in [ALL_STEPS, *attention.steps]:
            chosen = None if step == ALL_STEPS else step
            maps = {label: as_numpy(m) for label, m in attention.word_maps(batch_index=batch_index, step=chosen).items()}
            maps["<start>"] = as_numpy(attention.start_map(batch_index, chosen))
            maps["<end>"] = as_numpy(attention.end_map(batch_index, chosen))
            self.maps[step] = maps
        timesteps = {i: int(s.timestep) for i, s in enumerate(getattr(run, "steps", []))}
        labels = list(self.maps[ALL_STEPS])
        with self.quietly():
            keep_token = self.token.value if self.token.value in labels else labels[0]
            self.token.options = labels
            self.token.value = keep_token
            options = [(t("all steps"), ALL_STEPS)] + [(f"{s + 1}" + (f" (t={timesteps[s]})" if s in timesteps else ""), s) for s in attention.steps]
            keep_step = self.slider.value if self.slider.value in [v for _, v in options] else ALL_STEPS
            self.slider.options = options
            self.slider.value = keep_step
        self.show()

    def heat(self, token: str, step: int = ALL_STEPS) -> np.ndarray:
        """The raw map (h, w) of ``token`` at ``step`` (ALL_STEPS: mean over steps)."""
        return self.maps[step][token]

    def overlay(self, token: str, step: int = ALL_STEPS) -> np.ndarray:
        """The map over the (enlarged) image -> uint8 (H, W, 3): what ``image`` shows."""
        return images.overlay_heatmap(self.picture, self.heat(token, step), alpha=self.alpha, cmap=self.cmap)

    def show(self) -> None:
        token, step = self.token.value, self.slider.value
        heat = self.heat(token, step)
        put(self.image, encoded(self.overlay(token, step), self.source_edge))
        lo, hi = float(heat.min()), float(heat.max())
        raw = images.colormap(heat, lo, hi if hi > lo else lo + 1, self.cmap)
        put(self.raw_image, encoded(zoomed(raw, self.display // 2), max(heat.shape)))
        where = t("mean over all steps") if step == ALL_STEPS else t("step {k}").format(k=step + 1)
        self.readout.value = t("{token} · {where} · map {h}×{w}, attention from {lo:.3f} to {hi:.3f}").format(
            token=html.escape(token), where=where, h=heat.shape[0], w=heat.shape[1], lo=lo, hi=hi
        )

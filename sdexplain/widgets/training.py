"""A live control for notebook 02: "train N more steps", with the loss curve and the predicted noise redrawn.

    view = TrainMore(unet, data, scheduler, losses, probe)   # continue training `unet` where a cell left it
    view                                                      # slider + button + progress bar + two pictures

Each press runs `sdexplain.training.train_noise_predictor` for N more steps on the same `unet` (a new
AdamW optimiser each press, draws seeded by the number of steps done so far, so a rerun repeats),
then redraws: the loss of every step so far, and the probe's true noise next to the U-Net's current
prediction. Training is real work, so it sits behind the button (with a progress bar), never in a
slider callback.

Not here: the training loop itself (`sdexplain.training`), the figures (`sdexplain.plots`).
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as widgets
import numpy as np
import torch

from sdexplain import images, plots
from sdexplain.i18n import t
from sdexplain.training import TrainingData, train_noise_predictor


@dataclass
class Probe:
    """One fixed noisy latent to compare predictions on: x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε at timestep t."""

    x_t: torch.Tensor  # (1, C, h, w)
    t: int
    noise: torch.Tensor  # (1, C, h, w) the true ε
    hidden: torch.Tensor  # (1, 77, D) the caption's text embedding


class TrainMore:
    """Slider (how many steps) + button; `train(n)` is what the button calls, usable without a kernel too."""

    def __init__(self, unet, data: TrainingData, scheduler, losses, probe: Probe, *, batch_size: int = 8, learning_rate: float = 2e-3):
        self.unet, self.data, self.scheduler, self.probe = unet, data, scheduler, probe
        self.losses = [float(x) for x in losses]  # every step's loss so far
        self.batch_size, self.learning_rate = batch_size, learning_rate
        self.steps = widgets.IntSlider(value=100, min=10, max=500, step=10, description=t("steps"))
        self.button = widgets.Button(description=t("Train more"), button_style="primary", icon="play")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="")
        self.status = widgets.HTML()
        self.curve = widgets.Image(format="png")
        self.noise = widgets.Image(format="png")
        self.button.on_click(lambda _: self.train(self.steps.value))
        self.widget = widgets.VBox([widgets.HBox([self.steps, self.button, self.progress]), self.status, widgets.HBox([self.curve, self.noise])])
        self.redraw()

    def probe_error(self) -> tuple[torch.Tensor, float]:
        """The U-Net's current prediction on the probe (1, C, h, w) and its mean squared error against ε."""
        self.unet.eval()
        with torch.no_grad():
            predicted = self.unet(self.probe.x_t.to(self.unet.device, self.unet.dtype), self.probe.t,
                                  encoder_hidden_states=self.probe.hidden.to(self.unet.device, self.unet.dtype)).sample.float().cpu()  # fmt: skip
        return predicted, float(((predicted - self.probe.noise) ** 2).mean())

    def train(self, n: int) -> None:
        """Train `n` more steps, then redraw. Draws are seeded by the steps done so far."""
        self.button.disabled = True
        self.progress.max, self.progress.value = n, 0
        try:
            for record in train_noise_predictor(self.unet, self.data, self.scheduler, steps=n, batch_size=self.batch_size,
                                                learning_rate=self.learning_rate, seed=len(self.losses)):  # fmt: skip
                self.losses.append(record.loss)
                self.progress.value = record.step + 1
        finally:
            self.button.disabled = False
        self.redraw()

    def redraw(self) -> None:
        predicted, mse = self.probe_error()
        self.status.value = t("{n} steps trained; probe at t = {t}: MSE of the predicted noise {mse:.4f}").format(n=len(self.losses), t=self.probe.t, mse=mse)
        self.curve.value = images.encode_png(_render(plots.loss_curve({"fresh U-Net, per step": np.array(self.losses)}, smooth=10, log=True)))
        vmax = float(self.probe.noise.abs().max())
        grid = plots.image_grid([images.latent_channels_grid(p, vmax=vmax) for p in (self.probe.noise[0], predicted[0])],
                                ["true noise ε", f"predicted ε̂ after {len(self.losses)} steps"], cell=2.0)  # fmt: skip
        self.noise.value = images.encode_png(_render(grid))

    def _ipython_display_(self):
        from sdexplain.widgets.static import display_view

        display_view(self.widget, type(self).__name__)


def _render(fig) -> np.ndarray:
    """A matplotlib Figure as an RGB uint8 array (H, W, 3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()

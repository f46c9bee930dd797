"""Sliders over precomputed frames: any list of pictures (``FrameScrubber``) and a traced run's steps (``StepScrubber``)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import ipywidgets as widgets
import torch

from sdexplain import images, plots
from sdexplain.latents import fit_latent_rgb
from sdexplain.widgets.base import DISPLAY_SIZE, View, batch_entry, encoded, image_widget, mosaic, mosaic_edge, play_button, put, titled, zoomed
from sdexplain.i18n import t


class FrameScrubber(View):
    """A slider and a Play button over a precomputed list of images (e.g. one per sampling step).

    ``frames``: anything ``images.to_uint8`` takes, one per position; ``labels``: a caption per frame;
    ``values``: what each position stands for (e.g. the strengths ``0.1 … 1``), shown beside the
    slider instead of the bare frame number. All frames are encoded when set, so moving the slider
    only swaps bytes. Parts: ``slider`` (an IntSlider over frame indices), ``value_label``, ``play``,
    ``image``, ``caption``, ``output``, ``widget``.
    """

    def __init__(self, frames: Sequence, labels: Sequence[str] | None = None, description: str = "frame", interval_ms: int = 300, display: int = DISPLAY_SIZE, values: Sequence | None = None):
        super().__init__()
        self.display = display
        self.image = image_widget()
        self.caption = widgets.HTML()
        self.slider = widgets.IntSlider(value=0, min=0, max=0, description=t(description), continuous_update=True)
        self.value_label = widgets.Label()
        self.play = play_button(self.slider, interval_ms)
        self.widget = widgets.VBox([widgets.HBox([self.play, self.slider, self.value_label]), self.image, self.caption, self.output])
        self.on_change(self.slider, lambda: self.show(self.slider.value))
        self.set_frames(frames, labels, values)

    def set_frames(self, frames: Sequence, labels: Sequence[str] | None = None, values: Sequence | None = None) -> None:
        """Replace the frames (e.g. after a new run); the slider keeps its position where it can.

        ``values`` (one per frame) replace the slider's numeric readout; None keeps the ones set before
        when the number of frames is unchanged, else shows frame numbers.
        """
        if len(frames) == 0:
            raise ValueError("FrameScrubber needs at least one frame")
        if labels is not None and len(labels) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(labels)} labels")
        if values is not None and len(values) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(values)} values")
        if values is None and getattr(self, "values", None) is not None and len(self.values) == len(frames):
            values = self.values
        self.values = [v if isinstance(v, str) else f"{v:g}" if isinstance(v, float) else str(v) for v in values] if values is not None else None
        self.slider.readout = self.values is None  # the label beside the slider reads out the value instead
        self.frames = [images.to_uint8(f) for f in frames]  # each (H, W, 3)
        self.labels = list(labels) if labels is not None else [f"{i + 1} / {len(frames)}" for i in range(len(frames))]
        self.frame_bytes = [encoded(zoomed(f, self.display), max(f.shape[:2])) for f in self.frames]  # (format, bytes)
        with self.quietly():
            self.slider.max = self.play.max = len(frames) - 1  # clamps the value if it must
        self.show(self.slider.value)

    def show(self, index: int) -> None:
        put(self.image, self.frame_bytes[index])
        self.caption.value = html.escape(t(self.labels[index]))  # a caption the catalogue knows (even formatted) in the chosen language
        self.value_label.value = self.values[index] if self.values is not None else ""



class StepScrubber(View):
    """A slider over the sampling steps of a traced run: what the sampler saw and predicted at each step.

    Per step: the latent x_t going into the U-Net (4 channels, and an APPROXIMATE colour preview),
    the noise ε̂ it predicted (guided, 4 channels), and its prediction of the clean image x̂0
    (a real VAE decode). All x̂0 of a run are decoded in ONE batched VAE call when the view is
    built (or ``set_run`` is called); the PNG bytes of every step are made then too, so the slider
    only swaps bytes. Also a readout of the timestep and noise level, and the σ_t curve with the
    sampler's timesteps and a marker at this step's t.

    Parts: ``slider``, ``play``, ``latent_image``, ``preview_image``, ``noise_image``,
    ``x0_image`` (also ``image``), ``curve_image``, ``readout``, ``output``, ``widget``.
    """

    def __init__(self, run, pipe, batch_index: int = 0, display: int = DISPLAY_SIZE, interval_ms: int = 400):
        super().__init__()
        self.display = display
        self.slider = widgets.IntSlider(value=0, min=0, max=0, description=t("step"), continuous_update=True)
        self.play = play_button(self.slider, interval_ms)
        self.latent_image = image_widget()
        self.preview_image = image_widget()
        self.noise_image = image_widget()
        self.x0_image = image_widget()
        self.image = self.x0_image
        self.curve_image = image_widget()
        self.readout = widgets.HTML()
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.play, self.slider]),
                self.readout,
                widgets.HBox(
                    [
                        titled(t("latent x_t (4 channels)"), self.latent_image),
                        titled(t("x_t, approximate colours"), self.preview_image),
                        titled(t("predicted noise ε̂ (guided)"), self.noise_image),
                        titled(t("predicted clean image x̂0 (decoded)"), self.x0_image),
                    ]
                ),
                self.curve_image,
                self.output,
            ]
        )
        self.on_change(self.slider, lambda: self.show(self.slider.value))
        self.set_run(run, pipe, batch_index)

    @torch.no_grad()
    def set_run(self, run, pipe=None, batch_index: int = 0) -> None:
        """Show another run (e.g. after a new generation): decode its x̂0s and encode every step's pictures."""
        if pipe is not None:
            self.pipe = pipe
        steps = [s for s in run.steps if s.latent_in is not None and s.x0 is not None]  # a memory budget may thin steps out
        if not steps:
            raise ValueError("the run has no step tensors to scrub (was it traced? see run.reductions)")
        self.steps = steps
        self.run, self.batch_index = run, batch_index
        latents = torch.stack([batch_entry(s.latent_in, batch_index) for s in steps]).float()  # (S, 4, h, w)
        noises = torch.stack([batch_entry(s.noise_guided, batch_index) for s in steps]).float()  # (S, 4, h, w)
        x0 = torch.stack([batch_entry(s.x0, batch_index) for s in steps]).float()  # (S, 4, h, w)
        self.x0_decoded = images.to_uint8(images.vae_decode(self.pipe.vae, x0))  # (S, H, W, 3): one batched decode
        self.latent_vmax = float(latents.abs().max()) or 1.0  # one scale for all steps: watch the latent settle
        self.noise_vmax = float(noises.abs().max()) or 1.0
        projection = fit_latent_rgb(self.pipe.vae)
        self.timesteps = [int(s.timestep) for s in steps]
        self.curve = plots.schedule_curve(self.pipe.scheduler, timesteps=self.timesteps)
        self.frames = []  # per step: {part: (format, bytes)}
        for i in range(len(steps)):
            self.frames.append(
                {
                    "latent": encoded(mosaic(latents[i], self.latent_vmax, self.display), mosaic_edge(latents)),
                    "preview": encoded(zoomed(images.latent_to_rgb(latents[i], projection), self.display), max(latents.shape[-2:])),
                    "noise": encoded(mosaic(noises[i], self.noise_vmax, self.display), mosaic_edge(noises)),
                    "x0": encoded(zoomed(self.x0_decoded[i], self.display), max(self.x0_decoded.shape[1:3])),
                    "curve": ("png", self.curve.frame_png(self.timesteps[i])),
                }
            )
        total = len(run.steps)
        self.readouts = [
            t("step {k} / {n} &nbsp; timestep t = {t} &nbsp; ᾱ_t = {a:.4f} &nbsp; noise level σ_t = √(1−ᾱ_t) = {sigma:.3f}").format(
                k=s.index + 1, n=total, t=int(s.timestep), a=float(s.alpha_bar), sigma=float(s.sigma)
            )
            for s in steps
        ]
        with self.quietly():
            self.slider.max = self.play.max = len(steps) - 1  # clamps the value if it must
        self.show(self.slider.value)

    def show(self, index: int) -> None:
        frame = self.frames[index]
        for part, widget in (("latent", self.latent_image), ("preview", self.preview_image), ("noise", self.noise_image), ("x0", self.x0_image), ("curve", self.curve_image)):
            put(widget, frame[part])
        self.readout.value = self.readouts[index]

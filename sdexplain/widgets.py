"""Sliders over real runs: the interactive views the notebooks show.

Design (capture once, scrub many):
- Slider callbacks never run the U-Net and never decode with the VAE. Everything expensive is
  done once, when a view is built or its input changes (an upload, a new run): VAE encodes,
  batched VAE decodes, and usually the encoded bytes of every frame. A slider then only indexes
  precomputed arrays or does cheap numpy work (the forward process is one multiply-add).
  ``benchmarks/slider_latency.py`` measures it: a few ms at the toy's 64 px, < 35 ms at 512 px.
- Sampling runs behind a button (``GenerateButton``) with a progress bar, never in a slider.
- Each view shows its pictures in ONE ``widgets.Image`` per view, as PNG bytes — exact — or, for
  pictures over 128 px of content (SD's 512² images, its 64×64 latents), JPEG, which is ~10×
  faster to make (no flicker, no matplotlib in callbacks; the ᾱ_t curve is drawn once and its
  marker added with PIL). Small pictures are enlarged with nearest-neighbour so pixels stay crisp.
- Every callback is wrapped: an exception is shown in the view's ``output`` (red traceback) and
  kept in ``view.errors``, never lost in a log.
- Only standard widgets, in ways that work with ipywidgets 7.7 (Colab) and 8 (JupyterLab);
  ``uploaded_files`` reads both shapes of ``FileUpload.value``.

Every view is an object exposing its parts (``.slider``, ``.image``, ``.output`` ...) and the
container to display, ``.widget``; it also displays itself when it is the last line of a cell.
All of them can be driven without a browser: set ``view.slider.value`` and read ``view.image.value``.

Not here: plotting for static figures (``sdexplain.plots``), conversions (``sdexplain.images``),
the maths (``sdexplain.diffusion``), capturing a run (``sdexplain.trace``).
"""

from __future__ import annotations

import html
import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps

import ipywidgets as widgets
import numpy as np
import torch

from sdexplain import diffusion, images, plots

log = logging.getLogger(__name__)

DISPLAY_SIZE = 256  # small images are enlarged (nearest neighbour) to at least this many pixels


# --------------------------------------------------------------------------- shared machinery


class View:
    """Base of every view: an ``output`` for errors, a guard for callbacks, and display of ``.widget``."""

    widget: widgets.Widget

    def __init__(self) -> None:
        self.output = widgets.Output()
        self.errors: list[str] = []  # tracebacks of failed callbacks, newest last
        self._showing_error = False
        self._quiet = 0  # > 0 while the view changes its own controls: observers wait, then show() once

    def on_change(self, control: widgets.Widget, callback: Callable[[], None], name: str = "value") -> None:
        """Call ``callback()`` (guarded) when ``control.<name>`` changes, unless the view is updating itself."""

        def changed(change):
            if not self._quiet:
                callback()

        control.observe(self.guard(changed), names=name)

    @contextmanager
    def quietly(self):
        """Change several controls without each change redrawing the view (call ``show`` after)."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def guard(self, callback: Callable) -> Callable:
        """Wrap a callback: an exception is shown in ``self.output`` (and logged), not lost."""

        @wraps(callback)
        def guarded(*args, **kwargs):
            try:
                result = callback(*args, **kwargs)
            except Exception as error:  # shown to the reader below, not swallowed
                self.show_error(error)
                return None
            if self._showing_error:  # a later success clears the stale message
                self.output.outputs = ()
                self._showing_error = False
            return result

        return guarded

    def show_error(self, error: BaseException) -> None:
        """Put a red message with the traceback into ``self.output``."""
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        self.errors.append(text)
        log.error("widget callback failed:\n%s", text)
        page = (
            f'<div style="color:#b00020"><b>{html.escape(type(error).__name__)}: {html.escape(str(error))}</b>'
            f'<pre style="color:#b00020;font-size:11px;white-space:pre-wrap">{html.escape(text)}</pre></div>'
        )
        # Written to `outputs` directly: works without a front end (tests) and in ipywidgets 7 and 8.
        self.output.outputs = self.output.outputs + (
            {"output_type": "display_data", "data": {"text/html": page, "text/plain": text}, "metadata": {}},
        )
        self._showing_error = True

    def _ipython_display_(self):  # a view on the last line of a cell shows itself
        from IPython.display import display

        display(self.widget)


def uploaded_files(value) -> list[tuple[str, bytes]]:
    """The files in a ``FileUpload.value`` as [(name, bytes)], for ipywidgets 7 AND 8.

    ipywidgets 7 (Colab): a dict ``{name: {"metadata": {"name": ...}, "content": bytes}}``.
    ipywidgets 8: a tuple of dicts ``({"name": ..., "content": memoryview, ...}, ...)``.
    """
    if not value:
        return []
    if isinstance(value, Mapping):  # 7.x
        return [(str(entry.get("metadata", {}).get("name", name)), bytes(entry["content"])) for name, entry in value.items()]
    if isinstance(value, (tuple, list)):  # 8.x
        return [(str(entry.get("name", f"upload {i}")), bytes(entry["content"])) for i, entry in enumerate(value)]
    raise TypeError(f"unexpected FileUpload value of type {type(value).__name__}")


def upload_image(value) -> images.Image.Image | None:
    """The last uploaded file of a ``FileUpload.value`` as an RGB PIL image, or None if nothing is uploaded."""
    files = uploaded_files(value)
    if not files:
        return None
    name, data = files[-1]
    try:
        return images.image_from_bytes(data)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from error


def _image_widget(format: str = "png") -> widgets.Image:
    return widgets.Image(format=format)


# Pictures whose content is at most this many pixels per edge (before the display zoom) go out as
# exact PNG; larger ones (SD's 512² images, its 64×64 latents) as JPEG: PNG of a noisy 512² image
# takes ~70 ms to compress, JPEG ~4 ms, and slider callbacks must stay under ~50 ms.
LOSSLESS_UP_TO = 128


def _format_for(source_edge: int) -> str:
    """'png' for pictures of at most LOSSLESS_UP_TO pixels per edge (before zoom), else 'jpeg'."""
    return "png" if source_edge <= LOSSLESS_UP_TO else "jpeg"


def _encoded(array: np.ndarray, source_edge: int) -> tuple[str, bytes]:
    """(format, bytes) of a uint8 picture whose content is ``source_edge`` pixels per edge."""
    fmt = _format_for(source_edge)
    return fmt, images.encode(array, fmt)


def _put(widget: widgets.Image, encoded: tuple[str, bytes]) -> None:
    """Show (format, bytes) in an Image widget (its format changes only when the picture's size class does)."""
    fmt, data = encoded
    if widget.format != fmt:
        widget.format = fmt
    widget.value = data


def _mosaic_edge(latent) -> int:
    """Content size of a channel mosaic (2×2 of h×w plus a gap), for ``_format_for``."""
    return 2 * max(latent.shape[-2:]) + 1


def _titled(title: str, part: widgets.Widget, width: int | None = None) -> widgets.VBox:
    """A bold title above ``part``; with ``width`` (px) the title is kept to that width on one line."""
    style = f' style="display:block;max-width:{width}px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis" title="{html.escape(title)}"' if width else ""
    return widgets.VBox([widgets.HTML(f"<b{style}>{html.escape(title)}</b>"), part])


def _grid(parts: Sequence[widgets.Widget], columns: int) -> widgets.VBox:
    """Parts in rows of ``columns`` (HBox rows in a VBox: works on ipywidgets 7 and 8)."""
    return widgets.VBox([widgets.HBox(list(parts[i : i + columns])) for i in range(0, len(parts), columns)])


def _zoomed(array: np.ndarray, display: int) -> np.ndarray:
    """Enlarge a small uint8 image (H, W, 3) to about ``display`` pixels (integer nearest-neighbour zoom)."""
    return images.zoom(array, images.zoom_for(max(array.shape[:2]), display))


def _as_numpy(tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor, dtype=np.float32)


def _one(tensor, batch_index: int):
    """Element ``batch_index`` of a batched tensor (B, C, h, w) -> (C, h, w); None stays None."""
    if tensor is None:
        return None
    return tensor[batch_index] if tensor.ndim == 4 else tensor


def _mosaic(latent, vmax: float, display: int, cmap: str = "gray") -> np.ndarray:
    """One latent-shaped array (C, h, w) -> uint8 channel mosaic (2×2 for 4 channels) on ±vmax, zoomed to ~display/2 per channel."""
    return images.latent_channels_grid(latent, vmax=vmax, zoom_factor=images.zoom_for(latent.shape[-1], display // 2), cmap=cmap)


# --------------------------------------------------------------------------- FrameScrubber


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
        self.image = _image_widget()
        self.caption = widgets.HTML()
        self.slider = widgets.IntSlider(value=0, min=0, max=0, description=description, continuous_update=True)
        self.value_label = widgets.Label()
        self.play = widgets.Play(value=0, min=0, max=0, interval=interval_ms)
        widgets.jslink((self.play, "value"), (self.slider, "value"))
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
        self.frame_bytes = [_encoded(_zoomed(f, self.display), max(f.shape[:2])) for f in self.frames]  # (format, bytes)
        with self.quietly():
            self.slider.max = self.play.max = len(frames) - 1  # clamps the value if it must
        self.show(self.slider.value)

    def show(self, index: int) -> None:
        _put(self.image, self.frame_bytes[index])
        self.caption.value = html.escape(self.labels[index])
        self.value_label.value = self.values[index] if self.values is not None else ""


# --------------------------------------------------------------------------- forward diffusion


class ForwardDiffusionExplorer(View):
    """Forward diffusion x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε on the reader's image, in pixel AND latent space.

    Build with ``forward_diffusion_explorer(pipe, image)``. One t slider (0 … T−1) drives:
    ``pixel_image`` (x_t of the image itself), ``latent_image`` (z_t = the VAE latent of the image,
    noised with the same schedule, as 4 grey channels on a fixed scale), ``decoded_image`` (the VAE
    decode of z_t, precomputed at ``decode_steps`` values of t when the image changes — the slider
    shows the nearest one), and ``curve_image`` (ᾱ_t and σ_t with a marker at t).

    The image is VAE-encoded ONCE per upload (``encode_count`` counts encodes); the noise ε is
    fixed by ``seed``, so moving t shows the same noise growing. ``upload`` takes a PNG/JPEG.
    ``decode_steps``: how many decodes to precompute per image (one batched VAE call; 0 turns the
    decode view off). 21 is instant for the toy; a full SD VAE on a CPU needs seconds per decode.
    """

    def __init__(self, pipe, image=None, seed: int = 0, t: int = 250, decode_steps: int = 21, display: int = DISPLAY_SIZE, play_step: int = 10):
        super().__init__()
        self.pipe = pipe
        self.seed = seed
        self.display = display
        self.decode_steps = decode_steps
        self.size = images.model_image_size(pipe)  # (H, W)
        self.alphas_cumprod = diffusion.alphas_cumprod(pipe.scheduler)  # (T,)
        self.num_timesteps = len(self.alphas_cumprod)
        self.encode_count = 0
        self.curve = plots.schedule_curve(self.alphas_cumprod)

        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="Your image")
        self.slider = widgets.IntSlider(value=t, min=0, max=self.num_timesteps - 1, description="t", continuous_update=True)
        self.play = widgets.Play(value=t, min=0, max=self.num_timesteps - 1, step=play_step, interval=100)
        widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.pixel_image = _image_widget()
        self.latent_image = _image_widget()
        self.decoded_image = _image_widget()
        self.curve_image = _image_widget()
        self.image = self.pixel_image  # the main view, for generic code
        self.readout = widgets.HTML()
        self.decoded_caption = widgets.HTML()
        self.status = widgets.HTML()
        views = [_titled("pixel space: x_t", self.pixel_image), _titled("latent space: z_t (4 channels)", self.latent_image)]
        if decode_steps:
            views.append(widgets.VBox([_titled("VAE decode of z_t", self.decoded_image), self.decoded_caption]))
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.upload, self.status]),
                widgets.HBox([self.play, self.slider]),
                self.readout,
                widgets.HBox(views),
                self.curve_image,
                self.output,
            ]
        )
        self.on_change(self.slider, lambda: self.show(self.slider.value))
        self.upload.observe(self.guard(self._on_upload), names="value")
        self.set_image(image if image is not None else default_image())

    def _on_upload(self, change) -> None:
        picture = upload_image(change["new"])
        if picture is not None:
            self.set_image(picture)

    @torch.no_grad()
    def set_image(self, image) -> None:
        """Use a new clean image: fit it to the model's size, VAE-encode it once, precompute the decodes."""
        if isinstance(image, (bytes, bytearray, memoryview)):
            image = images.image_from_bytes(image)
        picture = images.fit_to_model(images.to_pil(image), self.size)
        self.x0 = images.pil_to_tensor(picture)  # (1, 3, H, W) in [-1, 1]
        generator = torch.Generator().manual_seed(self.seed)
        self.noise = torch.randn(self.x0.shape, generator=generator)  # (1, 3, H, W)
        self.z0 = images.vae_encode(self.pipe.vae, self.x0)  # (1, 4, h, w)
        self.encode_count += 1
        self.latent_noise = torch.randn(self.z0.shape, generator=generator)  # (1, 4, h, w)
        # One fixed grey scale for every t: the latent's own range, at least ±3 (the noise's).
        self.latent_vmax = max(3.0, float(self.z0.abs().max()))
        if self.decode_steps:
            self.decode_timesteps = np.linspace(0, self.num_timesteps - 1, self.decode_steps).round().astype(int)  # (n,)
            noisy = diffusion.q_sample(
                self.z0.expand(len(self.decode_timesteps), -1, -1, -1),
                torch.as_tensor(self.decode_timesteps),
                self.latent_noise.expand(len(self.decode_timesteps), -1, -1, -1),
                self.alphas_cumprod,
            )  # (n, 4, h, w)
            self.decoded = images.to_uint8(images.vae_decode(self.pipe.vae, noisy))  # (n, H, W, 3)
            self.decoded_bytes = [_encoded(_zoomed(d, self.display), max(self.size)) for d in self.decoded]  # (format, bytes)
        self.status.value = f"image {picture.size[0]}×{picture.size[1]}, latent {tuple(self.z0.shape[1:])}"
        self.show(self.slider.value)

    # The pictures at t, as arrays (what the slider shows; tests compare against these).
    def pixel_at(self, t: int) -> np.ndarray:
        """x_t in pixel space -> uint8 (H, W, 3) (values outside [-1, 1] clipped for display)."""
        return images.to_uint8(diffusion.q_sample(self.x0, int(t), self.noise, self.alphas_cumprod)[0])

    def latent_at(self, t: int) -> torch.Tensor:
        """z_t -> (4, h, w)."""
        return diffusion.q_sample(self.z0, int(t), self.latent_noise, self.alphas_cumprod)[0]

    def decode_index(self, t: int) -> int:
        """Index of the precomputed decode nearest to t."""
        return int(np.abs(self.decode_timesteps - int(t)).argmin())

    def show(self, t: int) -> None:
        t = int(t)
        alpha_bar = float(self.alphas_cumprod[t])
        sigma = (1 - alpha_bar) ** 0.5
        _put(self.pixel_image, _encoded(_zoomed(self.pixel_at(t), self.display), max(self.size)))
        _put(self.latent_image, _encoded(_mosaic(self.latent_at(t), self.latent_vmax, self.display), _mosaic_edge(self.z0)))
        if self.decode_steps:
            k = self.decode_index(t)
            _put(self.decoded_image, self.decoded_bytes[k])
            self.decoded_caption.value = f"<small>precomputed at t = {self.decode_timesteps[k]} (nearest to {t})</small>"
        self.curve_image.value = self.curve.frame_png(t)
        self.readout.value = (
            f"t = {t} &nbsp; ᾱ_t = {alpha_bar:.4f} &nbsp; signal √ᾱ_t = {alpha_bar ** 0.5:.3f} &nbsp; "
            f"noise σ_t = √(1−ᾱ_t) = {sigma:.3f} &nbsp; SNR ᾱ/(1−ᾱ) = {alpha_bar / max(1 - alpha_bar, 1e-12):.3g}"
        )


def default_image(shape: str = "cat", colour: str = "orange", position: str = "center", size: str = "large") -> np.ndarray:
    """A built-in toy-world scene (uint8 (64, 64, 3)), the default picture to noise."""
    from sdexplain.toy import world

    return world.render(world.make_scene(shape, colour, position, size))[0]


def forward_diffusion_explorer(pipe, image=None, seed: int = 0, t: int = 250, decode_steps: int = 21) -> ForwardDiffusionExplorer:
    """A t slider over forward diffusion of ``image`` (default: a toy-world cat) in pixel and latent space."""
    return ForwardDiffusionExplorer(pipe, image=image, seed=seed, t=t, decode_steps=decode_steps)


# --------------------------------------------------------------------------- step scrubber


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
        self.slider = widgets.IntSlider(value=0, min=0, max=0, description="step", continuous_update=True)
        self.play = widgets.Play(value=0, min=0, max=0, interval=interval_ms)
        widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.latent_image = _image_widget()
        self.preview_image = _image_widget()
        self.noise_image = _image_widget()
        self.x0_image = _image_widget()
        self.image = self.x0_image
        self.curve_image = _image_widget()
        self.readout = widgets.HTML()
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.play, self.slider]),
                self.readout,
                widgets.HBox(
                    [
                        _titled("latent x_t (4 channels)", self.latent_image),
                        _titled("x_t, approximate colours", self.preview_image),
                        _titled("predicted noise ε̂ (guided)", self.noise_image),
                        _titled("predicted clean image x̂0 (decoded)", self.x0_image),
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
        latents = torch.stack([_one(s.latent_in, batch_index) for s in steps]).float()  # (S, 4, h, w)
        noises = torch.stack([_one(s.noise_guided, batch_index) for s in steps]).float()  # (S, 4, h, w)
        x0 = torch.stack([_one(s.x0, batch_index) for s in steps]).float()  # (S, 4, h, w)
        self.x0_decoded = images.to_uint8(images.vae_decode(self.pipe.vae, x0))  # (S, H, W, 3): one batched decode
        self.latent_vmax = float(latents.abs().max()) or 1.0  # one scale for all steps: watch the latent settle
        self.noise_vmax = float(noises.abs().max()) or 1.0
        projection = images.fit_latent_rgb(self.pipe.vae)
        self.timesteps = [int(s.timestep) for s in steps]
        self.curve = plots.schedule_curve(self.pipe.scheduler, timesteps=self.timesteps)
        self.frames = []  # per step: {part: (format, bytes)}
        for i in range(len(steps)):
            self.frames.append(
                {
                    "latent": _encoded(_mosaic(latents[i], self.latent_vmax, self.display), _mosaic_edge(latents)),
                    "preview": _encoded(_zoomed(images.latent_to_rgb(latents[i], projection), self.display), max(latents.shape[-2:])),
                    "noise": _encoded(_mosaic(noises[i], self.noise_vmax, self.display), _mosaic_edge(noises)),
                    "x0": _encoded(_zoomed(self.x0_decoded[i], self.display), max(self.x0_decoded.shape[1:3])),
                    "curve": ("png", self.curve.frame_png(self.timesteps[i])),
                }
            )
        total = len(run.steps)
        self.readouts = [
            f"step {s.index + 1} / {total} &nbsp; timestep t = {int(s.timestep)} &nbsp; ᾱ_t = {float(s.alpha_bar):.4f} &nbsp; "
            f"noise level σ_t = √(1−ᾱ_t) = {float(s.sigma):.3f}"
            for s in steps
        ]
        with self.quietly():
            self.slider.max = self.play.max = len(steps) - 1  # clamps the value if it must
        self.show(self.slider.value)

    def show(self, index: int) -> None:
        frame = self.frames[index]
        for part, widget in (("latent", self.latent_image), ("preview", self.preview_image), ("noise", self.noise_image), ("x0", self.x0_image), ("curve", self.curve_image)):
            _put(widget, frame[part])
        self.readout.value = self.readouts[index]


def step_scrubber(run, pipe, batch_index: int = 0) -> StepScrubber:
    """A slider over the steps of a traced run (``run.steps``): latent, predicted noise, decoded x̂0, noise level."""
    return StepScrubber(run, pipe, batch_index=batch_index)


# --------------------------------------------------------------------------- classifier-free guidance


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


CFG_PANELS = ("unconditional ε̂(x_t, \"\")", "conditional ε̂(x_t, prompt)", "difference cond − uncond", "guided = uncond + s·(cond − uncond)")


class CfgExplorer(View):
    """Classifier-free guidance, scrubbed: a slider over a precomputed sweep of guidance scales, and a step slider.

    ``scale_slider`` (also ``slider``) picks a scale and shows the image generated with it
    (``image``). ``step_slider`` picks a sampling step of that run and shows the four noise
    predictions there (``panel_images``: unconditional, conditional, their difference, guided)
    as 2×2 channel mosaics on ONE shared red/blue colour scale (white = 0), so one sees how small
    the difference is and how guidance multiplies it. Nothing is sampled here; the sweep is made
    beforehand (see ``guidance_results`` for the accepted shapes).
    """

    def __init__(self, results, step: int = 0, display: int = DISPLAY_SIZE, cmap: str = "RdBu_r"):
        super().__init__()
        self.display = display
        self.cmap = cmap
        self.scale_slider = widgets.SelectionSlider(options=[("-", 0)], value=0, description="guidance s", continuous_update=True)
        self.slider = self.scale_slider
        self.step_slider = widgets.IntSlider(value=step, min=0, max=max(step, 0), description="step", continuous_update=True)
        self.image = _image_widget()
        self.panel_images = [_image_widget() for _ in CFG_PANELS]
        self.readout = widgets.HTML()
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.scale_slider, self.step_slider]),
                widgets.HBox([_titled("image at this scale", self.image), _grid([_titled(n, p, width=display) for n, p in zip(CFG_PANELS, self.panel_images)], columns=2)]),
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
        self.image_bytes = [_encoded(_zoomed(p, self.display), max(p.shape[:2])) for p in pictures]  # (format, bytes)
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
        return _one(record.noise_uncond, b).float(), _one(record.noise_cond, b).float(), _one(record.noise_guided, b).float()

    @staticmethod
    def shared_scale(uncond: torch.Tensor, cond: torch.Tensor, guided: torch.Tensor) -> float:
        """The one colour scale (±vmax) of the four panels: the largest |value| among them."""
        return max(float(a.abs().max()) for a in (uncond, cond, cond - uncond, guided)) or 1.0

    def panels(self, index: int, step: int) -> list[np.ndarray] | None:
        """The four panels as uint8 arrays (uncond, cond, cond − uncond, guided) on one shared scale."""
        noises = self.noises(index, step)
        if noises is None:
            return None
        uncond, cond, guided = noises
        vmax = self.shared_scale(uncond, cond, guided)
        return [_mosaic(a, vmax, self.display, cmap=self.cmap) for a in (uncond, cond, cond - uncond, guided)]

    def _encoded_panels(self, index: int, step: int) -> list[tuple[str, bytes]] | None:
        """The four panels' (format, bytes), made on first visit and cached: scrubbing back is free."""
        key = (index, step)
        if key not in self._panel_cache:
            panels = self.panels(index, step)
            if panels is None:
                return None
            edge = _mosaic_edge(self.noises(index, step)[0])
            self._panel_cache[key] = [_encoded(p, edge) for p in panels]
        return self._panel_cache[key]

    def show(self) -> None:
        index, step = self.scale_slider.value, self.step_slider.value
        result = self.results[index]
        _put(self.image, self.image_bytes[index])
        encoded = self._encoded_panels(index, step) if self.num_steps else None
        if encoded is None:
            blank = ("png", images.encode_png(np.full((8, 8, 3), 235, dtype=np.uint8)))
            for part in self.panel_images:
                _put(part, blank)
            if result.run is None:
                why = "no trace for this image"
            elif result.run.steps[step].noise_cond is None:
                why = "this step's tensors were not kept (the trace's memory budget; see run.reductions)"
            else:
                why = "no unconditional pass at this scale (diffusers runs s ≤ 1 without guidance)"
            self.readout.value = f"s = {result.scale:g}: {why}"
            return
        for part, picture in zip(self.panel_images, encoded):
            _put(part, picture)
        uncond, cond, guided = self.noises(index, step)
        record = result.run.steps[step]
        self.readout.value = (
            f"s = {result.scale:g} &nbsp; step {step + 1} / {self.num_steps}, t = {int(record.timestep)} &nbsp; "
            f"‖cond − uncond‖ = {float((cond - uncond).norm()):.3f} &nbsp; ‖guided − uncond‖ = {float((guided - uncond).norm()):.3f} "
            f"&nbsp; colour scale ±{self.shared_scale(uncond, cond, guided):.2f} (white = 0)"
        )


def cfg_explorer(results, step: int = 0) -> CfgExplorer:
    """Scrub a precomputed guidance sweep: [(scale, image, run)] or {scale: (image, run)} (see ``guidance_results``)."""
    return CfgExplorer(results, step=step)


# --------------------------------------------------------------------------- cross-attention


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
        self.token = widgets.Dropdown(options=["-"], description="word")
        self.slider = widgets.SelectionSlider(options=[("all steps", ALL_STEPS)], value=ALL_STEPS, description="step", continuous_update=True)
        self.image = _image_widget()
        self.raw_image = _image_widget()
        self.readout = widgets.HTML()
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.token, self.slider]),
                widgets.HBox([_titled("attention over the image", self.image), _titled("the map at its own resolution", self.raw_image)]),
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
        self.picture = _zoomed(source, self.display)  # (H·z, W·z, 3)
        self.maps: dict[int, dict[str, np.ndarray]] = {}  # step (or ALL_STEPS) -> {token label: (h, w)}
        for step in [ALL_STEPS, *attention.steps]:
            chosen = None if step == ALL_STEPS else step
            maps = {label: _as_numpy(m) for label, m in attention.word_maps(batch_index=batch_index, step=chosen).items()}
            maps["<start>"] = _as_numpy(attention.start_map(batch_index, chosen))
            maps["<end>"] = _as_numpy(attention.end_map(batch_index, chosen))
            self.maps[step] = maps
        timesteps = {i: int(s.timestep) for i, s in enumerate(getattr(run, "steps", []))}
        labels = list(self.maps[ALL_STEPS])
        with self.quietly():
            keep_token = self.token.value if self.token.value in labels else labels[0]
            self.token.options = labels
            self.token.value = keep_token
            options = [("all steps", ALL_STEPS)] + [(f"{s + 1}" + (f" (t={timesteps[s]})" if s in timesteps else ""), s) for s in attention.steps]
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
        _put(self.image, _encoded(self.overlay(token, step), self.source_edge))
        lo, hi = float(heat.min()), float(heat.max())
        raw = images.colormap(heat, lo, hi if hi > lo else lo + 1, self.cmap)
        _put(self.raw_image, _encoded(_zoomed(raw, self.display // 2), max(heat.shape)))
        where = "mean over all steps" if step == ALL_STEPS else f"step {step + 1}"
        self.readout.value = f"{html.escape(token)} · {where} · map {heat.shape[0]}×{heat.shape[1]}, attention from {lo:.3f} to {hi:.3f}"


def attention_explorer(run, image, batch_index: int = 0, alpha: float = 0.6) -> AttentionExplorer:
    """Pick a word and a step (or all steps): its cross-attention map over the generated image."""
    return AttentionExplorer(run, image, batch_index=batch_index, alpha=alpha)


# --------------------------------------------------------------------------- generate button


class GenerateButton(View):
    """A prompt box, a button and a progress bar: sampling happens here, on a click, never in a slider.

    ``generate(prompt, progress)`` does the work and returns a result; it may call
    ``progress(done, total)`` as it goes (``diffusers_progress(progress)`` turns that into a
    diffusers ``callback_on_step_end``). Then ``on_done(result)`` refreshes a view, e.g.
    ``lambda result: scrubber.set_run(result[1])``. The last result is kept in ``.result``.
    Parts: ``text``, ``button``, ``progress``, ``status``, ``output``, ``widget``.
    """

    def __init__(self, generate: Callable[[str, Callable[[int, int], None]], object], on_done: Callable[[object], None] | None = None, prompt: str = "", description: str = "Generate", placeholder: str = "a prompt"):
        super().__init__()
        self.generate, self.on_done = generate, on_done
        self.result = None
        self.text = widgets.Text(value=prompt, placeholder=placeholder, description="prompt")
        self.button = widgets.Button(description=description, button_style="primary", icon="play")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="")
        self.status = widgets.HTML()
        self.widget = widgets.VBox([widgets.HBox([self.text, self.button, self.progress]), self.status, self.output])
        self.button.on_click(self.guard(self._on_click))

    def report(self, done: int, total: int) -> None:
        """Progress callback: ``done`` of ``total`` steps finished."""
        self.progress.max = max(int(total), 1)
        self.progress.value = min(int(done), self.progress.max)

    def _on_click(self, _button=None) -> None:
        self.button.disabled = True
        self.progress.value = 0
        self.progress.bar_style = ""
        self.status.value = "sampling…"
        try:
            self.result = self.generate(self.text.value, self.report)
            self.progress.value = self.progress.max
            if self.on_done is not None:
                self.on_done(self.result)
            self.progress.bar_style = "success"
            self.status.value = "done"
        except Exception:
            self.progress.bar_style = "danger"
            self.status.value = "failed: see below"
            raise  # the guard shows it in self.output
        finally:
            self.button.disabled = False

    def click(self) -> None:
        """Run as if the button were clicked (for tests and scripts)."""
        self.button.click()


def diffusers_progress(progress: Callable[[int, int], None]) -> Callable:
    """A diffusers ``callback_on_step_end`` that reports each finished step to ``progress(done, total)``."""

    def callback(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        progress(step + 1, pipe.num_timesteps)
        return callback_kwargs

    return callback


@contextmanager
def unet_progress(pipe, progress: Callable[[int, int], None], total: int):
    """Report ``progress(done, total)`` after every U-Net call of ``pipe`` inside the block.

    A read-only forward hook, removed on exit. ``done`` is capped at ``total`` (PNDM makes one
    extra U-Net call; image-to-image makes fewer, and the bar then ends early — it is set full
    when the button's work returns).
    """
    calls = 0

    def hook(module, args, output):
        nonlocal calls
        calls += 1
        progress(min(calls, total), total)

    handle = pipe.unet.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def sampler(pipe, **options) -> Callable[[str, Callable[[int, int], None]], tuple]:
    """A ``generate(prompt, progress)`` for ``GenerateButton``: ``sdexplain.generate.generate`` with a progress bar.

    ``options`` go to ``generate`` (steps, cfg, seed, negative_prompt, image, strength, ...).
    The result is ``(images, run)``.
    """
    from sdexplain.generate import generate

    steps = int(options.get("steps", 20))

    def run(prompt: str, progress: Callable[[int, int], None]):
        with unet_progress(pipe, progress, steps):
            return generate(pipe, prompt, **options)

    return run


def generate_button(generate: Callable[[str, Callable[[int, int], None]], object], on_done: Callable[[object], None] | None = None, prompt: str = "", description: str = "Generate") -> GenerateButton:
    """A text box + button + progress bar that runs ``generate(prompt, progress)`` then ``on_done(result)``."""
    return GenerateButton(generate, on_done=on_done, prompt=prompt, description=description)

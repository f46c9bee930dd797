"""What every view shares: the ``View`` base (errors shown, callbacks guarded), uploads, and picture helpers.

A view puts its pictures into ``widgets.Image`` parts as encoded bytes: ``encoded(array, edge)``
makes (format, bytes) — exact PNG up to ``LOSSLESS_UP_TO`` pixels of content per edge, JPEG
above — and ``put(image_widget, encoded)`` shows them. ``zoomed`` enlarges small pictures with
nearest-neighbour so pixels stay crisp; ``mosaic`` draws a latent's channels side by side.
"""

from __future__ import annotations

import html
import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from functools import wraps

import ipywidgets as widgets
import numpy as np
import torch

from sdexplain import images
from sdexplain.i18n import t

log = logging.getLogger("sdexplain.widgets")

DISPLAY_SIZE = 256  # small images are enlarged (nearest neighbour) to at least this many pixels


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

    def _ipython_display_(self):  # a view on the last line of a cell shows itself, with its static picture
        from sdexplain.widgets.static import display_view

        display_view(self.widget, type(self).__name__)


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


def play_button(slider: widgets.IntSlider, interval_ms: int, step: int = 1) -> widgets.Play:
    """A Play button linked to ``slider`` in the browser (it moves the slider; the slider's callback draws)."""
    play = widgets.Play(value=slider.value, min=slider.min, max=slider.max, step=step, interval=interval_ms)
    widgets.jslink((play, "value"), (slider, "value"))
    return play


def image_widget(format: str = "png") -> widgets.Image:
    return widgets.Image(format=format)


# Pictures whose content is at most this many pixels per edge (before the display zoom) go out as
# exact PNG; larger ones (SD's 512² images, its 64×64 latents) as JPEG: PNG of a noisy 512² image
# takes ~70 ms to compress, JPEG ~4 ms, and slider callbacks must stay under ~50 ms.
LOSSLESS_UP_TO = 128


def format_for(source_edge: int) -> str:
    """'png' for pictures of at most LOSSLESS_UP_TO pixels per edge (before zoom), else 'jpeg'."""
    return "png" if source_edge <= LOSSLESS_UP_TO else "jpeg"


def encoded(array: np.ndarray, source_edge: int) -> tuple[str, bytes]:
    """(format, bytes) of a uint8 picture whose content is ``source_edge`` pixels per edge."""
    fmt = format_for(source_edge)
    return fmt, images.encode(array, fmt)


def put(widget: widgets.Image, picture: tuple[str, bytes]) -> None:
    """Show (format, bytes) in an Image widget (its format changes only when the picture's size class does)."""
    fmt, data = picture
    if widget.format != fmt:
        widget.format = fmt
    widget.value = data


def mosaic_edge(latent) -> int:
    """Content size of a channel mosaic (2×2 of h×w plus a gap), for ``format_for``."""
    return 2 * max(latent.shape[-2:]) + 1


def titled(title: str, part: widgets.Widget, width: int | None = None) -> widgets.VBox:
    """A bold title above ``part`` (in the chosen language when the catalogue has it); with ``width`` (px)
    the title is kept to that width on one line."""
    title = t(title)
    style = f' style="display:block;max-width:{width}px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis" title="{html.escape(title)}"' if width else ""
    return widgets.VBox([widgets.HTML(f"<b{style}>{html.escape(title)}</b>"), part])


def grid(parts: Sequence[widgets.Widget], columns: int) -> widgets.VBox:
    """Parts in rows of ``columns`` (HBox rows in a VBox: works on ipywidgets 7 and 8)."""
    return widgets.VBox([widgets.HBox(list(parts[i : i + columns])) for i in range(0, len(parts), columns)])


def zoomed(array: np.ndarray, display: int) -> np.ndarray:
    """Enlarge a small uint8 image (H, W, 3) to about ``display`` pixels (integer nearest-neighbour zoom)."""
    return images.zoom(array, images.zoom_for(max(array.shape[:2]), display))


def as_numpy(tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor, dtype=np.float32)


def batch_entry(tensor, batch_index: int):
    """Element ``batch_index`` of a batched tensor (B, C, h, w) -> (C, h, w); None stays None."""
    if tensor is None:
        return None
    return tensor[batch_index] if tensor.ndim == 4 else tensor


def mosaic(latent, vmax: float, display: int, cmap: str = "gray") -> np.ndarray:
    """One latent-shaped array (C, h, w) -> uint8 channel mosaic (2×2 for 4 channels) on ±vmax, zoomed to ~display/2 per channel."""
    return images.latent_channels_grid(latent, vmax=vmax, zoom_factor=images.zoom_for(latent.shape[-1], display // 2), cmap=cmap)


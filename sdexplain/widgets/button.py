"""Sampling behind a button: ``GenerateButton`` (prompt, button, progress bar) and what it runs.

``unet_progress`` reports each U-Net call of a pipeline to a progress callback (a read-only
forward hook); ``sampler(pipe, ...)`` is ``sdexplain.generate.generate`` with that progress bar.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from contextlib import contextmanager

import ipywidgets as widgets

from sdexplain.widgets.base import View
from sdexplain.i18n import t

_clock = time.perf_counter  # the time source of the estimates (a test replaces it)


def _duration(seconds: float) -> str:
    """'about 40 s' / 'about 3 min': an estimate, said as one."""
    return t("{n} s").format(n=f"{seconds:.0f}") if seconds < 90 else t("{n} min").format(n=f"{seconds / 60:.0f}")


class RunProgress:
    """A button, a progress bar and a status line, and the one flow of a run behind a click.

    ``with runner.running(): ...`` wraps the work: the button is disabled, the bar emptied and the
    status says "sampling…" while it runs. On success the bar fills (green); on any error the bar
    turns red and the status names the error, and the exception goes on (a view's guard shows its
    traceback); the button comes back either way, so a failed run never leaves "sampling…" behind.
    ``report(done, total)`` is the progress callback. Parts: ``button``, ``progress``, ``status``.
    """

    def __init__(self, description: str = "Generate"):
        self.button = widgets.Button(description=t(description), button_style="primary", icon="play")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="")
        self.status = widgets.HTML()
        self._started = None  # when the current run began (None between runs)

    def report(self, done: int, total: int) -> None:
        """Progress callback: ``done`` of ``total`` steps finished.

        While running, the status line estimates the time left from the time per step measured so
        far in this run (on a T4 a 30-step CFG sweep of SD takes about a minute; the reader sees how
        long before waiting it out).
        """
        self.progress.max = max(int(total), 1)
        self.progress.value = min(int(done), self.progress.max)
        if self._started is not None and 0 < done < total:
            per_step = (_clock() - self._started) / done
            self.status.value = t("sampling… {done} of {total} steps, about {left} left").format(done=int(done), total=int(total), left=_duration(per_step * (total - done)))

    @contextmanager
    def running(self):
        self.button.disabled = True
        self.progress.value = 0
        self.progress.bar_style = ""
        self.status.value = t("sampling…")
        self._started = _clock()
        try:
            yield
        except Exception as error:
            self.progress.bar_style = "danger"
            self.status.value = f'<span style="color:#b00020"><b>{html.escape(t("failed:"))}</b> {html.escape(type(error).__name__)}: {html.escape(str(error))}</span>'
            raise
        else:
            self.progress.value = self.progress.max
            self.progress.bar_style = "success"
            self.status.value = t("done in {duration}").format(duration=_duration(_clock() - self._started))
        finally:
            self._started = None
            self.button.disabled = False


class GenerateButton(View):
    """A prompt box, a button and a progress bar: sampling happens here, on a click, never in a slider.

    ``generate(prompt, progress)`` does the work and returns a result; it may call
    ``progress(done, total)`` as it goes (``unet_progress`` counts a pipeline's U-Net calls).
    Then ``on_done(result)`` refreshes a view, e.g. ``lambda result: scrubber.set_run(result[1])``.
    The last result is kept in ``.result``.
    Parts: ``text``, ``button``, ``progress``, ``status``, ``output``, ``widget``.
    """

    def __init__(self, generate: Callable[[str, Callable[[int, int], None]], object], on_done: Callable[[object], None] | None = None, prompt: str = "", description: str = "Generate", placeholder: str = "a prompt"):
        super().__init__()
        self.generate, self.on_done = generate, on_done
        self.result = None
        self.runner = RunProgress(description)
        self.button, self.progress, self.status = self.runner.button, self.runner.progress, self.runner.status
        self.text = widgets.Text(value=prompt, placeholder=t(placeholder), description=t("prompt"))
        self.widget = widgets.VBox([widgets.HBox([self.text, self.button, self.progress]), self.status, self.output])
        self.button.on_click(self.guard(self._on_click))

    def report(self, done: int, total: int) -> None:
        """Progress callback: ``done`` of ``total`` steps finished."""
        self.runner.report(done, total)

    def _on_click(self, _button=None) -> None:
        with self.runner.running():  # an error: shown in the status, its traceback in self.output
            self.result = self.generate(self.text.value, self.report)
            if self.on_done is not None:
                self.on_done(self.result)

    def click(self) -> None:
        """Run as if the button were clicked (for tests and scripts)."""
        self.button.click()


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

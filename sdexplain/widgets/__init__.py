"""Sliders over real runs: the interactive views the notebooks show (``from sdexplain import widgets``).

Design (capture once, scrub many):
- Slider callbacks never run the U-Net and never decode with the VAE. Everything expensive is
  done once, when a view is built or its input changes (an upload, a new run): VAE encodes,
  batched VAE decodes, and usually the encoded bytes of every frame. A slider then only indexes
  precomputed arrays or does cheap numpy work (the forward process is one multiply-add).
  ``benchmarks/slider_latency.py`` measures it: a few ms at the toy's 64 px, < 35 ms at 512 px.
- Sampling runs behind a button (``GenerateButton``, ``ControlPanel``) with a progress bar, never
  in a slider; a failed run is named in the status line and the button comes back.
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

Every view lives in this package, one module per lesson view, all on ``base.View``:
  base        View, uploads, picture helpers (encode, zoom, channel mosaics), play_button
  scrubbers   FrameScrubber (any list of pictures), StepScrubber (a traced run's steps)
  forward     ForwardDiffusionExplorer            cfg        CfgExplorer, sweep_sampler
  attention   AttentionExplorer                   button     GenerateButton, unet_progress, sampler
  tokens      TokenInspector                      resolution ResolutionExplorer
  samplers    SamplerSwitcher                     panel      ControlPanel (the WebUI's knobs)
  training    TrainMore, Probe (notebook 02: train N more steps, loss and predicted noise redrawn)
  static      what a view leaves in a saved notebook: a picture of its state (``snapshot``) beside
              the live widget, and ``show(*parts)`` for raw ipywidgets (an upload box, an Image)
The lesson modules (``sdexplain.tokens``, ``latents``, ``schedules``, ``guidance`` …) compute the
data these views show; a view imports them, never the other way round.

Not here: plotting for static figures (``sdexplain.plots``), conversions (``sdexplain.images``),
the maths (``sdexplain.diffusion``), capturing a run (``sdexplain.trace``).
"""

from sdexplain.widgets.base import DISPLAY_SIZE, View, upload_image, uploaded_files
from sdexplain.widgets.scrubbers import FrameScrubber, StepScrubber
from sdexplain.widgets.forward import ForwardDiffusionExplorer, default_image
from sdexplain.widgets.cfg import CFG_PANELS, CfgExplorer, GuidanceResult, guidance_results, sweep_sampler
from sdexplain.widgets.attention import ALL_STEPS, AttentionExplorer
from sdexplain.widgets.button import GenerateButton, RunProgress, sampler, unet_progress
from sdexplain.widgets.tokens import TokenInspector
from sdexplain.widgets.resolution import ResolutionExplorer
from sdexplain.widgets.samplers import SamplerSwitcher
from sdexplain.widgets.panel import EXPLANATIONS, KNOB_LABELS, ControlPanel
from sdexplain.widgets.training import Probe, TrainMore
from sdexplain.widgets.static import show, snapshot

__all__ = [
    "Probe", "TrainMore",
    "ALL_STEPS", "CFG_PANELS", "DISPLAY_SIZE", "EXPLANATIONS", "KNOB_LABELS",
    "AttentionExplorer", "CfgExplorer", "ControlPanel", "ForwardDiffusionExplorer", "FrameScrubber", "GenerateButton",
    "GuidanceResult", "ResolutionExplorer", "RunProgress", "SamplerSwitcher", "StepScrubber", "TokenInspector", "View",
    "default_image", "guidance_results", "sampler", "show", "snapshot", "sweep_sampler", "unet_progress", "upload_image", "uploaded_files",
]  # fmt: skip

"""sdexplain: watch Stable Diffusion work — load a pipeline, trace a run, plot what happened."""

__version__ = "0.1.0"

from sdexplain.i18n import display_width, pad, say, set_language, t
from sdexplain.quiet import quiet_libraries

with quiet_libraries():  # diffusers' pipeline imports make transformers warn about torchvision
    from sdexplain.loading import load_pipeline
    from sdexplain.trace import trace, Trace
    from sdexplain.generate import default_guidance, generate

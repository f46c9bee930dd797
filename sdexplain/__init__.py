"""sdexplain: watch Stable Diffusion work — load a pipeline, trace a run, plot what happened."""

__version__ = "0.1.0"

from sdexplain.loading import load_pipeline
from sdexplain.trace import trace, Trace
from sdexplain.generate import generate

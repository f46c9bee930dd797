"""sdexplain: watch Stable Diffusion work — load a pipeline, trace a run, plot what happened."""

__version__ = "0.1.0"

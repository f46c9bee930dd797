"""Keep library chatter out of the notebooks: a block where transformers and diffusers stay quiet.

Importing diffusers' pipelines makes transformers warn that torchvision is missing (it falls back
to its PIL image processors, which is what we use), and loading the few-MB toy model draws two
progress bars that finish before they are seen. Inside `quiet_libraries()` both libraries log
errors only and draw no progress bars; their previous settings are restored on exit, so loading a
real multi-GB model elsewhere still shows its progress.
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def quiet_libraries():
    """Errors only, no progress bars, from transformers and diffusers inside the block."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    saved = [(lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libraries]
    for lib in libraries:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, (verbosity, bars) in zip(libraries, saved):
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()

"""Shared fixtures. Nothing here touches the network."""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _offline(tmp_path_factory):
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny_pipe():
    """A tiny randomly initialised StableDiffusionPipeline (fresh per test: tests may change it)."""
    from sdexplain.architectures import build_tiny_pipeline

    return build_tiny_pipeline(seed=0)

import pytest
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

import sdexplain
from sdexplain.quiet import quiet_libraries


def test_quiet_block_silences_and_restores_both_libraries():
    transformers_logging.set_verbosity_info()
    diffusers_logging.enable_progress_bar()
    with quiet_libraries():
        assert transformers_logging.get_verbosity() == transformers_logging.ERROR
        assert diffusers_logging.get_verbosity() == diffusers_logging.ERROR
        assert not diffusers_logging.is_progress_bar_enabled()
        assert not transformers_logging.is_progress_bar_enabled()
    assert transformers_logging.get_verbosity() == transformers_logging.INFO
    assert diffusers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_warning()


def test_settings_are_restored_when_the_block_fails():
    before = diffusers_logging.get_verbosity()
    with pytest.raises(RuntimeError):
        with quiet_libraries():
            raise RuntimeError("boom")
    assert diffusers_logging.get_verbosity() == before and diffusers_logging.is_progress_bar_enabled()


def test_loading_the_toy_prints_nothing(capfd):
    capfd.readouterr()
    sdexplain.load_pipeline("toy")
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)

"""benchmarks/sdxl_memory.py (run by benchmarks/gpu.sh on a GPU) works end to end: here on the tiny SDXL, on CPU."""

import pytest

from benchmarks import sdxl_memory


def test_sdxl_memory_runs_on_the_tiny_layout_and_reports():
    result = sdxl_memory.measure("tiny-sdxl", device="cpu", dtype="float32", size=64, steps=2)
    assert result["same_image"] and result["latent"] == (4, 8, 8)
    assert [r["run"] for r in result["rows"]] == ["stock (all on the device)", "traced (sdexplain.trace, default budget)"]
    assert all(r["peak_allocated_gib"] is None for r in result["rows"])  # no GPU figure is made up on a CPU
    assert result["words"][:1] == ["a"] and "cat" in result["words"]  # named by the prompt's words, not "#1", "#2"
    text = sdxl_memory.report(result)
    assert "| stock (all on the device) | — | — |" in text and "identical to the stock one: True" in text


def test_sdxl_memory_refuses_bad_options():
    with pytest.raises(ValueError, match="unknown model 'sd15'; allowed: sdxl, tiny-sdxl"):
        sdxl_memory.measure("sd15", device="cpu")
    with pytest.raises(ValueError, match="float16 on CPU"):
        sdxl_memory.measure("tiny-sdxl", device="cpu", dtype="float16")

"""Smoke tests of benchmarks/: each `measure` runs on the tiny pipeline at minimal sizes and returns
the documented keys with sane values. No timing is asserted (the machine may be busy)."""

import math
import os

import pytest

from benchmarks import cfg_sweep, common, run_all, scaling


def _positive_time(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_interleaved_alternates_the_order_and_warms_up_first():
    calls = []
    wall, cpu, results = common.interleaved({"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2}, repeats=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then A B, B A, A B
    assert len(wall["a"]) == len(cpu["b"]) == 3 and results == {"a": 1, "b": 2}
    assert common.median([3.0, 1.0, 2.0]) == 2.0
    with pytest.raises(ValueError, match="repeats"):
        common.interleaved({"a": lambda: None}, repeats=0)


def test_options_are_checked_with_clear_errors():
    with pytest.raises(ValueError, match="allowed: tiny, toy, sd15"):
        common.check_options("sd14", "cpu", "float32")
    with pytest.raises(ValueError, match="allowed: cpu, cuda"):
        common.check_options("tiny", "tpu", "float32")
    with pytest.raises(ValueError, match="float16 on CPU"):
        common.check_options("tiny", "cpu", "float16")
    with pytest.raises(SystemExit):
        run_all.main(["--only", "trace,bogus", "--model", "tiny"])


def test_machine_description_names_what_timings_depend_on():
    info = common.describe_machine("cpu", "float32")
    assert {"cpu", "cores", "torch", "diffusers", "device", "dtype", "training job running"} <= set(info)
    assert info["cores"] >= 1 and info["training job running"] in ("yes", "no")


def test_cfg_sweep_measure(tiny_pipe):
    result = cfg_sweep.measure(tiny_pipe, scales=(1.5, 4.0), steps=2, height=32, width=32, repeats=1)
    keys = {"n_scales", "steps", "size", "batched_s", "sequential_s", "speedup", "speedup_cpu_time", "max_abs_diff", "agree", "target", "met"}
    assert keys <= set(result)
    assert result["n_scales"] == 2 and result["size"] == "32x32" and result["target"] == cfg_sweep.TARGET_CPU
    assert _positive_time(result["batched_s"]) and _positive_time(result["sequential_s"]) and result["speedup"] > 0
    assert result["agree"] and 0 <= result["max_abs_diff"] <= result["tolerance"]  # the same images, batched or not
    with pytest.raises(ValueError, match="> 1"):
        cfg_sweep.measure(tiny_pipe, scales=(1.0, 3.0), steps=2)


@pytest.mark.slow
def test_scaling_measure_table_and_plot(tiny_pipe, tmp_path):
    result = scaling.measure(tiny_pipe, sizes=(32, 64), steps=2, steps_list=(2, 3), steps_size=32, repeats=1)
    assert [row["size"] for row in result["by_size"]] == [32, 64] and [row["steps"] for row in result["by_steps"]] == [2, 3]
    for row in result["by_size"] + result["by_steps"]:
        assert _positive_time(row["stock_step_ms"]) and _positive_time(row["stock_s"])
        if result["traced"]:
            assert _positive_time(row["traced_step_ms"]) and row["trace_bytes"] > 0
    if result["traced"]:
        assert result["within_budget"] is True
        assert result["by_size"][1]["trace_bytes"] > result["by_size"][0]["trace_bytes"]  # bigger latents, bigger trace
    assert "32" in scaling.table(result)
    path = scaling.plot(result, tmp_path / "scaling.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="multiple of"):
        scaling.measure(tiny_pipe, sizes=(36,), steps=2, steps_list=(2,), repeats=1)


def test_trace_overhead_measure(tiny_pipe):
    trace_overhead = pytest.importorskip("benchmarks.trace_overhead")
    result = trace_overhead.measure(tiny_pipe, steps=2, height=32, width=32, repeats=1)
    assert {"stock_s", "traced_s", "ratio", "identical", "trace_bytes"} <= set(result)
    assert result["ratio"] > 0 and result["identical"] and result["trace_bytes"] > 0


@pytest.mark.slow
def test_slider_latency_measure(tiny_pipe):
    slider_latency = pytest.importorskip("benchmarks.slider_latency")
    results = slider_latency.measure("tiny", repeats=3, steps=2, pipe=tiny_pipe)
    assert results
    for view in results.values():
        assert {"n", "median_ms", "p95_ms", "max_ms", "build_s", "ok"} <= set(view) and view["median_ms"] > 0


@pytest.mark.slow
def test_run_all_writes_one_markdown_table(tmp_path):
    out = tmp_path / "results.md"
    assert run_all.main(["--model", "tiny", "--only", "cfg", "--size", "32", "--steps", "2", "--repeats", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| benchmark | what is compared | measured | target | met? |" in text
    assert "| CFG sweep |" in text and "not run (--only)" in text and "Machine: cpu" in text


@pytest.mark.slow
def test_trace_profile_times_every_variant_and_images_stay_identical(tiny_pipe):
    from benchmarks import trace_profile

    result = trace_profile.measure(tiny_pipe, size=64, steps=2, repeats=1, preview_every=1)
    assert list(result) == ["stock", "steps only", "+ attention", "+ previews", "everything"]
    assert result["stock"]["ratio"] == 1.0
    for name, r in result.items():
        assert r["identical"], name  # tracing never changes the image
        assert _positive_time(r["wall_s"]) and r["ratio"] > 0
    assert "everything" in trace_profile.table(result)


@pytest.mark.slow
def test_notebook_memory_dry_run_on_cpu(tmp_path, monkeypatch):
    """gpu.sh --notebooks' machinery on a CPU: a notebook runs on the saved model, the table names it (no memory: no GPU)."""
    from benchmarks import notebook_memory

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("SDEXPLAIN_MODEL", raising=False)
    out = tmp_path / "nb.md"
    assert notebook_memory.main(["--model", "tiny", "--device", "cpu", "--notebooks", "01", "--out", str(out)]) == 0
    row = next(line for line in out.read_text().splitlines() if line.startswith("| 01_forward_diffusion.ipynb"))
    assert row.split("|")[2].strip() == "—" and row.split("|")[-2].strip() == "none"  # no CUDA here; no errors
    assert "SDEXPLAIN_MODEL" not in os.environ  # later notebooks in this session run on the toy again

"""The progress of a button-driven run: a bar, and an estimate of the time left from the measured pace."""

import pytest

from sdexplain.widgets import button
from sdexplain.widgets.button import GenerateButton, RunProgress


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(button, "_clock", lambda: now[0])
    return now


def test_status_estimates_the_time_left_from_the_pace_so_far(clock):
    runner = RunProgress()
    with runner.running():
        assert runner.status.value == "sampling…"
        clock[0] += 6.0  # 3 steps in 6 s: 2 s a step
        runner.report(3, 30)
        assert (runner.progress.value, runner.progress.max) == (3, 30)
        assert runner.status.value == "sampling… 3 of 30 steps, about 54 s left"
        clock[0] += 294.0  # slower from here: 300 s for 10 steps, 30 s a step on average
        runner.report(10, 30)
        assert runner.status.value == "sampling… 10 of 30 steps, about 10 min left"
        clock[0] += 10.0
    assert runner.status.value == "done in 5 min"  # 310 s
    assert runner.progress.bar_style == "success"


def test_a_failed_run_names_the_error_and_keeps_no_estimate(clock):
    runner = RunProgress()
    with pytest.raises(RuntimeError):
        with runner.running():
            runner.report(1, 10)
            raise RuntimeError("out of memory")
    assert "out of memory" in runner.status.value and runner.progress.bar_style == "danger"
    runner.report(1, 10)  # a stray report after the run: no estimate from a finished run
    assert "left" not in runner.status.value


def test_generate_button_shows_the_estimate_while_its_work_runs(clock):
    seen = []

    def work(prompt, progress):
        for step in range(1, 5):
            clock[0] += 0.5
            progress(step, 4)
            seen.append(view.status.value)
        return prompt

    view = GenerateButton(work, prompt="x")
    view.click()
    assert seen[:3] == [f"sampling… {k} of 4 steps, about {0.5 * (4 - k):.0f} s left" for k in (1, 2, 3)]
    assert view.status.value == "done in 2 s" and view.result == "x"

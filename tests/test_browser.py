"""The notebooks in a real browser: JupyterLab + ipywidgets driven end to end by headless Chromium.

For every notebook in notebooks/ (and the harness's own fixtures in tests/browser_fixtures/): open it
in JupyterLab, Run → Run All Cells, wait for the kernel to go idle, then require that every code cell
ran, no cell shows an error output, and no widget is left as "Loading widget..." / "Error displaying
widget". In the notebooks listed in SLIDER_CHECKS, also move a slider with the keyboard and require the
picture beside it to change (its <img> src and its decoded pixels); screenshots before/after go to
artifacts/browser/<notebook>/.

The harness checks itself on fixtures that must be caught: an error output, the cells Run All stopped
before and a widget placeholder (deliberate_error.ipynb); a slider that changes nothing beside one that
does (widgets_smoke.ipynb); and widgets with no front end (JupyterLab's widget manager turned off).

Run: ``pytest -m browser`` (``scripts/ci_browser.sh`` installs Chromium and Playwright first).
Slow machine: ``SDEXPLAIN_BROWSER_SLOW=5`` multiplies every timeout.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from browser_support import (
    REPO,
    JupyterLabServer,
    LabPage,
    NotebookSession,
    artifact_dir,
    chromium_context,
    chromium_path,
    safe_name,
    slow_factor,
)

pytestmark = pytest.mark.browser

NOTEBOOKS = REPO / "notebooks"
FIXTURES = REPO / "tests" / "browser_fixtures"
NOTEBOOK_TIMEOUT = float(os.environ.get("SDEXPLAIN_BROWSER_NOTEBOOK_TIMEOUT", "900"))  # per notebook, seconds (× slow factor); 16 trains 8 adapters: 289–379 s on an idle 2-core machine


@dataclass(frozen=True)
class SliderCheck:
    """In a notebook, move one slider and require the picture in the same cell to change."""

    notebook: str  # the file name the series uses
    glob: str  # also matches a renamed file
    slider: str | None  # regex on the slider's description; None: the first slider with a picture in its cell
    what: str  # for messages
    keys: tuple[str, ...] = ("End",)  # pressed on the focused handle; "Home" is tried if the value did not move


SLIDER_CHECKS = [
    SliderCheck("01_forward_diffusion.ipynb", "*forward*diffusion*.ipynb", r"^t$", "the noise level t"),
    SliderCheck("06_cross_attention.ipynb", "*cross*attention*.ipynb", r"^step$", "the attention map's step"),
    SliderCheck("09_cfg_and_classifier_guidance.ipynb", "*cfg*.ipynb", r"^guidance", "the CFG explorer's guidance scale"),
    SliderCheck("10_image_to_image.ipynb", "*image*to*image*.ipynb", r"strength", "the strength"),
]
# The Chinese edition (notebooks/zh/, same code cells) runs whole under nbval; here two notebooks prove it
# loads, renders and scrubs in the browser too: 01 (its slider keeps the description "t") and 14, the
# control panel, whose labels must render in WebUI's Chinese (ZH_PANEL_LABELS) and whose step scrubber
# ("步") must move the picture.
ZH_CHECKS = {
    "01_forward_diffusion.ipynb": [SLIDER_CHECKS[0]],
    "14_control_panel.ipynb": [SliderCheck("14_control_panel.ipynb", "14_control_panel.ipynb", r"^步$", "the panel's step scrubber")],
}
# The labels WebUI's Chinese interface gives its settings (the panel shows them first, the article's term
# in brackets), its sampler names in the sampler menu, and the Generate button.
ZH_PANEL_LABELS = ("反向提示词", "随机数种子", "迭代步数", "提示词引导系数", "采样方法", "重绘幅度")
ZH_PANEL_OPTIONS = ("Euler a", "DPM++ 2M Karras", "DDIM")
ZH_PANEL_BUTTON = "生成"
FIXTURE_CHECKS = {"widgets_smoke.ipynb": [SliderCheck("widgets_smoke.ipynb", "widgets_smoke.ipynb", r"^noise$", "the fixture's noise slider")]}

_timings: dict[str, dict] = {}


def _series() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))  # not index.ipynb (the landing page, no code)


def _cases():
    """(path in the server's root, slider checks) for the fixture, every notebook present, and missing ones (skipped)."""
    cases = [pytest.param(f"fixtures/{name}", checks, id=f"fixture-{Path(name).stem}") for name, checks in FIXTURE_CHECKS.items()]
    present = _series()
    for path in present:
        checks = [c for c in SLIDER_CHECKS if path.match(c.glob)]
        cases.append(pytest.param(f"notebooks/{path.name}", checks, id=path.stem))
    for name, checks in ZH_CHECKS.items():
        if (NOTEBOOKS / "zh" / name).exists():
            cases.append(pytest.param(f"notebooks/zh/{name}", checks, id=f"zh-{Path(name).stem}"))
    for check in SLIDER_CHECKS:
        if not any(path.match(check.glob) for path in present):
            reason = f"notebooks/{check.notebook} is not written yet: its slider check ({check.what}) is skipped"
            cases.append(pytest.param(f"notebooks/{check.notebook}", [check], id=Path(check.notebook).stem, marks=pytest.mark.skip(reason=reason)))
    return cases


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def lab():
    try:
        import playwright  # noqa: F401
    except ImportError:
        _missing("Python playwright is not installed: .venv/bin/pip install -e '.[browser]'")
    if chromium_path() is None:
        _missing("no Chromium: apt-get install -y chromium (or set SDEXPLAIN_CHROMIUM)")
    folders = {"fixtures": FIXTURES}
    if NOTEBOOKS.is_dir():
        folders["notebooks"] = NOTEBOOKS
    with JupyterLabServer(folders) as server:
        yield server
    _write_summary()


@pytest.fixture(scope="module")
def browser(lab):
    with chromium_context() as context:
        yield context


@pytest.fixture(scope="module")
def _lab_page(lab, browser):
    page = LabPage(browser, lab)
    yield page
    page.close()


@pytest.fixture
def lab_page(_lab_page):
    """The JupyterLab tab, reloaded if an earlier test broke it."""
    if not _lab_page.healthy():
        _lab_page.load()
    return _lab_page


def _missing(message: str):
    if os.environ.get("CI") or os.environ.get("SDEXPLAIN_BROWSER_REQUIRED"):
        pytest.fail(message)  # in CI (and scripts/ci_browser.sh) a missing browser must not pass as "skipped"
    pytest.skip(message)


def _write_summary() -> None:
    if not _timings:
        return
    out = artifact_dir() / "summary.json"
    out.write_text(json.dumps(_timings, indent=1, default=str))


def _run_all(lab_page: LabPage, path: str) -> tuple[NotebookSession, object]:
    session = NotebookSession(lab_page, path, artifact_dir(safe_name(Path(path).stem)))
    started = time.monotonic()
    try:
        session.open()
        opened = time.monotonic()
        session.run_all()
        state = session.wait_until_done(NOTEBOOK_TIMEOUT)
        report = session.check(time.monotonic() - opened, state)
    except BaseException:
        session.screenshot("failure")
        session.close()
        raise
    session.screenshot("after-run-all")
    if report.console_errors:  # kept for reading, not failed on: the browser logs some harmless ones
        (session.artifacts / "console-errors.txt").write_text("\n".join(report.console_errors))
    _timings[path] = {
        "open_s": round(opened - started, 1),
        "run_all_s": round(report.seconds, 1),
        "widget_views": report.widget_views,
        "images": report.images,
        "console_errors": len(report.console_errors),
    }
    if report.windowing_mode != "none":  # the settings file did not take: off-screen cells may be left unrendered
        session.close()
        pytest.fail(f"JupyterLab's notebook windowingMode is {report.windowing_mode!r}, not 'none'")
    return session, report


# --------------------------------------------------------------------------- tests


def test_the_series_exists():
    """The browser suite must not pass on nothing: notebooks/ holds the series."""
    assert _series(), f"no notebooks in {NOTEBOOKS}: the browser test would prove nothing about the series"


@pytest.mark.parametrize(("path", "checks"), _cases())
def test_notebook_runs_in_jupyterlab_and_its_sliders_work(lab_page, path, checks):
    session, report = _run_all(lab_page, path)
    try:
        _assert_no_problems(path, report)
        executed = [c for c in report.cells if c["type"] == "code" and c["executionCount"] is not None]
        assert executed, f"{path}: no code cell ran"
        if path.startswith("fixtures/widgets_smoke"):
            # the fixture prints a warning on stderr: it must be on the page and NOT count as an error
            stderr = [o for c in report.cells if c["type"] == "code" for o in c["outputs"] if o["type"] == "stream" and o["name"] == "stderr"]
            assert stderr and not report.errors
            assert report.widget_views > 0 and report.images == 2
        for check in checks:
            _check_slider(session, path, check)
        if path == "notebooks/zh/14_control_panel.ipynb":
            _check_panel_labels(session, path)
        if path.startswith("fixtures/widgets_smoke"):
            # self-check the other way: a slider that changes nothing must not pass for one that changes the picture
            dead = session.find_slider(r"^dead$")
            moved = session.move_slider(dead, ["End"], "slider-dead", timeout=3)
            assert moved["readout_after"] != moved["readout_before"], moved  # the slider moved...
            assert not moved["changed_images"] and moved["pixels_changed"] == 0, moved  # ...and the picture did not
    except BaseException:
        session.screenshot("failure")
        raise
    finally:
        session.close()


def _assert_no_problems(path: str, report) -> None:
    problems = report.problems()
    assert not problems, f"{path} in JupyterLab:\n\n" + "\n\n".join(problems)


def _check_panel_labels(session: NotebookSession, path: str) -> None:
    """The zh control panel shows WebUI's Chinese labels, its sampler names and a 生成 button, each drawn (not 0 × 0)."""
    texts = session.widget_texts()
    drawn = [w for w in texts if w["width"] > 0 and w["height"] > 0]
    labels = [w["text"] for w in drawn if w["kind"] == "label"]
    missing = [want for want in ZH_PANEL_LABELS if not any(label.startswith(want) for label in labels)]
    assert not missing, f"{path}: panel labels not rendered: {missing}; drawn labels: {labels}"
    options = {w["text"] for w in texts if w["kind"] == "option"}
    assert set(ZH_PANEL_OPTIONS) <= options, f"{path}: sampler menu {sorted(options)} lacks {sorted(set(ZH_PANEL_OPTIONS) - options)}"
    buttons = [w["text"] for w in drawn if w["kind"] == "button"]
    assert ZH_PANEL_BUTTON in buttons, f"{path}: no {ZH_PANEL_BUTTON!r} button among {buttons}"
    _timings.setdefault(path, {})["panel_labels"] = sorted(set(labels))


def _check_slider(session: NotebookSession, path: str, check: SliderCheck) -> None:
    slider = session.find_slider(check.slider)
    name = f"slider-{safe_name(slider['description'] or 'slider')}"
    moved = session.move_slider(slider, list(check.keys), name)
    if moved["readout_after"] == moved["readout_before"] and not moved["changed_images"]:
        moved = session.move_slider(session.sliders()[slider["index"]], ["Home"], name)  # it was at the end already
    summary = (
        f"{path}: moved {check.what} (slider {slider['description']!r}, cell {slider['cell']}) "
        f"{moved['readout_before']!r} -> {moved['readout_after']!r}"
    )
    _timings.setdefault(path, {})["slider"] = (
        f"{summary}: {len(moved['changed_images'])} picture(s) changed src, {moved['pixels_changed']} pixels differ"
    )
    assert moved["readout_after"] != moved["readout_before"], f"{summary}: the slider did not move"
    assert moved["changed_images"], f"{summary}: no <img> in the cell changed its src; see {moved['before']} / {moved['after']}"
    assert moved["pixels_changed"] > 0, f"{summary}: the src changed but the picture looks the same; see {moved['before']} / {moved['after']}"
    text = session.cell_text(slider["cell"])
    assert "Traceback" not in text and "Error displaying widget" not in text, f"{summary}: the cell shows an error:\n{text[-2000:]}"


def test_the_harness_reports_an_error_a_broken_widget_and_the_cells_it_stopped_before(lab_page):
    """Self-check on a notebook that fails on purpose: the harness must catch an error output, the cell
    Run All stopped before, and a widget left as a placeholder; an error in a raises-exception cell is not one."""
    session, report = _run_all(lab_page, "fixtures/deliberate_error.ipynb")
    try:
        problems = report.problems()
        assert [(e["cell"], e["ename"]) for e in report.errors] == [(5, "ValueError")], problems
        assert "deliberate error" in report.errors[0]["evalue"] and "Traceback" in report.errors[0]["traceback"]
        assert [(e["cell"], e["ename"]) for e in report.expected_errors] == [(2, "KeyError")]
        assert report.not_run == [6], report.not_run
        # the view of a model that does not exist is the placeholder a learner would see; the real slider rendered
        assert [(w["cell"], w["text"].split(":")[0]) for w in report.placeholder_widgets] == [(4, "Error displaying widget")], problems
        assert report.widget_views >= 1
        assert not report.dom_tracebacks  # the DOM scan saw both tracebacks and attributed them to the error cells
        assert len(problems) == 3, problems
        # and the assertion the notebook tests make would fail, naming each problem
        with pytest.raises(AssertionError, match=r"(?s)cell 5: ValueError.*not executed.*\[6\].*cell 4: widget not rendered"):
            _assert_no_problems("fixtures/deliberate_error.ipynb", report)
    finally:
        session.close()


def test_the_harness_sees_widgets_without_their_front_end(browser):
    """Self-check: with JupyterLab's widget manager turned off (as when jupyterlab_widgets is missing, or
    built for another ipywidgets), widget outputs fall back to their text repr; each must be reported."""
    server = JupyterLabServer(
        {"fixtures": FIXTURES},
        log_path=artifact_dir() / "jupyterlab-without-widgets.log",
        disabled_extensions=("@jupyter-widgets/jupyterlab-manager",),
    )
    with server:
        page = LabPage(browser, server)
        session = NotebookSession(page, "fixtures/widgets_smoke.ipynb", artifact_dir("widgets_smoke-without-front-end"))
        try:
            session.open()
            session.run_all()
            report = session.check(0.0, session.wait_until_done(60), widget_timeout=5)
            session.screenshot("after-run-all")
        finally:
            session.close()
            page.close()
    assert not report.errors and not report.not_run, report.problems()
    assert report.widget_views == 0
    assert sorted({w["cell"] for w in report.placeholder_widgets}) == [2, 3], report.placeholder_widgets
    assert all("no widget front end" in w["text"] for w in report.placeholder_widgets), report.placeholder_widgets


def test_timeouts_are_scaled_for_slow_machines(monkeypatch):
    monkeypatch.setenv("SDEXPLAIN_BROWSER_SLOW", "3")
    assert slow_factor() == 3.0
    monkeypatch.setenv("SDEXPLAIN_BROWSER_SLOW", "nonsense")
    assert slow_factor() == 1.0

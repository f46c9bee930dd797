"""Drive real JupyterLab in headless Chromium: start a server, open a notebook, Run All, check, move sliders.

Used by ``tests/test_browser.py`` (``pytest -m browser``). Needs Python ``playwright`` (the ``browser``
extra) and a Chromium binary: Debian's ``chromium`` package (``scripts/ci_browser.sh`` installs both);
Playwright's own browser download is never used. ``SDEXPLAIN_CHROMIUM`` overrides the binary.

What "works" means here, as a learner would see it:
- every code cell ran (an execution count; Run All stops at the first error),
- no cell shows an *error* output. In JupyterLab 4 an error output is rendered by the same renderer
  as stderr (``.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]``), so the DOM alone
  cannot tell a warning from a traceback; the front end's own notebook model can
  (``output.type === "error"``), read through ``window.jupyterapp`` (``--LabApp.expose_app_in_browser``).
  A DOM scan for stderr renderers that show a Python traceback is kept as a second check.
- no widget is left as the "Loading widget..." or "Error displaying widget" placeholder, and no widget
  output falls back to its text repr (what JupyterLab shows when the widget front end is missing),
- moving a slider changes the picture next to it (its ``<img>`` src AND its decoded pixels).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts" / "browser"

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

# JupyterLab user settings written for the test server (user_settings_dir/<plugin path>.jupyterlab-settings).
LAB_SETTINGS = {
    # Attach every cell to the DOM, on screen or not: otherwise (4.x default "contentVisibility", or
    # "full"/"defer") off-screen cells may not be rendered and widgets in them never get a view.
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    # Never write the executed notebook back (the server's root is a copy anyway).
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    # No news / update checks (no network here) and no "would you like to get news?" toast.
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True},
}

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def slow_factor() -> float:
    """Multiplier for every timeout ($SDEXPLAIN_BROWSER_SLOW, default 1): raise it on a busy machine."""
    try:
        return max(1.0, float(os.environ.get("SDEXPLAIN_BROWSER_SLOW", "1")))
    except ValueError:
        return 1.0


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def chromium_path() -> str | None:
    """The Chromium binary to drive: $SDEXPLAIN_CHROMIUM, else Debian's chromium on PATH."""
    explicit = os.environ.get("SDEXPLAIN_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def artifact_dir(*parts: str) -> Path:
    path = ARTIFACTS.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


# --------------------------------------------------------------------------- the server


def _use_python3_kernel(notebook: Path) -> None:
    """Point a copied notebook at the 'python3' kernel (the test venv's), so no kernel picker pops up."""
    data = json.loads(notebook.read_text(encoding="utf-8"))
    spec = data.setdefault("metadata", {}).get("kernelspec") or {}
    if spec.get("name") != "python3":
        data["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
        notebook.write_text(json.dumps(data, indent=1), encoding="utf-8")


class JupyterLabServer:
    """JupyterLab on 127.0.0.1:<free port>, no token or password, rooted in a temporary copy.

    ``folders``: {name in the root: source folder} copied into the root (e.g. {"notebooks": REPO/"notebooks"}).
    ``disabled_extensions``: JupyterLab extensions turned off (labconfig/page_config.json in the temporary config).
    Settings, workspaces, config and runtime files all live in the temporary directory, so nothing the
    developer has configured leaks in and nothing is written outside it. Kernels inherit the server's
    environment (the test venv's python3 kernel, OMP_NUM_THREADS=1, offline Hugging Face).
    """

    def __init__(self, folders: dict[str, Path], log_path: Path | None = None, start_timeout: float = 120.0, disabled_extensions: tuple[str, ...] = ()):
        self.folders = folders
        self.disabled_extensions = disabled_extensions
        self.log_path = log_path or (artifact_dir() / "jupyterlab.log")
        self.start_timeout = start_timeout * slow_factor()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> JupyterLabServer:
        self._tmp = tempfile.TemporaryDirectory(prefix="sdexplain-lab-")
        base = Path(self._tmp.name)
        self.root = base / "root"
        self.root.mkdir()
        for name, source in self.folders.items():
            shutil.copytree(source, self.root / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "conftest.py"))
        for notebook in self.root.rglob("*.ipynb"):
            _use_python3_kernel(notebook)
        settings = base / "settings"
        for plugin, values in LAB_SETTINGS.items():
            path = settings / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        for name in ("workspaces", "config", "runtime", "data"):
            (base / name).mkdir()
        if self.disabled_extensions:  # e.g. the widget manager, to check that a missing widget front end is caught
            (base / "config" / "labconfig").mkdir()
            page_config = {"disabledExtensions": {name: True for name in self.disabled_extensions}}
            (base / "config" / "labconfig" / "page_config.json").write_text(json.dumps(page_config))
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(base / "config"),
            JUPYTER_RUNTIME_DIR=str(base / "runtime"),
            JUPYTER_DATA_DIR=str(base / "data"),
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
            JUPYTER_PLATFORM_DIRS="1",
            OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            PYDEVD_DISABLE_FILE_VALIDATION="1",
            # the kernels import this working tree's sdexplain, installed or not (as pytest's pythonpath does)
            PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
            MPLBACKEND="module://matplotlib_inline.backend_inline",
        )
        command = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser",
            "--ServerApp.open_browser=False",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root}",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            "--ServerApp.password_required=False",
            "--ServerApp.terminals_enabled=False",
            "--ServerApp.allow_root=True",  # CI runs as root
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: the notebook model, for error outputs
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={base / 'workspaces'}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_until_up()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"JupyterLab did not answer on {self.url} within {self.start_timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def api(self, path: str):
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            return json.loads(response.read())

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: the server shuts its kernels down, then exits
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# --------------------------------------------------------------------------- the browser


@contextlib.contextmanager
def chromium_context(viewport=(1400, 1000)):
    """A headless Debian Chromium (Playwright sync API) with a fresh temporary profile."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError("no Chromium found: apt-get install -y chromium (or set SDEXPLAIN_CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="sdexplain-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        try:
            yield context
        finally:
            context.close()


# --------------------------------------------------------------------------- JupyterLab in a page

# JavaScript helpers run in the page. `panel(path)`: the open notebook panel of that path.
_JS_PANEL = """
const panel = (path) => {
  const app = window.jupyterapp;
  if (!app) return null;
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path === path && w.content && w.sessionContext) return w;
  }
  return null;
};
"""

_JS_STATE = _JS_PANEL + """
(path) => {
  const p = panel(path);
  if (!p) return {ready: false};
  const kernel = p.sessionContext.session && p.sessionContext.session.kernel;
  const cells = p.content.widgets.map((cell, index) => {
    const m = cell.model;
    const meta = m.sharedModel.getMetadata ? m.sharedModel.getMetadata() : {};
    const out = {index, type: m.type, source: m.sharedModel.getSource(), tags: (meta && meta.tags) || []};
    if (m.type === 'code') {
      out.executionCount = m.executionCount;
      out.executionState = m.executionState;  // 'idle' | 'running'
      const prompt = cell.node.querySelector('.jp-InputPrompt');
      out.prompt = prompt ? prompt.textContent.trim() : '';
      out.outputs = [];
      for (let i = 0; i < m.outputs.length; i++) {
        const o = m.outputs.get(i).toJSON();
        out.outputs.push({type: o.output_type, ename: o.ename, evalue: o.evalue,
                          traceback: o.traceback ? o.traceback.join('\\n') : undefined, name: o.name});
      }
    }
    return out;
  });
  return {ready: true, id: p.id, kernelStatus: kernel ? kernel.status : 'none',
          connection: kernel ? kernel.connectionStatus : 'none',
          windowingMode: p.content.notebookConfig ? p.content.notebookConfig.windowingMode : null, cells};
}
"""

# Widgets a learner would not see working, and stderr renderers that show a Python traceback (DOM only):
# - a placeholder: "Loading widget..." or "Error displaying widget: ..." (JupyterLab's widget renderer puts
#   the text straight in the output node, which carries no data-mime-type, so output nodes are scanned
#   by text, here and inside Output widgets);
# - a widget-view output of the notebook model rendered by another renderer than the widget one (no
#   widget front end in JupyterLab: it falls back to the text/plain repr, e.g. "IntSlider(value=0)").
_JS_DOM_PROBLEMS = """
(id) => {
  const WIDGET_MIME = 'application/vnd.jupyter.widget-view+json';
  const PLACEHOLDER = /^(Loading widget|Error displaying widget)/;
  const root = document.getElementById(id);
  const cells = Array.from(root.querySelectorAll('.jp-Cell'));
  const cellIndex = (node) => cells.indexOf(node.closest('.jp-Cell'));
  const isView = (node) => Array.from(node.classList).some(c => c.startsWith('widget-'));
  const widgets = [];
  for (const node of root.querySelectorAll('.jp-OutputArea-output')) {
    const text = (node.textContent || '').trim();
    if (PLACEHOLDER.test(text) && !node.querySelector('.jupyter-widgets'))
      widgets.push({cell: cellIndex(node), text: text.slice(0, 300)});
  }
  let panel = null;
  for (const w of window.jupyterapp.shell.widgets('main')) if (w.id === id) panel = w;
  if (panel) {
    panel.content.widgets.forEach((cell, index) => {
      if (cell.model.type !== 'code') return;
      const area = cell.node.querySelector('.jp-Cell-outputArea');
      const children = area ? Array.from(area.querySelectorAll(':scope > .jp-OutputArea-child')) : [];
      const outputs = cell.model.outputs;
      for (let i = 0; i < outputs.length; i++) {
        const data = outputs.get(i).toJSON().data || {};
        const view = data[WIDGET_MIME];
        if (!view || !view.model_id) continue;  // no widget, or a closed one (JupyterLab hides it)
        const node = children[i] && children[i].querySelector('.jp-OutputArea-output');
        const mime = node ? node.getAttribute('data-mime-type') : null;
        if (!node || (mime && mime !== WIDGET_MIME)) {
          const text = node ? (node.textContent || '').trim() : '';
          widgets.push({cell: index, text: `widget shown as ${mime || 'nothing'} (no widget front end?): ${text}`.slice(0, 300)});
        }
      }
    });
  }
  const tracebacks = [];
  for (const node of root.querySelectorAll('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')) {
    const text = node.textContent || '';
    if (/Traceback \\(most recent call last\\)|^\\s*\\w*(Error|Exception)\\b.*:|Javascript Error:/m.test(text))
      tracebacks.push({cell: cellIndex(node), text: text.slice(-1500)});
  }
  const widgetViews = Array.from(root.querySelectorAll('.jp-OutputArea .jupyter-widgets')).filter(isView).length;
  const images = root.querySelectorAll('.jp-OutputArea img').length;
  return {widgets, tracebacks, widgetViews, images};
}
"""


class LabPage:
    """JupyterLab loaded once in a browser tab, in a fresh empty workspace; notebooks are opened in it one by one.

    Loading JupyterLab's JavaScript is the slow part of a browser test; re-using the tab for every
    notebook keeps the whole series within minutes. Each notebook is closed, and its kernel shut down,
    after its test. If the tab breaks, ``reload()`` starts over.
    """

    def __init__(self, context, server: JupyterLabServer):
        self.context, self.server = context, server
        self.page = None
        self.console: list[str] = []
        self.load()

    def load(self, timeout: float = 180.0) -> None:
        if self.page is not None:
            with contextlib.suppress(Exception):
                self.page.close()
        self.page = page = self.context.new_page()
        page.set_default_timeout(timeout * slow_factor() * 1000)
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text} [{(m.location or {}).get('url', '')}]") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        # offline, a notebook's remote image (e.g. an "Open in Colab" badge) fails to load: kept for reading, with its URL
        page.on("requestfailed", lambda r: self.console.append(f"requestfailed: {r.url} ({r.failure})"))
        workspace = f"test-{os.getpid()}-{time.monotonic_ns()}"  # a new workspace: no tabs restored from an earlier page
        page.goto(f"{self.server.url}/lab/workspaces/{workspace}?reset", wait_until="domcontentloaded")
        page.wait_for_function("() => !!(window.jupyterapp && window.jupyterapp.shell && document.querySelector('.lm-MenuBar'))", polling=250)
        page.evaluate("async () => { await window.jupyterapp.restored; }")

    def healthy(self) -> bool:
        try:
            return not self.page.is_closed() and self.page.evaluate("() => !!window.jupyterapp")
        except Exception:
            return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.page.close()


@dataclass
class RunReport:
    """What Run All left in the page."""

    notebook: str
    seconds: float
    cells: list = field(default_factory=list)
    errors: list = field(default_factory=list)  # error outputs in the model: {cell, ename, evalue, traceback}
    expected_errors: list = field(default_factory=list)  # the same, in cells tagged "raises-exception"
    not_run: list = field(default_factory=list)  # code cells with source and no execution count
    placeholder_widgets: list = field(default_factory=list)
    dom_tracebacks: list = field(default_factory=list)
    widget_views: int = 0
    images: int = 0
    windowing_mode: str | None = None
    console_errors: list = field(default_factory=list)

    def problems(self) -> list[str]:
        out = []
        for e in self.errors:
            out.append(f"cell {e['cell']}: {e['ename']}: {e['evalue']}\n{strip_ansi(e['traceback'] or '')[-2000:]}")
        for t in self.dom_tracebacks:
            out.append(f"cell {t['cell']} shows a traceback on stderr:\n{strip_ansi(t['text'])}")
        if self.not_run:
            out.append(f"code cells not executed (Run All stopped at an error, or the kernel died): {self.not_run}")
        for w in self.placeholder_widgets:
            out.append(f"cell {w['cell']}: widget not rendered: {w['text']!r}")
        return out


class NotebookSession:
    """One notebook open in the JupyterLab tab: Run All, check, move sliders, close."""

    def __init__(self, lab: LabPage, path: str, artifacts: Path):
        self.lab, self.path, self.artifacts = lab, path, artifacts
        self.page = lab.page
        self.server = lab.server
        self.id: str | None = None
        self._console_start = len(lab.console)

    @property
    def root(self):
        """The notebook panel's DOM node."""
        return self.page.locator(f"[id='{self.id}']")

    # -- opening

    def open(self, timeout: float = 120.0) -> None:
        """Open the notebook as the file browser does (docmanager:open) and wait for its kernel to be idle."""
        page = self.page
        page.evaluate(
            "async (path) => { await window.jupyterapp.commands.execute('docmanager:open', {path, factory: 'Notebook'}); }", self.path
        )
        page.wait_for_function(
            _JS_PANEL + "(path) => { const p = panel(path); if (!p) return false; const k = p.sessionContext.session && p.sessionContext.session.kernel;"
            " return !!k && k.status === 'idle' && k.connectionStatus === 'connected' && p.content.widgets.length > 0; }",
            arg=self.path,
            polling=250,
            timeout=timeout * slow_factor() * 1000,
        )
        self.id = self.state()["id"]
        page.evaluate("(id) => window.jupyterapp.shell.activateById(id)", self.id)
        self.dismiss_dialogs()

    def dismiss_dialogs(self) -> None:
        """Close a modal dialog if one is up (e.g. a kernel choice), keeping the default."""
        dialog = self.page.locator(".jp-Dialog")
        if dialog.count():
            accept = dialog.locator(".jp-mod-accept")
            (accept if accept.count() else dialog.locator("button").last).first.click()

    # -- running

    def run_all(self) -> None:
        """Run → Run All Cells, through the menu bar as a learner would."""
        page = self.page
        self.root.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})  # focus this notebook
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

    def state(self) -> dict:
        return self.page.evaluate(_JS_STATE, self.path)

    def wait_until_done(self, timeout: float, settle: float = 1.5) -> dict:
        """Wait until the kernel is idle and no cell is queued or running, for ``settle`` seconds in a row."""
        timeout *= slow_factor()
        deadline = time.monotonic() + timeout
        quiet_since = None
        state = {}

        def busy_cells(state):
            return [c["index"] for c in state.get("cells", []) if c["type"] == "code" and (c.get("executionState") == "running" or "*" in (c.get("prompt") or ""))]

        while time.monotonic() < deadline:
            state = self.state()
            if state.get("ready") and state["kernelStatus"] == "dead":
                raise RuntimeError(f"{self.path}: the kernel died\n{self.server.log_tail()}")
            busy = not state.get("ready") or state["kernelStatus"] != "idle" or busy_cells(state)
            if busy:
                quiet_since = None
            else:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle:
                    return state
            time.sleep(0.25)
        self.screenshot("timeout")
        raise TimeoutError(f"{self.path}: still running after {timeout:.0f}s (kernel {state.get('kernelStatus')}, cells running/queued: {busy_cells(state)})")

    def check(self, seconds: float, state: dict, widget_timeout: float = 30.0) -> RunReport:
        """Collect errors, cells not run and unrendered widgets after Run All."""
        report = RunReport(self.path, seconds, cells=state["cells"], windowing_mode=state.get("windowingMode"))
        for cell in state["cells"]:
            if cell["type"] != "code":
                continue
            for o in cell["outputs"]:
                if o["type"] == "error":
                    entry = {"cell": cell["index"], "ename": o["ename"], "evalue": o["evalue"], "traceback": o["traceback"]}
                    (report.expected_errors if "raises-exception" in cell["tags"] else report.errors).append(entry)
            if cell["source"].strip() and cell["executionCount"] is None:
                report.not_run.append(cell["index"])
        # widget views render asynchronously: give "Loading widget..." a while to go away
        deadline = time.monotonic() + widget_timeout * slow_factor()
        while True:
            dom = self.page.evaluate(_JS_DOM_PROBLEMS, self.id)
            loading = [w for w in dom["widgets"] if w["text"].startswith("Loading widget")]
            if not loading or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        report.placeholder_widgets = dom["widgets"]
        error_cells = {e["cell"] for e in report.errors + report.expected_errors}
        report.dom_tracebacks = [t for t in dom["tracebacks"] if t["cell"] not in error_cells]
        report.widget_views, report.images = dom["widgetViews"], dom["images"]
        report.console_errors = self.lab.console[self._console_start:]
        return report

    # -- sliders

    def sliders(self) -> list[dict]:
        """Every slider in the notebook's outputs: its description, readout, cell index, and images in its cell."""
        return self.page.evaluate(
            """(id) => {
              const root = document.getElementById(id);
              const cells = Array.from(root.querySelectorAll('.jp-Cell'));
              return Array.from(root.querySelectorAll('.jp-OutputArea .widget-slider')).map((s, i) => {
                const cell = s.closest('.jp-Cell');
                const label = s.querySelector('.widget-label');
                const readout = s.querySelector('.widget-readout');
                return {index: i, cell: cells.indexOf(cell), description: label ? label.textContent.trim() : '',
                        readout: readout ? (readout.textContent || readout.value || '').trim() : '',
                        images: cell ? cell.querySelectorAll('.jp-OutputArea img').length : 0};
              });
            }""",
            self.id,
        )

    def find_slider(self, description: str | None) -> dict:
        """The first slider whose description matches the regex ``description`` (any slider with an image beside it if None)."""
        sliders = self.sliders()
        if description is None:
            candidates = [s for s in sliders if s["images"]]
        else:
            pattern = re.compile(description, re.IGNORECASE)
            candidates = [s for s in sliders if pattern.search(s["description"])]
            candidates = [s for s in candidates if s["images"]] or candidates
        if not candidates:
            raise LookupError(f"{self.path}: no slider matching {description!r} among {[(s['description'], s['cell']) for s in sliders]}")
        return candidates[0]

    def _images(self, cell: int) -> list[dict]:
        return self.page.evaluate(
            """([id, cell]) => {
              const node = document.getElementById(id).querySelectorAll('.jp-Cell')[cell];
              return Array.from(node.querySelectorAll('.jp-OutputArea img')).map(img => ({
                src: img.currentSrc || img.src, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight}));
            }""",
            [self.id, cell],
        )

    def _image_shots(self, cell: int) -> list[bytes | None]:
        """The decoded pixels of each <img> in the cell's outputs, as PNG bytes (None for one not loaded).

        Read from the image itself through a canvas, not from a screenshot of the page, where whatever
        overlaps the element (the status bar, a focus ring) would count as a change.
        """
        urls = self.page.evaluate(
            """([id, cell]) => {
              const node = document.getElementById(id).querySelectorAll('.jp-Cell')[cell];
              return Array.from(node.querySelectorAll('.jp-OutputArea img')).map(img => {
                if (!img.complete || !img.naturalWidth) return null;
                const canvas = document.createElement('canvas');
                canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
                try { canvas.getContext('2d').drawImage(img, 0, 0); return canvas.toDataURL('image/png'); }
                catch (e) { return null; }
              });
            }""",
            [self.id, cell],
        )
        return [base64.b64decode(url.split(",", 1)[1]) if url else None for url in urls]

    def move_slider(self, slider: dict, keys: list[str], name: str, timeout: float = 20.0) -> dict:
        """Focus the slider's handle, press ``keys``, wait for a picture in its cell to change; screenshots before/after.

        Returns the indices of the cell's <img>s whose src changed, the readout before/after, the
        screenshots of the cell's outputs (artifacts), and how many pixels differ between the pictures
        themselves (not the whole output, where the moved handle alone differs).
        """
        widget = self.root.locator(".jp-OutputArea .widget-slider").nth(slider["index"])
        widget.scroll_into_view_if_needed()
        output = self.root.locator(".jp-Cell").nth(slider["cell"]).locator(".jp-Cell-outputWrapper")
        before_png = self.artifacts / f"{safe_name(name)}-before.png"
        after_png = self.artifacts / f"{safe_name(name)}-after.png"
        before = self._images(slider["cell"])
        before_shots = self._image_shots(slider["cell"])
        output.screenshot(path=str(before_png))
        handle = widget.locator(".noUi-handle, [role=slider], input[type=range]").first
        handle.focus()
        for key in keys:
            handle.press(key)
        deadline = time.monotonic() + timeout * slow_factor()
        changed: list[int] = []
        after = before
        while time.monotonic() < deadline:
            after = self._images(slider["cell"])
            changed = [i for i, (a, b) in enumerate(zip(before, after)) if a["src"] != b["src"]]
            if len(after) != len(before):
                changed = changed or [-1]
            if changed and all(img["complete"] and img["width"] > 0 for img in after):
                break
            time.sleep(0.2)
        time.sleep(0.3)  # let the new picture paint before the screenshots
        after = self._images(slider["cell"])
        after_shots = self._image_shots(slider["cell"])
        output.screenshot(path=str(after_png))
        if len(after_shots) == len(before_shots):
            pixels = sum(pixels_changed(a, b) for a, b in zip(before_shots, after_shots) if a is not None and b is not None)
        else:  # pictures appeared or went away
            pixels = sum(pixels_changed(shot, b"") for shot in after_shots + before_shots if shot is not None)
        return {
            "changed_images": changed,
            "readout_before": slider["readout"],
            "readout_after": self.sliders()[slider["index"]]["readout"],
            "before": before_png,
            "after": after_png,
            "pixels_changed": pixels,
        }

    def widget_texts(self) -> list[dict]:
        """Every text a widget shows in the notebook's outputs — labels, button captions, dropdown options —
        with its cell index and rendered size in pixels (0 × 0 when it is not drawn); ipywidgets' no-break spaces read as spaces."""
        return self.page.evaluate(
            """(id) => {
              const root = document.getElementById(id);
              const cells = Array.from(root.querySelectorAll('.jp-Cell'));
              const found = [];
              const add = (el, kind, text) => {
                const box = el.getBoundingClientRect();
                found.push({cell: cells.indexOf(el.closest('.jp-Cell')), kind, text: (text || '').replace(/\u00a0/g, ' ').trim(), width: box.width, height: box.height});
              };
              root.querySelectorAll('.jp-OutputArea .widget-label').forEach(el => add(el, 'label', el.textContent));
              root.querySelectorAll('.jp-OutputArea button.jupyter-button, .jp-OutputArea .widget-button').forEach(el => add(el, 'button', el.textContent));
              root.querySelectorAll('.jp-OutputArea .widget-dropdown select option').forEach(el => add(el.closest('select'), 'option', el.textContent));
              return found;
            }""",
            self.id,
        )

    def cell_text(self, cell: int) -> str:
        return self.root.locator(".jp-Cell").nth(cell).inner_text()

    # -- closing

    def screenshot(self, name: str) -> Path:
        path = self.artifacts / f"{safe_name(name)}.png"
        with contextlib.suppress(Exception):
            self.page.screenshot(path=str(path))
        return path

    def close(self) -> None:
        """Shut the kernel down and close the tab without saving (no 'save changes?' dialog)."""
        with contextlib.suppress(Exception):
            self.page.evaluate(
                _JS_PANEL + "async (path) => { const p = panel(path); if (!p) return;"
                " try { await p.sessionContext.shutdown(); } catch (e) {}"
                " p.context.model.dirty = false; p.dispose(); }",
                self.path,
            )


def pixels_changed(before: Path | bytes, after: Path | bytes) -> int:
    """How many pixels differ between two PNGs, given as files or bytes (all of them if the sizes differ)."""
    import numpy as np
    from PIL import Image

    def pixels(png):
        data = png.read_bytes() if isinstance(png, Path) else png
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) if data else np.zeros((0, 0, 3), np.uint8)

    a, b = pixels(before), pixels(after)
    if a.shape != b.shape:
        return max(a.shape[0] * a.shape[1], b.shape[0] * b.shape[1])
    return int(np.any(a != b, axis=-1).sum())

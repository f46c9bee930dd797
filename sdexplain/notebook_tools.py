"""Tools for the tutorial notebooks: build them, re-execute them, keep them small.

    python -m sdexplain.notebook_tools refresh notebooks/*.ipynb   # execute in place, strip widget state
    python -m sdexplain.notebook_tools check notebooks/*.ipynb     # sizes, badges, no widget state

The repository's public URL is defined once, in pyproject.toml (`project.urls.Repository`); the
"Open in Colab" badges and the Colab install cells are generated from it here.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
MAX_NOTEBOOK_BYTES = 2_000_000
# The opening and closing sections every notebook has, per language (notebooks/zh/ is the Chinese edition).
SECTIONS = {"en": ("What you will learn", "What to remember"), "zh": ("你将学到", "要点回顾")}


def repository_url() -> str:
    """The repository URL from pyproject.toml (the one place it is written)."""
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"].rstrip("/")


def colab_badge(notebook_name: str, branch: str = "main") -> str:
    repo = repository_url().removeprefix("https://github.com/")
    url = f"https://colab.research.google.com/github/{repo}/blob/{branch}/notebooks/{notebook_name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


MODEL_VARIABLE = "SDEXPLAIN_MODEL"  # the environment variable the notebooks' first cell reads MODEL from

# The start of the one line a skipped section prints (the non-toy notebook test looks for it).
SKIPPED = "Skipped section"

def setup_cell(default_model: str = "toy") -> str:
    """The first code cell of every notebook: install in Colab only, pick the model, report the runtime.

    MODEL comes from the environment variable SDEXPLAIN_MODEL when it is set (CI runs every notebook on
    a non-toy folder that way), else `default_model`. The Colab install takes the `notebooks` extra,
    which brings CLIP's real tokenizer (instant-clip-tokenizer) for notebook 05.
    """
    return "\n".join(
        [
            "import os, sys",
            'if "google.colab" in sys.modules:  # in Colab: install sdexplain from the repository',
            f'    !pip install -q "sdexplain[notebooks] @ git+{repository_url()}"',
            "",
            "import sdexplain",
            "from sdexplain.notebook_tools import needs, needs_toy, runtime_summary",
            "",
            f'MODEL = os.environ.get("{MODEL_VARIABLE}", "{default_model}")  # or a Hub id such as "stable-diffusion-v1-5/stable-diffusion-v1-5", a folder, a .safetensors file',
            "print(runtime_summary(MODEL))",
        ]
    )


def needs(available: bool, section: str, requirement: str, instead: str) -> bool:
    """`available`, and when it is not, one line saying which section is skipped, what it needs and what to do instead.

    Guard every section that only some models can run with it, so the reader is told what was skipped
    rather than seeing nothing:

        Skipped section (the judge's verdicts): it needs the toy model. Instead: look at the samples by eye.
    """
    from sdexplain.i18n import t

    if not available:  # in Chinese: the same line translated (the catalogue has each notebook's section, need and instead)
        print(t("{skipped} ({section}): it needs {requirement}. Instead: {instead}").format(skipped=SKIPPED, section=t(section), requirement=t(requirement), instead=t(instead)))
    return bool(available)


def needs_toy(model: str, section: str, instead: str) -> bool:
    """True for the toy model; otherwise print that `section` needs the toy, and what a real model shows `instead`.

    Usage in a notebook: `if needs_toy(MODEL, "the judge's verdicts", "look at the samples by eye"): ...`
    """
    return needs(model == "toy", section, "the toy model (its generated world has ground truth: labels, masks, depth)", instead)


def runtime_summary(model: str) -> str:
    """One line about where this runs: the device found, and what that means for the chosen model."""
    import torch

    from sdexplain.i18n import t

    if torch.cuda.is_available():
        return t("GPU: {gpu} — model {model} runs in float16.").format(gpu=torch.cuda.get_device_name(0), model=repr(model))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return t("Apple GPU (MPS) — model {model} runs there in float32.").format(model=repr(model))
    if model == "toy":
        return t("No GPU found: fine for the toy model, which runs on the CPU in seconds.")
    return t("No GPU found: {model} would run on the CPU, which takes minutes per image. In Colab: Runtime → Change runtime type → GPU.").format(model=repr(model))


def new_notebook(name: str, title: str, learn: list[str], cells: list[tuple[str, str]], remember: list[str]) -> nbformat.NotebookNode:
    """A notebook in the series' shape: title + badge, "What you will learn", setup, body, "What to remember".

    `cells` is a list of ("md" | "code", source).
    """
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# {title}\n\n{colab_badge(name)}\n\n## What you will learn\n" + "\n".join(f"- {item}" for item in learn)))
    nb.cells.append(nbformat.v4.new_code_cell(setup_cell()))
    for kind, source in cells:
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(source.strip("\n")))
        elif kind == "code":
            nb.cells.append(nbformat.v4.new_code_cell(source.strip("\n")))
        else:
            raise ValueError(f"cell kind must be 'md' or 'code', got {kind!r}")
    nb.cells.append(nbformat.v4.new_markdown_cell("## What to remember\n" + "\n".join(f"- {item}" for item in remember)))
    return nb


WIDGET_STAND_IN = "(interactive widget: run the notebook to use it)"


def strip_widget_state(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Remove saved widget state (large, and stale once the kernel is gone); keep static outputs."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("widgets", None)
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                data.pop("application/vnd.jupyter.widget-view+json")
                data.setdefault("text/plain", WIDGET_STAND_IN)
    return nb


# Figures in executed notebooks: PNG bytes that depend only on the pixels. Matplotlib otherwise writes
# its version into every PNG ("Software: Matplotlib version3.x"), so an upgrade rewrites every figure.
# Given to the kernel as IPython's InlineBackend.print_figure_kwargs (what `%matplotlib inline` uses).
FIGURE_KWARGS = {"bbox_inches": "tight", "metadata": {"Software": None}}


def _kernel_config(folder: Path) -> Path:
    """An IPython kernel config file in `folder` that sets FIGURE_KWARGS for inline figures."""
    path = folder / "sdexplain_kernel_config.py"
    path.write_text(f"c.InlineBackend.print_figure_kwargs = {FIGURE_KWARGS!r}\n")
    return path


def execute(path: Path, timeout: int = 600) -> tuple[float, bool]:
    """Execute a notebook in place (cwd = its folder), strip widget state; returns (seconds, rewritten).

    The file is rewritten only when something in it changed: no per-cell execution timestamps are
    recorded (old ones are dropped), and figures are PNGs without a version stamp (FIGURE_KWARGS), so
    a re-execution that produces the same pictures and text leaves the file, and git, untouched.
    """
    import tempfile

    from nbclient import NotebookClient

    before = path.read_text(encoding="utf-8")
    nb = nbformat.reads(before, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timestamps of an earlier run
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        config = _kernel_config(Path(folder))
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", record_timing=False,
            extra_arguments=[f"--config={config}"], resources={"metadata": {"path": str(path.parent)}},
        ).execute()  # fmt: skip
    seconds = time.perf_counter() - start
    strip_widget_state(nb)
    after = nbformat.writes(nb)
    after += "" if after.endswith("\n") else "\n"  # as nbformat.write ends a file
    if after == before:
        return seconds, False
    tmp = path.with_suffix(".tmp.ipynb")
    tmp.write_text(after, encoding="utf-8")
    tmp.replace(path)  # never leave a half-written notebook
    return seconds, True


def check(path: Path) -> list[str]:
    """Problems with a committed notebook: size, widget state, missing badge/sections, errors."""
    problems = []
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        problems.append(f"{path.name}: {size / 1e6:.2f} MB (limit {MAX_NOTEBOOK_BYTES / 1e6:.0f} MB)")
    nb = nbformat.read(path, as_version=4)
    if "widgets" in nb.metadata:
        problems.append(f"{path.name}: saved widget state in metadata")
    first = nb.cells[0].source if nb.cells else ""
    zh = path.resolve().parent.name == "zh"
    if colab_badge(f"zh/{path.name}" if zh else path.name) not in first:
        problems.append(f"{path.name}: the first cell lacks its own Colab badge")
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for heading in SECTIONS["zh" if zh else "en"]:
        if heading not in text:
            problems.append(f"{path.name}: no '{heading}' section")
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                problems.append(f"{path.name}: a cell has an error output ({output.get('ename')})")
            elif blind_widget_output(output):
                problems.append(f"{path.name}: cell {cell.get('id')} saves a widget with no static picture "
                                f"({output['data']['text/plain'][:40]!r}…): display it as a view, or with sdexplain.widgets.show")  # fmt: skip
    return problems


# What a widget leaves in a saved notebook when it was displayed without a picture: its repr
# ("VBox(children=(HBox(…", "Image(value=b'')") or strip_widget_state's stand-in text.
_WIDGET_REPR = re.compile(r"^[A-Z]\w*\((children|value|description|layout|options|accept)=")


def blind_widget_output(output) -> bool:
    """True for a saved output that only says "a widget was here" (readers without a kernel see nothing)."""
    data = output.get("data", {})
    if set(data) != {"text/plain"}:
        return False
    text = data["text/plain"] if isinstance(data["text/plain"], str) else "".join(data["text/plain"])
    return bool(_WIDGET_REPR.match(text)) or text == WIDGET_STAND_IN


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["refresh", "check"])
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    problems = []
    for path in args.notebooks:
        if args.command == "refresh":
            seconds, rewritten = execute(path)
            state = "rewritten" if rewritten else "unchanged"
            print(f"{path.name}: executed in {seconds:.1f} s, {state}, {path.stat().st_size / 1e3:.0f} kB")
        problems += check(path)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

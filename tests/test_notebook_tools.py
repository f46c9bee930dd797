import nbformat
import numpy as np
import pytest

from sdexplain import images, notebook_tools


def test_badge_and_install_cell_derive_from_pyproject_url():
    url = notebook_tools.repository_url()
    assert url.startswith("https://github.com/")
    badge = notebook_tools.colab_badge("01_forward_diffusion.ipynb")
    assert url.removeprefix("https://github.com/") + "/blob/main/notebooks/01_forward_diffusion.ipynb" in badge
    assert f"git+{url}" in notebook_tools.setup_cell()


def test_new_notebook_has_the_series_shape_and_passes_check(tmp_path):
    nb = notebook_tools.new_notebook("x.ipynb", "X", ["one"], [("md", "text"), ("code", "1 + 1")], ["two"])
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    assert notebook_tools.check(path) == []
    assert nb.cells[1].source == notebook_tools.setup_cell()


def test_check_finds_widget_state_errors_and_missing_sections(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"state": {}}
    cell = nbformat.v4.new_code_cell("1/0")
    cell.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="", traceback=[])]
    nb.cells.append(cell)
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    problems = "\n".join(notebook_tools.check(path))
    for expected in ("widget state", "Colab badge", "What you will learn", "What to remember", "ZeroDivisionError"):
        assert expected in problems


def test_strip_widget_state_keeps_a_static_stand_in():
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"state": {}}
    cell = nbformat.v4.new_code_cell("w")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"}})]
    nb.cells.append(cell)
    notebook_tools.strip_widget_state(nb)
    assert "widgets" not in nb.metadata
    assert cell.outputs[0]["data"] == {"text/plain": "(interactive widget: run the notebook to use it)"}


def test_unknown_cell_kind_is_refused():
    with pytest.raises(ValueError, match="'py'"):
        notebook_tools.new_notebook("x.ipynb", "X", [], [("py", "1")], [])


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1.5))
    ax = fig.subplots()
    ax.plot([0, 1, 2], [1, 0, 2])
    ax.set_title("same pixels")
    return fig


def test_the_same_figure_gives_the_same_png_bytes():
    from IPython.core.pylabtools import print_figure

    first = print_figure(_figure(), "png", **notebook_tools.FIGURE_KWARGS)
    again = print_figure(_figure(), "png", **notebook_tools.FIGURE_KWARGS)  # a new figure, drawn the same
    assert first == again and first.startswith(b"\x89PNG")
    assert b"Software" not in first and b"Matplotlib" not in first  # no version stamp to churn on upgrades
    picture = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    assert images.encode_png(picture) == images.encode_png(picture.copy())  # the PIL-encoded pictures too


@pytest.mark.slow
def test_refresh_rewrites_a_notebook_only_when_its_outputs_change(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("%matplotlib inline\nfrom matplotlib.figure import Figure\nfig = Figure(figsize=(2, 1.5))\nfig.subplots().plot([0, 1], [1, 0])\nfig"))
    nb.cells.append(nbformat.v4.new_code_cell("print(6 * 7)"))
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    _, rewritten = notebook_tools.execute(path)
    assert rewritten
    executed = path.read_bytes()
    outputs = nbformat.read(path, as_version=4).cells
    assert "image/png" in outputs[0].outputs[-1]["data"] and outputs[1].outputs[0]["text"] == "42\n"
    assert "execution" not in outputs[0].metadata  # no timestamps
    _, rewritten = notebook_tools.execute(path)
    assert not rewritten and path.read_bytes() == executed
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].source = "print(6 * 9)"
    nbformat.write(nb, path)
    _, rewritten = notebook_tools.execute(path)
    assert rewritten and nbformat.read(path, as_version=4).cells[1].outputs[0]["text"] == "54\n"

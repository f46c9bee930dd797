import nbformat
import pytest

from sdexplain import notebook_tools


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

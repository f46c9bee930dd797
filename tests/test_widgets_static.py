"""The static picture a view leaves for readers without a kernel (sdexplain.widgets.static)."""

import base64
import io

import ipywidgets
import nbformat
import numpy as np
import pytest
from PIL import Image

from sdexplain import images, notebook_tools
from sdexplain import widgets as sdw
from sdexplain.widgets import static


def _picture(seed: int, size: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _image_widget(picture: np.ndarray) -> ipywidgets.Image:
    return ipywidgets.Image(value=images.encode_png(picture), format="png")


def _contains(haystack: np.ndarray, needle: np.ndarray) -> bool:
    """True if ``needle`` appears pixel for pixel somewhere in ``haystack``."""
    h, w = needle.shape[:2]
    rows, cols = np.nonzero((haystack[: haystack.shape[0] - h + 1, : haystack.shape[1] - w + 1] == needle[0, 0]).all(-1))
    return any((haystack[r : r + h, c : c + w] == needle).all() for r, c in zip(rows, cols))


def test_images_are_laid_out_as_their_boxes_lay_them_out_with_their_own_pixels():
    a, b, c = _picture(0), _picture(1), _picture(2)
    tree = ipywidgets.VBox([ipywidgets.HBox([_image_widget(a), _image_widget(b)]), _image_widget(c)])
    shot = np.asarray(static.snapshot(tree))
    assert (shot[:24, :24] == a).all()  # first in the row: top left
    assert (shot[:24, 24 + static.GAP : 48 + static.GAP] == b).all()  # beside it
    assert (shot[24 + static.GAP // 2 : 48 + static.GAP // 2, :24] == c).all()  # below the row


def test_a_slider_is_drawn_at_its_value_and_named_in_the_text():
    slider = ipywidgets.IntSlider(value=0, min=0, max=10, description="step")
    first = np.asarray(static.snapshot(ipywidgets.HBox([slider])))
    assert static.controls_summary(slider) == "step = 0 (of 0–10)"
    slider.value = 7
    assert static.controls_summary(slider) == "step = 7 (of 0–10)"
    assert not np.array_equal(first, np.asarray(static.snapshot(ipywidgets.HBox([slider]))))  # the knob moved


def test_a_scrubber_with_values_is_summarised_by_the_value_it_shows_not_the_frame_index():
    view = sdw.FrameScrubber([_picture(i, 8) for i in range(3)], description="strength", values=[0.5, 0.75, 1.0])
    view.slider.value = 1
    assert static.controls_summary(view.widget) == "strength = 0.75"


def test_selection_dropdown_and_text_read_as_the_reader_sees_them():
    tree = ipywidgets.VBox([
        ipywidgets.SelectionSlider(options=[("1", 0), ("7.5", 1)], value=1, description="guidance s"),
        ipywidgets.Dropdown(options=[("Euler a", "euler_a"), ("DDIM", "ddim")], value="ddim", description="sampler"),
        ipywidgets.Text(value="a red cat", description="prompt"),
        ipywidgets.Button(description="Generate"),
    ])  # fmt: skip
    assert static.controls_summary(tree) == "guidance s = 7.5 · sampler = DDIM · prompt = 'a red cat'"


def test_empty_hidden_and_blank_parts_are_left_out():
    assert static.snapshot(ipywidgets.Image(format="png")) is None  # Image(value=b'')
    assert static.snapshot(ipywidgets.HTML("")) is None
    hidden = _image_widget(_picture(3))
    hidden.layout.display = "none"
    assert static.snapshot(ipywidgets.VBox([hidden, ipywidgets.Image()])) is None
    assert static.snapshot(ipywidgets.IntProgress(value=0, max=5)) is None  # an empty bar says nothing


def test_html_keeps_its_words_line_breaks_and_tables():
    assert static.html_blocks("<b>x₀ &amp; ε</b>") == [("text", "x₀ & ε", True)]
    assert static.html_blocks("s = 3 &nbsp; step 2<br>t = 500") == [("text", "s = 3 step 2\nt = 500", False)]
    table = '<table><tr><th>token</th><td style="background:#fde68a;padding:2px">red</td></tr></table><div>1 of 75 used</div>'
    assert static.html_blocks(table) == [("table", [[("token", None, True), ("red", "#fde68a", False)]]), ("text", "1 of 75 used", False)]
    assert static.html_picture(table).height > static.html_picture("<div>1 of 75 used</div>").height


def test_chinese_text_is_drawn_with_a_cjk_font_when_one_is_installed():
    from sdexplain.i18n import find_cjk_font

    if find_cjk_font() is None:
        pytest.skip("no CJK font installed (CI installs fonts-wqy-microhei)")
    assert static._font_file(False, True) != static._font_file(False, False)
    face = static._Face()
    (arrow, latin), (words, cjk) = face.runs("⬆ 输入图像")  # the CJK font has no ⬆ (nor x̂0's hat): each run in the font that has it
    assert (arrow, words) == ("⬆ ", "输入图像") and latin is face.latin and cjk is face.cjk
    assert static.text_picture("预测的噪声 ε̂ (指引后)") is not None


def test_a_view_displays_its_widget_its_picture_and_a_readable_line(monkeypatch):
    frames = [_picture(i, 8) for i in range(3)]
    view = sdw.FrameScrubber(frames, ["first", "second", "third"], description="frame")
    view.slider.value = 2
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda data, raw=False: shown.append((data, raw)))
    view._ipython_display_()
    (data, raw), = shown
    assert raw and "application/vnd.jupyter.widget-view+json" in data  # the live widget is still what a kernel shows
    assert data["text/plain"].startswith("[FrameScrubber: run the notebook to use it; shown at frame = 2")
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(data["image/png"]))).convert("RGB"))
    assert _contains(picture, images.decode_image(view.image.value))  # the frame it shows, byte for byte


def test_the_saved_output_keeps_the_picture_and_passes_the_notebook_check(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda data, raw=False: shown.append(data))
    static.show(ipywidgets.FileUpload(description="your image"), _image_widget(_picture(4)))
    nb = notebook_tools.new_notebook("x.ipynb", "X", ["one"], [("code", "show()")], ["two"])
    code = next(c for c in nb.cells if c.source == "show()")
    code.outputs = [nbformat.v4.new_output("display_data", data=shown[0])]
    notebook_tools.strip_widget_state(nb)
    assert set(code.outputs[0]["data"]) == {"image/png", "text/plain"}
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    assert notebook_tools.check(path) == []


def test_the_check_flags_a_widget_saved_without_a_picture(tmp_path):
    nb = notebook_tools.new_notebook("x.ipynb", "X", ["one"], [("code", "w")], ["two"])
    code = next(c for c in nb.cells if c.source == "w")
    code.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "VBox(children=(HBox(children=(Play(value=0"})]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    assert any("no static picture" in p for p in notebook_tools.check(path))


@pytest.mark.parametrize("path", sorted(notebook_tools.ROOT.glob("notebooks/[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem[:2])
def test_committed_notebooks_pass_the_series_checks(path):
    # size, no widget state, badge, sections, no error output, no widget saved without a picture
    assert notebook_tools.check(path) == []

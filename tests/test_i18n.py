"""The message catalogue (sdexplain/i18n.py): every text the package shows has its Chinese, figures
render Chinese without missing glyphs, and without a CJK font the figures stay English with one message."""

import ast
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

import sdexplain
from sdexplain import i18n, plots

PACKAGE = Path(sdexplain.__file__).parent


def _calls(names, modules=None):
    """(file, line, text) for every literal passed to the functions ``names`` in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if modules and path.stem not in modules:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            func = node.func if isinstance(node, ast.Call) else None
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in names and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((path.name, node.lineno, node.args[0].value))
    return found


FIGURE_MODULES = {"plots", "schedules", "guidance", "tokens", "editing", "attention_metrics"}


def _figure_texts():
    """(file, line, sample) for every text the figure modules write into a figure: literals and
    f-strings (each {…} filled with "7") given to set_title/set_xlabel/set_ylabel/suptitle or as
    label=, and the default titles of the plotting functions."""
    def sample(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(v.value if isinstance(v, ast.Constant) else "7" for v in node.values)
        return None

    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.stem not in FIGURE_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            texts = []
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr in ("set_title", "set_xlabel", "set_ylabel", "suptitle") and node.args:
                    texts.append(node.args[0])
                texts += [k.value for k in node.keywords if k.arg == "label"]
            if isinstance(node, ast.FunctionDef):
                args = node.args.args[len(node.args.args) - len(node.args.defaults):]
                texts += [d for a, d in zip(args, node.args.defaults) if a.arg in ("title", "xlabel")]
            for text in texts:
                value = sample(text)
                if value and any(c.isalpha() for c in value):
                    found.append((path.name, node.lineno, value))
    return found


@pytest.fixture
def restore_language():
    yield
    i18n.set_language("en")


def test_every_widget_text_of_the_package_has_chinese():
    calls = _calls({"t", "_t", "say"})
    assert len(calls) > 25  # widget descriptions and titles, the setup cell's line
    missing = [f"{name}:{line}: {text!r}" for name, line, text in calls if text not in i18n.ZH]
    assert missing == []


def test_every_text_the_package_writes_into_a_figure_has_chinese():
    texts = _figure_texts()
    assert len(texts) > 35  # plots, schedules, guidance, tokens, editing, attention metrics
    missing = [f"{name}:{line}: {text!r}" for name, line, text in texts if i18n.translate(text) == text]
    assert missing == []


def test_translate_matches_formatted_and_prefixed_texts():
    assert i18n.translate("diversity across 12 seeds") == "12 个种子之间的多样性"
    assert i18n.translate("gap 0.125") == "差距 0.125"
    assert i18n.translate("unconditional\n‖·‖=1.50") == "无条件\n‖·‖=1.50"
    assert i18n.translate("Noise schedule: t=3") == "噪音表 (噪声调度): t=3"
    assert i18n.translate("a cat at 0.5") == "a cat at 0.5"  # unknown text stays


def test_widget_texts_passed_as_values_have_chinese():
    from sdexplain.widgets import CFG_PANELS, EXPLANATIONS

    texts = [*EXPLANATIONS.values(), *CFG_PANELS, "Generate", "a prompt"]  # the last two: default arguments
    assert [text for text in texts if text not in i18n.ZH] == []


def test_chinese_widgets(restore_language):
    from sdexplain.widgets.button import RunProgress

    sdexplain.set_language("zh")
    assert "生成" in RunProgress().button.description


def test_chinese_keeps_the_placeholders_of_the_english():
    import string

    for english, chinese in i18n.ZH.items():
        fields = lambda s: sorted(f for _, f, _, _ in string.Formatter().parse(s) if f is not None)
        assert fields(english) == fields(chinese), english


def test_english_is_the_default_and_unknown_languages_are_refused(restore_language):
    assert i18n.t("loss") == "loss"
    with pytest.raises(ValueError, match="'fr'"):
        sdexplain.set_language("fr")
    assert i18n.language() == "en"


def test_chinese_text_and_labels(restore_language):
    sdexplain.set_language("zh")
    assert i18n.t("loss") == "损失"
    assert i18n.t("no such sentence") == "no such sentence"  # an unknown text stays as written
    assert i18n.translate("loss") == "损失"


def test_a_chinese_figure_renders_without_missing_glyphs(restore_language):
    required = os.environ.get("SDEXPLAIN_CJK_REQUIRED") == "1"  # set by .ci/run, which installs the font
    if i18n.find_cjk_font() is None:
        if required:
            pytest.fail("no CJK font found; CI installs fonts-wqy-microhei (.ci/run)")
        pytest.skip("no CJK font installed here (apt-get install fonts-wqy-microhei)")
    assert sdexplain.set_language("zh") == "zh"
    alpha_bar = np.linspace(0.999, 0.01, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph … missing from font(s) …"
        figs = [
            plots.noise_schedule(alpha_bar, t=40, timesteps=[90, 60, 30, 0]),
            plots.loss_curve({"train": [1.0, 0.5, 0.3]}, smooth=2),
            plots.accuracy_vs_t([0, 50, 99], [0.9, 0.6, 0.3], chance=0.5),
        ]
        for fig in figs:
            FigureCanvasAgg(fig).draw()
    ax = figs[0].axes[0]
    assert ax.get_xlabel() == "训练时间步 t"
    assert "噪声水平" in ax.get_legend().get_texts()[1].get_text()
    assert ax.get_title().startswith("噪音表 (噪声调度): t=40")
    i18n.set_language("en")  # drawn again in English: the English comes back
    FigureCanvasAgg(figs[0]).draw()
    assert ax.get_xlabel() == "training timestep t"


def test_without_a_cjk_font_figures_stay_english_with_one_message(monkeypatch, capsys, restore_language):
    monkeypatch.setattr(i18n, "find_cjk_font", lambda: None)
    assert sdexplain.set_language("zh") == "en"
    err = capsys.readouterr().err
    assert err.count("no CJK font found") == 1
    assert i18n.t("loss") == "损失"  # printed text: Chinese
    fig = plots.loss_curve([1.0, 0.5])
    FigureCanvasAgg(fig).draw()
    assert fig.axes[0].get_ylabel() == "loss"  # figures: English


def test_the_environment_variable_chooses_the_language(tmp_path):
    import subprocess
    import sys

    code = "from sdexplain import i18n; print(i18n.language())"
    env = {**os.environ, "SDEXPLAIN_LANG": "zh", "PYTHONPATH": str(PACKAGE.parent)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "zh"


def _notebook_templates():
    """(notebook, cell id, template) for every literal a notebook's code gives to say / t / sdexplain.t."""
    import nbformat

    found = []
    for path in sorted((PACKAGE.parent / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            # IPython's ! and % lines become `pass`, so the cell parses as Python
            source = "\n".join(line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("!", "%")) else line for line in cell.source.splitlines())
            for node in ast.walk(ast.parse(source)):
                func = node.func if isinstance(node, ast.Call) else None
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
                if name in ("say", "t") and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                    found.append((path.stem[:2], cell.id, node.args[0].value))
    return found


def test_every_message_a_notebook_prints_has_chinese():
    templates = _notebook_templates()
    assert len(templates) > 150  # the notebooks print through the catalogue
    missing = [f"{nb} {cell}: {text!r}" for nb, cell, text in templates if text not in i18n.ZH]
    assert missing == []  # (test_chinese_keeps_the_placeholders_of_the_english checks their placeholders)


def test_say_prints_the_template_filled_in_the_chosen_language(capsys, restore_language):
    template = "{n} training steps in {s:.1f} s"
    sdexplain.say(template, n=100, s=26.44)
    i18n.set_language("zh")
    sdexplain.say(template, n=100, s=26.44)
    assert capsys.readouterr().out.splitlines() == ["100 training steps in 26.4 s", i18n.ZH[template].format(n=100, s=26.44)]
    assert "训练" in i18n.ZH[template]


def test_a_specific_key_wins_over_a_general_one_and_a_repeated_placeholder_matches_the_same_text():
    assert i18n.translate("seed 0 again") == i18n.ZH["seed {s} again"].format(s="0")
    assert i18n.translate("seed 3") == i18n.ZH["seed {s}"].format(s="3")
    english = "latent channels in grey from −3.92 (black) through 0 (mid-grey) to +3.92 (white), at every t"
    assert i18n.translate(english) != english
    assert i18n.translate(english.replace("+3.92", "+1.00")) == english.replace("+3.92", "+1.00")  # not the same value twice: no match


def test_display_width_counts_a_chinese_character_as_two_columns():
    assert i18n.display_width("abc") == 3
    assert i18n.display_width("图像尺寸") == 8
    assert i18n.display_width("U-Net 参数量") == 12  # 6 ASCII + 3 Chinese
    assert i18n.display_width("（，）") == 6  # full-width punctuation
    assert i18n.display_width("é") == 1 and i18n.display_width("e\u0301") == 1  # a combining accent takes no column
    with pytest.raises(TypeError, match="display_width takes a str"):
        i18n.display_width(3)


def test_pad_lines_up_columns_of_mixed_chinese_and_english():
    rows = [("image size", "64×64"), ("图像尺寸", "64×64"), ("U-Net 参数量", "2,765,540")]
    lines = [i18n.pad(name, 16) + i18n.pad(value, 12, ">") for name, value in rows]
    # every line is 28 columns wide, counted independently of pad: ASCII/× one column, each Chinese character two
    widths = [sum(2 if "\u4e00" <= ch <= "\u9fff" else 1 for ch in line) for line in lines]
    assert widths == [28, 28, 28], lines
    assert lines[1] == "图像尺寸" + " " * 8 + " " * 7 + "64×64"
    assert i18n.pad("中", 5, "^", "*") == "*中**"
    assert i18n.pad("太长的文字", 4) == "太长的文字"  # wider than the width: unchanged, as str.format does
    with pytest.raises(ValueError, match="align='='"):
        i18n.pad("x", 4, "=")


def test_say_pads_strings_by_display_width(capsys, restore_language):
    sdexplain.set_language("zh")
    sdexplain.say("{name:10}|{value:>6}|{n:4d}|{x:.2f}", name="图像尺寸", value="宽", n=7, x=0.5)
    sdexplain.say("{name:10}|{value:>6}|{n:4d}|{x:.2f}", name="image", value="w", n=7, x=0.5)
    chinese, english = capsys.readouterr().out.splitlines()
    assert chinese == "图像尺寸  |    宽|   7|0.50"
    assert english == "image     |     w|   7|0.50" == "{:10}|{:>6}|{:4d}|{:.2f}".format("image", "w", 7, 0.5)


def test_a_key_wrapped_onto_several_lines_is_translated_whole():
    # plots.wrap_title breaks a long title at spaces before the figure translates it
    wrapped = plots.wrap_title("the dog's own mask", cell=1.2)
    assert "\n" in wrapped and i18n.translate(wrapped) == i18n.ZH["the dog's own mask"]
    # lines that are separate keys are still translated one by one
    assert i18n.translate("mask\nstrength") == i18n.ZH["mask"] + "\n" + i18n.ZH["strength"]


def test_the_versions_table_is_chinese_with_chinese_chosen(restore_language):
    from sdexplain import versions

    header, rows = versions.comparison_table(("sd15", "sdxl"), counts=False)
    english = versions.markdown_table(header, rows)
    assert "| U-Net cross-attention width | 768 | 2048 |" in english
    sdexplain.set_language("zh")
    chinese = versions.markdown_table(header, rows)
    assert "| U-Net 交叉关注宽度 | 768 | 2048 |" in chinese
    assert "每个 64 个通道" in chinese and "channels each" not in chinese
    assert [line.count("|") for line in chinese.splitlines()] == [line.count("|") for line in english.splitlines()]


def test_every_knob_of_the_panel_has_a_webui_label_in_chinese():
    from sdexplain.widgets import EXPLANATIONS, KNOB_LABELS

    assert set(KNOB_LABELS) == set(EXPLANATIONS)
    missing = [label for label in KNOB_LABELS.values() if label not in i18n.ZH]
    assert not missing, missing
    assert i18n.ZH[KNOB_LABELS["cfg"]].startswith("提示词引导系数")  # WebUI's Chinese label, as the glossary says


def test_the_inpainting_frames_caption_has_chinese(restore_language):
    from sdexplain import editing

    assert editing.INPAINT_FRAME_LABEL in i18n.ZH
    sdexplain.set_language("zh")
    caption = sdexplain.t(editing.INPAINT_FRAME_LABEL).format(strength=0.5, max=0.859, mean=0.0284)
    assert caption.startswith("去噪强度 0.5") and "蒙版外: 最大 0.859, 平均 0.0284" in caption


def test_a_key_without_words_never_swallows_other_texts():
    # "{label:26s} {text}" (14) is in the catalogue so that say finds it, but it must not match every text with a space
    assert "{label:26s} {text}" in i18n.ZH
    assert i18n.translate("the dog's own mask") == i18n.ZH["the dog's own mask"]
    assert i18n.translate("some words nobody translated") == "some words nobody translated"


def test_an_error_said_to_the_reader_is_in_chinese(capsys, restore_language):
    error = ValueError("width=67 is not a multiple of the VAE factor 8; try 64")
    sdexplain.say("refused: {error}", error=error)
    sdexplain.set_language("zh")
    sdexplain.say("refused: {error}", error=error)
    english, chinese = capsys.readouterr().out.splitlines()
    assert english == "refused: width=67 is not a multiple of the VAE factor 8; try 64"
    assert chinese == "被拒绝: width=67 不是 VAE 缩放倍数 8 的整数倍; 可以改用 64"
    assert str(error).startswith("width=67 is not")  # the exception itself stays English


def test_a_frame_scrubbers_caption_the_catalogue_knows_is_in_chinese(restore_language):
    from sdexplain.widgets import FrameScrubber

    frames = [np.zeros((8, 8, 3), dtype=np.uint8)] * 2
    labels = ["t = 1: panels x_t, ε-target, v-target · v = 0.999·ε − 0.041·x₀", "a caption nobody translated"]
    sdexplain.set_language("zh")
    view = FrameScrubber(frames, labels)
    assert view.caption.value.startswith("t = 1: 依次为 x_t")
    view.show(1)
    assert view.caption.value == "a caption nobody translated"

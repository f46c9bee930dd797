"""What a view leaves behind for readers without a kernel: a picture of its current state.

A saved notebook keeps no widget state (``notebook_tools.strip_widget_state``), so on GitHub or
nbviewer a widget output used to read ``VBox(children=(HBox(…``. A view now displays a mime bundle
with three entries: the live widget (``application/vnd.jupyter.widget-view+json``, which
JupyterLab, Notebook and Colab render while the kernel runs), ``image/png`` — ``snapshot``: the
view's own pictures, laid out as its boxes lay them out, with each control drawn at its value —
and a ``text/plain`` that names the controls and their values. Once the widget entry is stripped,
the picture is what readers see; it is made from the same bytes the widget shows, nothing redrawn.

    snapshot(widget)        -> PIL image of the widget tree (None if it holds nothing to draw)
    controls_summary(widget)-> "guidance s = 3 · step = 1 of 20"
    static_bundle(widget)   -> the mime bundle above
    show(*parts)            -> display raw ipywidgets (an upload box, an Image) the same way
"""

from __future__ import annotations

import base64
import re
from functools import lru_cache
from html.parser import HTMLParser

import ipywidgets as widgets
from PIL import Image, ImageColor, ImageDraw, ImageFont

from sdexplain import images
from sdexplain.i18n import t

FONT_SIZE = 13
GAP = 8  # pixels between the parts of a box
BACKGROUND = (255, 255, 255)
INK = (33, 33, 33)
MUTED = (110, 110, 110)
FRAME = (190, 190, 190)
ACCENT = (33, 118, 210)  # a primary button, a slider's filled track
MAX_TEXT_WIDTH = 900  # pixels; longer text lines wrap


@lru_cache(maxsize=None)
def _font_file(bold: bool, cjk: bool) -> str | None:
    from matplotlib import font_manager

    if cjk:
        from sdexplain.i18n import find_cjk_font

        name = find_cjk_font()
        if name is not None:
            return font_manager.findfont(font_manager.FontProperties(family=name), fallback_to_default=False)
    return font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal"))


@lru_cache(maxsize=None)
def _font(bold: bool = False, cjk: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = _font_file(bold, cjk)
    if path is None:  # no CJK font: the Latin one (CJK glyphs then show as boxes, as in the figures)
        path = _font_file(bold, False)
    return ImageFont.truetype(path, FONT_SIZE)


CJK_CHARS = "\u3000-\u9fff\uff00-\uffef"  # CJK punctuation, ideographs, full-width forms
CJK_RUN = re.compile(f"([{CJK_CHARS}]+)")


class _Face:
    """Text drawn in two fonts: CJK characters in the CJK font, everything else in DejaVu Sans.

    Neither font has all the glyphs: the CJK font lacks ⬆ and the combining hat of x̂0, DejaVu lacks
    汉字. So a line is cut into runs, each drawn in the font that has it.
    """

    def __init__(self, bold: bool = False):
        self.latin, self.cjk = _font(bold, False), _font(False, True)
        bottoms = [font.getbbox(sample)[3] for font, sample in ((self.latin, "Ag"), (self.cjk, "中"))]
        self.height = max(*bottoms, FONT_SIZE + 3)

    def runs(self, text: str) -> list[tuple[str, object]]:
        return [(part, self.cjk if CJK_RUN.fullmatch(part) else self.latin) for part in CJK_RUN.split(text) if part]

    def width(self, text: str) -> int:
        return int(round(sum(font.getlength(part) for part, font in self.runs(text)))) + 1

    def draw(self, draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, fill) -> None:
        x, y = xy
        for part, font in self.runs(text):
            draw.text((x, y), part, fill=fill, font=font)
            x += font.getlength(part)


def _wrapped(text: str, face: _Face, width: int) -> list[str]:
    """Lines of at most ``width`` pixels (breaks at spaces, and between CJK characters)."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in re.split(f"(?<=\\s)|(?<=[{CJK_CHARS}])", paragraph):
            if line and face.width(line + word) > width:
                lines.append(line.rstrip())
                line = word
            else:
                line += word
        lines.append(line.rstrip())
    return lines


def text_picture(text: str, bold: bool = False, colour=INK, width: int = MAX_TEXT_WIDTH, background=BACKGROUND) -> Image.Image | None:
    """``text`` drawn on ``background`` (wrapped at ``width`` pixels); None for empty text."""
    text = text.strip()
    if not text:
        return None
    face = _Face(bold)
    lines = _wrapped(text, face, width)
    line_height = face.height + 2
    picture = Image.new("RGB", (max(face.width(line) for line in lines) + 2, line_height * len(lines)), background)
    draw = ImageDraw.Draw(picture)
    for i, line in enumerate(lines):
        face.draw(draw, (0, i * line_height), line, colour)
    return picture


class _Blocks(HTMLParser):
    """An HTML widget's value as blocks: ("text", str, bold) and ("table", [[(text, background, header)]])."""

    BREAKS = {"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple] = []
        self.text, self.table, self.cell = "", None, None
        self._text_bold = False  # whether the text block being collected starts bold

    def _flush(self):
        text = "\n".join(re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in self.text.splitlines())
        text = re.sub(r"\n{2,}", "\n", text).strip()
        if text:
            self.blocks.append(("text", text, self._text_bold))
        self.text = ""

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._flush()
            self.table = []
        elif tag == "tr" and self.table is not None:
            self.table.append([])
        elif tag in ("td", "th") and self.table is not None:
            style = dict(attrs).get("style") or ""
            colour = re.search(r"background(?:-color)?:\s*(#[0-9a-fA-F]{3,6})", style)
            self.cell = ["", colour.group(1) if colour else None, tag == "th"]
        elif tag in ("b", "strong"):
            if not self.text.strip():
                self._text_bold = True
        elif tag in self.BREAKS and self.cell is None:
            self.text += "\n"
        if not self.text.strip() and tag not in ("b", "strong"):
            self._text_bold = False

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None and self.table:
            self.table[-1].append(tuple(self.cell))
            self.cell = None
        elif tag == "table" and self.table is not None:
            self.blocks.append(("table", [row for row in self.table if row]))
            self.table = None
        elif tag in self.BREAKS and self.cell is None and self.table is None:
            self.text += "\n"

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[0] += data
        elif self.table is None:
            self.text += data

    def close(self):
        super().close()
        self._flush()


def _table_picture(rows: list[list[tuple[str, str | None, bool]]]) -> Image.Image:
    """An HTML table drawn as a grid: each cell's text on its own background, header cells bold."""
    faces = {False: _Face(False), True: _Face(True)}
    columns = max(len(row) for row in rows)
    widths = [0] * columns
    for row in rows:
        for i, (text, _, header) in enumerate(row):
            widths[i] = max(widths[i], faces[header].width(text.strip()) + 12)
    height = faces[False].height + 6
    picture = Image.new("RGB", (sum(widths) + 1, height * len(rows) + 1), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    for r, row in enumerate(rows):
        x = 0
        for i, (text, colour, header) in enumerate(row):
            box = (x, r * height, x + widths[i], (r + 1) * height)
            draw.rectangle(box, fill=ImageColor.getrgb(colour) if colour else BACKGROUND, outline=None if header else (204, 204, 204))
            faces[header].draw(draw, (x + 6, r * height + 3), text.strip(), INK)
            x += widths[i]
    return picture


def html_blocks(markup: str) -> list[tuple]:
    """An HTML value as blocks: ("text", text, bold) and ("table", rows of (text, background, header))."""
    parser = _Blocks()
    parser.feed(markup or "")
    parser.close()
    return [block for block in parser.blocks if block[0] == "text" or block[1]]


def html_picture(markup: str) -> Image.Image | None:
    """An HTML widget's value drawn: its text (bold where it starts bold) and its tables as grids."""
    parts = [text_picture(block[1], bold=block[2]) if block[0] == "text" else _table_picture(block[1]) for block in html_blocks(markup)]
    parts = [p for p in parts if p is not None]
    return _stacked(parts) if parts else None


def _value_text(control: widgets.Widget) -> str | None:
    """The value a control shows, as its reader would read it."""
    if isinstance(control, (widgets.SelectionSlider, widgets.Dropdown, widgets.ToggleButtons, widgets.RadioButtons, widgets.Select)):
        return str(control.label) if control.label is not None else "–"
    if isinstance(control, (widgets.FloatSlider, widgets.FloatText, widgets.BoundedFloatText)):
        return f"{control.value:g}"
    if isinstance(control, (widgets.IntSlider, widgets.IntText, widgets.BoundedIntText)):
        return str(control.value)
    if isinstance(control, (widgets.Text, widgets.Textarea)):
        return control.value
    if isinstance(control, widgets.Checkbox):
        return t("on") if control.value else t("off")
    return None


def _slider_fraction(control: widgets.Widget) -> float | None:
    if isinstance(control, widgets.SelectionSlider):
        count = len(control.options)
        return control.index / (count - 1) if count > 1 and control.index is not None else 0.0
    if isinstance(control, (widgets.IntSlider, widgets.FloatSlider)):
        span = control.max - control.min
        return (control.value - control.min) / span if span else 0.0
    return None


def _boxed(text: str, fill=(245, 245, 245), outline=FRAME, colour=INK, bold: bool = False) -> Image.Image:
    """``text`` in a rounded box (a text field, a button, a dropdown)."""
    inner = text_picture(text, bold=bold, colour=colour, width=420, background=fill)
    inner = inner or Image.new("RGB", (1, _Face(bold).height + 2), fill)  # an empty field keeps its box
    picture = Image.new("RGB", (inner.width + 14, inner.height + 8), BACKGROUND)
    ImageDraw.Draw(picture).rounded_rectangle((0, 0, picture.width - 1, picture.height - 1), radius=4, fill=fill, outline=outline)
    picture.paste(inner, (8, 4))
    return picture


def _beside(parts: list[Image.Image], gap: int = GAP, align_middle: bool = True) -> Image.Image:
    width = sum(p.width for p in parts) + gap * (len(parts) - 1)
    height = max(p.height for p in parts)
    out = Image.new("RGB", (width, height), BACKGROUND)
    x = 0
    for p in parts:
        out.paste(p, (x, (height - p.height) // 2 if align_middle else 0))
        x += p.width + gap
    return out


def _stacked(parts: list[Image.Image], gap: int = GAP // 2) -> Image.Image:
    width = max(p.width for p in parts)
    out = Image.new("RGB", (width, sum(p.height for p in parts) + gap * (len(parts) - 1)), BACKGROUND)
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height + gap
    return out


def _control_picture(control: widgets.Widget) -> Image.Image | None:
    """A control drawn at its value: label, a slider's track and knob, a text box, a button."""
    label = getattr(control, "description", "") or ""
    if isinstance(control, widgets.Play):
        return _boxed("▶", fill=(240, 240, 240))
    if isinstance(control, widgets.FileUpload):
        return _boxed(f"⬆ {label or t('Upload')}", fill=(240, 240, 240))
    if isinstance(control, widgets.Button):
        primary = control.button_style == "primary"
        return _boxed(label, fill=ACCENT if primary else (240, 240, 240), outline=ACCENT if primary else FRAME, colour=(255, 255, 255) if primary else INK)
    if isinstance(control, widgets.IntProgress):
        if control.value <= control.min:
            return None  # an empty bar says nothing
        width, height = 160, 12
        bar = Image.new("RGB", (width, height + 6), BACKGROUND)
        draw = ImageDraw.Draw(bar)
        draw.rectangle((0, 3, width - 1, height + 2), fill=(235, 235, 235))
        filled = int((width - 1) * (control.value - control.min) / max(control.max - control.min, 1))
        colour = {"success": (76, 175, 80), "danger": (229, 57, 53)}.get(control.bar_style, ACCENT)
        draw.rectangle((0, 3, filled, height + 2), fill=colour)
        return bar
    value = _value_text(control)
    if value is None:
        return None
    parts = [p for p in (text_picture(label, colour=MUTED),) if p is not None]
    fraction = _slider_fraction(control)
    if fraction is not None:
        track = Image.new("RGB", (140, 16), BACKGROUND)
        draw = ImageDraw.Draw(track)
        draw.rounded_rectangle((0, 6, 139, 10), radius=2, fill=(220, 220, 220))
        x = int(6 + fraction * 127)
        draw.rounded_rectangle((0, 6, x, 10), radius=2, fill=ACCENT)
        draw.ellipse((x - 6, 2, x + 6, 14), fill=BACKGROUND, outline=ACCENT, width=2)
        parts += [track, text_picture(value, bold=True) if getattr(control, "readout", True) else None]  # no readout: a label beside it says the value
    elif isinstance(control, (widgets.Text, widgets.Textarea)):
        parts.append(_boxed(value, fill=BACKGROUND))
    elif isinstance(control, (widgets.Dropdown, widgets.Select)):
        parts.append(_boxed(f"{value} ▾", fill=BACKGROUND))
    else:
        parts.append(text_picture(value, bold=True))
    parts = [p for p in parts if p is not None]
    return _beside(parts, gap=6) if parts else None


def _hidden(widget: widgets.Widget) -> bool:
    layout = getattr(widget, "layout", None)
    return layout is not None and (layout.display == "none" or layout.visibility == "hidden")


def snapshot(widget: widgets.Widget) -> Image.Image | None:
    """The widget tree drawn as one picture: images as they are shown, boxes laid out, controls at their values.

    Image widgets contribute their own bytes (decoded, never redrawn); HTML and Label widgets their
    text; an Output its printed text; sliders, text boxes, dropdowns and buttons a small drawing of
    themselves at their current value. Hidden widgets and empty parts are left out; a tree with
    nothing to draw gives None.
    """
    if _hidden(widget):
        return None
    if isinstance(widget, widgets.Box):
        parts = [p for p in (snapshot(child) for child in widget.children) if p is not None]
        if not parts:
            return None
        horizontal = isinstance(widget, widgets.HBox) or (isinstance(widget, widgets.GridBox) and len(parts) > 1)
        return _beside(parts, align_middle=False) if horizontal else _stacked(parts)
    if isinstance(widget, widgets.Image):
        if not widget.value:
            return None
        return images.image_from_bytes(bytes(widget.value))
    if isinstance(widget, (widgets.HTML, widgets.HTMLMath)):
        return html_picture(widget.value)
    if isinstance(widget, widgets.Label):
        return text_picture(widget.value)
    if isinstance(widget, widgets.Output):
        text = "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in widget.outputs)
        return text_picture(text, colour=(176, 0, 32) if any(o.get("output_type") == "error" or "text/html" in o.get("data", {}) for o in widget.outputs) else INK)
    return _control_picture(widget)


def _controls(widget: widgets.Widget):
    if _hidden(widget):
        return
    if isinstance(widget, widgets.Box):
        children = list(widget.children)
        for i, child in enumerate(children):
            beside = children[i + 1] if i + 1 < len(children) else None
            if _slider_fraction(child) is not None and not getattr(child, "readout", True) and isinstance(beside, widgets.Label):
                yield f"{child.description or 'value'} = {beside.value}"  # a slider whose value a label beside it reads out
            else:  # a Label has no value of its own: the one beside a slider is said with it, above
                yield from _controls(child)
        return
    if isinstance(widget, (widgets.Play, widgets.Button, widgets.FileUpload)):
        return
    value = _value_text(widget)
    if value is not None:
        label = getattr(widget, "description", "") or "value"
        if isinstance(widget, (widgets.IntSlider, widgets.FloatSlider)):
            value = t("{value} (of {lo}–{hi})").format(value=value, lo=f"{widget.min:g}", hi=f"{widget.max:g}")
        elif isinstance(widget, (widgets.Text, widgets.Textarea)):
            value = repr(value)
        yield f"{label} = {value}"


def controls_summary(widget: widgets.Widget) -> str:
    """The controls of a widget tree and their values, in display order: "guidance s = 3 · step = 0 (of 0–19)"."""
    return " · ".join(_controls(widget))


def widget_bundle(widget: widgets.Widget) -> dict:
    """The widget's own mime bundle (ipywidgets 8: ``_repr_mimebundle_``; 7.x: the same dict, built as its ``_ipython_display_`` does)."""
    if hasattr(widget, "_repr_mimebundle_"):
        data = widget._repr_mimebundle_()
        return dict(data[0] if isinstance(data, tuple) else data)
    data = {"text/plain": repr(widget)[:110]}
    if widget._view_name is not None:
        data["application/vnd.jupyter.widget-view+json"] = {"version_major": 2, "version_minor": 0, "model_id": widget._model_id}
    return data


def static_bundle(widget: widgets.Widget, name: str = "interactive view") -> dict:
    """The widget's live bundle plus ``image/png`` (its snapshot) and a ``text/plain`` a reader can use."""
    data = widget_bundle(widget)
    summary = controls_summary(widget)
    shown = t("; shown at {summary}").format(summary=summary) if summary else ""
    data["text/plain"] = t("[{name}: run the notebook to use it{shown}]").format(name=name, shown=shown)
    picture = snapshot(widget)
    if picture is not None:
        data["image/png"] = base64.b64encode(images.encode_png(picture, compress_level=9)).decode("ascii")  # as notebooks store it
    return data


def display_view(widget: widgets.Widget, name: str) -> None:
    """Display ``widget`` with its static picture (what ``View._ipython_display_`` does)."""
    from IPython.display import display

    display(static_bundle(widget, name), raw=True)
    handle = getattr(widget, "_handle_displayed", None)  # ipywidgets 7 calls on_displayed callbacks here
    if handle is not None and not hasattr(widget, "_repr_mimebundle_"):
        handle()


def show(*parts, name: str = "interactive controls") -> None:
    """Display raw ipywidgets (an upload box, an Image a button fills) and views as one box, with its static picture.

    A view (anything with a ``.widget``) contributes its widget. Returns nothing, so that a call on
    a cell's last line does not display the box a second time (without its picture). Views on
    their own display themselves this way already; this is for parts that are not views.
    """
    display_view(widgets.VBox([getattr(part, "widget", part) for part in parts]), name)

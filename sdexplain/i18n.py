"""The reader-visible text of the package in English (the default) or Chinese (简体中文).

    import sdexplain
    sdexplain.set_language("zh")          # or: SDEXPLAIN_LANG=zh before Python starts

What it is for: the words a reader sees — plot titles and axis labels, widget descriptions, the
messages the notebooks print. The English text is the key (as in gettext), and the catalogue ``ZH``
holds its Chinese. Identifiers, dictionary keys, file names and error messages for programmers stay
English.

Two ways in. Widgets and printed messages call ``t("noise level")``: the browser renders Chinese by
itself. Figures are built as ``sdexplain.i18n.Figure`` (matplotlib's Figure, imported under the same
name by the plotting modules): when drawn with Chinese chosen, each of its texts (titles, axis labels,
legend entries) that the catalogue knows is replaced — also titles a notebook passes in, and
formatted ones: the key ``"diversity across {n} seeds"`` matches "diversity across 4 seeds". So the
plotting code itself stays as it is. Figures need a CJK font: without one, ``set_language`` says so
once and figures keep their English texts; printed text is Chinese.

Notebooks print their messages with ``say(template, **values)`` (``sdexplain.say``): the template
is the key, so a notebook's code is the same in both languages.

What it is not: a general translation system. ``tests/test_i18n.py`` checks that every text the
package writes into a figure or a widget has its Chinese here, and that a Chinese figure renders
without a missing glyph.
"""

from __future__ import annotations

import os
import re
import string
import sys
import unicodedata
from pathlib import Path


LANGUAGES = ("en", "zh")

# Fonts with the simplified-Chinese glyphs, best first: Debian/Ubuntu/Colab's packages
# (fonts-wqy-microhei: `apt-get install fonts-wqy-microhei`, 1.6 MB, Apache-2.0 / GPL-3 with font
# exception; fonts-noto-cjk), then what macOS and Windows ship.
CJK_FONT_NAMES = (
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "PingFang SC",
    "Heiti SC",
    "Hiragino Sans GB",
    "Microsoft YaHei",
    "SimHei",
    "Arial Unicode MS",
)
# File names to look for when matplotlib's font cache predates the font's installation
# (Colab: the setup cell installs the font in the same session).
CJK_FONT_FILES = ("wqy-microhei", "wqy-zenhei", "notosanscjk", "notosanssc", "sourcehansans", "msyh", "simhei", "pingfang")

NO_CJK_FONT_MESSAGE = (
    "没有找到中文字体: figures keep their English labels (no CJK font found for matplotlib). "
    "Install one, e.g. `sudo apt-get install fonts-wqy-microhei` (Debian/Ubuntu/Colab), then restart the kernel."
)

_language = "en"
_figure_font: str | None = None


def language() -> str:
    """The language of printed text and widget labels: "en" or "zh"."""
    return _language


def figure_language() -> str:
    """The language of figure text: "zh" only when Chinese is chosen and a CJK font was found."""
    return "zh" if _language == "zh" and _figure_font else "en"


def set_language(lang: str) -> str:
    """Choose the language of what the package shows: "en" (default) or "zh" (简体中文).

    For "zh", finds a CJK font and adds it to matplotlib's font families (after DejaVu Sans);
    without one, prints one message and figures stay English.
    Returns the language now in effect for figures.
    """
    global _language, _figure_font
    if lang not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {lang!r}")
    _language = lang
    if lang == "zh":
        _figure_font = find_cjk_font()
        if _figure_font is None:
            print(NO_CJK_FONT_MESSAGE, file=sys.stderr)
        else:
            _use_font(_figure_font)
    return figure_language()


def find_cjk_font() -> str | None:
    """The family name of an installed CJK font matplotlib can use, or None."""
    from matplotlib import font_manager

    def known() -> str | None:
        names = {f.name for f in font_manager.fontManager.ttflist}
        return next((name for name in CJK_FONT_NAMES if name in names), None)

    found = known()
    if found is None:  # the cache may predate the font: look on disk and register what we find
        for path in font_manager.findSystemFonts():
            flat = Path(path).name.lower().replace("-", "").replace("_", "")
            if any(key.replace("-", "") in flat for key in CJK_FONT_FILES):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError) as error:  # an unreadable font file: say which, go on
                    print(f"skipping font {path}: {error}", file=sys.stderr)
        found = known()
    return found


def _use_font(name: str) -> None:
    import matplotlib

    # DejaVu Sans (matplotlib's own) first, so Latin and Greek (ᾱ, σ, ε̂) look as in English;
    # matplotlib falls back to the CJK font glyph by glyph for the Chinese.
    matplotlib.rcParams["font.family"] = ["DejaVu Sans", name]


def t(text: str) -> str:
    """``text`` in the chosen language (printed messages, widget labels): with Chinese chosen, what
    ``translate`` gives — the catalogue's entry, or a formatted key's ("strength 0.5" by "strength {s}")."""
    return translate(text) if _language == "zh" else text


def say(template: str, **values) -> None:
    """Print a message for the reader in the chosen language: ``template`` is the catalogue's key,
    filled with ``values`` as ``str.format`` does — ``say("{n} steps in {s:.1f} s", n=20, s=1.23)``
    prints "20 steps in 1.2 s", or "20 步, 用时 1.2 秒" with Chinese chosen. The notebooks print their
    messages through it, so their code is the same in both languages. A string padded to a width
    (``{name:12}``, ``{name:>12}``) is padded by its display width, so columns of Chinese text line up
    in a terminal or a notebook (a Chinese character takes two columns, see ``display_width``). An
    exception passed as a value is shown by its message, in Chinese where the catalogue knows it (the
    exception itself stays English, for programmers)."""
    if _language == "zh":  # an error shown to the reader ("refused: {error}"): its message through the catalogue too
        values = {k: translate(str(v)) if isinstance(v, BaseException) else v for k, v in values.items()}
    print(_WIDE.format(t(template), **values))


def display_width(text: str) -> int:
    """Columns ``text`` takes in a monospaced font: 2 for a wide or full-width character (Chinese,
    full-width punctuation — Unicode's East Asian Width W or F), 0 for a combining mark, 1 otherwise."""
    if not isinstance(text, str):
        raise TypeError(f"display_width takes a str, got {type(text).__name__} {text!r}")
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, width: int, align: str = "<", fill: str = " ") -> str:
    """``text`` padded with ``fill`` to ``width`` display columns (``display_width``), aligned left
    (``"<"``), right (``">"``) or centred (``"^"``); text already as wide or wider is returned as it is
    — as ``format(text, "<12")`` does, but counting a Chinese character as two columns."""
    if align not in ("<", ">", "^"):
        raise ValueError(f"align={align!r}: use '<' (left), '>' (right) or '^' (centre)")
    if len(fill) != 1 or display_width(fill) != 1:
        raise ValueError(f"fill={fill!r}: one single-width character")
    missing = max(0, width - display_width(text))
    if align == "<":
        return text + fill * missing
    if align == ">":
        return fill * missing + text
    return fill * (missing // 2) + text + fill * (missing - missing // 2)


_STRING_SPEC = re.compile(r"(?:(?P<fill>.)?(?P<align>[<>^]))?(?P<width>\d+)s?")


class _WideFormatter(string.Formatter):
    """``str.format`` whose string fields are padded by display width (``pad``); everything else as usual."""

    def format_field(self, value, format_spec):
        match = _STRING_SPEC.fullmatch(format_spec) if isinstance(value, str) else None
        if match:
            return pad(value, int(match["width"]), match["align"] or "<", match["fill"] or " ")
        return super().format_field(value, format_spec)


_WIDE = _WideFormatter()


def translate(text: str) -> str:
    """``text`` in Chinese if the catalogue knows it: exactly, as a formatted key, as a key wrapped onto
    several lines, line by line, or as "Known: rest"."""
    if text in ZH:
        return ZH[text]
    for pattern, chinese in _patterns():
        match = pattern.fullmatch(text)
        if match:
            return chinese.format(**match.groupdict())
    if "\n" in text:
        joined = " ".join(text.split("\n"))  # a key wrapped onto several lines (plots.wrap_title) is still that key
        whole = translate(joined)
        if whole != joined:
            return whole
        return "\n".join(translate(line) for line in text.split("\n"))
    head, sep, rest = text.partition(": ")
    if sep and head in ZH:
        return f"{ZH[head]}: {rest}"
    return text


_PLACEHOLDER = re.compile(r"\{(\w+)(?::[^{}]*)?\}")
_compiled: list[tuple[re.Pattern, str]] | None = None


def _patterns() -> list[tuple[re.Pattern, str]]:
    """(regex, Chinese template) for every catalogue key with {placeholders}."""
    global _compiled
    if _compiled is None:
        _compiled = []
        for english, chinese in ZH.items():
            # a key of placeholders and punctuation only (a padded row, "{label:26s} {text}") has no words to
            # translate, and as a pattern it would match any text: it is only looked up exactly
            if _PLACEHOLDER.search(english) and re.search(r"[A-Za-z]", _PLACEHOLDER.sub("", english)):
                parts, last = [], 0
                seen = set()
                for m in _PLACEHOLDER.finditer(english):
                    group = f"(?P={m[1]})" if m[1] in seen else f"(?P<{m[1]}>.+?)"  # a name used twice holds the same text
                    parts.append(re.escape(english[last : m.start()]) + group)
                    seen.add(m[1])
                    last = m.end()
                parts.append(re.escape(english[last:]))
                literal = len(_PLACEHOLDER.sub("", english))
                _compiled.append((literal, re.compile("".join(parts), re.DOTALL), _PLACEHOLDER.sub(r"{\1}", chinese)))
        # the most specific key first: "seed {s} again" before "seed {s}"
        _compiled = [(pattern, chinese) for _, pattern, chinese in sorted(_compiled, key=lambda entry: -entry[0])]
    return _compiled


_figure_class = None


def __getattr__(name: str):
    """``sdexplain.i18n.Figure``, built on first use: importing the catalogue (which ``import sdexplain``
    does) must not import matplotlib — the core stays free of figure libraries (tests/test_layers.py)."""
    global _figure_class
    if name != "Figure":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _figure_class is None:
        from matplotlib.figure import Figure as MatplotlibFigure
        from matplotlib.text import Text

        class Figure(MatplotlibFigure):
            """matplotlib's ``Figure``, whose texts are shown in the chosen language when it is drawn.

            The English is kept, so a figure drawn again after ``set_language("en")`` is English again.
            """

            def draw(self, renderer):
                if not hasattr(self, "_sdexplain_english"):
                    self._sdexplain_english = {}
                chinese = figure_language() == "zh"
                for text in self.findobj(Text):
                    english = self._sdexplain_english.get(id(text), text.get_text())
                    shown = translate(english) if chinese else english
                    if shown != text.get_text():
                        self._sdexplain_english[id(text)] = english
                        text.set_text(shown)
                return super().draw(renderer)

        Figure.__module__ = __name__
        _figure_class = Figure
    return _figure_class


# The catalogue: English (as written in the code) -> 简体中文. Terms follow the article
# (notebooks/zh/glossary.ipynb): 噪声预测器, 潜空间, 去噪强度, 噪音表, 标记器, 交叉关注, 无分类器指引.
ZH: dict[str, str] = {
    # figures (plots.py, schedules.py, guidance.py, tokens.py, editing.py, attention_metrics.py)
    "√ᾱ_t  (signal scale)": "√ᾱ_t (信号的系数)",
    "removed by the step": "这一步去掉的",
    "sampling step": "采样步",
    "looked at (key)": "被关注的 (key)",
    "looking (query)": "发出关注的 (query)",
    "attention weight": "关注权重",
    "σ_t = √(1−ᾱ_t)  (noise level)": "σ_t = √(1−ᾱ_t) (噪声水平)",
    "σ_t = √(1−ᾱ_t)  (x_t's noise factor)": "σ_t = √(1−ᾱ_t) (x_t 的噪声系数)",
    "sampler: {n} timesteps": "采样器: {n} 个时间步",
    "training timestep t": "训练时间步 t",
    "channel {c}": "通道 {c}",
    "loss": "损失",
    "{name} (mean of {n})": "{name} ({n} 点均值)",
    "chance": "随机猜测",
    "timestep t (noisier →)": "时间步 t (越往右噪声越大 →)",
    "accuracy": "准确率",
    "image": "图像",
    "training step": "训练步",
    "Noise schedule": "噪音表 (噪声调度)",
    "Training loss": "训练损失",
    "Accuracy against timestep": "准确率与时间步",
    "step {k}/{n}\nt={t}": "第 {k}/{n} 步\nt={t}",
    "clean": "干净",
    # schedules.py
    "timestep t of each U-Net call (noisy → clean)": "每次调用 U-Net 的时间步 t (由噪到净)",
    "noise level": "噪声水平",
    "U-Net call (noisy → clean)": "U-Net 调用 (由噪到净)",
    "σ_t = √(1−ᾱ_t) of the latent": "潜像的 σ_t = √(1−ᾱ_t)",
    "noise removed by the step (σ_t − σ_next)": "这一步去掉的噪声 (σ_t − σ_next)",
    "expected σ_t (schedule)": "预期的 σ_t (噪音表)",
    "measured σ̂_t (latent)": "实测的 σ̂_t (潜像)",
    "{name}, {steps} steps: expected noise level": "{name}, {steps} 步: 预期噪声水平",
    "{name}\n{n} U-Net calls": "{name}\n{n} 次 U-Net 调用",
    "gap {gap:.3f}": "差距 {gap:.3f}",
    # guidance.py
    "unconditional": "无条件",
    "conditional": "有条件",
    "cond − uncond": "有条件 − 无条件",
    "guided": "指引后",
    "guided (s={s})": "指引后 (s={s})",
    "CFG scale s": "CFG 值 s",
    "share matching the prompt": "符合提示的比例",
    "prompt adherence (judge)": "对提示的遵循 (裁判模型评判)",
    "mean pairwise RMS distance": "两两之间的平均 RMS 距离",
    "diversity across {n} seeds": "{n} 个种子之间的多样性",
    "{n} colours, {bits} bits": "{n} 种颜色, {bits} 比特",
    "classifier-guidance scale s": "分类器指引尺度 s",
    "classifier guidance: the judge vs the guiding classifier": "分类器指引: 裁判模型与指引用的分类器",
    "judged '{target}' (share)": "判为 '{target}' 的比例",
    "classifier p({target} | x_t)": "分类器 p({target} | x_t)",
    # tokens.py
    "cosine similarity": "余弦相似度",
    "before: token embeddings": "之前: 标记嵌入",
    "after: hidden states": "之后: 隐藏状态",
    # editing.py
    "denoising strength": "去噪强度",
    "mean |difference| (pixels in [0, 1])": "平均 |差值| (像素取值 [0, 1])",
    "image-to-image result vs input": "图像转图像结果 vs 输入",
    "VAE round trip vs input": "VAE 往返 vs 输入",
    # attention_metrics.py
    "attention inside object\n÷ object's share of image": "物体内的关注\n÷ 物体占图像的比例",
    "1 = attention spread evenly": "1 = 关注均匀分布",
    # notebook_tools.runtime_summary (the setup cell's line)
    "GPU: {gpu} — model {model} runs in float16.": "GPU: {gpu}, 模型 {model} 以 float16 运行。",
    "Apple GPU (MPS) — model {model} runs there in float32.": "Apple GPU (MPS): 模型 {model} 在上面以 float32 运行。",
    "No GPU found: fine for the toy model, which runs on the CPU in seconds.": "没有找到 GPU: 玩具模型没问题, 它在 CPU 上几秒就能出图。",
    "No GPU found: {model} would run on the CPU, which takes minutes per image. In Colab: Runtime → Change runtime type → GPU.":
        "没有找到 GPU: {model} 将在 CPU 上运行, 每张图要几分钟。在 Colab 中: 代码执行程序 → 更改运行时类型 → GPU。",
    # widgets/ (descriptions and titles; the browser renders Chinese by itself)
    "Generate": "生成",
    "a prompt": "输入提示",
    "type a prompt": "输入提示",
    "prompt": "提示",
    "negative prompt": "反向提示词",
    "word": "词",
    "step": "步",
    "steps": "采样步数",
    "all steps": "全部步",
    "seed": "随机数种子",
    "CFG scale": "CFG 值",
    "guidance s": "指引尺度 s",
    "sampler": "采样器",
    "width": "宽度",
    "height": "高度",
    "resolution": "分辨率",
    "result": "结果",
    "input image": "输入图像",
    "Your image": "你的图像",
    "use the input image (image-to-image)": "使用输入图像 (图像转图像)",
    "attention over the image": "图像上的关注",
    "the map at its own resolution": "原始分辨率下的关注图",
    "image at this scale": "这个尺度下的图像",
    "pixel space: x_t": "像素空间: x_t",
    "latent space: z_t (4 channels)": "潜空间: z_t (4 个通道)",
    "VAE decode of z_t": "z_t 的 VAE 解码",
    "latent x_t (4 channels)": "潜像 x_t (4 个通道)",
    "x_t, approximate colours": "x_t, 近似颜色",
    "predicted noise ε̂ (guided)": "预测的噪声 ε̂ (指引后)",
    "predicted clean image x̂0 (decoded)": "预测的干净图像 x̂0 (解码)",
    "Scrub the steps of this run": "逐步查看这次运行",
    'unconditional ε̂(x_t, "")': '无条件 ε̂(x_t, "")',
    "conditional ε̂(x_t, prompt)": "有条件 ε̂(x_t, prompt)",
    "difference cond − uncond (own colour scale)": "差值 有条件 − 无条件 (单独色标)",
    "guided = uncond + s·(cond − uncond)": "指引后 = 无条件 + s·(有条件 − 无条件)",
    # widgets/: status lines, read-outs, buttons (button.py, panel.py, scrubbers.py, attention.py, cfg.py, forward.py, samplers.py, training.py, static.py)
    "sampling…": "采样中…",
    "sampling… {done} of {total} steps, about {left} left": "采样中… 已完成 {done} / {total} 步, 大约还要 {left}",
    "failed:": "失败:",
    "done in {duration}": "完成, 用时 {duration}",
    "{n} s": "{n} 秒",
    "{n} min": "{n} 分钟",
    "done: {n} U-Net evaluations, seed {seed}, {sampler}": "完成: 调用 U-Net {n} 次, 随机数种子 {seed}, 采样方法 {sampler}",
    "Can't generate:": "无法生成:",
    "step {k} / {n} &nbsp; timestep t = {t} &nbsp; ᾱ_t = {a:.4f} &nbsp; noise level σ_t = √(1−ᾱ_t) = {sigma:.3f}":
        "第 {k} / {n} 步 &nbsp; 时间步 t = {t} &nbsp; ᾱ_t = {a:.4f} &nbsp; 噪声水平 σ_t = √(1−ᾱ_t) = {sigma:.3f}",
    "mean over all steps": "所有步的平均",
    "step {k}": "第 {k} 步",
    "{token} · {where} · map {h}×{w}, attention from {lo:.3f} to {hi:.3f}": "{token} · {where} · 关注图 {h}×{w}, 关注权重从 {lo:.3f} 到 {hi:.3f}",
    "no trace for this image": "这张图没有跟踪记录",
    "this step's tensors were not kept (the trace's memory budget; see run.reductions)": "这一步的张量没有保留 (受跟踪的内存预算限制; 见 run.reductions)",
    "no unconditional pass at this scale (diffusers runs s ≤ 1 without guidance)": "这个尺度下没有无条件的那一路 (s ≤ 1 时 diffusers 不做指引)",
    "s = {s} &nbsp; step {k} / {n}, t = {t} &nbsp; ‖cond − uncond‖ = {d:.3f} &nbsp; ‖guided − uncond‖ = {g:.3f} &nbsp; colour scale ±{scale:.2f}, difference ±{diff:.2f} (white = 0)":
        "s = {s} &nbsp; 第 {k} / {n} 步, t = {t} &nbsp; ‖有条件 − 无条件‖ = {d:.3f} &nbsp; ‖指引后 − 无条件‖ = {g:.3f} &nbsp; 色标 ±{scale:.2f}, 差值 ±{diff:.2f} (白色 = 0)",
    "image {w}×{h}, latent {shape}": "图像 {w}×{h}, 潜像 {shape}",
    "precomputed at t = {at} (nearest to {t})": "在 t = {at} 处预先算好 (最接近 {t})",
    "t = {t} &nbsp; ᾱ_t = {a:.4f} &nbsp; signal √ᾱ_t = {signal:.3f} &nbsp; noise σ_t = √(1−ᾱ_t) = {sigma:.3f} &nbsp; SNR ᾱ/(1−ᾱ) = {snr:.3g}":
        "t = {t} &nbsp; ᾱ_t = {a:.4f} &nbsp; 信号 √ᾱ_t = {signal:.3f} &nbsp; 噪声 σ_t = √(1−ᾱ_t) = {sigma:.3f} &nbsp; 信噪比 ᾱ/(1−ᾱ) = {snr:.3g}",
    "{scheduler} · {n} U-Net calls · RMS gap between measured and expected noise level: {gap:.3f}": "{scheduler} · 调用 U-Net {n} 次 · 实测与预期噪声水平之间的 RMS 差距: {gap:.3f}",
    "Train more": "继续训练",
    "{n} steps trained; probe at t = {t}: MSE of the predicted noise {mse:.4f}": "已训练 {n} 步; 在 t = {t} 处检验: 预测噪声的均方误差 {mse:.4f}",
    "on": "开",
    "off": "关",
    "Upload": "上传",
    "{value} (of {lo}–{hi})": "{value} (范围 {lo}–{hi})",
    "; shown at {summary}": "; 图中的设置: {summary}",
    "[{name}: run the notebook to use it{shown}]": "[{name}: 运行笔记本才能使用{shown}]",
    "Generate sweep": "生成一组",
    "Run sweep": "运行一组",
    "Inpaint": "修图 (局部重绘)",
    "your image": "你的图像",
    "mask": "蒙版",
    "scale": "尺度",
    "strength": "去噪强度",
    "t": "t",
    # tokens.py: the token table (printed and in the token inspector)
    "slot": "位置",
    "token": "标记",
    "role": "角色",
    "start": "开头",
    "end": "结尾",
    "padding": "填充",
    "cut": "截掉",
    "cut:": "截掉:",
    "… {n} more padding slots (id {id})": "… 另有 {n} 个填充位置 (id {id})",
    "{used} of {slots} usable slots used; {cut} piece(s) cut": "可用的 {slots} 个位置用了 {used} 个; 截掉 {cut} 个片段",
    "{used} of {slots} usable slots used": "可用的 {slots} 个位置用了 {used} 个",
    # widgets/panel.py: EXPLANATIONS, one line per knob
    "What you want to see. It is tokenized, embedded, and steers every denoising step through cross-attention.":
        "你想看到的画面。它被标记器切成标记、换成嵌入, 再通过交叉关注引导每一个去噪步。",
    "Replaces the empty prompt in the unconditional pass, so guidance pushes AWAY from it.":
        "在无条件的那一路里代替空提示, 所以指引会把画面推离它。",
    "Picks the starting noise. Same seed + same settings = the same image, bit for bit.":
        "决定起始噪声。随机数种子相同、其他设置也相同, 生成的图就完全相同 (逐位一致)。",
    "How many denoising steps the sampler takes from noise to image: more is slower, and past a point more steps change little (notebook 14 measures where).":
        "采样器从噪声走到图像要去噪多少步: 步数越多越慢, 超过某个步数后再加, 图像也几乎不变 (具体在哪一步, 笔记本 14 有实测)。",
    "Classifier-free guidance scale: ε_uncond + s·(ε_cond − ε_uncond). 1 = no guidance, the conditional prediction alone (the slider starts at 1, as WebUI's does); higher follows the prompt more closely (on SD, with less variety between seeds).":
        "无分类器指引的尺度 (WebUI: 提示词引导系数): ε_uncond + s·(ε_cond − ε_uncond)。1 = 不指引, 只用有条件的预测 (滑块和 WebUI 的一样从 1 起); 越高越贴近提示 (在 SD 上, 不同种子之间的差异也越小)。",
    "The sampler: how each step turns the predicted noise into the next, less noisy latent.":
        "采样器 (WebUI: 采样方法): 每一步怎样根据预测的噪声, 得到下一个噪声更少的潜像。",
    "Width × height in pixels; the latent is 8× smaller per side, so both must be multiples of 8. A model is trained at one size (SD 1.x: 512²); far from it, results degrade (on SD, objects repeat).":
        "宽 × 高 (像素); 潜像每边小 8 倍, 所以两者都必须是 8 的倍数。模型在一个尺寸上训练 (SD 1.x: 512²); 离它太远, 效果变差 (在 SD 上, 物体会重复)。",
    "Denoising strength (image-to-image only): how far the input is pushed back into noise. 0 = unchanged; 1 = start from almost pure noise, so little of the input is left.":
        "去噪强度 (重绘幅度, 仅图像转图像): 把输入推回噪声多远。0 = 不变; 1 = 从几乎纯噪声开始, 输入所剩无几。",
    "An optional input image: with one, generation becomes image-to-image.":
        "可选的输入图像: 有了它, 生成就变成图像转图像。",
    # issue 25 (notebooks 01, 06, 09, 10): scales of heat maps and noise panels
    "own scale ±{range}": "单独色标 ±{range}",
    "attention (one scale)": "关注权重 (同一色标)",
    # notebook 13 (v1 vs v2 vs XL): SDXL's two text encoders, micro-conditioning, the refiner
    "MODEL is SDXL: tracing it.": "MODEL 是 SDXL: 跟踪它本身。",
    "MODEL is not SDXL: tracing the tiny random-weight SDXL layout.": "MODEL 不是 SDXL: 跟踪一个随机权重的微型 SDXL 结构。",
    "{encoder} ({cls}): channels {first}–{last} of the U-Net's text input, from hidden_states[{layer}] — equal to the encoder called directly: {same}":
        "{encoder} ({cls}): U-Net 文本输入的第 {first}–{last} 个通道, 来自 hidden_states[{layer}] —— 与直接调用该编码器的结果相同: {same}",
    "U-Net text input per token: {n} numbers = {sum}; pooled embedding: {shape} (batch, width)":
        "U-Net 每个标记的文本输入: {n} 个数 = {sum}; 池化嵌入: {shape} (批量, 宽度)",
    "words in the attention maps:": "关注图中的词:",
    "the U-Net was told:": "告诉 U-Net 的数值:",
    "mean absolute pixel difference between the two: {d:.3f} (pixels in [0, 1])": "两张图的平均绝对像素差: {d:.3f} (像素取值 [0, 1])",
    "base: {n} steps, timesteps {a:.0f} … {b:.0f}": "基础模型: {n} 步, 时间步 {a:.0f} … {b:.0f}",
    "refiner: {n} steps, timesteps {a:.0f} … {b:.0f}": "精修模型 (refiner): {n} 步, 时间步 {a:.0f} … {b:.0f}",
    # ---- notebook 15 (the WebUI's knobs) and the control panel's WebUI labels (widgets/panel.py)
    "sampler: {name} · CFG {cfg:g} · {steps} steps · seeds {first}…{last}": "采样方法: {name} · 提示词引导系数 (CFG) {cfg:g} · {steps} 步 · 种子 {first}…{last}",
    "  up to step {end}: {text!r}": "  到第 {end} 步为止: {text!r}",
    "prompt: {prompt}": "提示: {prompt}",
    "plain diffusers reads {n} tokens for 'a (red:1.3) cat': {tokens}": "直接用 diffusers 时, 'a (red:1.3) cat' 被读成 {n} 个标记: {tokens}",
    "length ratio, 'red' slot: {red:.3f} · every other slot: {other:.3f} · mean before {before:.4f}, after {after:.4f}":
        "向量长度之比, 'red' 位置: {red:.3f} · 其余每个位置: {other:.3f} · 均值 之前 {before:.4f}, 之后 {after:.4f}",
    "weight {w:4}: attention share of 'red' {a:.3f}, judged red {j:.0%}": "权重 {w:4}: 'red' 的交叉关注份额 {a:.3f}, 裁判判为红色 {j:.0%}",
    "attention share of 'red'": "'red' 的交叉关注份额",
    "emphasis weight w in (red:w)": "(red:w) 中的强调权重 w",
    "share": "份额",
    "share of seeds": "种子中的比例",
    "the word's cross-attention share": "这个词的交叉关注份额",
    "judged red": "判为红色",
    "what the judge reads": "裁判读出的结果",
    "cosine of 'a red cat' and 'a blue cat', slot by slot: 'a' {a:.4f} · 'cat' {c:.4f} · end token {e:.4f}":
        "'a red cat' 与 'a blue cat' 逐个位置的余弦相似度: 'a' {a:.4f} · 'cat' {c:.4f} · 结束标记 {e:.4f}",
    "WebUI: {k} chunks of {sizes} tokens → conditioning {shape}": "WebUI: {k} 段, 各 {sizes} 个标记 → 条件 {shape}",
    "plain diffusers: keeps {kept}, cuts {n}: {cut}": "直接用 diffusers: 保留 {kept} 个, 截掉 {n} 个: {cut}",
    "WebUI chunks": "WebUI 分段",
    "plain diffusers": "直接用 diffusers",
    "{label:16} judged dog {shape:.0%} · blue {colour:.0%} · left {position:.0%}": "{label:16} 判为狗 {shape:.0%} · 蓝色 {colour:.0%} · 左边 {position:.0%}",
    "WebUI, seed {s}": "WebUI, 种子 {s}",
    "diffusers, seed {s}": "diffusers, 种子 {s}",
    "without BREAK: judged left {a:.0%} · with BREAK: {b:.0%}": "不加 BREAK: 判为左边 {a:.0%} · 加 BREAK: {b:.0%}",
    "the place is decided by step {a:.1f}, the shape by step {b:.1f} (where the second prompt drops below half)":
        "位置在第 {a:.1f} 步前定下, 形状在第 {b:.1f} 步前定下 (第二个提示的份额跌到一半以下之处)",
    "judged cat for k = 0…10: {v}": "k = 0…10 时判为猫的比例: {v}",
    "judged dog for k = 0…10: {v}": "k = 0…10 时判为狗的比例: {v}",
    "no seed judged a dog from k = {a} on; from k = {b} on, switching changes nothing the judge reads": "从 k = {a} 起没有种子被判为狗; 从 k = {b} 起, 再切换对裁判读出的结果毫无影响",
    "judged cat in [cat:dog:k]": "[cat:dog:k] 中判为猫",
    "judged left in [left:right:k]": "[left:right:k] 中判为左边",
    "k: the step the prompt switches": "k: 提示切换的步数",
    "the first prompt's share against k": "第一个提示的份额随 k 的变化",
    "judged shapes: {shapes}": "裁判读出的形状: {shapes}",
    "judged a cat or a dog: {n} of {total}": "判为猫或狗的: {total} 张中 {n} 张",
    "seed {s}": "种子 {s}",
    "cosine between clip skip 1 and 2, per word: {c}": "Clip skip 1 与 2 之间的余弦相似度, 逐词: {c}",
    "clip skip {n}: all three judged right in {a:.0%} of 16 seeds": "Clip skip {n}: 16 个种子中三项全对的比例 {a:.0%}",
    "objects per image, 128×128 directly: {a}": "每张图的物体数, 直接生成 128×128: {a}",
    "objects per image, hires fix 64→128:  {b}": "每张图的物体数, 高清修复 64→128:  {b}",
    "objects in all: {a} directly, {b} through hires fix": "物体总数: 直接生成 {a} 个, 经高清修复 {b} 个",
    "direct, {n} obj.": "直接, {n} 个物体",
    "hires fix, {n} obj.": "高清修复, {n} 个物体",
    "strength {s}: {n} of 8 with more than one object": "去噪强度 {s}: 8 张中有 {n} 张不止一个物体",
    "strength {s}": "去噪强度 {s}",
    "standard deviation at strength 0.5: slerp {s:.3f}, straight average {l:.3f}": "强度 0.5 处的标准差: 球面插值 {s:.3f}, 直接平均 {l:.3f}",
    "strength 0 is seed 0's image and strength 1 is seed 1's, pixel for pixel": "强度 0 就是种子 0 的图, 强度 1 就是种子 1 的图, 逐像素相同",
    "variation strength {v}": "差异强度 {v}",
    "variation strength": "差异强度",
    "share of the attention: chunk 1 {a:.0%}, chunk 2 {b:.0%} (sum {s:.4f}); a filler slot {f:.4f} on average": "交叉关注的份额: 第 1 段 {a:.0%}, 第 2 段 {b:.0%} (合计 {s:.4f}); 填充词平均每个位置 {f:.4f}",
    "chunk 2's words: {w}": "第 2 段里的词: {w}",
    "cross-attention share per slot": "每个位置的交叉关注份额",
    "conditioning slot (77 per chunk)": "条件中的位置 (每段 77 个)",
    "Prompt": "提示词 (提示)",
    "Negative prompt": "反向提示词",
    "Seed": "随机数种子 (种子)",
    "Sampling steps": "迭代步数 (采样步数)",
    "CFG Scale": "提示词引导系数 (CFG 值)",
    "Sampling method": "采样方法 (采样器)",
    "Width": "宽度",
    "Height": "高度",
    "Width × height": "宽度 × 高度",
    # errors of sdexplain.generate that notebooks show the reader (10, 14) through say("…: {error}", error=error)
    "{name}={value} is not a multiple of the VAE factor {factor}; try {suggestion}": "{name}={value} 不是 VAE 缩放倍数 {factor} 的整数倍; 可以改用 {suggestion}",
    "steps={steps} × strength={strength} leaves {n} denoising steps; need at least 1": "steps={steps} × strength={strength} 只剩 {n} 个去噪步; 至少要有 1 步",
    # editing.INPAINT_FRAME_LABEL (notebook 11's frames)
    "strength {strength:g} · panels: input + mask, result, |result − input| (black = 0, bright = 0.5), pasted back · outside the mask: max {max:.3f}, mean {mean:.4f}":
        "去噪强度 {strength:g} · 依次为: 输入 + 蒙版、结果、|结果 − 输入| (黑 = 0, 最亮 = 0.5)、贴回后的结果 · 蒙版外: 最大 {max:.3f}, 平均 {mean:.4f}",
    "Denoising strength": "重绘幅度 (去噪强度)",
    # notebook 16 (embeddings and LoRA: sdexplain.adapters)
    "plain": "原样",
    "sky": "天空风格",
    "sky, through the VAE": "天空风格, 经过 VAE",
    "pictures": "图像",
    "|picture − first row| × {gain}": "|图像 − 第一行| × {gain}",
    "new rows: {n}; old rows moved: {rows}; other text-encoder weights changed: {other}":
        "新增的行: {n}; 变动的旧行: {rows}; 文本编码器其它权重变动的个数: {other}",
    "trained numbers: {a}; frozen numbers (text encoder and U-Net): {b:,}": "训练的数: {a} 个; 冻结的数 (文本编码器和 U-Net): {b:,} 个",
    "{file}: keys {keys}, {v} vector of width {w} ({dtype}), {b} bytes": "{file}: 键 {keys}, {v} 个宽度为 {w} 的向量 ({dtype}), {b} 字节",
    "loaded as token id {i}; the tokenizer now has {n} tokens": "加载为标记 id {i}; 标记器现在有 {n} 个标记",
    "{label:>9}: judged orange {c:.0%}, cat {s:.0%}, in the asked place {p:.0%}, size {z:.0%}":
        "{label:>9}: 判为橙色 {c:.0%}, 猫 {s:.0%}, 位置如提示 {p:.0%}, 大小如提示 {z:.0%}",
    "LoRA parameters: {n:,} = {share:.2%} of the U-Net's {u:,}, on {m} attention projections":
        "LoRA 参数: {n:,} 个 = U-Net 的 {u:,} 个参数的 {share:.2%}, 作用在 {m} 个注意力投影上",
    "{file}: {n} tensors for {l} layers, rank {r}, {p:,} numbers, {b:,} bytes; e.g. {key}":
        "{file}: {n} 个张量, 对应 {l} 层, 秩 {r}, {p:,} 个数, {b:,} 字节; 例如 {key}",
    "w = {w:4.2f}: style strength {s:5.2f}; judged colour {c:.0%}, shape {h:.0%}, place {p:.0%}, size {z:.0%}":
        "w = {w:4.2f}: 风格强度 {s:5.2f}; 判定颜色 {c:.0%}, 形状 {h:.0%}, 位置 {p:.0%}, 大小 {z:.0%}",
    "fused: the weights moved by up to {m:.2e}; the image differs from the unfused one by at most {d:.2e}; after unfusing the weights are back to within {b:.1e}":
        "融合后: 权重最多变动 {m:.2e}; 图像与未融合时最多相差 {d:.2e}; 解除融合后权重回到原值 (误差不超过 {b:.1e})",
    "a file for another model is refused, naming the file and the mismatch:": "为别的模型做的文件会被拒绝, 并写明文件和不匹配之处:",
    "{file}: the embedding's vectors are {a} wide but this text encoder's are {b} (SD 1.x: 768, SD 2.x: 1024, the toy: 64) — the file was made for another model":
        "{file}: 这个嵌入的向量宽 {a}, 而这个文本编码器的是 {b} (SD 1.x: 768, SD 2.x: 1024, 玩具模型: 64) —— 这个文件是为别的模型做的",
    # versions.markdown_table: the rows and headers of notebook 13's comparison of SD versions
    "property": "项目",
    "text encoder": "文本编码器",
    "text width (embedding size)": "文本向量宽度 (嵌入维数)",
    "text encoder layers": "文本编码器层数",
    "text attention heads": "文本编码器注意力头数",
    "max tokens": "最多标记数",
    "U-Net cross-attention width": "U-Net 交叉关注宽度",
    "pooled text width added to the time embedding": "加到时间嵌入上的池化文本宽度",
    "micro-conditioning numbers": "微调节的数值个数",
    "U-Net attention layers per level": "U-Net 每一层级的关注层数",
    "U-Net attention heads": "U-Net 注意力头数",
    "native resolution (px)": "原生分辨率 (像素)",
    "prediction type": "预测类型",
    "default scheduler": "默认采样器 (调度器)",
    "VAE scaling factor": "VAE 潜像缩放系数",
    "parameters: {part}": "参数量: {part}",
    "{n} at every level ({lo}–{hi} channels each)": "每一层级 {n} 个 (每个 {lo}–{hi} 个通道)",
    "{heads} ({c} channels each)": "{heads} (每个 {c} 个通道)",
    "CLIP-style, width {w}": "CLIP 式, 宽 {w}",
    "local folder '{name}'": "本地文件夹 '{name}'",
}


def _apply_environment() -> None:
    lang = os.environ.get("SDEXPLAIN_LANG", "").strip()
    if lang:
        set_language(lang)


from sdexplain.i18n_notebooks import NOTEBOOK_ZH  # noqa: E402  (the notebooks' printed messages and figure texts)

ZH.update(NOTEBOOK_ZH)

_apply_environment()

"""The Chinese edition of the notebooks (notebooks/zh/), built from the English ones plus translations.

    python -m sdexplain.notebook_i18n status            # cells to (re)translate, with the new English and a diff
    python -m sdexplain.notebook_i18n extract 05        # a notebook's English markdown cells, ready to translate
    python -m sdexplain.notebook_i18n build             # write notebooks/zh/*.ipynb (refuses stale/missing cells)
    python -m sdexplain.notebook_i18n execute           # build, then execute them in place (notebook_tools)
    python -m sdexplain.notebook_i18n english 03        # printed lines of executed zh notebooks still in English

One source: the English notebook gives the cells, their ids, order and code. A zh notebook's code
cells are the English ones, except that the setup cell also calls ``sdexplain.set_language("zh")``
(and, in Colab, installs a CJK font for the figures) — see ``zh_code``. Its markdown cells come from
``notebooks/zh/translations/<notebook>.md``: one block per English markdown cell,

    <!-- cell 8203d5ba · en 3f2a9c81b0d4 -->
    ## 1. 输入提示, 得到图像
    ...

where ``en`` is the hash of the English text the translation was made from. When someone edits
that English cell, its hash changes and the translation is *stale*: ``status`` shows the new
English, a diff against the English that was translated (from git history), and the marker line to
write once the Chinese is updated. ``{{colab_badge}}`` in a translation becomes the zh notebook's
own Colab badge. ``tests/test_notebook_i18n.py`` fails on stale or missing translations and on a
zh code cell that differs from its English twin.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from sdexplain.notebook_tools import ROOT, colab_badge

NOTEBOOKS = ROOT / "notebooks"
ZH = NOTEBOOKS / "zh"
TRANSLATIONS = ZH / "translations"
BADGE = "{{colab_badge}}"
MARKER = re.compile(r"^<!-- cell (?P<id>\S+) · en (?P<hash>[0-9a-f]{12}) -->$", re.MULTILINE)
SET_LANGUAGE = 'sdexplain.set_language("zh")  # 中文: 图中文字与打印信息'
INSTALL_FONT = "!(apt-get -qq install -y fonts-wqy-microhei || (apt-get -qq update && apt-get -qq install -y fonts-wqy-microhei)) > /dev/null  # 图中的中文字体"


def english_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def source_hash(text: str) -> str:
    """The first 12 hex digits of the SHA-256 of a cell's source (what a translation was made from)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def marker(cell_id: str, english: str) -> str:
    return f"<!-- cell {cell_id} · en {source_hash(english)} -->"


def zh_code(source: str) -> str:
    """A code cell of the zh notebook: the English code, plus the language setting in the setup cell."""
    out = []
    for line in source.split("\n"):
        out.append(line)
        stripped = line.strip()
        if stripped == "import sdexplain":
            out.append(SET_LANGUAGE)
        elif stripped.startswith("!pip install") and "sdexplain" in stripped:  # Colab's install line
            out.append(line[: len(line) - len(line.lstrip())] + INSTALL_FONT)
    return "\n".join(out)


@dataclass
class Translation:
    english_hash: str
    text: str


def translation_path(notebook: Path) -> Path:
    return TRANSLATIONS / (notebook.stem + ".md")


def read_translations(path: Path) -> dict[str, Translation]:
    """cell id -> Translation, from a translations file (empty when it doesn't exist)."""
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    matches = list(MARKER.finditer(text))
    out = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        cell_id = match["id"]
        if cell_id in out:
            raise ValueError(f"{path.name}: cell {cell_id} is translated twice")
        out[cell_id] = Translation(match["hash"], text[match.end() : end].strip("\n"))
    return out


@dataclass
class Problem:
    notebook: Path
    cell_id: str
    kind: str  # "missing" | "stale" | "empty"
    english: str
    old_hash: str | None = None
    chinese: str | None = None


def problems(notebook: Path) -> list[Problem]:
    """Markdown cells of an English notebook whose translation is missing, empty or stale."""
    nb = nbformat.read(notebook, as_version=4)
    translations = read_translations(translation_path(notebook))
    found = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        tr = translations.get(cell.id)
        if tr is None:
            found.append(Problem(notebook, cell.id, "missing", cell.source))
        elif not tr.text.strip():
            found.append(Problem(notebook, cell.id, "empty", cell.source, tr.english_hash))
        elif tr.english_hash != source_hash(cell.source):
            found.append(Problem(notebook, cell.id, "stale", cell.source, tr.english_hash, tr.text))
    return found


def unused(notebook: Path) -> list[str]:
    """Translated cell ids that the English notebook no longer has (safe to delete)."""
    nb = nbformat.read(notebook, as_version=4)
    ids = {c.id for c in nb.cells if c.cell_type == "markdown"}
    return [i for i in read_translations(translation_path(notebook)) if i not in ids]


def old_english(notebook: Path, cell_id: str, wanted_hash: str, max_commits: int = 40) -> str | None:
    """The English text a translation was made from, found in git history by its hash (None if not found)."""
    rel = notebook.relative_to(ROOT).as_posix()
    try:
        log = subprocess.run(["git", "log", f"-{max_commits}", "--format=%H", "--", rel], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    for commit in log.stdout.split():
        shown = subprocess.run(["git", "show", f"{commit}:{rel}"], cwd=ROOT, capture_output=True, text=True)
        if shown.returncode != 0:
            continue
        for cell in json.loads(shown.stdout).get("cells", []):
            source = "".join(cell.get("source", ""))
            if cell.get("id") == cell_id and source_hash(source) == wanted_hash:
                return source
    return None


def build(notebook: Path) -> Path:
    """Write notebooks/zh/<name>.ipynb from the English notebook and its translations.

    Refuses (ValueError) when a translation is missing, empty or stale. Outputs of code cells whose
    source is unchanged are kept from the previous zh notebook (``execute`` refreshes them).
    """
    bad = problems(notebook)
    if bad:
        listed = ", ".join(f"{p.cell_id} ({p.kind})" for p in bad)
        raise ValueError(f"{notebook.name}: {len(bad)} cell(s) need translating: {listed}; see `python -m sdexplain.notebook_i18n status`")
    english = nbformat.read(notebook, as_version=4)
    translations = read_translations(translation_path(notebook))
    target = ZH / notebook.name
    previous = {}
    if target.exists():
        previous = {c.id: c for c in nbformat.read(target, as_version=4).cells if c.cell_type == "code"}
    zh = nbformat.v4.new_notebook()
    zh.metadata = english.metadata
    zh.metadata.pop("widgets", None)
    badge = colab_badge(f"zh/{notebook.name}")
    for cell in english.cells:
        if cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(translations[cell.id].text.replace(BADGE, badge))
        elif cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(zh_code(cell.source))
            old = previous.get(cell.id)
            if old is not None and old.source == new.source:
                new.outputs, new.execution_count = old.outputs, old.execution_count
        else:
            new = nbformat.v4.new_raw_cell(cell.source)
        new.id = cell.id
        zh.cells.append(new)
    ZH.mkdir(exist_ok=True)
    nbformat.validate(zh)
    nbformat.write(zh, target)
    return target


# What a printed line may hold in English without needing a translation: the toy's prompt words
# (a prompt is shown as written), identifiers and names (CamelCase, snake_case, ALL CAPS, file names,
# CLIP pieces like cat</w>), quoted text (prompts, reprs) and numbers.
_CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|<[^<>\s]*>")
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")


def _prompt_words() -> set[str]:
    from sdexplain.toy import world

    return {*world.SHAPES, *world.COLOUR_NAMES, *world.POSITION_NAMES, *world.SIZE_NAMES, "a", "an", "on", "the", "at", "in"}


def english_words(line: str, prompt_words: set[str] | None = None) -> list[str]:
    """The English words of a printed line that a reader would need translated.

    Not counted: quoted text ('a red cat', "x"), <tokens>, identifiers and names (words with a
    digit, an underscore, a dot or slash joined to them, CamelCase or ALL CAPS), one-letter words
    and the toy's prompt words (cat, red, left, on, the … — a prompt is shown as written).
    """
    prompt_words = _prompt_words() if prompt_words is None else prompt_words
    words = []
    for chunk in _QUOTED.sub(" ", line).split():
        if re.search(r"[\d_/\\.=\[\]{}()]", chunk.strip(".,;:!?()[]")) or "</w>" in chunk:
            continue  # an identifier, a file name, a number with a unit, a value like t=5
        for word in _WORD.findall(chunk):
            plain = word.strip("'’-")
            if len(plain) < 2 or plain.isupper() or (plain[1:] != plain[1:].lower()):
                continue  # CFG, VAE, PNDMScheduler, iPhone: names
            if plain.lower() in prompt_words:
                continue
            words.append(plain)
    return words


def printed_lines(notebook: Path) -> list[tuple[str, str]]:
    """(cell id, line) for every line an executed notebook prints for the reader: its stdout and the
    plain-text results of its cells (library warnings on stderr are not the notebook's text)."""
    nb = nbformat.read(notebook, as_version=4)
    lines = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and output.get("name") == "stdout":
                text = output.text
            elif output.output_type in ("execute_result", "display_data") and set(output.get("data", {})) == {"text/plain"}:
                text = output["data"]["text/plain"]
            else:
                continue
            lines += [(cell.id, line) for line in text.splitlines() if line.strip()]
    return lines


def untranslated_lines(notebook: Path, min_words: int = 3) -> tuple[int, list[tuple[str, str]]]:
    """How many printed lines are text for the reader, and those of them still in English.

    A line is text when it holds Chinese or ``min_words`` English words (see ``english_words``);
    it is still English when it holds those words and no Chinese. Lines of numbers, identifiers and
    prompts are neither.
    """
    prompt_words = _prompt_words()
    text, english = 0, []
    for cell, line in printed_lines(notebook):
        has_chinese = bool(_CJK.search(line))
        many_words = len(english_words(line, prompt_words)) >= min_words
        text += has_chinese or many_words
        if many_words and not has_chinese:
            english.append((cell, line))
    return text, english


def _select(names: list[str]) -> list[Path]:
    """English notebooks by number or name prefix ("05", "05_tokens…"); all when none given."""
    notebooks = english_notebooks()
    if not names:
        return notebooks
    chosen = []
    for name in names:
        stem = Path(name).stem
        match = [p for p in notebooks if p.stem.startswith(stem)]
        if len(match) != 1:
            raise SystemExit(f"no single English notebook matches {name!r}; allowed: {[p.stem[:2] for p in notebooks]}")
        chosen += match
    return chosen


def print_status(notebooks: list[Path]) -> int:
    count = 0
    for notebook in notebooks:
        for p in problems(notebook):
            count += 1
            print(f"=== {translation_path(notebook).relative_to(ROOT)}  cell {p.cell_id}: {p.kind}")
            print(f"write this marker line:  {marker(p.cell_id, p.english)}")
            if p.kind == "stale":
                old = old_english(notebook, p.cell_id, p.old_hash)
                if old is None:
                    print("(the English it was translated from is not in recent git history)")
                else:
                    print("--- what changed in the English:")
                    print("\n".join(difflib.unified_diff(old.splitlines(), p.english.splitlines(), "translated from", "now", lineterm="", n=1)))
                print("--- current Chinese:")
                print(p.chinese)
            print("--- English now:")
            print(p.english)
            print()
        for cell_id in unused(notebook):
            print(f"=== {translation_path(notebook).relative_to(ROOT)}  cell {cell_id}: unused (no longer in the English notebook; delete its block)")
    print(f"{count} cell(s) to translate in {len(notebooks)} notebook(s)", file=sys.stderr)
    return 1 if count else 0


def print_extract(notebooks: list[Path]) -> None:
    for notebook in notebooks:
        nb = nbformat.read(notebook, as_version=4)
        print(f"<!-- {notebook.name} -->")
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                print(f"\n{marker(cell.id, cell.source)}\n{cell.source}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["status", "extract", "build", "execute", "english"])
    parser.add_argument("notebooks", nargs="*", help="numbers or names of English notebooks (default: all)")
    args = parser.parse_args(argv)
    notebooks = _select(args.notebooks)
    if args.command == "status":
        return print_status(notebooks)
    if args.command == "extract":
        print_extract(notebooks)
        return 0
    if args.command == "english":
        total = bad = 0
        for notebook in notebooks:
            counted, english = untranslated_lines(ZH / notebook.name)
            total, bad = total + counted, bad + len(english)
            print(f"{notebook.stem[:2]}: {len(english)} of {counted} printed lines of text are still English")
            for cell_id, line in english:
                print(f"    {cell_id}: {line}")
        print(f"all: {bad} of {total} ({bad / max(total, 1):.0%})")
        return 0
    if any(problems(n) for n in notebooks):
        print_status(notebooks)
        return 1
    built = [build(n) for n in notebooks]
    for path in built:
        print(f"built {path.relative_to(ROOT)}")
    if args.command == "execute":
        from sdexplain import notebook_tools

        return notebook_tools.main(["refresh", *map(str, built)])
    return 0


if __name__ == "__main__":
    sys.exit(main())

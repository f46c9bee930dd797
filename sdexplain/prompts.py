"""The WebUI's prompt syntax, read the way AUTOMATIC1111's WebUI (and Forge) read it.

    parse_attention("a (red:1.3) [cat]")  →  [("a ", 1.0), ("red", 1.3), (" ", 1.0), ("cat", 0.909…)]
    prompt_schedule("a [cat:dog:0.5]", 10) →  [(5, "a cat"), (10, "a dog")]

`parse_attention` is emphasis: `(word)` multiplies the word's weight by 1.1, `((word))` by 1.21,
`(word:1.3)` by 1.3, `[word]` divides by 1.1; `\\(` `\\)` `\\[` `\\]` `\\\\` are the literal
characters; brackets left open apply to the rest of the prompt, a closing bracket with nothing open
is plain text; `BREAK` (a word of its own) becomes the fragment ("BREAK", -1), which starts a new
75-token chunk (see `sdexplain.conditioning`). Neighbouring fragments with the same weight are
merged. The result is what WebUI's `parse_prompt_attention` returns, fragment for fragment (its own
doctests are tests/test_prompts.py's first cases), as (text, weight) tuples.

`prompt_schedule` is prompt editing and alternation: `[from:to:when]` uses `from` up to step `when`
and `to` after, `[to:when]` adds `to` after `when`, `[from::when]` removes `from` after `when`;
`when` written with a decimal point is a fraction of the steps (0.25 of 20 → 5), without one a step
number; brackets nest; `[a|b]` alternates a, b, a, … from step to step. It returns
[(end_step, text), …]: text is used for the steps up to and including end_step. A prompt that
doesn't fit the syntax (a `|` outside square brackets, a trailing lone backslash) is used whole, as
it stands, on every step — as in WebUI. This is WebUI's `get_learned_conditioning_prompt_schedules`
(v1.10, new timelines, no hires pass). WebUI counts the sampler's model calls from 0 and, at call
i, uses the first text whose end_step >= i (`reconstruct_cond_batch`): `text_at_step` does that.

Weights that are not finite numbers (a 400-digit weight is inf in floating point) and `when` values
that are not finite are refused with a ValueError naming them — WebUI would crash or produce NaNs.

Written from WebUI's documented behaviour and doctests; no WebUI code is used.
Sources: AUTOMATIC1111/stable-diffusion-webui, modules/prompt_parser.py (parse_prompt_attention,
get_learned_conditioning_prompt_schedules, reconstruct_cond_batch) and the wiki page "Features"
(Attention/emphasis, Prompt editing, Alternating Words, BREAK).
"""

from __future__ import annotations

import math
import re

ROUND = 1.1  # (word): × 1.1
SQUARE = 1 / 1.1  # [word]: ÷ 1.1
BREAK = ("BREAK", -1.0)

# One token of the emphasis syntax, tried in this order (the order WebUI's scanner uses).
_ATTENTION_TOKEN = re.compile(
    r"""
      \\[()\[\]\\]              # an escaped bracket or backslash: the literal character
    | \\                        # any other backslash: dropped
    | [(\[]                     # opening bracket
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)   # ':1.3)' closes a round bracket with a weight
    | [)\]]                     # closing bracket
    | [^\\()\[\]:]+             # plain text
    | :                         # a colon that is not a weight
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def _weight(text: str, fragment: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"emphasis weight {text!r} in {fragment!r} is not a number; write e.g. (word:1.3)") from None
    return value


def parse_attention(text: str) -> list[tuple[str, float]]:
    """The (text, weight) fragments WebUI's emphasis parser makes of `text` (see the module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    fragments: list[list] = []  # [text, weight], mutable while brackets close
    round_open: list[int] = []  # index in `fragments` where each open bracket started
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for fragment in fragments[start:]:
            fragment[1] *= factor

    for match in _ATTENTION_TOKEN.finditer(text):
        token, weight = match.group(0), match.group("weight")
        if token.startswith("\\"):
            fragments.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(fragments))
        elif token == "[":
            square_open.append(len(fragments))
        elif weight is not None and round_open:
            scale(round_open.pop(), _weight(weight, token))
        elif token == ")" and round_open:
            scale(round_open.pop(), ROUND)
        elif token == "]" and square_open:
            scale(square_open.pop(), SQUARE)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i:
                    fragments.append(list(BREAK))
                fragments.append([part, 1.0])
    for start in round_open:  # left open: they apply to the rest of the prompt
        scale(start, ROUND)
    for start in square_open:
        scale(start, SQUARE)
    if not fragments:
        fragments = [["", 1.0]]
    merged: list[list] = [fragments[0]]
    for fragment in fragments[1:]:
        if fragment[1] == merged[-1][1]:
            merged[-1][0] += fragment[0]
        else:
            merged.append(fragment)
    for piece, weight in merged:
        if not math.isfinite(weight):
            raise ValueError(f"the emphasis weight of {piece!r} is {weight}, not a finite number; use weights like (word:1.3)")
    return [(piece, float(weight)) for piece, weight in merged]


# ----------------------------------------------------------------------------- prompt editing

# A parsed prompt is a list of parts: str (text as written), or a node below.
# ("edit", before_parts | None, after_parts, when_text) and ("alt", [parts, ...]).
_NUMBER = re.compile(r"[+-]?(?:\d+[eE][+-]?\d+|(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+)")
_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")
_SPACE = re.compile(r"\s+")
_STRAY = "[]():"


class _Fail(Exception):
    pass


class _Parser:
    """A recursive-descent reader of WebUI's prompt-editing syntax.

    Inside a bracket only well-formed text is allowed (plain text, nested brackets); at the top
    level a bracket that doesn't form a construct is kept as a literal character. A `|` outside a
    square bracket, or a lone trailing backslash, makes the whole prompt unreadable (`_Fail`).
    """

    def __init__(self, text: str):
        self.text = text

    def top(self) -> list:
        parts, pos, text = [], 0, self.text
        while pos < len(text):
            if text[pos] in "([":
                found = self.bracket(pos)
                if found is not None:
                    node, pos = found
                    parts.append(node)
                    continue
            if text[pos] in _STRAY:
                parts.append(text[pos])
                pos += 1
                continue
            match = _PLAIN.match(text, pos)
            if match is None:  # '|' or a lone trailing backslash
                raise _Fail
            parts.append(match.group(0))
            pos = match.end()
        return parts

    def prompt(self, pos: int) -> tuple[list, int]:
        """Well-formed text from `pos` up to the first character that can't continue it."""
        parts, text = [], self.text
        while pos < len(text):
            if text[pos] in "([":
                found = self.bracket(pos)
                if found is None:
                    break
                node, pos = found
                parts.append(node)
                continue
            match = _PLAIN.match(text, pos)
            if match is None:
                break
            parts.append(match.group(0))
            pos = match.end()
        return parts, pos

    def bracket(self, pos: int):
        """The construct opening at `pos` and the position after it, or None."""
        text = self.text
        if text[pos] == "(":
            inner, at = self.prompt(pos + 1)
            if at < len(text) and text[at] == ")":
                return ["(", *inner, ")"], at + 1
            if at < len(text) and text[at] == ":":
                second, at2 = self.prompt(at + 1)
                if at2 < len(text) and text[at2] == ")":
                    return ["(", *inner, ":", *second, ")"], at2 + 1
            return None
        # '['
        first, at = self.prompt(pos + 1)
        if at >= len(text):
            return None
        sign = text[at]
        if sign == "]":
            return ["[", *first, "]"], at + 1
        if sign == "|":
            options = [first]
            while at < len(text) and text[at] == "|":
                option, at = self.prompt(at + 1)
                options.append(option)
            if at < len(text) and text[at] == "]":
                return ("alt", options), at + 1
            return None
        if sign == ":":
            when = self.when(at + 1)
            if when is not None:  # [to:when]
                return ("edit", None, first, when[0]), when[1]
            second, at2 = self.prompt(at + 1)
            if at2 < len(text) and text[at2] == ":":
                when = self.when(at2 + 1)
                if when is not None:  # [from:to:when]
                    return ("edit", first, second, when[0]), when[1]
        return None

    def when(self, pos: int):
        """`[ws] NUMBER [ws] ]` from `pos`: (the number as written, the position after ']'), or None."""
        text = self.text
        space = _SPACE.match(text, pos)
        if space:
            pos = space.end()
        number = _NUMBER.match(text, pos)
        if number is None:
            return None
        pos = number.end()
        space = _SPACE.match(text, pos)
        if space:
            pos = space.end()
        if pos < len(text) and text[pos] == "]":
            return number.group(0), pos + 1
        return None


def _when_step(written: str, steps: int) -> int:
    value = float(written)
    if not math.isfinite(value):
        raise ValueError(f"prompt editing step {written!r} is not a finite number; write a step (5) or a fraction of the steps (0.25)")
    if "." in written:  # a fraction of the steps
        value *= steps
    return min(steps, int(value))


def _steps_of(parts: list, steps: int, found: set[int]) -> None:
    for part in parts:
        if isinstance(part, tuple) and part[0] == "edit":
            _, before, after, written = part
            when = _when_step(written, steps)
            if when >= 1:
                found.add(when)
            _steps_of(before or [], steps, found)
            _steps_of(after, steps, found)
        elif isinstance(part, tuple):  # alternation: every step
            found.update(range(1, steps + 1))
            for option in part[1]:
                _steps_of(option, steps, found)
        elif isinstance(part, list):
            _steps_of(part, steps, found)


def _text_at(parts: list, step: int, steps: int) -> str:
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, list):
            out.append(_text_at(part, step, steps))
        elif part[0] == "edit":
            _, before, after, written = part
            out.append(_text_at(before or [], step, steps) if step <= _when_step(written, steps) else _text_at(after, step, steps))
        else:
            options = part[1]
            out.append(_text_at(options[(step - 1) % len(options)], step, steps))
    return "".join(out)


def prompt_schedule(text: str, steps: int) -> list[tuple[int, str]]:
    """[(end_step, text), …] for a prompt with prompt editing / alternation (see the module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    try:
        parts = _Parser(text).top()
    except _Fail:
        return [(steps, text)]
    found = {steps}
    _steps_of(parts, steps, found)
    return [(step, _text_at(parts, step, steps)) for step in sorted(found)]


def text_at_step(schedule: list[tuple[int, str]], index: int) -> str:
    """The text WebUI uses at model call `index` (0-based): the first entry whose end_step >= index."""
    for end_step, text in schedule:
        if index <= end_step:
            return text
    return schedule[0][1]  # past the end: WebUI falls back to the first entry


def schedule_index(schedule: list[tuple[int, str]], index: int) -> int:
    """Which entry of `schedule` WebUI uses at model call `index` (0-based)."""
    for i, (end_step, _) in enumerate(schedule):
        if index <= end_step:
            return i
    return 0

"""sdexplain.prompts reads the WebUI prompt syntax as AUTOMATIC1111's WebUI reads it.

The first cases of each group are WebUI's own doctests (modules/prompt_parser.py,
parse_prompt_attention and get_learned_conditioning_prompt_schedules, v1.10), converted from lists
to tuples. One WebUI doctest, g("a [{b|d{:.5] c"), is marked there "not handling this right now"
and its listed output is not what WebUI's parser returns (the `|` outside a well-formed
alternation makes the grammar reject the prompt, so it is used whole); we test what the parser does.
"""

import math

import pytest

from sdexplain.prompts import BREAK, parse_attention, prompt_schedule, schedule_index, text_at_step


# ----------------------------------------------------------------------------- emphasis: WebUI's doctests


@pytest.mark.parametrize(
    "text, expected",
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),
    ],
)
def test_webui_emphasis_doctests(text, expected):
    assert parse_attention(text) == expected  # exact floats: the same products in the same order


# ----------------------------------------------------------------------------- emphasis: edge cases


def test_nesting_multiplies_and_square_brackets_divide():
    assert parse_attention("((cat))") == [("cat", 1.1 * 1.1)]
    assert parse_attention("[cat]") == [("cat", 1 / 1.1)]
    assert parse_attention("[[cat]]") == [("cat", (1 / 1.1) * (1 / 1.1))]
    assert parse_attention("(cat:1.3)") == [("cat", 1.3)]
    assert parse_attention("(cat: 0.5 )") == [("cat", 0.5)]  # spaces around the weight are allowed
    assert parse_attention("((cat:2))") == [("cat", 2 * 1.1)]


def test_closing_brackets_with_nothing_open_are_text():
    assert parse_attention("a) b] c") == [("a) b] c", 1.0)]
    assert parse_attention("a:1.2) b") == [("a:1.2) b", 1.0)]  # a weight with no '(' open is text too
    assert parse_attention("time: noon") == [("time: noon", 1.0)]


def test_escapes_and_lone_backslashes():
    assert parse_attention("\\(cat\\)") == [("(cat)", 1.0)]
    assert parse_attention("a \\\\ b") == [("a \\ b", 1.0)]
    assert parse_attention("a\\b") == [("ab", 1.0)]  # WebUI drops a backslash that escapes nothing


def test_break_is_its_own_fragment():
    assert parse_attention("a cat BREAK a dog") == [("a cat", 1.0), BREAK, ("a dog", 1.0)]
    assert parse_attention("BREAKFAST") == [("BREAKFAST", 1.0)]  # only the word BREAK
    assert parse_attention("a break b") == [("a break b", 1.0)]  # upper case only
    # inside brackets BREAK is scaled like any fragment: -1.1 is no longer WebUI's BREAK marker
    assert parse_attention("(a BREAK b)") == [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]


def test_empty_and_merged():
    assert parse_attention("") == [("", 1.0)]
    assert parse_attention("()") == [("", 1.0)]
    assert parse_attention("(a)(b) [c]") == [("ab", 1.1), (" ", 1.0), ("c", 1 / 1.1)]


def test_weights_must_be_finite_numbers():
    with pytest.raises(ValueError, match="not a finite number"):
        parse_attention("(cat:" + "9" * 400 + ")")  # float("9"*400) is inf
    with pytest.raises(ValueError, match="not a finite number"):
        parse_attention("(" * 8000 + "cat")  # 1.1**8000 overflows to inf
    with pytest.raises(ValueError, match="'1.2.3' .* not a number"):
        parse_attention("(cat:1.2.3)")
    with pytest.raises(TypeError, match="str"):
        parse_attention(None)


def test_weights_are_floats_and_finite():
    for _, weight in parse_attention("a ((b:1.5)) [[c]] (d:0)"):
        assert isinstance(weight, float) and math.isfinite(weight)


# ----------------------------------------------------------------------------- prompt editing: WebUI's doctests


@pytest.mark.parametrize(
    "text, expected",
    [
        ("test", [(10, "test")]),
        ("a [b:3]", [(3, "a "), (10, "a b")]),
        ("a [b: 3]", [(3, "a "), (10, "a b")]),
        ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
        ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
        ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
        ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
        ("a [unbalanced", [(10, "a [unbalanced")]),
        ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
        ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
        ("[a|(b:1.1)]", [(s, "a" if s % 2 else "(b:1.1)") for s in range(1, 11)]),
        ("[fe|]male", [(s, "female" if s % 2 else "male") for s in range(1, 11)]),
        ("[fe|||]male", [(s, "female" if s % 4 == 1 else "male") for s in range(1, 11)]),
    ],
)
def test_webui_schedule_doctests(text, expected):
    assert prompt_schedule(text, 10) == expected


def test_the_example_in_webui_source():
    # the comment at the top of WebUI's prompt_parser.py, steps = 100
    text = "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]"
    assert prompt_schedule(text, 100) == [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]


# ----------------------------------------------------------------------------- prompt editing: edge cases


def test_a_prompt_the_grammar_rejects_is_used_whole():
    assert prompt_schedule("a [{b|d{:.5] c", 10) == [(10, "a [{b|d{:.5] c")]
    assert prompt_schedule("a|b [c:d:2]", 10) == [(10, "a|b [c:d:2]")]  # '|' outside [ ]
    assert prompt_schedule("a [b:c:2] \\", 10) == [(10, "a [b:c:2] \\")]  # lone trailing backslash


def test_fractions_need_a_decimal_point():
    assert prompt_schedule("[cat:dog:0.25]", 20) == [(5, "cat"), (20, "dog")]
    assert prompt_schedule("[cat:dog:5]", 20) == [(5, "cat"), (20, "dog")]
    assert prompt_schedule("[cat:dog:1.0]", 20) == [(20, "cat")]  # 1.0 × 20: dog never comes
    assert prompt_schedule("[cat:dog:1]", 20) == [(1, "cat"), (20, "dog")]
    assert prompt_schedule("[cat:dog:50]", 20) == [(20, "cat")]  # past the end: capped
    assert prompt_schedule("[cat:dog:0]", 20) == [(20, "dog")]
    assert prompt_schedule("[cat:dog:-3]", 20) == [(20, "dog")]
    assert prompt_schedule("[cat:dog:0.333]", 20) == [(6, "cat"), (20, "dog")]  # int() truncates 6.66


def test_edit_and_alternation_nest():
    assert prompt_schedule("[[cat|dog]:bird:4]", 6) == [(1, "cat"), (2, "dog"), (3, "cat"), (4, "dog"), (5, "bird"), (6, "bird")]
    assert prompt_schedule("[a [x:y:2]|b]", 4) == [(1, "a x"), (2, "b"), (3, "a y"), (4, "b")]


def test_non_finite_when_is_refused():
    with pytest.raises(ValueError, match="1e400"):
        prompt_schedule("[cat:dog:1e400]", 10)


def test_steps_and_text_are_checked():
    with pytest.raises(ValueError, match="steps"):
        prompt_schedule("cat", 0)
    with pytest.raises(ValueError, match="steps"):
        prompt_schedule("cat", True)
    with pytest.raises(TypeError, match="str"):
        prompt_schedule(3, 10)


def test_webui_counts_model_calls_from_zero():
    schedule = prompt_schedule("[cat:dog:3]", 6)
    assert schedule == [(3, "cat"), (6, "dog")]
    # calls 0, 1, 2, 3 use cat (index <= 3), calls 4, 5 use dog: WebUI's reconstruct_cond_batch
    assert [text_at_step(schedule, i) for i in range(6)] == ["cat"] * 4 + ["dog"] * 2
    assert [schedule_index(schedule, i) for i in range(6)] == [0, 0, 0, 0, 1, 1]
    alternating = prompt_schedule("[cat|dog]", 4)
    assert [text_at_step(alternating, i) for i in range(4)] == ["cat", "cat", "dog", "cat"]

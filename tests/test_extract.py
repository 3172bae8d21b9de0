"""Answer extractors and normalisation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uniscale.extract import (
    available_extractors,
    extract_answer_number,
    extract_boxed,
    extract_choice,
    extract_choice_e,
    extract_last_number,
    extract_text,
    get_extractor,
    normalize_answer,
    normalize_number,
    register_extractor,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1,000", "1000"),
        ("3.50", "3.5"),
        ("$5", "5"),
        ("5.0", "5"),
        ("5.", "5"),
        ("-0", "0"),
        ("-0.00", "0"),
        ("-12", "-12"),
        ("0.250", "0.25"),
        (".5", "0.5"),
        ("1e3", "1000"),
        ("50%", "50"),
        ("  $1,234,567.80 ", "1234567.8"),
        ("100", "100"),
        ("1200", "1200"),
    ],
)
def test_normalize_number(raw: str, expected: str) -> None:
    assert normalize_number(raw) == expected


@pytest.mark.parametrize("raw", ["", "abc", "1 2", "1,00", "5 apples", "--5", "1.2.3"])
def test_normalize_number_rejects_non_numbers(raw: str) -> None:
    assert normalize_number(raw) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So she pays $1,250.50.", "1250.5"),
        ("3 + 4 = 7", "7"),
        ("x = -5", "-5"),
        ("pages 3-5", "5"),
        ("It is 10km away", "10"),
        ("The total is 1,000 dollars.", "1000"),
        ("v1.2.3 has no number", None),
        ("no digits here", None),
        ("", None),
        ("answer: 42\n", "42"),
        ("between 1, 2, and 3", "3"),
    ],
)
def test_last_number(text: str, expected: str | None) -> None:
    assert extract_last_number(text) == expected


def test_answer_number_prefers_markers_over_trailing_numbers() -> None:
    assert extract_answer_number("3 + 4 = 7\n#### 7\nScore: 99") == "7"
    assert extract_answer_number("So the answer is 12 apples, not 3.") == "12"
    assert extract_answer_number("Answer: $1,500. Check: 3 * 500") == "1500"
    assert extract_answer_number(r"thus \boxed{\dfrac{3}{4}} of 8") == "3/4"
    assert extract_answer_number(r"\boxed{18} is it, 4") == "18"
    assert extract_answer_number("only numbers 1 then 2") == "2"
    assert extract_answer_number("nothing") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{42}.", "42"),
        (r"\boxed{1} then \boxed{2,000}", "2000"),
        (r"\boxed{\frac{1}{2}}", "1/2"),
        (r"\boxed{ \text{Paris} }", "paris"),
        (r"\boxed{x^{2}}", "x2"),
        (r"\fbox{7}", "7"),
        ("no box", None),
        (r"\boxed{unclosed", None),
        (r"\boxed{}", None),
    ],
)
def test_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is (B).", "B"),
        ("A dog ate it. Answer: C", "C"),
        ("B", "B"),
        ("(D)", "D"),
        ("D.", "D"),
        ("A) Paris", "A"),
        ("I think B) is right", "B"),
        ("Options (A) and (C); I pick (C)", "C"),
        (r"Final: \boxed{C}", "C"),
        ("The answer is a dog", None),
        ("a cat sat", None),
        ("The correct option is E", None),
    ],
)
def test_choice(text: str, expected: str | None) -> None:
    assert extract_choice(text) == expected


def test_choice_e_accepts_e() -> None:
    assert extract_choice_e("The correct option is E") == "E"
    assert extract_choice_e("answer: (b)") is None  # lower case letters never count


def test_text() -> None:
    assert extract_text("Reasoning...\nThe answer is: The Eiffel Tower.") == "eiffel tower"
    assert extract_text("Line one\n\n  Paris!  \n") == "paris"
    assert extract_text("   \n ") is None
    assert extract_text("Answer: 3.50") == "3.5"


def test_normalize_answer_matches_extractors() -> None:
    assert normalize_answer("$1,000") == extract_last_number("it costs $1,000.")
    assert normalize_answer("The Eiffel Tower") == extract_text("answer: eiffel tower")
    assert normalize_answer("$\\frac{3}{4}$") == "3/4"
    assert normalize_answer("the 050") == "50"


@given(st.text(max_size=60))
def test_normalize_answer_is_idempotent(s: str) -> None:
    once = normalize_answer(s)
    assert normalize_answer(once) == once


@given(st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-1e9, max_value=1e9))
def test_number_round_trips_through_prose(d: object) -> None:
    canonical = normalize_number(str(d))
    assert canonical is not None
    assert extract_last_number(f"The result is {canonical}. Done") == canonical
    assert normalize_number(canonical) == canonical


@given(st.text(max_size=200))
def test_extractors_are_total(s: str) -> None:
    for name in available_extractors():
        out = get_extractor(name)(s)
        assert out is None or isinstance(out, str)


def test_registry() -> None:
    assert {"last_number", "answer_number", "boxed", "choice", "choice_e", "text"} <= set(
        available_extractors()
    )
    assert get_extractor("boxed") is extract_boxed

    def upper(s: str) -> str | None:
        return s.upper() or None

    assert get_extractor(upper) is upper
    with pytest.raises(KeyError, match=r"unknown extractor 'nope'; known: .*last_number"):
        get_extractor("nope")
    register_extractor("test_upper", upper)
    try:
        assert get_extractor("test_upper")("x") == "X"
        with pytest.raises(ValueError, match="already registered"):
            register_extractor("test_upper", upper)
        register_extractor("test_upper", extract_boxed, overwrite=True)
        assert get_extractor("test_upper") is extract_boxed
    finally:
        from uniscale import extract

        extract._REGISTRY.pop("test_upper", None)

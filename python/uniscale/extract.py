"""Answer extractors: turn a model's free-text response into a short, comparable answer.

An extractor is a pure function ``(text: str) -> str | None``; ``None`` means "no answer could be
parsed". Extracted answers are already normalised, so two samples agree exactly when their
extracted strings are equal; that is what majority voting (`uniscale.vote`) and offline replay
compare. Gold answers should go through `normalize_answer` before being compared with them.

Built-in extractors (see `available_extractors`):

``last_number``
    The last number in the text (``"... so she pays $1,250.50."`` -> ``"1250.5"``).
``answer_number``
    A number introduced by an answer marker (``#### 42``, ``\\boxed{42}``, ``answer is 42``,
    ``Answer: 42``), falling back to the last number. Good for GSM8K-style chains of thought.
``boxed``
    The content of the last ``\\boxed{...}`` (nested braces allowed), normalised with
    `normalize_answer`.
``choice`` / ``choice_e``
    A multiple-choice letter A-D (or A-E) such as ``"The answer is (B)"`` -> ``"B"``.
``text``
    A normalised short text answer (SQuAD-style: lower case, no punctuation or articles).

Number normalisation (`normalize_number`): thousands separators, currency signs, trailing
percent signs and trailing zeros are dropped and ``-0`` becomes ``0``: ``"1,000"`` -> ``"1000"``,
``"3.50"`` -> ``"3.5"``, ``"$5"`` -> ``"5"``, ``"5.0"`` -> ``"5"``, ``"1e3"`` -> ``"1000"``.
Fractions are kept, not evaluated: ``"3/4"`` and ``"\\frac{3}{4}"`` both become ``"3/4"``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

__all__ = [
    "Extractor",
    "available_extractors",
    "extract_answer_number",
    "extract_boxed",
    "extract_choice",
    "extract_choice_e",
    "extract_last_number",
    "extract_text",
    "get_extractor",
    "normalize_answer",
    "normalize_number",
    "normalize_text",
    "register_extractor",
]

Extractor = Callable[[str], str | None]

# A number as written in prose: optional sign and currency sign, digits with optional
# comma-grouping in threes, optional decimals. The lookbehind keeps "3-5" from reading "-5"
# and "v1.2.3" from reading ".3"; the lookahead keeps "1,0000" from reading "1,000".
_NUMBER_RE = re.compile(
    r"(?<![\w.,])"
    r"(?P<sign>[-\u2212])?\s?[$\u20ac\u00a3]?\s?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])|\d+(?:\.\d+)?|\.\d+)"
)
_NUMERIC_STRING_RE = re.compile(
    r"^\s*(?P<sign>[-+\u2212])?\s*[$\u20ac\u00a3]?\s*"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+|\d+\.)"
    r"(?P<exp>[eE][-+]?\d{1,2})?\s*%?\s*\.?\s*$"
)
_GSM_MARKER_RE = re.compile(r"####\s*(?P<ans>[^\n]*)")
_ANSWER_IS_RE = re.compile(r"(?i:answer)(?:\s+is)?\s*[:=]?\s*(?P<ans>[^\n]*)")
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_TEXT_MARKER_RE = re.compile(r"(?i)(?:final\s+)?answer(?:\s+is)?\s*[:=]?\s*(?P<ans>[^\n]+)")
_ARTICLES_RE = re.compile(r"\b(?:a|an|the)\b")
_PUNCT_TABLE = str.maketrans("", "", string.punctuation)
_FRACTION_RE = re.compile(r"^\s*(-?)\s*(\d+)\s*/\s*(\d+)\s*$")
_LATEX_FRAC_RE = re.compile(r"^\s*(-?)\s*\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}\s*$")


def normalize_number(s: str) -> str | None:
    """Canonical decimal form of a string that is exactly one number, else ``None``.

    >>> normalize_number("1,000"), normalize_number("$3.50"), normalize_number("-0.0")
    ('1000', '3.5', '0')
    """
    m = _NUMERIC_STRING_RE.match(s)
    if m is None:
        return None
    digits = m.group("num").replace(",", "")
    if digits.endswith("."):
        digits = digits[:-1]
    return _canonical_decimal(m.group("sign"), digits + (m.group("exp") or ""))


def _canonical_decimal(sign: str | None, digits: str) -> str | None:
    try:
        value = Decimal(digits)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if sign in ("-", "\u2212"):
        value = -value
    if value == 0:
        return "0"
    out = format(value.normalize(), "f")
    if "." in out:
        out = out.rstrip("0").rstrip(".")
    return out


def normalize_text(s: str) -> str:
    """SQuAD-style text normalisation: lower case, drop punctuation and articles, squash spaces."""
    s = s.lower().translate(_PUNCT_TABLE)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def normalize_answer(s: str) -> str:
    """Normalise a gold or extracted answer: as a number if it is one, else as text.

    ``normalize_answer(x)`` is idempotent, and equals what the extractors return for the same
    answer, so ``extractor(response) == normalize_answer(gold)`` is the correctness test.
    """
    num = normalize_number(s)
    if num is not None:
        return num
    frac = _normalize_fraction(s)
    if frac is not None:
        return frac
    stripped = s.strip()
    unwrapped = _strip_latex_wrappers(stripped)
    if unwrapped != stripped:
        return normalize_answer(unwrapped)
    text = normalize_text(s)
    # Text that normalises to a bare number must come out as that number's canonical form,
    # or normalize_answer would not be idempotent ("the 050" -> "050" -> "50").
    return normalize_number(text) or text


def _normalize_fraction(s: str) -> str | None:
    """``"3/4"``, ``"\\frac{3}{4}"`` -> ``"3/4"`` (not reduced; ``-0/n`` -> ``"0/n"``)."""
    m = _FRACTION_RE.match(s) or _LATEX_FRAC_RE.match(s)
    if m is None:
        return None
    # String ops, not int(): no int-max-str-digits limit on absurd inputs.
    num, den = m.group(2).lstrip("0") or "0", m.group(3).lstrip("0") or "0"
    sign = "-" if m.group(1) and num != "0" else ""
    return f"{sign}{num}/{den}"


def _strip_latex_wrappers(s: str) -> str:
    s = s.strip().strip("$").strip()
    for prefix in ("\\text{", "\\mathrm{", "\\textbf{"):
        if s.startswith(prefix) and s.endswith("}"):
            s = s[len(prefix) : -1]
    return s.strip()


def extract_last_number(text: str) -> str | None:
    """The last number in ``text``, normalised; ``None`` if there is none."""
    last: re.Match[str] | None = None
    for last in _NUMBER_RE.finditer(text):  # noqa: B007 - we want the final match
        pass
    if last is None:
        return None
    return _canonical_decimal(last.group("sign"), last.group("num").replace(",", ""))


def _first_number(text: str) -> str | None:
    m = _NUMBER_RE.search(text)
    if m is None:
        return None
    return _canonical_decimal(m.group("sign"), m.group("num").replace(",", ""))


def _last_boxed(text: str) -> str | None:
    """Raw content of the last ``\\boxed{...}``, honouring nested braces; None if absent."""
    starts = [m.end() for m in _BOXED_RE.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
    return None


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, normalised with `normalize_answer`; else ``None``."""
    raw = _last_boxed(text)
    if raw is None:
        return None
    out = normalize_answer(raw)
    return out or None


def extract_answer_number(text: str) -> str | None:
    """A number after an answer marker, else the last number in the text.

    Markers, in order of trust: ``#### N`` (GSM8K), ``\\boxed{N}``, then the last
    ``answer is N`` / ``Answer: N`` / ``final answer: N``.
    """
    m = _GSM_MARKER_RE.search(text)
    if m is not None:
        num = _first_number(m.group("ans"))
        if num is not None:
            return num
    boxed = _last_boxed(text)
    if boxed is not None:
        num = normalize_number(boxed) or _normalize_fraction(boxed) or _first_number(boxed)
        if num is not None:
            return num
    for m in reversed(list(_ANSWER_IS_RE.finditer(text))):
        num = _first_number(m.group("ans"))
        if num is not None:
            return num
    return extract_last_number(text)


def _choice_extractor(letters: str) -> Extractor:
    cls = f"[{letters}]"
    marker = re.compile(
        r"(?i:answer(?:\s+is)?|answer\s*:|option|choice)\s*[:=]?\s*(?:is\s*)?"
        rf"[(\[*]*\s*({cls})(?![\w])"
    )
    boxed = re.compile(rf"\\boxed\s*\{{\s*(?:\\text\{{)?\s*({cls})\b")
    paren = re.compile(rf"(?<![\w])[(\[]?({cls})[)\]]")
    alone = re.compile(rf"^\W*({cls})\W*$")
    leading = re.compile(rf"^\s*[(\[*]*({cls})[)\].:]")
    trailing = re.compile(rf"(?<![\w])({cls})[).:]?\s*$")

    def extract(text: str) -> str | None:
        for pattern in (marker, boxed):
            found = pattern.findall(text)
            if found:
                return str(found[-1])
        m = alone.match(text)
        if m is not None:
            return m.group(1)
        m = leading.match(text)
        if m is not None:
            return m.group(1)
        found = paren.findall(text)
        if found:
            return str(found[-1])
        m = trailing.search(text.strip())
        if m is not None:
            return m.group(1)
        return None

    return extract


_choice_ad = _choice_extractor("A-D")
_choice_ae = _choice_extractor("A-E")


def extract_choice(text: str) -> str | None:
    """A multiple-choice letter A-D.

    Looked for, in order: ``answer is (B)`` / ``Answer: B`` (last one), ``\\boxed{B}``, a
    response that is just the letter, a response that starts with ``B)`` or ``B.``, the last
    ``(B)``, a letter ending the response. Only upper-case letters count, so the article "a"
    is never read as an answer.
    """
    return _choice_ad(text)


def extract_choice_e(text: str) -> str | None:
    """Like `extract_choice`, for five options A-E."""
    return _choice_ae(text)


def extract_text(text: str) -> str | None:
    """A normalised text answer: what follows the last ``answer is``/``Answer:``, else the last
    non-empty line, normalised with `normalize_answer`. ``None`` for blank text."""
    markers = list(_TEXT_MARKER_RE.finditer(text))
    if markers:
        candidate = markers[-1].group("ans")
    else:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            return None
        candidate = lines[-1]
    out = normalize_answer(candidate)
    return out or None


_REGISTRY: dict[str, Extractor] = {
    "last_number": extract_last_number,
    "answer_number": extract_answer_number,
    "boxed": extract_boxed,
    "choice": extract_choice,
    "choice_e": extract_choice_e,
    "text": extract_text,
}


def available_extractors() -> tuple[str, ...]:
    """Names accepted by `get_extractor`, sorted."""
    return tuple(sorted(_REGISTRY))


def get_extractor(name: str | Extractor) -> Extractor:
    """Look up an extractor by name; a callable is returned unchanged.

    Raises ``KeyError`` naming the known extractors for an unknown name.
    """
    if callable(name):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown extractor {name!r}; known: {', '.join(available_extractors())}"
        ) from None


def register_extractor(name: str, fn: Extractor, *, overwrite: bool = False) -> None:
    """Register ``fn`` under ``name`` (refuses to replace an existing name unless ``overwrite``)."""
    if not name:
        raise ValueError("extractor name must be non-empty")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"extractor {name!r} is already registered (pass overwrite=True)")
    _REGISTRY[name] = fn

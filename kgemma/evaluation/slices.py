"""Slices of nuanced reviews, where sentiment models go wrong.

A slice is a name, a description and a test over a review's text, rating and
token count. Users add their own with `custom_slice` (a callable or a regular
expression).
"""

import re
from dataclasses import dataclass
from typing import Callable

from kgemma.data.overlap import normalize_text

BORDERLINE_RATINGS = (4, 7)
SHORT_REVIEW_WORDS = 60


@dataclass(frozen=True)
class Slice:
    name: str
    description: str
    test: Callable  # (row dict with "text", "rating", "n_tokens", "sequence_length") -> bool

    def __call__(self, row):
        return bool(self.test(row))


def _regex_slice(name, description, pattern):
    compiled = re.compile(pattern, re.IGNORECASE)
    return Slice(name, description, lambda row: compiled.search(normalize_text(row["text"])) is not None)


# Negation flips or weakens the words around it ("not bad", "never boring").
NEGATION = _regex_slice(
    "negation",
    'A negation near an evaluative word ("not bad", "never boring", "wasn\'t good"): '
    "bag-of-words cues point the wrong way.",
    r"\b(not|never|no|hardly|n't|cannot|nothing)\b\W+(?:\w+\W+){0,2}?"
    r"(bad|good|great|terrible|awful|boring|funny|worth|recommend|disappoint\w*|enjoy\w*|best|worst|like|love)\b"
    r"|n't\s+(?:\w+\s+){0,2}?(bad|good|great|terrible|awful|boring|funny|worth|recommend|enjoy\w*|like|love)\b",
)

_POSITIVE = r"(great|excellent|wonderful|brilliant|amazing|loved?|superb|masterpiece|beautiful|fantastic|best)"
_NEGATIVE = r"(terrible|awful|horrible|worst|boring|waste|bad|poor|dull|stupid|disappoint\w*)"
_TURN = r"\b(but|however|although|though|yet|nevertheless|on the other hand|despite)\b"
_POS_RE, _NEG_RE = re.compile(rf"\b{_POSITIVE}\b"), re.compile(rf"\b{_NEGATIVE}\b")
_TURN_RE = re.compile(_TURN)

# A turn ("but", "however") with praise and criticism both present: the verdict
# depends on which side the reviewer lands on, not on word counts.
MIXED = Slice(
    "mixed",
    'Contrast or mixed sentiment: a turn ("but", "however", "although") in a review that '
    "holds both strong praise and strong criticism.",
    lambda row: bool(_TURN_RE.search(t := normalize_text(row["text"])) and _POS_RE.search(t) and _NEG_RE.search(t)),
)

# Surface cues of sarcasm: what is said is the opposite of what is meant.
SARCASM = _regex_slice(
    "sarcasm_cues",
    'Sarcasm cues ("(not)", "yeah right", "oh great", "/s", "thanks for nothing", praise in '
    "scare quotes): the literal words mean the opposite.",
    r"\(not\)|\byeah,? right\b|\boh,? (great|joy|wonderful|brilliant|sure)\b|(^|\s)/s\b|\bthanks for nothing\b"
    r"|\bwhat a (treat|joy)\b|[\"'](great|brilliant|masterpiece|genius|classic|amazing|funny|scary|acting|plot)[\"']"
    r"|\bas if\b|\bsure,? because\b",
)

BORDERLINE = Slice(
    "borderline_rating",
    "Borderline ratings (4 and 7 of 10): lukewarm reviews closest to the other class. Only where ratings are known.",
    lambda row: row.get("rating") in BORDERLINE_RATINGS,
)

SHORT = Slice(
    "short",
    f"Short reviews (under {SHORT_REVIEW_WORDS} words): little evidence to go on.",
    lambda row: len(row["text"].split()) < SHORT_REVIEW_WORDS,
)

TRUNCATED = Slice(
    "truncated",
    "Reviews longer than the model's sequence length: part of the review was cut.",
    # Unknown without both counts (e.g. predictions scored elsewhere, no model settings).
    lambda row: (
        None not in (row.get("n_tokens"), row.get("sequence_length")) and row["n_tokens"] > row["sequence_length"] - 1
    ),
)

BUILTIN_SLICES = (NEGATION, MIXED, SARCASM, BORDERLINE, SHORT, TRUNCATED)


def custom_slice(name, rule, description=None):
    """A user slice from a regular expression (matched on normalized text) or a
    callable taking the row dict (`text`, `rating`, `n_tokens`, `sequence_length`)."""
    if isinstance(rule, str):
        re.compile(rule)  # Fail now on a bad pattern.
        return _regex_slice(name, description or f"Reviews matching /{rule}/.", rule)
    if callable(rule):
        return Slice(name, description or f"Reviews selected by {getattr(rule, '__name__', 'a callable')}.", rule)
    raise TypeError(f"A slice rule is a regular expression or a callable, got {type(rule).__name__}.")


def slice_masks(rows, slices=BUILTIN_SLICES):
    """`{slice name: boolean list}` over `rows`."""
    return {s.name: [s(row) for row in rows] for s in slices}

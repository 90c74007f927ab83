"""How a review's text is cleaned: one set of rules, applied in Python here and in
TensorFlow by the model's preprocessor (`kgemma.model.text.clean_review_text`), so
that reports, duplicate checks and the model read the same words."""

import re

# IMDB reviews carry `<br />` line breaks and the odd HTML entity. The patterns are
# written for both Python's `re` and TensorFlow's RE2.
BREAK = r"(?i)<br\s*/?>"
TAG = r"</?[A-Za-z][^<>]*>"
SPACE = r"\s+"
ENTITIES = {
    "&quot;": '"',
    "&#39;": "'",
    "&apos;": "'",
    "&lt;": "<",
    "&gt;": ">",
    "&nbsp;": " ",
    "&amp;": "&",  # Last, so "&amp;lt;" stays "&lt;".
}


def clean_text(text):
    """`<br />` as a space, other HTML tags dropped, common entities decoded, runs of
    white space collapsed: the text the model reads, as a Python string."""
    text = re.sub(TAG, "", re.sub(BREAK, " ", text))
    for entity, char in ENTITIES.items():
        text = text.replace(entity, char)
    return re.sub(SPACE, " ", text).strip()


def word_spans(pieces):
    """`(start, end)` index pairs grouping text pieces (a tokenizer's, as text) into words:
    a word starts at the first piece and at each piece that starts with whitespace."""
    starts = [i for i, piece in enumerate(pieces) if i == 0 or piece[:1].isspace()]
    return list(zip(starts, starts[1:] + [len(pieces)]))

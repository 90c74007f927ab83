"""Explanations in reports: which words decided a mistake or a contrast pair.

These work on what `GemmaSentimentClassifier.explain` returns (dicts with `tokens` and
`scores`) through an `explain: texts -> explanations` function, not on a model:
evaluation never imports the model. Reports and notebooks show them as words coloured by
attribution (HTML) or as top words (Markdown).
"""

import difflib
import html

import numpy as np

from kgemma.data.text import word_spans

# Green for evidence for the explained class, red for evidence against it (the colours
# LIT and Captum's text views use), at most this opaque for the strongest word.
_FOR, _AGAINST = (22, 163, 74), (220, 38, 38)
_MAX_ALPHA = 0.85


def words(explanation):
    """`(words, scores)`: integrated gradients' token pieces joined into words as occlusion
    groups them (`kgemma.data.text.word_spans`; a word's score is its pieces' sum),
    occlusion's words as they are; an explanation a report kept has its words already."""
    if "words" in explanation:
        return explanation["words"], explanation["scores"]
    pieces, scores = explanation["tokens"], explanation["scores"]
    spans = word_spans(pieces)
    return ["".join(pieces[a:b]) for a, b in spans], [float(sum(scores[a:b])) for a, b in spans]


def top_words(explanation, k=5):
    """The `k` words that pushed most towards the explained class and the `k` that pushed
    most against it, each a list of `(word, score)`, strongest first."""
    ranked = sorted(zip(*words(explanation)), key=lambda pair: -pair[1])
    strip = [(word.strip(), float(score)) for word, score in ranked if word.strip()]
    return [p for p in strip if p[1] > 0][:k], [p for p in strip[::-1] if p[1] < 0][:k]


def word_colors(explanation):
    """`(words, scores, colors)`: each word's RGBA colour (0-255, alpha 0-1), green for the
    explained class and red against it, its alpha relative to the review's strongest word."""
    tokens, scores = words(explanation)
    scale = max((abs(s) for s in scores), default=0.0) or 1.0
    colors = [(*(_FOR if s > 0 else _AGAINST), _MAX_ALPHA * abs(s) / scale) for s in scores]
    return tokens, scores, colors


def highlight_html(explanation, marked=()):
    """The review as HTML, each word's background coloured by `word_colors`; a word's
    score shows on hover. Words whose indices are in `marked` (e.g. a contrast pair's
    edit) are underlined."""
    spans = []
    for i, (token, score, (red, green, blue, alpha)) in enumerate(zip(*word_colors(explanation))):
        style = f"background:rgba({red},{green},{blue},{alpha:.2f})"
        if i in marked:
            style += ";text-decoration:underline 2px;font-weight:bold"
        spans.append(f'<span style="{style}" title="{score:+.3g}">{html.escape(token)}</span>')
    return "".join(spans)


def edited_words(original, edited):
    """Indices of the words of `edited` (split as `words` splits it) that are not in
    `original`: a contrast pair's edit, found by a word-level diff."""
    old = [w.strip().lower() for w in original]
    new = [w.strip().lower() for w in edited]
    changed = set()
    for tag, _, _, start, end in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag != "equal":
            changed.update(range(start, end))
    return changed


def rank_of(explanation, indices):
    """The best rank (0: the top word) among the words at `indices`, ranking words by the
    size of their score, either sign; None when `indices` is empty."""
    _, scores = words(explanation)
    order = np.argsort(-np.abs(scores), kind="stable")
    ranks = [int(np.flatnonzero(order == i)[0]) for i in indices]
    return min(ranks) if ranks else None


def _explained(explanation):
    """What a report keeps of an explanation: the words and scores, and the check figure."""
    tokens, scores = words(explanation)
    kept = {"words": tokens, "scores": [float(s) for s in scores]}
    kept.update({k: explanation[k] for k in ("method", "target", "probability", "completeness") if k in explanation})
    return kept


def mistake_lists(metrics):
    """The report's lists of confident mistakes: overall, then each slice's."""
    return [metrics["mistakes"]["overall"], *metrics["mistakes"]["per_slice"].values()]


def explain_mistakes(metrics, reviews, explain, n):
    """Add an `explanation` to the first `n` listed mistakes, overall and in each slice
    (each review explained once), by `explain: texts -> explanations`."""
    lists = mistake_lists(metrics)
    chosen = sorted({m["index"] for mistakes in lists for m in mistakes[:n]})
    if not chosen:
        return
    explained = dict(zip(chosen, explain([reviews.texts[i] for i in chosen])))
    for mistakes in lists:
        for m in mistakes[:n]:
            m["explanation"] = _explained(explained[m["index"]])


def explain_pairs(original, edited, original_predicted, edited_predicted, explain, n):
    """Up to `n` contrast pairs with both sides explained, the pairs the model got wrong
    on either side first; each side's `edited` lists the word indices that differ from
    the other side (the edit)."""
    right = (np.asarray(original_predicted) == original.labels) & (np.asarray(edited_predicted) == edited.labels)
    chosen = np.argsort(right, kind="stable")[:n]
    texts = [t for i in chosen for t in (original.texts[i], edited.texts[i])]
    explanations = [_explained(e) for e in explain(texts)] if len(chosen) else []
    pairs = []
    for j, i in enumerate(chosen):
        sides = explanations[2 * j : 2 * j + 2]
        sides[0]["edited"] = sorted(edited_words(sides[1]["words"], sides[0]["words"]))
        sides[1]["edited"] = sorted(edited_words(sides[0]["words"], sides[1]["words"]))
        for side, reviews, predicted in zip(sides, (original, edited), (original_predicted, edited_predicted)):
            names = reviews.label_names
            side.update(label=names[reviews.labels[i]], predicted=names[int(predicted[i])])
        pairs.append({"index": int(i), "original": sides[0], "edited": sides[1]})
    return pairs

"""Show which words decided a review: its top positive and negative words.

    python examples/explain.py --adapter runs/demo/adapter.npz "Oh great, another sequel. Yeah right."
    python examples/explain.py --adapter runs/demo/adapter.npz --method occlusion "Not bad at all."
    python examples/explain.py --adapter runs/demo/adapter.npz --picture words.png "Not bad at all."

Integrated gradients by default (from 64 steps, doubled until the attributions add up to
within 5%; docs/explanations.md), or occlusion (each word left
out in turn). Scores are for the predicted class: positive ones pushed towards it.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kgemma import GemmaSentimentClassifier  # noqa: E402
from kgemma.evaluation.explanations import top_words  # noqa: E402
from kgemma.evaluation.explanations import word_colors  # noqa: E402
from kgemma.model.explain import DEFAULT_STEPS  # noqa: E402
from kgemma.model.explain import METHODS  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="+", help="Reviews to explain.")
    parser.add_argument("--adapter", required=True, help="An adapter .npz from kgemma-train or save_adapter().")
    parser.add_argument("--method", choices=METHODS, default=METHODS[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="Integration steps to start from.")
    parser.add_argument("--top", type=int, default=5, help="How many words to show each way.")
    parser.add_argument("--picture", help="Also draw the reviews' words coloured by score into this PNG.")
    args = parser.parse_args()

    classifier = GemmaSentimentClassifier.from_adapter(args.adapter)
    results = classifier.explain(args.texts, method=args.method, steps=args.steps)
    for result in results:
        print(f"\n{result['target']} ({result['probability']:.3f}): {result['text']}")
        if "completeness" in result:
            print(f"  completeness {result['completeness']:.3f} after {result['steps']} steps (1: exact)")
        pushed_for, pushed_against = top_words(result, args.top)
        print("  for:    " + ", ".join(f"{w!r} {s:+.3f}" for w, s in pushed_for))
        print("  against: " + ", ".join(f"{w!r} {s:+.3f}" for w, s in pushed_against))
    if args.picture:
        draw(results, args.picture)


def draw(results, path, width=100, font_size=11):
    """The reviews' words on coloured backgrounds, as the HTML report shows them, in a PNG
    (monospaced, so that a word's width is its length; lines wrap at `width` characters)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = []
    for result in results:
        lines.append([(f"{result['target']} ({result['probability']:.2f}), {result['method']}:", None)])
        line, used = [], 0
        for token, _, (red, green, blue, alpha) in zip(*word_colors(result)):
            if used + len(token) > width and line:
                lines.append(line)
                line, used = [], 0
                token = token.lstrip()
            line.append((token, (red / 255, green / 255, blue / 255, alpha)))
            used += len(token)
        lines += [line, []]
    char, height = 0.6 * font_size, 1.9 * font_size  # points
    fig = plt.figure(figsize=(width * char / 72 + 0.3, len(lines) * height / 72 + 0.2))
    for row, line in enumerate(lines):
        x = 10.0
        for token, color in line:
            lead = len(token) - len(token.lstrip())  # the space before a word stays uncoloured
            fig.text(
                (x + lead * char) / (fig.get_figwidth() * 72),
                1 - (row + 1) * height / (fig.get_figheight() * 72),
                token.strip(),
                family="monospace",
                fontsize=font_size,
                bbox={"facecolor": color or "none", "edgecolor": "none", "pad": 1.5},
            )
            x += len(token) * char
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"\npicture: {path}")


if __name__ == "__main__":
    main()

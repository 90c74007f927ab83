"""Writing an evaluation: `metrics.json`, `report.md`, a self-contained `report.html`, PNGs."""

import base64
import html
import json
from pathlib import Path

import numpy as np

from kgemma.evaluation.explanations import highlight_html
from kgemma.evaluation.explanations import mistake_lists
from kgemma.evaluation.explanations import rank_of
from kgemma.evaluation.explanations import top_words


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(metrics, path, label_names):
    plt = _pyplot()
    counts = np.array(metrics["overall"]["confusion_matrix"])
    normalized = np.array(metrics["overall"]["confusion_matrix_normalized"])
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    for (i, j), c in np.ndenumerate(counts):
        ax.text(
            j,
            i,
            f"{c}\n{normalized[i, j]:.1%}",
            ha="center",
            va="center",
            color="white" if normalized[i, j] > 0.5 else "black",
        )
    ax.set_xticks(range(len(label_names)), label_names)
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_reliability(metrics, path):
    plt = _pyplot()
    calibration = metrics["calibration"]
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.plot([0, 1], [0, 1], "--", color="gray", lw=1)
    series = [("bins_before_temperature", "raw", "tab:orange")]
    if calibration["temperature"] is not None:
        series.append(("bins", f"T = {calibration['temperature']:.2f}", "tab:blue"))
    for key, label, color in series:
        bins = [b for b in calibration[key] if b["count"]]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color=color, label=label, ms=3)
    ax.set_xlabel("confidence (top-1)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0.45, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.legend(fontsize=8)
    ax.set_title(f"ECE {calibration['ece']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_slices(metrics, path):
    plt = _pyplot()
    names = [n for n, s in metrics["slices"].items() if s["n"]]
    acc = [metrics["slices"][n]["accuracy"] for n in names]
    ci = [metrics["slices"][n]["accuracy_ci95"] or [a, a] for n, a in zip(names, acc)]
    errors = np.array([[a - lo for a, (lo, _) in zip(acc, ci)], [hi - a for a, (_, hi) in zip(acc, ci)]])
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.bar(range(len(names)), acc, yerr=errors, capsize=3, color="tab:blue", label="model")
    baseline = [metrics["slices"][n].get("baseline_accuracy") for n in names]
    if any(b is not None for b in baseline):
        ax.plot(range(len(names)), baseline, "D", color="tab:orange", label="TF-IDF baseline")
    ax.axhline(metrics["overall"]["accuracy"], color="gray", ls="--", lw=1, label="overall")
    ax.set_xticks(range(len(names)), [f"{n}\n(n={metrics['slices'][n]['n']})" for n in names], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_history(history, path):
    plt = _pyplot()
    epochs = history.get("epochs", [])
    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    for ax, key in zip(axes, ("loss", "accuracy")):
        x = [e["epoch"] + 1 for e in epochs]
        ax.plot(x, [e[key] for e in epochs], "o-", label=f"train {key}")
        ax.plot(x, [e[f"val_{key}"] for e in epochs], "o-", label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fmt(value, percent=True):
    if value is None:
        return "–"
    return f"{value:.1%}" if percent else f"{value:.4f}"


def _ci(interval):
    return "–" if not interval else f"[{interval[0]:.1%}, {interval[1]:.1%}]"


def summary_rows(metrics):
    """(label, value) rows of the compact table the CLI prints and the reports show."""
    o, c = metrics["overall"], metrics["calibration"]
    rows = [
        ("reviews", str(o["n"])),
        ("accuracy", f"{_fmt(o['accuracy'])} {_ci(o['accuracy_ci95'])}"),
        ("macro F1", f"{_fmt(o['macro_f1'])} {_ci(o['macro_f1_ci95'])}"),
        ("ROC-AUC / PR-AUC", f"{_fmt(o['roc_auc'], False)} / {_fmt(o['pr_auc'], False)}"),
        ("log loss / Brier", f"{_fmt(o['log_loss'], False)} / {_fmt(o['brier'], False)}"),
        (
            "ECE (15 bins)",
            f"{c['ece']:.4f}"
            + (f" (raw {c['ece_before_temperature']:.4f}, T={c['temperature']:.3f})" if c["temperature"] else ""),
        ),
    ]
    if "baseline" in metrics:
        b = metrics["baseline"]
        rows.append(
            (
                "TF-IDF baseline accuracy",
                f"{_fmt(b['overall']['accuracy'])} {_ci(b['overall']['accuracy_ci95'])} "
                f"(trained on {b.get('train_rows', '?')} rows)",
            )
        )
    return rows


def slice_table(metrics):
    header = ["slice", "n", "accuracy", "95% CI", "macro F1", "gap to overall", "baseline accuracy"]
    rows = []
    for name, s in metrics["slices"].items():
        gap = "–" if s["gap_to_overall"] is None else f"{s['gap_to_overall']:+.1%}"
        rows.append(
            [
                name,
                str(s["n"]),
                _fmt(s["accuracy"]),
                _ci(s["accuracy_ci95"]),
                _fmt(s["macro_f1"]),
                gap,
                _fmt(s.get("baseline_accuracy")),
            ]
        )
    return header, rows


def contrast_rows(metrics):
    """A row per contrast set: name, pairs, original and edited accuracy, consistency."""
    return [
        [c["name"], str(c["n_pairs"]), _fmt(c["original_accuracy"]), _fmt(c["edited_accuracy"]), _fmt(c["consistency"])]
        for c in metrics["contrast"]
    ]


def _markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(metrics, images, title):
    parts = [
        f"# {title}",
        "",
        f"Data: `{metrics['data']['source']}`, {metrics['data']['n']} reviews {metrics['data']['labels']}.",
        "",
    ]
    parts += ["## Overall", "", _markdown_table(["metric", "value"], [list(r) for r in summary_rows(metrics)]), ""]
    parts += [f"![confusion matrix]({images['confusion']})  ![reliability diagram]({images['reliability']})", ""]
    header, rows = slice_table(metrics)
    parts += ["## Nuanced-review slices", "", _markdown_table(header, rows), "", f"![slices]({images['slices']})", ""]
    parts += [f"- **{name}**: {text}" for name, text in metrics["slice_descriptions"].items()] + [""]
    if metrics["contrast"]:
        rows = contrast_rows(metrics)
        parts += [
            "## Contrast pairs",
            "",
            _markdown_table(["set", "pairs", "original acc.", "edited acc.", "consistency (both right)"], rows),
            "",
        ]
        for c in metrics["contrast"]:
            for pair in c.get("explained_pairs", []):
                parts += [f"- `{c['name']}` pair {pair['index']}:"]
                parts += [f"  - {side}: {_pair_side_markdown(pair[side])}" for side in ("original", "edited")]
            parts += [""] if c.get("explained_pairs") else []
    if "history" in images:
        parts += ["## Training", "", f"![learning curves]({images['history']})", ""]
    parts += ["## Most confident mistakes", ""] + [_mistake_line(m) for m in metrics["mistakes"]["overall"]]
    for name, mistakes in metrics["mistakes"]["per_slice"].items():
        if mistakes:
            parts += ["", f"### In `{name}`", ""] + [_mistake_line(m) for m in mistakes]
    return "\n".join(parts) + "\n"


def _mistake_line(m):
    line = f"- `{m['id']}` true **{m['label']}**, predicted {m['predicted']} ({m['confidence']:.1%}): {m['excerpt']}"
    if "explanation" in m:
        line += "\n  - " + _top_words_markdown(m["explanation"])
    return line


def _top_words_markdown(explanation, k=5):
    pushed_for, pushed_against = top_words(explanation, k)
    listed = [", ".join(f"{w} ({s:+.2g})" for w, s in words) or "none" for words in (pushed_for, pushed_against)]
    return f"{explanation['method']}: for *{explanation['target']}* {listed[0]}; against {listed[1]}"


def _edit_rank(side):
    rank = rank_of(side, side["edited"])
    return "no edited word" if rank is None else f"edit ranked {rank + 1} of {len(side['words'])} words"


def _pair_side_markdown(side):
    edited = ", ".join(side["words"][i].strip() for i in side["edited"]) or "none"
    return (
        f"true **{side['label']}**, predicted {side['predicted']}; edited words: {edited} ({_edit_rank(side)}); "
        + _top_words_markdown(side)
    )


def render_html(metrics, image_files, title):
    def img(path):
        data = base64.b64encode(Path(path).read_bytes()).decode()
        return f'<img src="data:image/png;base64,{data}">'

    def table(header, rows):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    header, rows = slice_table(metrics)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}li{margin:.4em 0}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>Data: <code>{html.escape(str(metrics['data']['source']))}</code>, "
        f"{metrics['data']['n']} reviews.</p>",
        "<h2>Overall</h2>",
        table(["metric", "value"], summary_rows(metrics)),
        img(image_files["confusion"]),
        img(image_files["reliability"]),
        "<h2>Nuanced-review slices</h2>",
        table(header, rows),
        img(image_files["slices"]),
        "<ul>"
        + "".join(
            f"<li><b>{html.escape(n)}</b>: {html.escape(t)}</li>" for n, t in metrics["slice_descriptions"].items()
        )
        + "</ul>",
    ]
    if metrics["contrast"]:
        rows = contrast_rows(metrics)
        parts += [
            "<h2>Contrast pairs</h2>",
            table(["set", "pairs", "original acc.", "edited acc.", "consistency"], rows),
        ]
        for c in metrics["contrast"]:
            for pair in c.get("explained_pairs", []):
                parts.append(f"<h3>{html.escape(c['name'])}, pair {pair['index']}</h3><ul>")
                for name in ("original", "edited"):
                    side = pair[name]
                    parts.append(
                        f"<li>{name}: true <b>{side['label']}</b>, predicted {side['predicted']} "
                        f"({_edit_rank(side)}; edit underlined)<br>{highlight_html(side, marked=side['edited'])}</li>"
                    )
                parts.append("</ul>")
    if "history" in image_files:
        parts += ["<h2>Training</h2>", img(image_files["history"])]
    parts += ["<h2>Most confident mistakes</h2>", _mistakes_html(metrics["mistakes"]["overall"])]
    for name, mistakes in metrics["mistakes"]["per_slice"].items():
        if mistakes:
            parts += [f"<h3>In <code>{html.escape(name)}</code></h3>", _mistakes_html(mistakes)]
    if _has_explanations(metrics):
        parts.append(
            "<p>Explained mistakes show the review as the model read it, each word green where it pushed "
            "towards the predicted class and red where it pushed against it (hover for the score).</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _mistakes_html(mistakes):
    items = []
    for m in mistakes:
        head = (
            f"<code>{html.escape(m['id'])}</code> true <b>{m['label']}</b>, predicted {m['predicted']} "
            f"({m['confidence']:.1%}): "
        )
        body = highlight_html(m["explanation"]) if "explanation" in m else html.escape(m["excerpt"])
        items.append(f"<li>{head}{body}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def _has_explanations(metrics):
    return any("explanation" in m for mistakes in mistake_lists(metrics) for m in mistakes)


def write_report(metrics, output_dir, formats=("json", "md", "html"), history=None, title="kgemma evaluation"):
    """Write `metrics.json`, `report.md`, `report.html` and their PNGs into `output_dir`."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if not set(formats) & {"md", "html"}:
        return out
    label_names = list(metrics["overall"]["per_class"])
    images = {"confusion": "confusion_matrix.png", "reliability": "reliability.png", "slices": "slices.png"}
    plot_confusion(metrics, out / images["confusion"], label_names)
    plot_reliability(metrics, out / images["reliability"])
    plot_slices(metrics, out / images["slices"])
    if history and history.get("epochs"):
        images["history"] = "learning_curves.png"
        plot_history(history, out / images["history"])
    if "md" in formats:
        (out / "report.md").write_text(render_markdown(metrics, images, title))
    if "html" in formats:
        (out / "report.html").write_text(render_html(metrics, {k: out / v for k, v in images.items()}, title))
    return out

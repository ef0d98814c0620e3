"""One self-contained HTML report: inline CSS, figures as base64 data URIs, nothing external,
so it can be mailed or archived and still opens offline."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from .runs import completeness_text, split_label
from .selection import RULE_WORDS

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.4em; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #d0d0d0; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f4f7; }
td.text, th.text { text-align: left; }
tr.best td { background: #fff6d5; font-weight: 600; }
.muted { color: #666; font-size: 0.9em; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
.figures figure { margin: 0; flex: 1 1 420px; max-width: 580px; }
.figures figure.wide { flex-basis: 100%; max-width: 1150px; }
.figures img { width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; text-align: center; }
details { margin: 0.8em 0; border: 1px solid #ddd; border-radius: 4px; padding: 0.4em 0.8em; }
summary { cursor: pointer; font-weight: 600; font-size: 1.1em; }
code { background: #f4f4f4; padding: 0 0.2em; }
.scroll { overflow-x: auto; }
.warnings { background: #fff4e5; border: 1px solid #f0b37e; padding: 0.4em 0.8em; }
"""


def data_uri(png_path: str | Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI."""
    encoded = base64.b64encode(Path(png_path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{encoded}"


def write_report(
    path: str | Path,
    results: dict,
    figures: dict[str, dict[str, Path]],
    hemi_lineage_tables: dict[str, pd.DataFrame],
) -> Path:
    """Write the report of :func:`synister.evaluate.evaluate_runs`'s ``results``.

    ``figures`` maps a run name (or ``""`` for figures over all runs) to caption -> PNG path;
    ``hemi_lineage_tables`` maps a run name to its per-hemilineage predictions.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>synister evaluation</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>synister evaluation</h1>",
        f'<p class="muted">Generated {_e(datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))}'
        f" from <code>{_e(results.get('database', ''))}</code>.</p>",
        _filters_paragraph(results),
        _warnings_list(results.get("warnings") or []),
        "<h2>Summary</h2>",
        _summary_table(results["runs"].values(), _best_runs(results)),
        _best_paragraph(results),
        _final_paragraph(results),
    ]
    overall = figures.get("", {})
    if overall:
        parts += ["<h2>Accuracy versus iteration</h2>", _figures(overall, wide=True)]
    best_runs = _best_runs(results)
    for run, metrics in results["runs"].items():
        parts.append(
            _run_section(
                metrics, figures.get(run, {}), hemi_lineage_tables.get(run), best_runs.get(run)
            )
        )
    parts.append("</body></html>")
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence],
    text_columns: int = 1,
    highlight: Sequence[int] = (),
) -> str:
    """An HTML table; the first ``text_columns`` columns are left-aligned text and the rows at
    the positions in ``highlight`` are marked as the best."""

    def cell(tag: str, i: int, value) -> str:
        align = ' class="text"' if i < text_columns else ""
        return f"<{tag}{align}>{_fmt(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join(
        ('<tr class="best">' if n in highlight else "<tr>")
        + "".join(cell("td", i, v) for i, v in enumerate(row))
        + "</tr>"
        for n, row in enumerate(rows)
    )
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _filters_paragraph(results: dict) -> str:
    confidence = results["min_confidence"]
    n_min = results["n_min"]
    cutoff = results.get("cutoff") or 0
    cut = (
        f"synapses whose highest class probability is below <b>{_fmt(confidence, 2)}</b> are "
        "left out at every level"
        if confidence
        else "no confidence cut-off"
    )
    where = (
        "neurons and hemilineages with fewer than <b>{n}</b> synapses are left out, and so are "
        "their synapses at synapse level (the original's rule)"
        if results.get("n_min_synapse_level")
        else "neurons and hemilineages with fewer than <b>{n}</b> synapses are left out (the "
        "synapse level keeps their synapses)"
    )
    small = where.format(n=_e(n_min)) if n_min else "no minimum number of synapses per neuron"
    share = (
        f"neurons and hemilineage units whose majority vote holds less than <b>{_fmt(cutoff, 2)}"
        "</b> of their synapses are left out"
        if cutoff
        else "no minimum majority share"
    )
    tie = (
        "a tie goes to the first tied class in the run's class order (the original's rule)"
        if results.get("ties") == "first"
        else "a tie goes to the tied class with the highest summed probability, then to the "
        "first class in the run's order"
    )
    return (
        f"<p>Filters: {cut}; {small}; {share}. Neuron and hemilineage predictions are made by "
        f"majority vote of the synapses' argmax ({tie}) and by the argmax of the mean "
        "probability. A hemilineage whose neurons have different transmitters is evaluated once "
        "per transmitter.</p>"
    )


def _warnings_list(warnings: Sequence[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{_e(w)}</li>" for w in warnings)
    return f'<div class="warnings"><b>Warnings</b><ul>{items}</ul></div>'


def _best_runs(results: dict) -> dict[str, str]:
    """The best run, or each synapse set's best where no overall best is picked, and the final
    model: run -> what it is."""
    if results.get("best"):
        marked = {results["best"]["run"]: "best"}
    else:
        sets = results.get("synapse_sets") or []
        marked = {s["best"]["run"]: "best of its synapse set" for s in sets if s.get("best")}
    final = results.get("final")
    if final:
        label = f"final model ({final['rule']} rule)"
        marked[final["run"]] = "; ".join(filter(None, (marked.get(final["run"]), label)))
    return marked


def _summary_table(runs, best_runs: dict[str, str]) -> str:
    header = [
        "run",
        "split / part",
        "predicted / expected",
        "iteration",
        "synapses",
        "kept by confidence",
        "synapse acc.",
        "balanced acc.",
        "neurons",
        "neuron acc. (vote)",
        "neuron acc. (mean)",
        "vote ties",
        "hemilineage acc. (vote)",
        "hemilineage acc. (mean)",
    ]
    rows, highlight = [], []
    for m in runs:
        if m["run"] in best_runs:
            highlight.append(len(rows))
        rows.append(
            [
                m["run"],
                split_label(m["meta"]),
                completeness_text(m.get("completeness")),
                m["iteration"],
                m["synapse"]["n"],
                m["counts"]["fraction_kept_by_confidence"],
                m["synapse"]["accuracy"],
                m["synapse"]["balanced_accuracy"],
                m["neuron"]["vote"]["n"],
                m["neuron"]["vote"]["accuracy"],
                m["neuron"]["mean"]["accuracy"],
                m["neuron"]["vote"]["n_ties"],
                m["hemi_lineage"]["vote"]["accuracy"],
                m["hemi_lineage"]["mean"]["accuracy"],
            ]
        )
    return _table(header, rows, text_columns=3, highlight=highlight)


def _best_sentence(best: dict) -> str:
    iteration = f" (iteration {_e(best['iteration'])})" if best.get("iteration") is not None else ""
    return f"<b>{_e(best['run'])}</b>{iteration}, accuracy {_fmt(best['synapse_accuracy'])}"


def _final_paragraph(results: dict) -> str:
    final = results.get("final")
    if not final:
        return ""
    words = RULE_WORDS.get(final["rule"], "")
    return (
        f"<p>Final model of these checkpoints by the {_e(final['rule'])} rule ({_e(words)}; "
        "<code>prepare-prediction --best-of</code> and <code>export-model --iteration best</code> "
        f"take it): <b>{_e(final['run'])}</b> (iteration {_e(final['iteration'])}).</p>"
    )


def _best_paragraph(results: dict) -> str:
    rule = (
        "by synapse-level accuracy after the filters above (ties: earliest iteration; "
        "incomplete runs are no candidates)"
    )
    if results.get("best"):
        return f"<p>Best run {rule}: {_best_sentence(results['best'])}.</p>"
    if results.get("best_refused"):
        rows = "".join(
            f"<li>{_e(split_label(s))} ({_e(', '.join(s['classes']))}): "
            + (_best_sentence(s["best"]) if s.get("best") else "no candidate")
            + "</li>"
            for s in results.get("synapse_sets") or []
        )
        return (
            f"<p>No best run: {_e(results['best_refused'])}.</p>"
            f"<p>Best run of each synapse set {rule}:</p><ul>{rows}</ul>"
        )
    return "<p>No run is a candidate (complete, with an evaluated synapse), so no best run.</p>"


def _bootstrap_table(bootstrap: dict | None) -> str:
    """Accuracy per level with its bootstrap standard error and 95 % interval."""
    if not bootstrap:
        return ""
    names = {"synapse": "synapse", "neuron_vote": "neuron (vote)", "neuron_mean": "neuron (mean)"}
    rows = [
        [name, b["accuracy"], b["se"], f"{_fmt(b['ci'][0])} – {_fmt(b['ci'][1])}", b["n_groups"]]
        for key, name in names.items()
        if (b := bootstrap.get(key))
    ]
    return "<h3>Accuracy with its uncertainty</h3>" + (
        "<p>Standard error and 95 % interval from 2,000 bootstrap resamples of the neurons (the "
        "synapses of one neuron are not independent, so resampling synapses would understate "
        "them).</p>"
    ) + _table(["level", "accuracy", "standard error", "95 % interval", "neurons"], rows,
               text_columns=1)  # fmt: skip


def _figures(figures: dict[str, Path], wide: bool = False) -> str:
    css = ' class="wide"' if wide else ""
    items = [
        f'<figure{css}><img alt="{_e(caption)}" src="{data_uri(png)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
        for caption, png in figures.items()
    ]
    return f'<div class="figures">{"".join(items)}</div>'


def _run_section(
    metrics: dict, figures: dict[str, Path], lineages: pd.DataFrame | None, best_label: str | None
) -> str:
    classes = metrics["classes"]
    counts = metrics["counts"]
    marker = f" — {best_label}" if best_label else ""
    parts = [
        f"<details{' open' if best_label else ''}>",
        f"<summary>Run {_e(metrics['run'])}{marker}</summary>",
        "<h3>Configuration</h3>",
        _table(
            ["field", "value"],
            [[k, _json_text(v)] for k, v in metrics["meta"].items()] or [["(no meta)", ""]],
            text_columns=2,
        ),
        "<h3>Synapses</h3>",
        _completeness_paragraph(metrics.get("completeness")),
        _table(
            ["", "count"],
            [["predicted", counts["predicted"]]]
            + [[f"left out: {k.replace('_', ' ')}", v] for k, v in counts["left_out"].items()]
            + [
                ["with a true class", counts["labelled"]],
                ["kept by the confidence cut-off", counts["kept_by_confidence"]],
                ["fraction kept", counts["fraction_kept_by_confidence"]],
                ["left out by n_min at synapse level", metrics["synapse"]["left_out_n_min"]],
                ["evaluated at synapse level", metrics["synapse"]["n"]],
            ],
        ),
        _bootstrap_table(metrics.get("bootstrap")),
        "<h3>Per class</h3>",
        _table(
            [
                "class",
                "synapses",
                "synapse recall",
                "mean probability of the true class",
                "neurons",
                "neuron recall (vote)",
                "neuron recall (mean)",
            ],
            [
                [
                    c,
                    metrics["synapse"]["n_per_class"][c],
                    metrics["synapse"]["per_class_accuracy"][c],
                    metrics["synapse"]["expected_probability"][i][i],
                    metrics["neuron"]["vote"]["n_per_class"][c],
                    metrics["neuron"]["vote"]["per_class_accuracy"][c],
                    metrics["neuron"]["mean"]["per_class_accuracy"][c],
                ]
                for i, c in enumerate(classes)
            ],
        ),
        _left_out_paragraph(metrics),
        "<h3>Synapse accuracy by confidence cut-off</h3>",
        _table(
            [
                "highest probability at least",
                "synapses kept",
                "fraction kept",
                "accuracy",
                "balanced accuracy",
            ],
            [
                [
                    _fmt(row["min_confidence"], 2),
                    row["n"],
                    row["fraction_kept"],
                    row["accuracy"],
                    row["balanced_accuracy"],
                ]
                for row in metrics["synapse"]["by_confidence"]
            ],
        ),  # fmt: skip
    ]
    from .calibration_report import calibration_section, split_figures

    figures, calibration_figures = split_figures(figures)
    parts.append(calibration_section(metrics.get("calibration"), calibration_figures))
    if figures:
        parts += ["<h3>Figures</h3>", _figures(figures)]
    if lineages is not None and len(lineages):
        parts += [
            "<h3>Hemilineages</h3>",
            _table(
                [
                    "hemilineage",
                    "id",
                    "neurons",
                    "synapses",
                    "true",
                    "vote",
                    "vote share",
                    "mean",
                    "mean probability",
                ],
                [
                    [
                        r.hemi_lineage_name if r.hemi_lineage_name is not None else "(unnamed)",
                        int(r.hemi_lineage_id),
                        int(r.n_neurons),
                        int(r.n_synapses),
                        classes[r.true_idx],
                        classes[r.pred_idx],
                        float(r.support),
                        classes[r.mean_pred_idx],
                        float(r.mean_support),
                    ]
                    for r in lineages.itertuples()
                ],
            ),
        ]
    parts.append("</details>")
    return "\n".join(parts)


def _completeness_paragraph(completeness: dict | None) -> str:
    c = completeness or {}
    source = {
        "meta": "the count stored with the run",
        "documents": "the documents the original synister created, one per synapse of its part",
        "split": "the synapses of its split part with one known transmitter among its classes",
    }.get(c.get("source"), "")
    why = f", {_e(c['reason'])}" if c.get("reason") else ""
    of = f" (expected: {source})" if source else ""
    return f"<p>Completeness: <b>{_e(completeness_text(c))}</b> synapses predicted{of}{why}.</p>"


def _left_out_paragraph(metrics: dict) -> str:
    neuron = metrics["neuron"]
    lineage = metrics["hemi_lineage"]
    tied = neuron["vote"]["tied_skeleton_ids"]
    shown = ", ".join(str(s) for s in tied[:20]) + (" …" if len(tied) > 20 else "")
    return (
        f"<p>Neurons left out: {_e(neuron['left_out_n_min'])} with fewer than n_min synapses, "
        f"{_e(neuron.get('left_out_cutoff', 0))} with a majority share below the cut-off. "
        f"Neurons whose vote tied: {_e(neuron['vote']['n_ties'])}"
        f"{' (skeletons ' + _e(shown) + ')' if tied else ''}. "
        f"Hemilineages with neurons of different transmitters, evaluated per transmitter: "
        f"{_e(lineage['split_by_transmitter'])}; hemilineage units below n_min: "
        f"{_e(lineage['left_out_n_min'])}, below the majority share cut-off: "
        f"{_e(lineage.get('left_out_cutoff', 0))}; synapses without a (named) hemilineage: "
        f"{_e(lineage['synapses_without_hemi_lineage'])}.</p>"
    )


def _json_text(value) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)

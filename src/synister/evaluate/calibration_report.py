"""The calibration part of a run's section in the evaluation report (HTML)."""

from __future__ import annotations

from pathlib import Path

from .calibration_plots import CAPTIONS
from .report import _e, _figures, _fmt, _table

_MEASURES = (("accuracy", "accuracy"), ("ece", "ECE (15 bins)"), ("nll", "NLL"),
             ("brier", "Brier score"))  # fmt: skip


def calibration_section(summary: dict | None, figures: dict[str, Path]) -> str:
    """Calibration before and after the temperature at synapse and neuron level, the
    neuron-level unclear rule and its coverage, and the calibration figures."""
    if summary is None:
        return "<h3>Calibration</h3><p>No synapse with a known true class.</p>"
    temperature = summary["temperature"]
    if temperature is None:
        where = (
            "No temperature: the model has not been calibrated (<code>synister calibrate</code>),"
            " so only the raw softmax is measured."
        )
    else:
        where = f"Temperature <b>{_fmt(temperature)}</b>, {_e(summary['temperature_source'])}."
    applied = summary.get("temperature_applied_by_run")
    if applied is not None and applied != 1:  # 1: the raw softmax was stored
        where += f" The run's prediction divided the logits by {_fmt(applied)}; 'raw' undoes that."
    rows = []
    for level, name in (("synapse", "synapses"), ("neuron", "neurons (mean probability)")):
        before, after = summary[level]["before"], summary[level]["after"]
        for key, label in _MEASURES:
            rows.append([f"{name}: {label}", before[key], after[key] if after else None])
    unclear = summary["unclear"]
    t = unclear["thresholds"]
    reached = unclear.get("reached")
    note = "" if reached is None else (" (target reached)" if reached else " (target NOT reached)")
    if t.get("target_missed"):
        note = (
            " (no thresholds reach the target accuracy on the run they were chosen on, so every "
            "call is unclear)"
        )
    parts = [
        "<h3>Calibration</h3>",
        f"<p>{where} A neuron's distribution is the mean of its synapses' probabilities; it "
        "averages out synapse noise, so it is usually less confident than its calls are right, "
        "and the temperature, fitted on synapses, is not fitted to it.</p>",
        _table(["measure", "raw softmax", "with temperature"], rows),
        "<h3>Unclear neuron calls</h3>",
        f"<p>A neuron is called <b>unclear</b> when the mean probability of its top class is "
        f"below <b>{_fmt(t['min_probability'], 2)}</b>, its margin to the runner-up below "
        f"<b>{_fmt(t['min_margin'], 2)}</b>, or it has fewer than <b>{_e(t['min_synapses'])}"
        f"</b> synapses; thresholds {_e(unclear['chosen_on'])}{_e(note)}. Confident: "
        f"{_e(unclear['n_confident'])} of {_e(unclear['n'])} neurons (coverage "
        f"{_fmt(unclear['coverage'])}), accuracy of the confident calls "
        f"{_fmt(unclear['accuracy'])} against {_fmt(unclear['accuracy_all'])} for all calls. "
        "The risk-coverage figure shows what other thresholds would give; "
        "<code>neurons_unclear.csv</code> lists every neuron's outcome.</p>",
    ]
    calibrated_log = summary.get("neuron_calibrated_log")
    if calibrated_log:
        low, high = calibrated_log["ci"]
        parts.append(
            "<h3>Neurons by calibrated log-probability</h3>"
            f"<p>Each neuron called by the largest sum of its synapses' log-probabilities after "
            f"one scale and one bias per class fitted on validation run "
            f"{_e(calibrated_log['fitted_on'])}: accuracy <b>{_fmt(calibrated_log['accuracy'])}"
            f"</b> (95 % interval {_fmt(low)}–{_fmt(high)}, resampling neurons) of "
            f"{_e(calibrated_log['n_groups'])} neurons.</p>"
        )
    if figures:
        parts.append(_figures(figures))
    return "\n".join(parts)


def split_figures(figures: dict[str, Path]) -> tuple[dict[str, Path], dict[str, Path]]:
    """A run's figures without, and then only, the calibration figures."""
    calibration = {k: v for k, v in figures.items() if k in CAPTIONS.values()}
    return {k: v for k, v in figures.items() if k not in calibration}, calibration

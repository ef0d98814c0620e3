"""The self-contained ``report.html`` of a positions run, with a neuroglancer link per neuron.

Everything is inline (CSS, the histogram as a data URI, per-neuron stacked bars as CSS), so
the file opens anywhere and can be mailed. Each neuron's link opens the volume in neuroglancer
with the neuron's synapses as point annotations coloured by predicted class; the states are
built with the ``neuroglancer`` package.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from ..nt import canonical
from .positions import PositionsJob

VIEWER_URL = "https://neuroglancer-demo.appspot.com/"
#: colour per canonical class (and for positions without a prediction)
COLORS = {
    "gaba": "#d62728",
    "acetylcholine": "#1f77b4",
    "glutamate": "#2ca02c",
    "octopamine": "#9467bd",
    "serotonin": "#ff7f0e",
    "dopamine": "#8c564b",
    "others": "#7f7f7f",
    "neither": "#bcbd22",
}
NO_PREDICTION = "#c8c8c8"
#: rows of skipped positions listed in full (the rest are counted)
LISTED = 500
#: synapses a neuron's neuroglancer link shows at most (a sample of bigger neurons), and all
#: links of a report together (about 130 bytes each: a report of many neurons stays openable)
LINK_POINTS = 1000
REPORT_POINTS = 100_000
_NEUROGLANCER_PREFIX = {
    "zarr2": "zarr2://",
    "zarr3": "zarr3://",
    "n5": "n5://",
    "precomputed": "precomputed://",
}


def class_color(name: str) -> str:
    try:
        return COLORS.get(canonical(name), "#17becf")
    except ValueError:
        return "#17becf"


def viewer_source(job: PositionsJob, override: str | None = None) -> tuple[str, str | None]:
    """The volume as a neuroglancer data source, and a note where the viewer cannot read it
    (a local path: neuroglancer reads over http(s), gs:// or s3:// only)."""
    if override:
        return override, None
    volume = job.volume
    text = job.volume_source
    for prefix in ("precomputed://", "zarr2://", "zarr3://", "zarr://", "n5://"):
        text = text.removeprefix(prefix)
    dataset = (job.dataset or "").strip("/")
    if volume.format != "precomputed" and dataset:
        text = text.rstrip("/") + "/" + dataset
    note = None
    if urlsplit(text).scheme not in ("http", "https", "gs", "s3"):
        text = "file://" + str(Path(text.removeprefix("file://")).expanduser().absolute())
        note = (
            "The volume is a local path, which neuroglancer cannot read: serve its folder "
            "over http with CORS (or copy it to a bucket) and rerun with --viewer-source URL."
        )
    return _NEUROGLANCER_PREFIX[volume.format] + text, note


def neuroglancer_state(
    job: PositionsJob,
    source: str,
    synapses: pd.DataFrame,
    class_names: list[str],
    title: str,
) -> dict:
    """A neuroglancer JSON state: the volume, and ``synapses`` (rows of the per-synapse table)
    as points in nm coloured by their top class (grey without a prediction)."""
    import neuroglancer as ng

    volume = job.volume
    state = ng.ViewerState()
    state.dimensions = ng.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[1, 1, 1])
    image = {"url": source}
    if volume.format != "precomputed":  # array axes z, y, x (N5: x, y, z) in voxels
        names = ["x", "y", "z"] if volume.format == "n5" else ["z", "y", "x"]
        zyx = dict(zip("zyx", volume.voxel_size_nm.tolist(), strict=True))
        offset = dict(zip("zyx", (volume.offset_nm / volume.voxel_size_nm).tolist(), strict=True))
        image["transform"] = {
            "outputDimensions": {n: [zyx[n] * 1e-9, "m"] for n in names},
            "matrix": [
                [1 if c == r else 0 for c in range(3)] + [offset[n]] for r, n in enumerate(names)
            ],
        }
    state.layers["volume"] = ng.ImageLayer(source=image)
    colors = {c: class_color(full) for c, full in zip(class_names, job.classes, strict=True)}
    points = []
    for row in synapses.itertuples(index=False):
        top = row.top_nt if isinstance(row.top_nt, str) else None
        conf = float(row.top_nt_conf) if top is not None else 0.0
        points.append(
            ng.PointAnnotation(
                id=str(row.id),
                point=[float(row.x_nm), float(row.y_nm), float(row.z_nm)],
                props=[colors.get(top, NO_PREDICTION), conf],
            )
        )
    state.layers[title] = ng.LocalAnnotationLayer(
        dimensions=state.dimensions,
        annotation_properties=[
            ng.AnnotationPropertySpec(id="color", type="rgb", default="#ffffff"),
            ng.AnnotationPropertySpec(id="top_nt_conf", type="float32", default=0),
        ],
        annotations=points,
        shader="void main() { setColor(prop_color()); setPointMarkerSize(8.0); }",
    )
    if len(synapses):
        state.position = synapses[["x_nm", "y_nm", "z_nm"]].median().to_numpy().tolist()
    state.selected_layer.layer = title
    return state.to_json()


def viewer_link(state: dict, viewer_url: str) -> str:
    import neuroglancer as ng

    return ng.url_state.to_url(ng.ViewerState(state), prefix=viewer_url)


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, float | np.floating):
        return f"{value:.{digits}f}"
    return _e(value)


def _histogram(synapses: pd.DataFrame, neurons: pd.DataFrame | None) -> str:
    """Histograms of top_nt_conf (synapses, and neurons' mean) as a PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = 2 if neurons is not None and len(neurons) else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.2), squeeze=False)
    bins = np.linspace(0, 1, 21)
    conf = synapses["top_nt_conf"].dropna().to_numpy()
    axes[0, 0].hist(conf, bins=bins, color="#4c72b0")
    axes[0, 0].set(xlabel="top_nt_conf", ylabel="synapses", title="per synapse")
    if panels == 2:
        predicted = neurons[neurons["n_synapses"] > 0]
        axes[0, 1].hist(predicted["top_nt_conf"].to_numpy(float), bins=bins, color="#dd8452")
        axes[0, 1].set(
            xlabel="top_nt_conf (mean of the top class)", ylabel="neurons", title="per neuron"
        )
    for ax in axes[0]:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _bar(values: dict[str, float], colors: dict[str, str]) -> str:
    segments = "".join(
        f'<span style="width:{100 * v:.1f}%;background:{colors[c]}" title="{_e(c)} {v:.2f}"></span>'
        for c, v in values.items()
        if v > 0.0005
    )
    return f'<span class="bar">{segments}</span>'


def _metrics(provenance: dict) -> str:
    """Synapse accuracy per evaluated split part, from the bundle's provenance."""
    metrics = provenance.get("metrics") or {}
    found = [
        f"{part} {run['synapse_accuracy']:.3f} ({run.get('expected', '?')} synapses)"
        for part, run in sorted(metrics.items())
        if isinstance(run, dict) and isinstance(run.get("synapse_accuracy"), int | float)
    ]
    return "; ".join(found) or "not evaluated in the bundle"


def _definitions(items: list[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
    return f'<table class="kv">{rows}</table>'


def write_report(
    path: str | Path,
    job: PositionsJob,
    synapses: pd.DataFrame,
    neurons: pd.DataFrame | None,
    summary: dict,
    settings: dict,
) -> None:
    """Write ``report.html`` of a positions run."""
    class_names = list(
        synapses.columns[synapses.columns.get_loc("z_nm") + 1 : synapses.columns.get_loc("top_nt")]
    )
    colors = {c: class_color(full) for c, full in zip(class_names, job.classes, strict=True)}
    source, note = viewer_source(job, settings.get("viewer_source"))
    viewer_url = settings.get("viewer_url") or VIEWER_URL
    bundle, volume, table = job.model, job.volume, job.table
    shown = settings.get("shown_as") or {}
    if note and "volume" in shown:  # a service's volume on its disk: no path, no CLI advice
        source = None
        note = (
            f"The volume {shown['volume']} is a file on the service's machine, which "
            "neuroglancer cannot read, so the neurons have no links: the service's "
            "administrator can give it a viewer_source in service.toml."
        )
    provenance = bundle.provenance or {}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>synister predict-positions: {_e(Path(summary['out']).name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Transmitter predictions: {_e(Path(summary['out']).name)}</h1>",
        f"<p>{summary['rows']} positions: {summary['ok']} predicted, "
        f"{summary['partly_outside']} predicted on zero-padded patches (partly outside the "
        f"volume), {summary['outside_volume']} outside the volume (not predicted)."
        + (
            f" {summary['neurons']} neurons, {summary['confident_neurons']} of them confident "
            f"(at least {settings['min_synapses']} synapses and a margin of at least "
            f"{settings['min_margin']:g} over the runner-up)."
            if neurons is not None
            else " The table has no neuron column: no per-neuron summary."
        )
        + "</p>",
        *(f"<p class='warning'>WARNING: {_e(text)}</p>" for text in summary.get("warnings", [])),
        "<h2>Model, volume and table</h2>",
        _definitions(
            [
                ("model bundle", shown.get("bundle", bundle.path)),
                ("classes (output order)", ", ".join(bundle.classes)),
                ("input shape (z, y, x voxels)", tuple(bundle.input_shape_vox)),
                ("trained on voxels (z, y, x nm)", tuple(bundle.voxel_size_nm)),
                ("temperature", bundle.temperature or "none (raw softmax)"),
                (
                    "training split / iteration",
                    f"{provenance.get('split_name', '?')} / {provenance.get('iteration', '?')}",
                ),
                ("accuracy at this iteration", _metrics(provenance)),
                ("volume", shown.get("volume", volume.location)),
                ("volume format, shape (z, y, x voxels)", f"{volume.format}, {volume.shape_vox}"),
                (
                    "volume voxel size, offset (z, y, x nm)",
                    f"{volume.voxel_size_nm.tolist()}, {volume.offset_nm.tolist()}",
                ),
                ("patch placement", volume.placement),
                ("precision", job.predictor.precision),
                ("positions table", table.source),
                (
                    "columns used",
                    f"id: {table.id_column or '(row numbers)'}; neuron: "
                    f"{table.neuron_column or '(none)'}; position: "
                    f"{', '.join(table.position_columns)} ({table.units}"
                    + (
                        f", voxel {table.voxel_size_xyz_nm} nm x, y, z"
                        if table.units == "voxels"
                        else ""
                    )
                    + ")",
                ),
            ]
            + (
                [
                    (
                        "neurons listed (--neurons)",
                        f"{table.neurons_listed}, of which "
                        f"{len(table.neurons_missing)} have no row",
                    )
                ]
                if table.neurons_listed is not None
                else []
            )
        ),
        "<h2>Confidence</h2>",
        f'<img alt="histograms of top_nt_conf" src="{_histogram(synapses, neurons)}">',
        "<p class='legend'>"
        + " ".join(
            f'<span class="swatch" style="background:{colors[c]}"></span>{_e(c)}'
            for c in class_names
        )
        + "</p>",
    ]
    if neurons is not None:
        parts += _neuron_sections(
            job, synapses, neurons, class_names, colors, source, note, viewer_url, settings
        )
    parts += _skipped_section(synapses, volume)
    parts.append("</body></html>")
    with open(path, "w", encoding="utf-8") as handle:  # a part at a time: no second copy
        handle.writelines(f"{part}\n" for part in parts)


def _neuron_sections(
    job, synapses, neurons, class_names, colors, source, note, viewer_url, settings
) -> list[str]:
    members_of, cap = {}, LINK_POINTS
    if source is not None:  # row numbers per neuron, not a copy of the table
        members_of = synapses.groupby("neuron_id", sort=False).indices
        cap = points_per_link([len(rows) for rows in members_of.values()])
    rows = []
    for n in neurons.itertuples(index=False):
        name = _e(n.neuron_id)
        if source is not None:
            members = synapses.iloc[link_rows(members_of.get(n.neuron_id, []), cap)]
            state = neuroglancer_state(job, source, members, class_names, f"neuron {n.neuron_id}")
            name = f'<a href="{_e(viewer_link(state, viewer_url))}" target="_blank">{name}</a>'
        values = {c: float(getattr(n, c)) if n.n_synapses else 0.0 for c in class_names}
        rows.append(
            "<tr>"
            f"<td>{name}</td>"
            f"<td>{n.n_synapses}</td><td>{n.n_outside}</td>"
            f"<td>{_bar(values, colors)}</td>"
            f"<td>{_e(n.top_nt) if n.n_synapses else '–'}</td>"
            f"<td>{_fmt(n.top_nt_conf)}</td><td>{_fmt(n.top_nt_vote_share)}</td>"
            f"<td>{_e(n.runner_up_nt) if n.n_synapses else '–'}</td><td>{_fmt(n.margin)}</td>"
            f"<td>{'yes' if n.confident else '<b>no</b>'}</td></tr>"
        )
    doubtful = []
    for n in neurons[~neurons["confident"]].itertuples(index=False):
        reasons = []
        if n.n_synapses < settings["min_synapses"]:
            reasons.append(f"{n.n_synapses} synapses (< {settings['min_synapses']})")
        if n.n_synapses and n.margin < settings["min_margin"]:
            reasons.append(
                f"{n.top_nt} {n.top_nt_conf:.2f} vs {n.runner_up_nt} {n.runner_up_conf:.2f} "
                f"(margin {n.margin:.2f} < {settings['min_margin']:g})"
            )
        doubtful.append(f"<li>{_e(n.neuron_id)}: {_e('; '.join(reasons))}</li>")
    header = (
        "<tr><th>neuron (opens neuroglancer)</th><th>synapses</th><th>outside</th>"
        "<th>mean class probabilities</th><th>top_nt</th><th>top_nt_conf</th>"
        "<th>vote share</th><th>runner-up</th><th>margin</th><th>confident</th></tr>"
    )
    return [
        "<h2>Neurons</h2>",
        "<p>Each neuron's link opens the volume in neuroglancer with its synapses as points "
        f"coloured by predicted class (grey: not predicted; at most {cap:,} per neuron, "
        "evenly spread over them; all are in synapses.parquet). "
        f"Volume source: <code>{_e(source)}</code>.</p>"
        if source is not None
        else "",
        f"<p class='note'>{_e(note)}</p>" if note else "",
        f'<table class="neurons">{header}',
        *rows,  # each its own part: a table of many neurons is never one string
        "</table>",
        f"<h2>Neurons not called confidently ({len(doubtful)})</h2>",
        "<p>Shown with their most likely transmitter, but not clearly one: too few synapses, "
        "or a runner-up too close.</p>",
        f"<ul>{''.join(doubtful)}</ul>" if doubtful else "<p>None.</p>",
    ]


def points_per_link(counts: list[int]) -> int:
    """The most synapses one neuron's link shows (at most :data:`LINK_POINTS`): the largest
    cap with which all links together show at most :data:`REPORT_POINTS` (each neuron shows
    its synapses up to the cap: small neurons all of theirs, big ones an even sample)."""
    counts = np.sort(np.asarray(counts, dtype=np.int64))
    low, high = 1, LINK_POINTS
    while low < high:  # the shown total grows with the cap
        cap = (low + high + 1) // 2
        if np.minimum(counts, cap).sum() <= REPORT_POINTS:
            low = cap
        else:
            high = cap - 1
    return low


def link_rows(rows: np.ndarray, cap: int = LINK_POINTS) -> np.ndarray:
    """At most ``cap`` of a neuron's ``rows``, evenly spread over them: a link holds every
    point it shows, and browsers refuse links of megabytes."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) <= cap:
        return rows
    return rows[np.linspace(0, len(rows) - 1, cap).round().astype(np.int64)]


def _skipped_section(synapses: pd.DataFrame, volume) -> list[str]:
    outside = synapses[synapses["status"] == "outside_volume"]
    partly = int((synapses["status"] == "partly_outside").sum())
    low = volume.offset_nm
    high = low + np.asarray(volume.shape_vox) * volume.voxel_size_nm
    parts = [
        f"<h2>Skipped positions ({len(outside)})</h2>",
        f"<p>Positions outside the volume (z, y, x {low.tolist()} to {high.tolist()} nm) have "
        "no image to predict from: they keep their row with status outside_volume and no "
        f"probabilities. {partly} positions lie inside but close to its border: they were "
        "predicted on patches padded with zeros and have status partly_outside.</p>",
    ]
    if len(outside):
        columns = [
            c
            for c in ("row", "id", "neuron_id", "x", "y", "z", "x_nm", "y_nm", "z_nm")
            if c in outside.columns
        ]
        head = "".join(f"<th>{c}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{_fmt(v, 1)}</td>" for v in row) + "</tr>"
            for row in outside[columns].head(LISTED).itertuples(index=False)
        )
        parts.append(f"<table>{'<tr>' + head + '</tr>'}{body}</table>")
        if len(outside) > LISTED:
            parts.append(f"<p>… and {len(outside) - LISTED} more (see synapses.parquet).</p>")
    return parts


CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; padding: 0 1em; max-width: 75em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
.warning { background: #fff3cd; border-left: 4px solid #d39e00; padding: 0.4em 0.8em; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { padding: 0.2em 0.6em; border-bottom: 1px solid #ddd; text-align: left; }
table.kv th { font-weight: normal; color: #555; }
.bar { display: inline-flex; width: 16em; height: 0.9em; background: #eee; }
.bar span { display: inline-block; height: 100%; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin: 0 0.3em 0 1em; }
.note { background: #fff3cd; padding: 0.5em; }
"""

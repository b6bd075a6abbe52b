"""A self-contained HTML audit report: plots embedded as PNG data URIs, no script, no external resource."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import platform
from typing import Any

import numpy as np

from jobs.audit.one_to_one import Verification
from jobs.audit.quality_bands import QUALITY_BAND
from jobs.common.storage import AnyPath, write_atomically


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def det_plot(curve: tuple[np.ndarray, np.ndarray, np.ndarray], points: list[dict], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, fmr, fnmr = curve
    figure, axes = plt.subplots(figsize=(5.5, 4.2))
    keep = (fmr > 0) & (fnmr > 0)
    if not keep.any():  # no threshold errs both ways on this data: log axes would have nothing to show
        axes.text(
            0.5,
            0.5,
            "no threshold gives both a false match and a false non-match\non these pairs: the DET curve is empty",
            ha="center",
            va="center",
            fontsize=9,
            transform=axes.transAxes,
        )
        axes.set_axis_off()
        axes.set_title(title)
        uri = _png(figure)
        plt.close(figure)
        return uri
    axes.plot(fmr[keep], fnmr[keep], lw=1.6, label="DET")
    for p in points:
        if p["fmr"] > 0 and (p["fnmr"] or 0) > 0:
            axes.plot(p["fmr"], p["fnmr"], "o", ms=5, label=f"FMR target {p['target_fmr']:g}: t={p['threshold']:.4f}")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("FMR (false match rate)")
    axes.set_ylabel("FNMR (false non-match rate)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)
    uri = _png(figure)
    plt.close(figure)
    return uri


def histogram_plot(genuine: np.ndarray, impostor: np.ndarray, thresholds: dict[str, float], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 4.2))
    bins = np.linspace(min(impostor.min(), genuine.min() if len(genuine) else 1), 1.0, 80).tolist()
    axes.hist(impostor, bins=bins, density=True, alpha=0.55, label=f"impostor ({len(impostor):,})")
    if len(genuine):
        axes.hist(genuine, bins=bins, density=True, alpha=0.55, label=f"genuine ({len(genuine):,})")
    for label, value in thresholds.items():
        axes.axvline(value, ls="--", lw=1, color="k")
        axes.text(value, axes.get_ylim()[1] * 0.9, f" {label}", rotation=90, fontsize=7, va="top")
    axes.set_xlabel("cosine similarity (raw score)")
    axes.set_ylabel("density")
    axes.set_title(title)
    axes.legend(fontsize=7)
    uri = _png(figure)
    plt.close(figure)
    return uri


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;"
    "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}"
    "th{background:#f3f3f3}.plots{display:flex;gap:1em;flex-wrap:wrap}.plot{max-width:520px}"
)


def render(
    run_id: str,
    model_id: str | None,
    one: Verification | None,
    many: dict | None,
    normalized: Verification | None = None,
) -> str:
    """The whole report: a header, then each section the audit measured."""
    parts = [header_section(run_id, model_id)]
    if one:
        raw = one.summary
        parts += [verification_section(raw), plots_section(one)]
        parts += [differential_section(raw, attribute, result) for attribute, result in raw["groups"].items()]
    if one and normalized:
        parts.append(raw_vs_normalized_section(one.summary, normalized.summary))
        parts += [
            differential_section(normalized.summary, attribute, result, "normalized scores")
            for attribute, result in normalized.summary["groups"].items()
        ]
    if many:
        parts.append(identification_section(many))
        if many["scenario"]:
            parts.append(scenario_section(many))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"<title>Lineup audit {html.escape(run_id)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )


def header_section(run_id: str, model_id: str | None) -> str:
    generated = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return "".join(
        [
            f"<h1>Lineup audit {html.escape(run_id)}</h1>",
            "<p>Scores are raw cosine similarities; a pair matches when score &ge; threshold. Every rate below "
            "states the data and the number of comparisons it was measured on. A rate smaller than 1 / "
            "comparisons cannot be measured and is marked as not resolvable.</p>",
            _table(
                ["model_id", "generated", "machine"],
                [[model_id, generated, f"{platform.node()} ({platform.machine()})"]],
            ),
        ]
    )


def verification_section(one: dict) -> str:
    pairs = one["pairs"]
    parts = [
        "<h2>1:1 verification</h2>",
        f"<p>Data: <b>{html.escape(str(one['data']))}</b> (table {html.escape(one['data_table'])}, version "
        f"{one['data_version']}), {one['faces']:,} faces, {one['subjects']:,} labelled subjects; "
        f"{pairs['genuine_pairs']:,} genuine and {pairs['impostor_pairs']:,} impostor pairs"
        f"{' (impostors a seeded sample)' if one['sampled_impostors'] else ' (all pairs)'}.</p>",
    ]
    if "eer" in one:
        parts.append(f"<p>EER {_fmt(one['eer'])} at threshold {one['eer_threshold']:.4f}.</p>")
    rows = [
        [
            p["target_fmr"],
            p["threshold"],
            p["fmr"],
            f"{_fmt(p['fmr_ci_low'])} – {_fmt(p['fmr_ci_high'])}",
            p["fnmr"],
            f"{_fmt(p['fnmr_ci_low'])} – {_fmt(p['fnmr_ci_high'])}",
            p["false_matches"],
            p["resolvable"],
        ]
        for p in one["operating_points"]
    ]
    headers = ["target FMR", "threshold", "FMR", "FMR 95% CI", "FNMR", "FNMR 95% CI", "false matches", "resolvable"]
    parts.append(_table(headers, rows))
    return "".join(parts)


def plots_section(one: Verification) -> str:
    genuine, impostor, points = one.genuine, one.impostor, one.summary["operating_points"]
    marks = {f"FMR {p['target_fmr']:g}": p["threshold"] for p in points}
    plots = []
    if len(genuine):
        plots.append(f'<img class="plot" alt="DET curve" src="{det_plot(one.curve, points, "DET")}">')
    plots.append(f'<img class="plot" alt="score histogram" src="{histogram_plot(genuine, impostor, marks, "Scores")}">')
    return '<div class="plots">' + "".join(plots) + "</div>"


def raw_vs_normalized_section(raw: dict, normalized: dict) -> str:
    """The same pairs, raw and normalized, side by side: overall and per group at each view's threshold."""
    rows = []
    for name, view in (("raw cosine", raw), (f"normalized ({normalized['normalization']})", normalized)):
        at = view["global_threshold"]
        rows.append([name, "all", at["value"], at["source"], at["fmr"], at["fnmr"], None])
        for attribute, result in view["groups"].items():
            rows.append([name, f"{attribute} max/min", None, None, result["fmr_max_min_ratio"], None, None])
            for group, r in result["groups"].items():
                rows.append([name, f"{attribute}={group}", None, None, r["fmr"], r["fnmr"], r["impostor_pairs"]])
    headers = ["scores", "pairs", "threshold", "threshold from", "FMR (ratio)", "FNMR", "impostor pairs"]
    return (
        "<h2>Raw and normalized scores</h2><p>The same pairs scored two ways: the raw cosine, and the score "
        "after fair score normalization (learnt without demographic labels; see the calibration record). The "
        "raw score stays in every table; a normalizing calibration's threshold applies to normalized scores.</p>"
        + _table(headers, rows)
    )


def differential_section(one: dict, attribute: str, result: dict, scores: str = "raw scores") -> str:
    source = html.escape(one["global_threshold"]["source"])
    excluded = result["cross_group_pairs_excluded"]
    fmr_note, fnmr_note = html.escape(result["fmr_ratio_note"]), html.escape(result["fnmr_ratio_note"])
    rows = [
        [
            group,
            r["impostor_pairs"],
            r["false_matches"],
            r["fmr"],
            f"{_fmt(r['fmr_ci_low'])} – {_fmt(r['fmr_ci_high'])}",
            r["fmr_upper_rule_of_three"],
            r["genuine_pairs"],
            r["fnmr"],
        ]
        for group, r in result["groups"].items()
    ]
    headers = ["group", "impostor pairs", "false matches", "FMR", "FMR 95% CI", "FMR upper (3/n)", "genuine pairs"]
    if attribute == QUALITY_BAND:
        title, grouping = "Error rates by quality band", "each pair is in the band of its lower-quality face"
    else:
        title = f"Demographic differentials by {html.escape(attribute)}"
        grouping = f"pairs whose faces fall in different groups are left out ({excluded:,})"
    return (
        f"<h3>{title} ({html.escape(scores)})</h3>"
        f"<p>One global threshold {result['threshold']:.4f} ({source}); {grouping}. "
        f"FMR max/min ratio: {_fmt(result['fmr_max_min_ratio'])} ({fmr_note}); "
        f"FNMR max/min ratio: {_fmt(result['fnmr_max_min_ratio'])} ({fnmr_note}).</p>"
        + _table([*headers, "FNMR"], rows)
    )


def identification_section(many: dict) -> str:
    intro = (
        f"<p>Matches of query run {html.escape(many['run_id'])} in {html.escape(many['matches_table'])}; index "
        f"{html.escape(many['index_id'])}; gallery <b>{many['gallery_size']:,} faces</b> of "
        f"{many['gallery_subjects']:,} subjects ({html.escape(many['gallery_table'])} v{many['gallery_version']}); "
        f"{many['searches']:,} searches, {many['mated_searches']:,} mated, {many['non_mated_searches']:,} "
        f"non-mated; candidates per search k = {many['k']} (every rate is within the top k); "
        f"{many.get('unlabelled_probes_left_out', 0):,} probes without a subject_id left out.</p>"
    )
    hits = [[f"rank-{r}", many.get(f"rank_{r}_hit_rate")] for r in (1, 5, 10) if f"rank_{r}_hit_rate" in many]
    rows = [
        [
            p["target_fpir"],
            p.get("threshold"),
            p.get("fpir"),
            p.get("fnir"),
            p.get("false_candidates_per_search"),
            p.get("resolvable"),
        ]
        for p in many["fnir_at_fpir"]
    ]
    headers = ["target FPIR", "threshold", "FPIR", "FNIR", "false candidates / search", "resolvable"]
    bands = [
        [
            b["band"],
            b["target_fpir"],
            b["threshold"],
            b["mated_searches"],
            b["fnir"],
            b["non_mated_searches"],
            b["fpir"],
        ]
        for b in many.get("quality_bands", [])
    ]
    band_headers = ["probe quality band", "target FPIR", "threshold", "mated", "FNIR", "non-mated", "FPIR"]
    return (
        "<h2>1:N identification</h2>"
        + intro
        + _table(["investigation mode", "hit rate (mated searches)"], hits)
        + _table(headers, rows)
        + (("<h3>By probe quality band</h3>" + _table(band_headers, bands)) if bands else "")
    )


def scenario_section(many: dict) -> str:
    rows = [
        [
            s["threshold_label"],
            s["threshold"],
            s["group"],
            s["searches"],
            s["searches_with_false_match"],
            s["false_candidates"],
            s["fpir"],
        ]
        for s in many["scenario"]
    ]
    headers = ["threshold", "value", "probe group", "searches", "with a false match", "false candidates", "FPIR"]
    return (
        "<h3>Scenario replay: non-mated searches, false matches per probe group</h3>"
        "<p>Every probe here is of a person not in the gallery, so every candidate at or above a threshold "
        f"is a false match; false candidates are counted among each search's top {many['k']}.</p>"
        + _table(headers, rows)
    )


def write_report(
    path: AnyPath,
    run_id: str,
    model_id: str | None,
    one: Verification | None,
    many: dict | None,
    normalized: Verification | None = None,
) -> AnyPath:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, render(run_id, model_id, one, many, normalized).encode("utf-8"))
    return path

"""Identification (1:N) error rates from a matches table's candidate lists (numpy/pandas only).

Definitions follow NIST's FRVT 1:N reports. A search is *mated* when the probe's subject is enrolled in
the gallery. Investigation mode: the rank of the probe's subject among the candidate subjects (rank-1,
rank-k hit rates). Threshold mode: FPIR(t), the share of non-mated searches returning any candidate with
score >= t; FNIR(t), the share of mated searches whose subject is not among the candidates at or above t.
Only the k candidates the query kept exist here, so every rate is "within the top k" (k is reported).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from jobs.common.errors import UserError
from jobs.common.fmr import fmr_resolvable, threshold_at_fmr


@dataclass(frozen=True)
class Searches:
    """One row per searched probe."""

    table: pd.DataFrame  # probe_face_id, probe_subject_id, mated, top_score, true_rank, true_score, groups...
    candidates: pd.DataFrame  # probe_face_id, gallery_subject_id, score, false (not the probe's subject)
    k: int


def searches_from_matches(matches: pd.DataFrame, enrolled: set[str]) -> Searches:
    """Reduce matches rows (probe_status ok) to per-search facts; `enrolled` = the gallery's subject ids."""
    # A probe without a subject_id cannot be called mated or non-mated: it is left out (and counted).
    matches = matches[matches["probe_subject_id"].notna()]
    found = matches[matches["rank"].notna()].copy()
    found["false"] = found["gallery_subject_id"] != found["probe_subject_id"]
    kept = ["probe_face_id", "probe_subject_id", "probe_attributes"]
    kept += ["probe_quality"] if "probe_quality" in matches.columns else []
    probes = matches.drop_duplicates("probe_face_id")[kept]
    probes = probes[probes["probe_face_id"].isin(found["probe_face_id"])].copy()
    probes["mated"] = probes["probe_subject_id"].isin(enrolled)
    top = found.groupby("probe_face_id")["score"].max()
    # Subject-level ranking: a subject's rank is the position of its best candidate among subjects.
    best = (
        found.sort_values(["probe_face_id", "score", "gallery_face_id"], ascending=[True, False, True])
        .drop_duplicates(["probe_face_id", "gallery_subject_id"])
        .copy()
    )
    best["subject_rank"] = best.groupby("probe_face_id").cumcount() + 1
    true = best[best["gallery_subject_id"] == best["probe_subject_id"]].set_index("probe_face_id")
    probes["top_score"] = probes["probe_face_id"].map(top).astype(float)
    probes["true_rank"] = probes["probe_face_id"].map(true["subject_rank"])
    probes["true_score"] = probes["probe_face_id"].map(true["score"]).astype(float)
    k = int(found.groupby("probe_face_id").size().max()) if len(found) else 0
    return Searches(probes.reset_index(drop=True), found[["probe_face_id", "gallery_subject_id", "score", "false"]], k)


def rank_hit_rates(searches: Searches, ranks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float | int | None]:
    mated = searches.table[searches.table["mated"]]
    out: dict[str, float | int | None] = {"mated_searches": len(mated)}
    for rank in ranks:
        if rank <= searches.k:
            hits = (mated["true_rank"] <= rank).sum()
            out[f"rank_{rank}_hit_rate"] = float(hits / len(mated)) if len(mated) else None
    return out


def fpir_fnir(searches: Searches, threshold: float) -> dict[str, float | int | None]:
    table = searches.table
    mated, non_mated = table[table["mated"]], table[~table["mated"]]
    false_per_search = _false_candidates(searches, threshold)
    return {
        "threshold": threshold,
        "fpir": float((non_mated["top_score"] >= threshold).mean()) if len(non_mated) else None,
        "fnir": float((~(mated["true_score"] >= threshold)).mean()) if len(mated) else None,
        "non_mated_searches": len(non_mated),
        "mated_searches": len(mated),
        "false_candidates_per_search": float(false_per_search.reindex(table["probe_face_id"], fill_value=0).mean()),
    }


def fnir_at_fpir(searches: Searches, target_fpir: float) -> dict[str, float | int | bool | str | None]:
    non_mated = searches.table[~searches.table["mated"]]
    if not len(non_mated):
        return {"target_fpir": target_fpir, "threshold": None, "reason": "no non-mated searches"}
    threshold = threshold_at_fmr(non_mated["top_score"].to_numpy(), target_fpir)
    return {
        "target_fpir": target_fpir,
        **fpir_fnir(searches, threshold),
        "resolvable": fmr_resolvable(len(non_mated), target_fpir),
    }


def _false_candidates(searches: Searches, threshold: float) -> pd.Series:
    c = searches.candidates
    return c[(c["score"] >= threshold) & c["false"]].groupby("probe_face_id").size()


def check_group_by(group_by: list[str], attributes: Iterable[Any], data: str) -> None:
    """Refuse a group_by attribute no face of `data` has (a "differential" of everyone as `unknown`
    would say nothing), naming the attributes that exist.

    >>> check_group_by(["race"], [{"race": "1"}, None], "utkface-dev")
    >>> check_group_by(["ethnicity"], [{"race": "1", "gender": "0"}], "utkface-dev")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    jobs.common.errors.UserError: audit.group_by names 'ethnicity', which no face ... ['gender', 'race']
    """
    present: set[str] = set()
    for item in attributes:
        present |= set(dict(item)) if item is not None else set()
    for spec in group_by:
        missing = [name for name in spec.split("+") if name not in present]
        if missing:
            raise UserError(
                f"audit.group_by names {missing[0]!r}, which no face of {data} has; its attributes: {sorted(present)}"
            )


def group_of(attributes: dict[str, str] | None, names: list[str]) -> str:
    """'race=1,gender=0' from a probe's attributes (a dict or a list of pairs); 'unknown' where missing;
    'all' when no attribute is asked for."""
    values = dict(attributes) if attributes is not None else {}
    parts = [part for name in names for part in name.split("+")]  # "race+gender" is both
    return ",".join(f"{name}={values.get(name, 'unknown')}" for name in parts) or "all"


def per_group_fpir(searches: Searches, threshold: float, names: list[str]) -> pd.DataFrame:
    """FPIR and false candidates per non-mated probe group at one threshold."""
    table = searches.table[~searches.table["mated"]].copy()
    table["group"] = [group_of(a, names) for a in table["probe_attributes"]]
    false_counts = _false_candidates(searches, threshold)
    table["false_candidates"] = table["probe_face_id"].map(false_counts).fillna(0).astype(int)
    table["any_false"] = table["false_candidates"] > 0
    grouped = table.groupby("group").agg(
        searches=("probe_face_id", "size"),
        searches_with_false_match=("any_false", "sum"),
        false_candidates=("false_candidates", "sum"),
    )
    grouped["fpir"] = grouped["searches_with_false_match"] / grouped["searches"]
    grouped["threshold"] = threshold
    return grouped.reset_index()


def scenario_replay(searches: Searches, thresholds: dict[str, float], names: list[str]) -> pd.DataFrame:
    """The 2018 test's shape: non-mated probes against a gallery, false matches per probe group, for each
    threshold (fixed ones beside calibrated ones)."""
    frames = []
    for label, threshold in thresholds.items():
        frame = per_group_fpir(searches, threshold, names)
        frame.insert(0, "threshold_label", label)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summary_numbers(searches: Searches) -> dict[str, int]:
    return {"searches": len(searches.table), "candidates_per_search_k": searches.k}

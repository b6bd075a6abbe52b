"""The 2018 test's other finding, replayed on utkface-dev: who the false matches fall on.

Every utkface-dev image is a different adult (200 per race x gender), so every candidate is a stranger.
Half the images (seeded) are the gallery, the other half the probes; per race, the share of searches that
return a false candidate at the calibrated threshold, raw and after fair score normalization learnt
without labels, beside the share the calibration predicts (gallery faces x FMR, stated as such).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

RACES = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}
# UTKFace names: age_gender_race_datetime.jpg.chip.jpg
ATTRIBUTES_FROM_NAME = r"^(?P<age>\d+)_(?P<gender>\d)_(?P<race>\d)_"


def split_utkface(folder: Path, images_wanted: int | None = None, seed: int = 2018) -> tuple[list[Path], list[Path]]:
    """(gallery, probes): a seeded half of the images (or of a seeded subset of them) each."""
    images = sorted(folder.glob("*.jpg"))
    random.Random(seed).shuffle(images)
    images = images[:images_wanted] if images_wanted else images
    half = len(images) // 2
    return sorted(images[:half]), sorted(images[half:])


@dataclass(frozen=True)
class RaceRow:
    race: str
    searches: int
    with_false_raw: int
    with_false_fsn: int


def false_candidates_by_race(raw: pd.DataFrame, fsn: pd.DataFrame) -> list[RaceRow]:
    """Per race, from two query runs' matches rows (probe_face_id, probe_attributes, probe_status,
    above_threshold): searches and searches with a candidate at or above each threshold.

    >>> rows = pd.DataFrame({"probe_face_id": [1, 1, 2], "probe_attributes": [{"race": "2"}] * 2 + [{"race": "0"}],
    ...     "probe_status": ["ok"] * 3, "above_threshold": [False, True, False]})
    >>> [(r.race, r.searches, r.with_false_raw) for r in false_candidates_by_race(rows, rows)]
    [('White', 1, 0), ('Asian', 1, 1)]
    """

    def per_probe(matches: pd.DataFrame) -> pd.DataFrame:
        searched = matches[matches["probe_status"] == "ok"].copy()
        searched["race"] = [dict(a or {}).get("race", "?") for a in searched["probe_attributes"]]
        searched["hit"] = searched["above_threshold"].eq(True)
        return searched.groupby("probe_face_id").agg(race=("race", "first"), hit=("hit", "any"))

    raw_probes, fsn_probes = per_probe(raw), per_probe(fsn)
    rows = []
    for code, name in RACES.items():
        mine = raw_probes[raw_probes["race"] == code]
        if not len(mine):
            continue
        theirs = fsn_probes[fsn_probes["race"] == code]
        rows.append(RaceRow(name, len(mine), int(mine["hit"].sum()), int(theirs["hit"].sum())))
    return rows


def race_table(rows: list[RaceRow], gallery_size: int, raw_fmr: float, fsn_fmr: float) -> list[str]:
    """The printed table, in the demo's style."""
    predicted_raw, predicted_fsn = gallery_size * raw_fmr, gallery_size * fsn_fmr
    lines = [
        f"{'race':>8}  {'searches':>8}  {'with a false candidate, raw':>28}  {'after FSN':>18}  "
        f"{'predicted (gallery x FMR)':>26}"
    ]
    for row in rows:
        raw = f"{row.with_false_raw} ({row.with_false_raw / row.searches:.1%})"
        fsn = f"{row.with_false_fsn} ({row.with_false_fsn / row.searches:.1%})"
        predicted = f"{predicted_raw:.1%} / {predicted_fsn:.1%}"
        lines.append(f"{row.race:>8}  {row.searches:>8}  {raw:>28}  {fsn:>18}  {predicted:>26}")
    return lines

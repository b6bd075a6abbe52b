"""What a probe quality filter does to the demo's searches: false matches of the people not in the gallery,
and the people in it who are found, with and without the filter (pandas only)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class FilterEffect:
    level: str
    non_mated: int
    non_mated_not_searched: int
    non_mated_with_false_match: int
    mated: int
    mated_not_searched: int
    mated_found: int  # the person's own face among the candidates at or above the threshold

    def line(self) -> str:
        """One row of the demo's table."""
        false_share = self.non_mated_with_false_match / max(self.non_mated, 1)
        found_share = self.mated_found / max(self.mated, 1)
        return (
            f"{self.level:>10}  {self.non_mated_not_searched + self.mated_not_searched:>12}  "
            f"{f'{self.non_mated_with_false_match} of {self.non_mated} ({false_share:.1%})':>28}  "
            f"{f'{self.mated_found} of {self.mated} ({found_share:.1%})':>24}"
        )


def filter_effect(matches: pd.DataFrame, gallery_subjects: set[str], level: str) -> FilterEffect:
    """From one query run's matches rows (probe_face_id, probe_subject_id, probe_status, rank,
    gallery_subject_id, above_threshold): a probe not searched finds no one, true or false.

    >>> rows = pd.DataFrame({
    ...     "probe_face_id": [1, 1, 2, 3], "probe_subject_id": ["ann", "ann", "bob", "cy"],
    ...     "probe_status": ["ok", "ok", "ok", "low_quality"], "rank": [1, 2, 1, None],
    ...     "gallery_subject_id": ["ann", "zed", "zed", None], "above_threshold": [True, False, True, None]})
    >>> effect = filter_effect(rows, {"ann", "cy", "zed"}, "MEDIUM")
    >>> effect.mated, effect.mated_found, effect.mated_not_searched, effect.non_mated_with_false_match
    (2, 1, 1, 1)
    """
    probes = matches.drop_duplicates("probe_face_id").set_index("probe_face_id")
    mated = probes["probe_subject_id"].isin(gallery_subjects)
    not_searched = probes["probe_status"] != "ok"
    above = matches[matches["above_threshold"].eq(True)]  # null (no threshold) is not above
    false_hit = set(above.loc[above["gallery_subject_id"] != above["probe_subject_id"], "probe_face_id"])
    true_hit = set(above.loc[above["gallery_subject_id"] == above["probe_subject_id"], "probe_face_id"])
    ids = probes.index.to_series()
    return FilterEffect(
        level=level,
        non_mated=int((~mated).sum()),
        non_mated_not_searched=int((~mated & not_searched).sum()),
        non_mated_with_false_match=int((~mated & ids.isin(false_hit)).sum()),
        mated=int(mated.sum()),
        mated_not_searched=int((mated & not_searched).sum()),
        mated_found=int((mated & ids.isin(true_hit)).sum()),
    )


HEADER = f"{'filter':>10}  {'not searched':>12}  {'non-mated with a false match':>28}  {'mated found above it':>24}"

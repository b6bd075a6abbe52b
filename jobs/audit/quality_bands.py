"""Error rates by face quality: the bands between the quality filter levels' floors.

A 1:1 pair falls in the band of its lower-quality face (ISO/IEC 29794-1's pairwise quality); a 1:N
search in its probe's band. Bands are named by the floors that bound them, so a reader sees what a
filter level would have removed: everything in the bands below that level's floor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from jobs.audit import identification as ident
from jobs.models.quality_fit import FLOORS

QUALITY_BAND = "quality_band"  # the name quality bands go by among demographic groups


def _edges() -> list[tuple[str, float]]:
    return sorted(((level, float(FLOORS[level])) for level in ("LOW", "MEDIUM", "HIGH")), key=lambda e: e[1])


def band_names(qualities: np.ndarray) -> np.ndarray:
    """Each quality's band, named by the floors around it.

    >>> band_names(np.array([0.0, 1.0]))[0].startswith("1 below LOW"), band_names(np.array([1.0]))[0][:7]
    (True, '4 HIGH ')
    """
    edges = _edges()
    names = [f"1 below {edges[0][0]} (< {edges[0][1]:.3f})"]
    for number, ((level, low), (_, high)) in enumerate(zip(edges, edges[1:]), start=2):
        names.append(f"{number} {level} to {_next(level)} ({low:.3f}-{high:.3f})")
    names.append(f"{len(edges) + 1} {edges[-1][0]} and above (>= {edges[-1][1]:.3f})")
    positions = np.searchsorted([value for _, value in edges], qualities, side="right")
    return np.array(names, dtype=object)[positions]


def _next(level: str) -> str:
    order = [name for name, _ in _edges()]
    return order[order.index(level) + 1]


def pair_bands(qualities: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The band of each pair's lower-quality face."""
    return band_names(np.minimum(qualities[a], qualities[b]))


def search_bands(searches: ident.Searches, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per probe quality band, FNIR and FPIR at each operating point's threshold (the global thresholds
    found for the FPIR targets over all searches)."""
    table = searches.table
    if "probe_quality" not in table.columns or table["probe_quality"].isna().any():
        return []
    bands = pd.Series(band_names(table["probe_quality"].to_numpy(dtype=float)), index=table.index)
    rows = []
    for band in sorted(bands.unique()):
        subset = ident.Searches(table[bands == band], searches.candidates, searches.k)
        for point in points:
            if point.get("threshold") is None:
                continue
            rates = ident.fpir_fnir(subset, point["threshold"])
            rows.append({"band": band, "target_fpir": point["target_fpir"], **rates})
    return rows

"""Label-free score normalization: fair score normalization (FSN; Terhörst et al., IJCB 2020).

A model's impostor scores are not alike everywhere in its embedding space: in dense regions (for the
default pack, faces of some demographic groups) unrelated people score higher, so one global threshold
gives those regions a higher false-match rate. FSN learns, without any demographic label, where those
regions are and how much higher their impostor scores run, and shifts each comparison accordingly:

1. spherical k-means on a calibration set's embeddings (every face its own person, or subject_ids);
2. per cluster c, the threshold t_c at the target FMR among impostor pairs with a face in c, beside the
   global threshold t_G over all impostor pairs;
3. a pair's normalized score is `raw - (offset(a) + offset(b)) / 2` with `offset(c) = t_c - t_G`.

The raw cosine is never replaced: consumers keep it and add the normalized score beside it. Pure numpy
(faiss for the k-means); the record this module writes is part of a calibration record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs.common.fmr import threshold_at_fmr

METHOD = "fsn"
VERSION = 1
CITATION = "Terhörst, Kolf, Damer, Kirchbuchner, Kuijper: Post-comparison mitigation of demographic bias in face recognition using fair score normalization, IJCB 2020"  # noqa: E501


@dataclass(frozen=True)
class Normalization:
    """Cluster centres (unit rows) and each cluster's offset of its threshold from the global one."""

    centres: np.ndarray  # (k, d) float32
    offsets: np.ndarray  # (k,) float64
    global_threshold: float
    target_fmr: float

    def clusters_of(self, vectors: np.ndarray) -> np.ndarray:
        """The nearest centre (largest cosine) of each L2-normalised vector."""
        return np.argmax(np.asarray(vectors, np.float32) @ self.centres.T, axis=1)

    def offsets_of(self, vectors: np.ndarray) -> np.ndarray:
        """Each face's share of the shift: its cluster's offset (the pair averages its two faces' offsets)."""
        if len(vectors) == 0:
            return np.zeros(0, np.float64)
        return self.offsets[self.clusters_of(vectors)]

    def normalize(self, raw: np.ndarray, offset_a: np.ndarray, offset_b: np.ndarray) -> np.ndarray:
        return np.asarray(raw, np.float64) - (np.asarray(offset_a) + np.asarray(offset_b)) / 2

    def normalize_pairs(self, vectors: np.ndarray, a: np.ndarray, b: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Normalized scores of pairs given as positions into `vectors`, with their raw scores."""
        offsets = self.offsets_of(vectors)
        return self.normalize(raw, offsets[a], offsets[b])

    def rescore_top(
        self,
        probe_vectors: np.ndarray,
        scores: np.ndarray,
        ids: np.ndarray,
        gallery: tuple[np.ndarray, np.ndarray],
        k: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each probe's k best candidates by normalized score: (raw scores, ids, normalized scores).

        `scores`/`ids` are (probes x candidates) search results (id -1: empty slot); `gallery` is
        (face ids sorted, their offsets). Ties go to the smaller face_id, as in the search's own merge.
        """
        gallery_ids, gallery_offsets = gallery
        slots = np.clip(np.searchsorted(gallery_ids, ids), 0, max(len(gallery_ids) - 1, 0))
        known = (ids < 0) | (gallery_ids[slots] == ids) if len(gallery_ids) else ids < 0
        if not np.all(known):
            missing = ids[~known][0]
            raise RuntimeError(f"gallery face {missing} has no normalization offset: the index and faces disagree")
        probe_offsets = self.offsets_of(probe_vectors)
        normalized = np.asarray(scores, np.float64) - (probe_offsets[:, None] + gallery_offsets[slots]) / 2
        normalized = np.where(ids < 0, -np.inf, normalized)
        order = np.lexsort((ids, -normalized), axis=1)[:, :k]
        take = lambda values: np.take_along_axis(values, order, axis=1)  # noqa: E731
        return take(scores), take(ids), take(normalized)

    def as_record(self) -> dict[str, Any]:
        return {
            "method": METHOD,
            "version": VERSION,
            "reference": CITATION,
            "k": int(len(self.offsets)),
            "target_fmr": self.target_fmr,
            "global_threshold": self.global_threshold,
            "centres": [[round(float(v), 7) for v in row] for row in self.centres],
            "offsets": [float(v) for v in self.offsets],
        }


def normalization_from_record(record: object, dimension: int | None = None) -> Normalization:
    """The normalization a calibration record stores; ValueError saying what is wrong with it.

    >>> normalization_from_record({"method": "zscore"})
    Traceback (most recent call last):
    ...
    ValueError: normalization method 'zscore' is not one Lineup knows (it knows 'fsn' version 1)
    """
    if not isinstance(record, dict) or record.get("method") != METHOD or record.get("version") != VERSION:
        method = record.get("method") if isinstance(record, dict) else record
        raise ValueError(f"normalization method {method!r} is not one Lineup knows (it knows {METHOD!r} version 1)")
    try:
        centres = np.asarray(record["centres"], np.float32)
        offsets = np.asarray(record["offsets"], np.float64)
        global_threshold, target_fmr = float(record["global_threshold"]), float(record["target_fmr"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"normalization record is incomplete ({type(error).__name__}: {error})") from None
    if centres.ndim != 2 or len(centres) != len(offsets) or len(offsets) == 0:
        raise ValueError(f"normalization has {len(offsets)} offsets for centres of shape {centres.shape}")
    if dimension is not None and centres.shape[1] != dimension:
        raise ValueError(f"normalization centres are {centres.shape[1]}-d, the embeddings {dimension}-d")
    if not np.all(np.isfinite(offsets)) or np.any(np.abs(offsets) > 2):
        raise ValueError("normalization offsets must be finite cosine differences in [-2, 2]")
    return Normalization(centres, offsets, global_threshold, target_fmr)


def spherical_kmeans(vectors: np.ndarray, k: int, seed: int, iterations: int = 25) -> np.ndarray:
    """k unit-norm centres of L2-normalised vectors (faiss's k-means, spherical, seeded)."""
    import faiss

    data = np.ascontiguousarray(vectors, np.float32)
    if not 1 <= k <= len(data):
        raise ValueError(f"cannot learn {k} clusters from {len(data)} faces")
    kmeans = faiss.Kmeans(data.shape[1], k, niter=iterations, spherical=True, seed=seed, verbose=False)
    kmeans.cp.min_points_per_centroid = 1  # small calibration sets are expected; faiss would only warn
    kmeans.train(data)
    return np.asarray(kmeans.centroids, np.float32)


def learn_fsn(
    vectors: np.ndarray,
    impostor_a: np.ndarray,
    impostor_b: np.ndarray,
    impostor_scores: np.ndarray,
    k: int,
    target_fmr: float,
    seed: int = 0,
) -> Normalization:
    """FSN from a calibration set: its face vectors and its impostor pairs (positions into `vectors`)."""
    centres = spherical_kmeans(vectors, k, seed)
    return fsn_from_centres(centres, vectors, impostor_a, impostor_b, impostor_scores, target_fmr)


def fsn_from_centres(
    centres: np.ndarray,
    vectors: np.ndarray,
    impostor_a: np.ndarray,
    impostor_b: np.ndarray,
    impostor_scores: np.ndarray,
    target_fmr: float,
) -> Normalization:
    """Each cluster's offset: its threshold at the target FMR minus the global one (steps 2-3 above)."""

    if len(impostor_scores) == 0:
        raise ValueError("no impostor pairs to learn a normalization from")
    centres = np.asarray(centres, np.float32)
    clusters = np.argmax(np.asarray(vectors, np.float32) @ centres.T, axis=1)
    global_threshold = threshold_at_fmr(impostor_scores, target_fmr)
    offsets = np.zeros(len(centres), np.float64)
    for cluster in range(len(centres)):
        # Pairs with either face in the cluster: enough of them to place a threshold at a small FMR.
        touching = (clusters[impostor_a] == cluster) | (clusters[impostor_b] == cluster)
        if touching.any():
            offsets[cluster] = threshold_at_fmr(impostor_scores[touching], target_fmr) - global_threshold
    return Normalization(centres, offsets, float(global_threshold), float(target_fmr))

"""FAISS mechanics (no Spark): train once, add a shard's vectors with their face_ids, exact ground truth,
recall, and the search parameter that reaches a recall floor."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from jobs.shards.choose import REFINE_K_FACTOR, IndexChoice, faiss_metric
from jobs.shards.files import ShardedIndex, serialize

log = logging.getLogger(__name__)


def new_index(factory: str, dim: int) -> Any:  # a faiss.Index
    """An empty index that accepts `add_with_ids` (flat, HNSW and refined indexes are wrapped in an id
    map; a refined one rescores `k * REFINE_K_FACTOR` candidates, a setting its file keeps)."""
    import faiss

    metric = faiss.METRIC_L2 if faiss_metric(factory) == "l2" else faiss.METRIC_INNER_PRODUCT
    index = faiss.index_factory(dim, factory, metric)
    if isinstance(index, faiss.IndexRefine):
        index.k_factor = REFINE_K_FACTOR
        return faiss.IndexIDMap(index)  # not IDMap2: its reverse map would cost ~30 bytes a vector
    if factory.strip().lower() in ("flat",) or "HNSW" in factory:
        index = faiss.IndexIDMap2(index)
    return index


def remove_from_shard(shard: Any, face_ids: np.ndarray) -> int:
    """Remove `face_ids` from a shard in place; how many it held. A refined index cannot remove (FAISS
    `IndexRefine`): it is emptied and refilled from its own full vectors without them, training kept."""
    import faiss

    inner = faiss.downcast_index(shard.index) if isinstance(shard, faiss.IndexIDMap) else None
    if not isinstance(inner, faiss.IndexRefine):
        return int(shard.remove_ids(faiss.IDSelectorBatch(len(face_ids), faiss.swig_ptr(face_ids))))
    ids = faiss.vector_to_array(shard.id_map).astype(np.int64)
    keep = ~np.isin(ids, face_ids)
    if keep.all():
        return 0
    vectors = faiss.downcast_index(inner.refine_index).reconstruct_n(0, inner.ntotal)
    shard.reset()
    if keep.any():
        shard.add_with_ids(np.ascontiguousarray(vectors[keep]), np.ascontiguousarray(ids[keep]))
    return int((~keep).sum())


def train(choice: IndexChoice, dim: int, sample: np.ndarray) -> bytes:
    """The trained, empty index every shard starts from, serialized."""
    index = new_index(choice.factory, dim)
    if not index.is_trained:
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return serialize(index)


UNIT_TOLERANCE = 1e-3  # |norm^2 - 1| a float32 L2-normalised embedding stays far inside


class NotUnitVectors(ValueError):
    """An embedding an L2 (fast-scan) index cannot rank by cosine; the job turns it into exit 2."""


def add_vectors(index: Any, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Add vectors under their face_ids. An L2 (fast-scan) index ranks by cosine only for unit vectors:
    any other vector is refused, naming its face_id, rather than ranked silently by another measure."""
    import faiss

    if not len(ids):
        return
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if index.metric_type == faiss.METRIC_L2:
        off = np.flatnonzero(np.abs(np.einsum("ij,ij->i", vectors, vectors) - 1) > UNIT_TOLERANCE)
        if off.size:
            norm = float(np.linalg.norm(vectors[off[0]]))
            raise NotUnitVectors(
                f"face_id {int(ids[off[0]])} has an embedding of norm {norm:.4f} ({off.size} such in this batch): "
                "this index ranks unit vectors by cosine; write L2-normalised embeddings, or set index.factory "
                "to an inner-product index such as IVF4096,SQ8"
            )
    index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))


def serialized_view(index: Any) -> memoryview:
    """The index's file bytes without the copy `serialize` makes (a shard can be gigabytes)."""
    import faiss

    return faiss.serialize_index(index).data


def exact_top_k(
    gallery: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int, block: int = 16384
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product with blocked GEMM (numpy beats IndexFlatIP on this CPU).

    Memory stays bounded (1,024 queries x `block` scores at a time); each block keeps its k best by
    argpartition, and the running lists merge with ties going to the smaller face_id, as in `merge_top_k`.
    """
    k = min(k, len(gallery))
    out_scores = np.empty((len(queries), k), np.float32)
    out_ids = np.empty((len(queries), k), np.int64)
    for q_start in range(0, len(queries), 1024):
        chunk = queries[q_start : q_start + 1024]
        best_scores = np.full((len(chunk), 0), -np.inf, np.float32)
        best_ids = np.zeros((len(chunk), 0), np.int64)
        for start in range(0, len(gallery), block):
            scores = chunk @ gallery[start : start + block].T
            block_ids = ids[start : start + block]
            if scores.shape[1] > k:
                keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
                scores, found = np.take_along_axis(scores, keep, axis=1), block_ids[keep]
            else:
                found = np.broadcast_to(block_ids, scores.shape)
            all_scores = np.concatenate([best_scores, scores], axis=1)
            all_ids = np.concatenate([best_ids, found], axis=1)
            order = np.lexsort((all_ids, -all_scores), axis=1)[:, :k]
            best_scores = np.take_along_axis(all_scores, order, axis=1)
            best_ids = np.take_along_axis(all_ids, order, axis=1)
        out_scores[q_start : q_start + len(chunk)] = best_scores
        out_ids[q_start : q_start + len(chunk)] = best_ids
    return out_scores, out_ids


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true top-k ids that the index returned in its top-k, averaged over queries."""
    return float(_recall_per_query(found, truth).mean()) if len(truth) else 0.0


def _recall_per_query(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per query, the share of its true ids (-1 pads a gallery smaller than k) the index returned; a
    query with nothing to find (a one-vector gallery searched without itself) counts as fully found."""
    hits, wanted = [], []
    for f, t in zip(found, truth):
        t = t[t >= 0]
        hits.append(len(np.intersect1d(f[f >= 0], t)))
        wanted.append(len(t))
    hits_array, wanted_array = np.asarray(hits, np.float64), np.asarray(wanted, np.float64)
    return np.divide(hits_array, wanted_array, out=np.ones_like(hits_array), where=wanted_array > 0)


def without_queries(found: np.ndarray, query_ids: np.ndarray, k: int) -> np.ndarray:
    """Each row's first k ids other than its query's own face_id (rows searched for k + 1), padded with
    -1 where fewer than k others exist."""
    others = found != query_ids[:, None]
    order = np.argsort(~others, axis=1, kind="stable")  # the query's own id moves last, the rest keep order
    kept = np.where(np.take_along_axis(others, order, axis=1), np.take_along_axis(found, order, axis=1), -1)
    return kept[:, :k]


def tune(
    index: ShardedIndex,
    queries: np.ndarray,
    truth: np.ndarray,
    k: int,
    floor: float,
    query_ids: np.ndarray | None = None,
) -> tuple[int | None, float, list]:
    """Cheapest search parameter whose recall@k reaches `floor` with two standard errors to spare (the
    held-out queries are a sample of what will be searched), found among the manifest's candidates and
    then bisected between the last one short of it and the first past it, to 1/8 of the gap; when none
    has the margin, the cheapest that reaches `floor`, else the last. (value, recall, [(value, recall)...]).

    With `query_ids` (queries that are gallery vectors) each query's own face_id is left out of what the
    index returns, as `truth` must leave it out: a vector finds itself first, which a new photo of the
    same person does not (on 10M face-shaped vectors counting it overstated recall@10 by ~0.007)."""

    def search() -> np.ndarray:
        if query_ids is None:
            return index.search(queries, k)[1]
        return without_queries(index.search(queries, k + 1)[1], query_ids, k)

    param = index.manifest.search_param
    if param is None:
        return None, recall_at_k(search(), truth), []
    measured: dict[int, tuple[float, float]] = {}

    def measure(value: int) -> bool:
        index.set_search_param(value)
        found = search()
        per_query = _recall_per_query(found, truth)
        recall = float(per_query.mean())
        margin = 2 * float(per_query.std(ddof=1)) / np.sqrt(len(per_query)) if len(per_query) > 1 else 0.0
        measured[value] = (recall, recall - margin)
        log.info("%s=%d: recall@%d %.4f (lower bound %.4f)", param, value, k, recall, recall - margin)
        return recall - margin >= floor

    below = None
    for value in index.manifest.search_candidates:
        if measure(value):
            while below is not None and value - below > max(1, below // 8):
                middle = (below + value) // 2
                below, value = (below, middle) if measure(middle) else (middle, value)
            return value, measured[value][0], _tried(measured)
        below = value
    reaching = [value for value in sorted(measured) if measured[value][0] >= floor]
    value = reaching[0] if reaching else max(measured)
    return value, measured[value][0], _tried(measured)


def _tried(measured: dict[int, tuple[float, float]]) -> list[tuple[int, float]]:
    return [(value, round(measured[value][0], 4)) for value in sorted(measured)]

"""The pure core, without Spark: top-k merge and shard search against brute force, removed ids, the index
choice, face_id derivation and the threshold at an FMR (each against hand-computed or brute-force values)."""

from __future__ import annotations

import hashlib

import faiss
import numpy as np
import pytest

from jobs.common.fmr import threshold_at_fmr
from jobs.common.ids import face_id_of, image_id_of
from jobs.forget.verify import shard_contents
from jobs.shards.build import (
    NotUnitVectors,
    add_vectors,
    new_index,
    recall_at_k,
    remove_from_shard,
    tune,
    without_queries,
)
from jobs.shards.choose import EXACT_LIMIT, REFINE_K_FACTOR, NoIndexFits, choose_index
from jobs.shards.files import ShardedIndex, deserialize, serialize
from jobs.shards.search import merge_top_k, pad_to_k, search_shard, search_shards
from tests.fixtures.faces import clustered
from tests.fixtures.manifests import manifest_of


def brute_force(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int, removed=()) -> np.ndarray:
    """Ids of the top k by score, ties to the smaller id, removed ids never returned."""
    keep = ~np.isin(ids, np.asarray(removed, np.int64))
    vectors, ids = vectors[keep], ids[keep]
    scores = queries @ vectors.T
    return np.array([ids[np.lexsort((ids, -row))][:k] for row in scores])


def flat_shards(vectors: np.ndarray, ids: np.ndarray, count: int) -> list:
    shards = []
    for shard in range(count):
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
        mask = ids % count == shard
        index.add_with_ids(vectors[mask], ids[mask])
        shards.append(index)
    return shards


def test_merge_top_k_equals_sorting_the_union() -> None:
    rng = np.random.default_rng(0)
    scores = [np.round(rng.random((20, 5)), 2).astype(np.float32) for _ in range(3)]  # rounded: many ties
    ids = [rng.choice(10_000, size=(20, 5), replace=False) for _ in range(3)]
    merged_scores, merged_ids = merge_top_k(scores, ids, 7)
    for row in range(20):
        union = sorted(
            zip(np.concatenate([s[row] for s in scores]), np.concatenate([i[row] for i in ids])),
            key=lambda pair: (-pair[0], pair[1]),
        )[:7]
        assert merged_ids[row].tolist() == [i for _, i in union]
        assert np.allclose(merged_scores[row], [s for s, _ in union])


def test_merge_top_k_puts_missing_entries_last() -> None:
    scores, ids = merge_top_k(
        [np.array([[0.9, 0.8]]), np.array([[0.99, 0.1]])], [np.array([[1, -1]]), np.array([[-1, 4]])], 3
    )
    assert ids.tolist() == [[1, 4, -1]] and scores[0, 2] == -np.inf


@pytest.mark.parametrize("removed", [(), (3, 17, 40, 41, 42)])
def test_sharded_search_equals_brute_force(removed: tuple[int, ...]) -> None:
    vectors = clustered(600, dim=16, seed=1)
    ids = np.arange(600, dtype=np.int64)
    queries = vectors[[3, 17, 40, 100, 599]] + 0.01
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    removed_ids = np.array(sorted(removed), dtype=np.int64)
    _, found = search_shards(flat_shards(vectors, ids, 4), removed_ids, queries, 10)
    assert found.tolist() == brute_force(vectors, ids, queries, 10, removed).tolist()


def test_search_shard_marks_removed_ids_missing() -> None:
    vectors = clustered(20, dim=8, seed=2)
    ids = np.arange(20, dtype=np.int64)
    shard = flat_shards(vectors, ids, 1)[0]
    _, found = search_shard(shard, np.array([5], np.int64), vectors[5:6], 3)
    assert 5 not in found[0] and found.shape[1] == 4  # one extra candidate asked for the removed id


def test_empty_shards_give_padded_results() -> None:
    empty = faiss.IndexIDMap2(faiss.IndexFlatIP(4))
    scores, ids = pad_to_k(*search_shards([empty, empty], np.zeros(0, np.int64), np.ones((2, 4), np.float32), 3), 3)
    assert ids.tolist() == [[-1] * 3] * 2 and np.isneginf(scores).all()


@pytest.mark.parametrize(
    ("vectors", "budget_gb", "factory", "exact"),
    [
        (EXACT_LIMIT, 1, "Flat", True),
        (EXACT_LIMIT + 1, 1, "IVF2048,PQ64x4fs,RFlat", False),  # 4 * sqrt(250k) = 2000 -> 2048
        (4_000_000, 4, "IVF4096,PQ64x4fs,RFlat", False),  # 1.9 + 0.1 GiB fit; 4 * sqrt(4M) = 8000 -> capped 4096
        (1_500_000, 4, "IVF4096,PQ64x4fs,RFlat", False),  # 4 * sqrt(1.5M) = 4899 -> 4096
        (10_000_000, 8, "IVF4096,PQ64x4fs,RFlat", False),  # 4.8 GiB of floats and 0.3 GiB of 4-bit codes fit 8 GiB
        (10_000_000, 4, "IVF4096,SQ8", False),  # 4.8 GiB of floats exceed 4 GiB; 1.2 GiB of 8-bit codes fit
        (10_000_000, 1, "IVF4096,PQ32x8", False),  # not even 8-bit codes fit 1 GiB: PQ with dim / 4 bytes
    ],
)
@pytest.mark.parametrize("recall_floor", [0.95, 0.99])
def test_index_choice_by_hand(vectors: int, budget_gb: int, factory: str, exact: bool, recall_floor: float) -> None:
    choice = choose_index(vectors, 128, budget_gb * 2**30, recall_floor=recall_floor)
    assert (choice.factory, choice.exact) == (factory, exact)
    nlist = int(factory.split(",")[0][3:]) if not exact else 0
    assert choice.train_points == nlist * 39
    assert choice.search_param == (None if exact else "nprobe")


@pytest.mark.parametrize("vectors", [1_000, EXACT_LIMIT + 1, 10_000_000])
def test_a_recall_floor_of_one_is_exact_at_any_size(vectors: int) -> None:
    choice = choose_index(vectors, 128, 8 * 2**30)  # the default floor
    assert (choice.factory, choice.exact, choice.search_param) == ("Flat", True, None)


def test_exact_search_beyond_the_budget_is_refused_naming_both_settings() -> None:
    with pytest.raises(NoIndexFits, match=r"4.77 GiB.*index.memory_budget_gb.*index.recall_floor below 1"):
        choose_index(10_000_000, 128, 4 * 2**30, recall_floor=1.0)


@pytest.mark.parametrize("factory", ["IVF16,SQ8,RFlat", "IVF16,PQ8x4fs,RFlat"])
def test_a_refined_shard_searches_exactly_and_erases_in_place(tmp_path, factory: str) -> None:
    """IVF-SQ8 or fast-scan IVF-PQ (an L2 index) rescored from full vectors: with every list probed its
    top-k is the exact top-k, with cosine scores; removing ids (which FAISS's IndexRefine cannot do
    itself) leaves neither their ids nor their vectors."""
    vectors = clustered(2000, dim=16, seed=3)
    ids = np.arange(2000, dtype=np.int64) * 7919
    trained = new_index(factory, 16)
    assert trained.metric_type == (faiss.METRIC_L2 if "fs" in factory else faiss.METRIC_INNER_PRODUCT)
    trained.train(vectors)
    shard = deserialize(serialize(trained))
    add_vectors(shard, ids, vectors)
    assert faiss.downcast_index(shard.index).k_factor == REFINE_K_FACTOR  # kept by the file
    faiss.ParameterSpace().set_index_parameter(shard, "nprobe", 16)
    queries = vectors[[0, 500, 1999]]
    scores, found = search_shard(shard, np.zeros(0, np.int64), queries, 10)
    assert found.tolist() == brute_force(vectors, ids, queries, 10).tolist()
    cosines = np.einsum("qd,qkd->qk", queries, vectors[np.searchsorted(ids, found)])
    assert np.abs(scores - cosines).max() < 1e-5

    erased = ids[[0, 1, 500, 1999]]
    assert remove_from_shard(shard, np.concatenate([erased, [13]])) == 4  # 13 was never there
    _, found = search_shard(shard, np.zeros(0, np.int64), queries, 10)
    assert found.tolist() == brute_force(vectors, ids, queries, 10, removed=erased).tolist()
    (tmp_path / "shard.faiss").write_bytes(serialize(shard))
    held_ids, held_vectors = shard_contents(tmp_path / "shard.faiss")
    keep = ~np.isin(ids, erased)
    assert held_ids.tolist() == ids[keep].tolist()
    assert np.array_equal(held_vectors, vectors[keep])
    assert remove_from_shard(shard, erased) == 0


def test_face_id_is_the_first_63_bits_of_the_stated_hash() -> None:
    image_id = image_id_of(b"some image bytes")
    assert image_id == hashlib.sha256(b"some image bytes").hexdigest()
    digest = hashlib.sha256(f"{image_id}|model-1|2".encode()).digest()
    assert face_id_of(image_id, "model-1", 2) == int.from_bytes(digest[:8], "big") & (2**63 - 1)
    assert len({face_id_of(image_id, "model-1", i) for i in range(5)}) == 5
    assert face_id_of(image_id, "model-1", 0) != face_id_of(image_id, "model-2", 0)


@pytest.mark.parametrize("target", [0.5, 0.1, 0.01, 0.001])
def test_threshold_at_fmr_is_the_lowest_threshold_meeting_the_target(target: float) -> None:
    impostor = np.round(np.random.default_rng(3).random(1000), 3)  # ties included
    threshold = threshold_at_fmr(impostor, target)
    assert (impostor >= threshold).mean() <= target
    # brute force: every lower candidate threshold (each distinct score) breaks the target
    lower = np.unique(impostor[impostor < threshold])
    assert all((impostor >= t).mean() > target for t in lower)


def test_tuning_bisects_to_the_cheapest_nprobe_with_margin() -> None:
    """The tuner's answer reaches the floor with two standard errors to spare, and it is the cheapest such
    value to within the bisection's step: a value a step below it was measured and fell short."""
    vectors = clustered(6000, dim=16, seed=5)
    ids = np.arange(6000, dtype=np.int64)
    shard = new_index("IVF64,PQ8x4fs,RFlat", 16)
    shard.train(vectors)
    add_vectors(shard, ids, vectors)
    queries = clustered(300, dim=16, seed=6)
    truth = brute_force(vectors, ids, queries, 10)
    manifest = manifest_of(exact=False, search_param="nprobe", search_candidates=[1, 2, 4, 8, 16, 32, 64])
    index = ShardedIndex(None, manifest, [shard], np.zeros(0, np.int64))
    value, recall, tried = tune(index, queries, truth, 10, 0.9)
    recalls = dict(tried)
    assert recall == pytest.approx(recalls[value], abs=1e-4) and recall >= 0.9
    shorter = [v for v in recalls if v < value]
    assert shorter and value - max(shorter) <= max(1, max(shorter) // 8)
    index.set_search_param(max(shorter))
    assert recall_at_k(index.search(queries, 10)[1], truth) == pytest.approx(recalls[max(shorter)], abs=1e-4)


@pytest.mark.parametrize("gallery", [1, 2, 9, 10, 11, 40])
def test_an_exact_index_left_out_of_its_own_results_has_full_recall(gallery: int) -> None:
    """Queries drawn from the gallery and left out of their own results: an exact index finds every
    other vector, however few there are (a 9-face gallery searched for 10 once read as 0.889)."""
    vectors = clustered(gallery, dim=16, seed=9)
    ids = np.arange(100, 100 + gallery, dtype=np.int64)
    index = ShardedIndex(None, manifest_of(), flat_shards(vectors, ids, 2), np.zeros(0, np.int64))
    truth = without_queries(brute_force(vectors, ids, vectors, 11), ids, 10)
    assert (truth != ids[:, None]).all() and ((truth >= 0).sum(axis=1) == min(gallery - 1, 10)).all()
    assert tune(index, vectors, truth, 10, 0.95, query_ids=ids) == (None, 1.0, [])


def test_a_fast_scan_index_refuses_vectors_that_are_not_unit() -> None:
    vectors = clustered(500, dim=16, seed=8)
    shard = new_index("IVF4,PQ8x4fs,RFlat", 16)
    shard.train(vectors)
    scaled = vectors.copy()
    scaled[7] *= 1.5
    with pytest.raises(NotUnitVectors, match="face_id 107 has an embedding of norm 1.5000"):
        add_vectors(shard, np.arange(500, dtype=np.int64) + 100, scaled)
    assert shard.ntotal == 0
    add_vectors(shard, np.arange(500, dtype=np.int64) + 100, vectors)
    assert shard.ntotal == 500

"""Genuine and impostor pairs from a labelled set (numpy only): all of them when few, else a seeded sample.

A face without a subject_id is taken as its own person (UTKFace has no identity labels). Impostor pairs
can be restricted to faces that share attribute values (`within`), the demographically matched
impostors NIST uses, so that a group's FMR is measured on impostors from that group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairSet:
    a: np.ndarray  # face positions
    b: np.ndarray
    genuine: np.ndarray  # bool
    sampled_impostors: bool
    sampled_genuine: bool

    @property
    def counts(self) -> dict[str, int]:
        return {"genuine_pairs": int(self.genuine.sum()), "impostor_pairs": int((~self.genuine).sum())}


def subject_codes(subjects: list[str | None]) -> np.ndarray:
    """Integer person codes; a missing subject_id gets a code of its own."""
    codes = np.empty(len(subjects), np.int64)
    seen: dict[tuple[str, object], int] = {}
    for position, subject in enumerate(subjects):
        key = ("s", subject) if subject is not None else ("face", position)
        codes[position] = seen.setdefault(key, len(seen))
    return codes


def _all_pairs(members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(len(members), k=1)
    return members[i], members[j]


def build_pairs(
    codes: np.ndarray,
    blocks: np.ndarray,
    genuine_max: int,
    impostor_max: int,
    seed: int,
) -> PairSet:
    """Genuine pairs (same person) and impostor pairs (different people in the same block).

    `blocks` holds one block code per face (all zeros when impostors are not restricted). Within a block
    every impostor pair is used while the block's pairs fit `impostor_max` shared out by block size, else
    a seeded sample of distinct random pairs of that size.
    """
    rng = np.random.default_rng(seed)
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, codes[order][1:] != codes[order][:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    gen_parts = [_all_pairs(order[start : start + size]) for start, size in zip(starts[sizes > 1], sizes[sizes > 1])]
    gen_a = np.concatenate([a for a, _ in gen_parts]) if gen_parts else np.zeros(0, np.int64)
    gen_b = np.concatenate([b for _, b in gen_parts]) if gen_parts else np.zeros(0, np.int64)
    sampled_genuine = len(gen_a) > genuine_max
    if sampled_genuine:
        keep = np.sort(rng.choice(len(gen_a), genuine_max, replace=False))
        gen_a, gen_b = gen_a[keep], gen_b[keep]
    imp_a_parts: list[np.ndarray] = []
    imp_b_parts: list[np.ndarray] = []
    sampled_impostors = False
    block_ids, block_sizes = np.unique(blocks, return_counts=True)
    total = float(np.sum(block_sizes * (block_sizes - 1) / 2))
    for block, size in zip(block_ids, block_sizes):
        members = np.flatnonzero(blocks == block)
        possible = size * (size - 1) // 2
        share = int(np.ceil(impostor_max * possible / max(total, 1)))
        if possible <= share:
            a, b = _all_pairs(members)
        else:
            sampled_impostors = True
            a, b = _sample_pairs(members, share, rng)
        keep = codes[a] != codes[b]
        imp_a_parts.append(a[keep])
        imp_b_parts.append(b[keep])
    imp_a = np.concatenate(imp_a_parts) if imp_a_parts else np.zeros(0, np.int64)
    imp_b = np.concatenate(imp_b_parts) if imp_b_parts else np.zeros(0, np.int64)
    genuine = np.r_[np.ones(len(gen_a), bool), np.zeros(len(imp_a), bool)]
    return PairSet(np.r_[gen_a, imp_a], np.r_[gen_b, imp_b], genuine, sampled_impostors, sampled_genuine)


def _sample_pairs(members: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` distinct unordered pairs of distinct members, seeded."""
    n = len(members)
    chosen: set[int] = set()
    while len(chosen) < count:
        i = rng.integers(0, n, 2 * (count - len(chosen)))
        j = rng.integers(0, n, len(i))
        low, high = np.minimum(i, j), np.maximum(i, j)
        for key in (low * n + high)[low != high].tolist():
            chosen.add(key)
            if len(chosen) == count:
                break
    keys = np.array(sorted(chosen), np.int64)
    return members[keys // n], members[keys % n]


def pair_scores(vectors: np.ndarray, a: np.ndarray, b: np.ndarray, block: int = 1_000_000) -> np.ndarray:
    """Cosine of each pair (the vectors are L2-normalised), in blocks to bound memory."""
    out = np.empty(len(a), np.float32)
    for start in range(0, len(a), block):
        stop = start + block
        out[start:stop] = np.einsum("ij,ij->i", vectors[a[start:stop]], vectors[b[start:stop]])
    return out

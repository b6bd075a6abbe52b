"""Which FAISS index for a gallery: a public decision kept apart from the build mechanics.

Scores are inner products of L2-normalised embeddings (cosine). Small galleries get exact search;
large ones an IVF index whose inverted lists hold 8-bit scalar codes. While the full vectors fit the
memory budget beside them, the codes' best `k * REFINE_K_FACTOR` candidates are rescored exactly from the
full vectors (`RFlat`): scanning codes reads a quarter of the bytes, and the rescoring gives back the
exact order. Then codes alone (scores within ~0.01 of exact on unit vectors), PQ codes when nothing else
fits. A FAISS factory string in the config overrides the choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Up to a million vectors exact search is the better index on a small box: measured here (2 vCPUs, 1M
# face-shaped 128-d vectors, 10k probes), FAISS flat search ran 523 queries/s with perfect recall, while
# IVF4096,Flat needed nprobe 512 for recall@10 0.98 and then ran 250 queries/s (bench/bench_index.py).
EXACT_LIMIT = 1_000_000
# Assigning a vector to its list costs nlist x dim with a flat coarse quantizer: past 4,096 lists that
# dominates both the build (10M vectors x 16,384 lists: ~7 min of 2 cores here) and short searches.
MAX_NLIST = 4096
TRAIN_POINTS_PER_LIST = 39  # FAISS warns below this many training points per centroid
# Measured here (2M face-shaped 128-d vectors, IVF4096, 2,000 mated probes): IVF-SQ8 rescored from full
# vectors reached the recall of IVF-Flat at every nprobe (0.956 at 384) and ran 2.0-2.5x faster; k_factor
# 4, 8 and 16 gave the same recall there, 8 leaves room for the closer ties of a larger gallery.
REFINE_K_FACTOR = 8


@dataclass(frozen=True)
class IndexChoice:
    factory: str
    exact: bool
    reason: str
    search_param: str | None  # "nprobe", "efSearch" or None (exact)
    candidates: tuple[int, ...]  # values of search_param to try, cheapest first
    train_points: int = 0  # training vectors the index needs at least (IVF: 39 per list)


def _nlist(vectors: int) -> int:
    """About 4 * sqrt(n) lists, a power of two, at least 16, at most `MAX_NLIST` and at most n / 39
    (FAISS wants ~39 training points per centroid)."""
    target = 4 * math.sqrt(vectors)
    nlist = min(MAX_NLIST, 2 ** max(4, round(math.log2(max(target, 1)))))
    while nlist > 16 and nlist * TRAIN_POINTS_PER_LIST > vectors:
        nlist //= 2
    return nlist


def choose_index(vectors: int, dim: int, memory_budget_bytes: int, factory: str | None = None) -> IndexChoice:
    if factory:
        exact = factory.strip().lower() in ("flat", "idmap,flat")
        param = None if exact else ("efSearch" if "HNSW" in factory else "nprobe")
        return IndexChoice(factory, exact, "forced by index.factory", param, _candidates(param, factory))
    if vectors <= EXACT_LIMIT:
        return IndexChoice("Flat", True, f"{vectors} vectors <= {EXACT_LIMIT}: exact search", None, ())
    nlist = _nlist(vectors)
    flat_bytes, sq8_bytes = vectors * dim * 4, vectors * dim
    budget = f"the {memory_budget_bytes / 2**30:.2f} GiB budget"
    if flat_bytes + sq8_bytes <= memory_budget_bytes:
        factory = f"IVF{nlist},SQ8,RFlat"
        reason = (
            f"{vectors} vectors: 8-bit codes scanned, the top k x {REFINE_K_FACTOR} rescored from full vectors "
            f"({(flat_bytes + sq8_bytes) / 2**30:.2f} GiB together fit {budget})"
        )
    elif sq8_bytes <= memory_budget_bytes:
        factory = f"IVF{nlist},SQ8"
        reason = (
            f"{flat_bytes / 2**30:.2f} GiB of full vectors exceed {budget}: 8-bit codes, {sq8_bytes / 2**30:.2f} GiB"
        )
    else:
        m = max(8, dim // 4)
        factory = f"IVF{nlist},PQ{m}x8"
        reason = f"even 8-bit codes ({sq8_bytes / 2**30:.2f} GiB) exceed {budget}: {m}-byte PQ codes"
    candidates = _candidates("nprobe", factory)
    return IndexChoice(factory, False, reason, "nprobe", candidates, nlist * TRAIN_POINTS_PER_LIST)


def _candidates(param: str | None, factory: str) -> tuple[int, ...]:
    if param == "nprobe":
        nlist = int("".join(ch for ch in factory.split(",")[0] if ch.isdigit()) or 1024)
        # Past 128 in steps of half a doubling: on face-shaped data recall@10 0.95 fell between 256 and
        # 512, and the cheapest value that reaches the floor is what queries then pay for.
        steps = (1, 2, 4, 8, 16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
        return tuple(v for v in steps if v <= nlist)
    if param == "efSearch":
        return (16, 32, 64, 128, 256, 512, 1024)
    return ()

"""Which FAISS index for a gallery: a public decision kept apart from the build mechanics.

Scores are inner products of L2-normalised embeddings (cosine). The recall floor decides first: at 1.0
(the default) search is exact at every size, so no candidate above a threshold is ever missed and a
search is reproducible from the faces table alone, whatever index build served it; an auditor can check
it. Below 1.0 an approximate index is allowed: small galleries still get exact search (as fast here),
larger ones an IVF index tuned to the floor. While the full vectors fit the memory budget, its inverted
lists hold 4-bit PQ codes scanned with FAISS's fast-scan kernels, and the codes' best
`k * REFINE_K_FACTOR` candidates are rescored exactly from the full vectors (`RFlat`): the scan reads
1/16 of the bytes in SIMD registers, the rescoring gives back the exact scores and order. Then 8-bit
scalar codes alone (scores within ~0.01 of exact on unit vectors), 8-bit PQ codes when nothing else
fits. A FAISS factory string in the config overrides the choice.

Fast-scan indexes are built with the L2 metric: on unit vectors |q - x|^2 = 2 - 2 q.x, so the order is
the cosine order and `jobs.shards.search` turns the distances back into cosines. FAISS's fast-scan IVF
with inner product and residual codes leaves each list's q.centroid term out, so candidates from
different lists are ranked against each other wrongly (measured: recall@10 stuck at 0.48 whatever nprobe).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

DEFAULT_RECALL_FLOOR = 1.0  # exact: docs/performance.md states what it costs at 1M and 10M
# With a floor below 1, galleries up to this size are still searched exactly: a flat scan costs n x dim
# per probe; at 300k (10k face-shaped probes, 2 vCPUs, bench/bench_peers.py) it ran 1,402 queries/s,
# 0.64x the IVF index at recall 0.95, with no training and no misses.
EXACT_LIMIT = 250_000
# Assigning a vector to its list costs nlist x dim with a flat coarse quantizer: past 4,096 lists that
# dominates both the build (10M vectors x 16,384 lists: ~7 min of 2 cores here) and short searches.
MAX_NLIST = 4096
TRAIN_POINTS_PER_LIST = 39  # FAISS warns below this many training points per centroid
# Measured here (2M face-shaped 128-d vectors, IVF1024, 2,000 mated probes, docs/performance.md):
# 4-bit fast-scan PQ codes (two dimensions a byte's half) rescored from k x 32 candidates reached the
# recall of 8-bit scalar codes rescored from k x 8 at every nprobe (0.949 vs 0.952 at 128) and ran 8.8x
# faster; k x 16 lost 0.015 of recall there, k x 32 cost 10% of speed over it.
REFINE_K_FACTOR = 32


def faiss_metric(factory: str) -> str:
    """ "l2" for a fast-scan PQ factory (see the module note), else "ip" (inner product)."""
    return "l2" if re.search(r"PQ\d+x4fs", factory) else "ip"


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


class NoIndexFits(ValueError):
    """Exact search was asked for (recall floor 1.0) but the full vectors exceed the memory budget."""


def choose_index(
    vectors: int,
    dim: int,
    memory_budget_bytes: int,
    factory: str | None = None,
    recall_floor: float = DEFAULT_RECALL_FLOOR,
) -> IndexChoice:
    """The index for `vectors` embeddings of `dim` floats within the budget, allowed to miss at most
    1 - `recall_floor` of the true top-k (measured after the build; the build fails below it)."""
    if factory:
        exact = factory.strip().lower() in ("flat", "idmap,flat")
        param = None if exact else ("efSearch" if "HNSW" in factory else "nprobe")
        return IndexChoice(factory, exact, "forced by index.factory", param, _candidates(param, factory))
    nlist = _nlist(vectors)
    flat_bytes, sq8_bytes, pq4_bytes = vectors * dim * 4, vectors * dim, vectors * dim // 4
    budget = f"the {memory_budget_bytes / 2**30:.2f} GiB budget"
    if recall_floor >= 1.0:
        if flat_bytes > memory_budget_bytes:
            raise NoIndexFits(
                f"exact search over {vectors} vectors needs {flat_bytes / 2**30:.2f} GiB, more than "
                f"index.memory_budget_gb ({memory_budget_bytes / 2**30:.2f} GiB): raise the budget, or set "
                "index.recall_floor below 1 (e.g. 0.99) to allow an approximate index"
            )
        return IndexChoice("Flat", True, "index.recall_floor 1.0: exact search, no candidate missed", None, ())
    if vectors <= EXACT_LIMIT:
        return IndexChoice("Flat", True, f"{vectors} vectors <= {EXACT_LIMIT}: exact search is as fast", None, ())
    if flat_bytes + pq4_bytes <= memory_budget_bytes and dim % 2 == 0:
        factory = f"IVF{nlist},PQ{dim // 2}x4fs,RFlat"
        reason = (
            f"{vectors} vectors: 4-bit PQ codes fast-scanned, the top k x {REFINE_K_FACTOR} rescored from full "
            f"vectors ({(flat_bytes + pq4_bytes) / 2**30:.2f} GiB together fit {budget})"
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

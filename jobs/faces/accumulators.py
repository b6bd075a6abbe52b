"""Accumulators the embedding tasks report through. Their parameters are unpickled on the executors,
so this module imports nothing a bare executor lacks (PySpark, which the cluster provides, and no more)."""

from __future__ import annotations

from pyspark.accumulators import AccumulatorParam


class MaxParam(AccumulatorParam[float]):
    """Accumulator that keeps the largest value seen (peak RSS across Python workers)."""

    def zero(self, value: float) -> float:
        return 0.0

    def addInPlace(self, first: float, second: float) -> float:  # Spark's name
        return max(first, second)

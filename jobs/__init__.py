"""Lineup: auditable face search on Spark, Delta Lake and FAISS."""

__version__ = "0.1.0"

"""FAISS shard files and the one search implementation: the manifest and its generations, building,
choosing an index type, searching (shared by the index, query, forget and audit jobs)."""

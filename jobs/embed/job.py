"""The embed job: images into the faces table, one Delta commit per chunk, one runs row.

The work itself lives in the shared faces room (`jobs.faces`), because a query's probe archive is embedded by
the same code: jobs import shared rooms, never each other.
"""

from jobs.faces.ingest import run_embed

__all__ = ["run_embed"]

"""Configuration of the embed job: `conf/embed.yaml` validates against the faces room's `EmbedConfig`, which a
query's probe archive also uses (`query.probes.archive` takes `embed.input`'s settings)."""

from jobs.faces.config import EmbedConfig

__all__ = ["EmbedConfig"]

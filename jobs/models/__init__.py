"""Face model packs: formats, converters, the pure-Python face pipeline (no Spark)."""

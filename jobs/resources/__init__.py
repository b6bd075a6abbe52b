"""Data files shipped inside the package (checksum locks)."""

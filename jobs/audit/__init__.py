"""Lineup audit job: measured error rates for a pack, a faces table or a matches table."""

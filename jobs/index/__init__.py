"""Lineup index job."""

"""Lineup query job."""

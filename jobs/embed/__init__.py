"""Lineup embed job."""

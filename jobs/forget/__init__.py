"""Lineup forget job: erase a person's biometric data from every table and index, provably."""

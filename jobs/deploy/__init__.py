"""Deploying Lineup to a cluster whose executors lack it: environment and pack archives, submit flags."""

"""The compare job: 1:1 scores for pairs of images or of faces (CompareFaces on your own cluster)."""

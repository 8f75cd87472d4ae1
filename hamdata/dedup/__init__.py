"""Duplicates by content: the fingerprint of an image, candidate pairs without an all-pairs loop, and what a
build keeps or drops."""

"""Synthetic inputs for the demo, tests and benchmarks: HAM10000 (Kaggle layout), ISIC 2019 and ISIC-archive
layouts with planted duplicates."""

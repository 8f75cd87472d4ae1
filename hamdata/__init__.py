"""hamdata: HAM10000 as preprocessed, lesion-aware, balanced WebDataset shards."""

__version__ = "0.1.0"

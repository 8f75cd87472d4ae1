"""PyTorch trainers that stream a hamdata build's WebDataset shards.

Recipes (``phase4``, ``phase5``, ``phase6``) share one loop; each is a documented ``TrainConfig`` (config.py)
registered in recipes/, and the pieces it switches on are shared modules. The public Python API (docs/api.md);
importing this package (as the CLI does at start) does not import torch::

    import trainers
    summary = trainers.run_recipe("phase5", {"shards": "shards", "epochs": 2, "weights": "none"})
    metrics = trainers.evaluate_checkpoint("runs/p5/best.pt", split="test", tta=True)
    for batch in trainers.loader("shards", "train", image_size=224, batch_size=32):   # your own loop
        ...
"""

from __future__ import annotations

from .config import TrainConfig
from .recipes import recipe_config, run_recipe

__all__ = ["TrainConfig", "evaluate_checkpoint", "loader", "recipe_config", "run_recipe"]


def evaluate_checkpoint(checkpoint, **options) -> dict:
    """Evaluate a checkpoint on a split; see trainers.predict.evaluate_checkpoint."""
    from .predict import evaluate_checkpoint as _evaluate

    return _evaluate(checkpoint, **options)


def loader(build, split: str = "train", **options):
    """A build's split as batches for a loop of your own, with the stream guarantees of `train` (seeded shuffles
    that change per epoch, disjoint DDP ranks and workers, equal batches per rank); see trainers.batches.Loader."""
    from .batches import Loader

    return Loader(build, split, **options)

"""PyTorch trainers that stream a hamdata build's WebDataset shards.

Recipes (``phase4``, ``phase5``) share one loop; each is a documented
``TrainConfig`` (config.py) registered in recipes.py, and the pieces it switches
on are shared modules. Importing this package (as the CLI does at start) does
not import torch::

    from trainers import run_recipe, evaluate_checkpoint
    summary = run_recipe("phase5", {"shards": "shards", "epochs": 2, "weights": "none"})
"""

from __future__ import annotations

from .config import TrainConfig
from .recipes import recipe_config, run_recipe

__all__ = ["TrainConfig", "evaluate_checkpoint", "recipe_config", "run_recipe"]


def evaluate_checkpoint(checkpoint, **options) -> dict:
    """Evaluate a checkpoint on a split; see trainers.predict.evaluate_checkpoint."""
    from .predict import evaluate_checkpoint as _evaluate

    return _evaluate(checkpoint, **options)

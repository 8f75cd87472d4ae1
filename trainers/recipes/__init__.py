"""The recipe registry: a recipe is a module trainers/recipes/<name>.py named in config.RECIPES.

A recipe module holds only its documentation (the docstring, shown by
``train <name> --help``) and ``CONFIG``, a TrainConfig of its defaults; the
pieces it switches on (schedules, EMA, MixUp/CutMix, losses, backbones) are
shared modules chosen by the config's fields. Add a recipe: write its module,
add its name to RECIPES. Nothing but this module imports a recipe module.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from hamdata.errors import HamdataError
from hamdata.locks import holder_of, refusal

from ..config import RECIPES, TrainConfig


def recipe_module(name: str) -> ModuleType:
    if name not in RECIPES:
        raise HamdataError(f"unknown recipe {name!r}: expected one of {', '.join(RECIPES)}")
    return importlib.import_module(f"{__package__}.{name}")


def recipe_doc(name: str) -> str:
    """The recipe's documentation: its module docstring."""
    return recipe_module(name).__doc__


def recipe_config(name: str, **overrides) -> TrainConfig:
    """The recipe's default config with ``overrides`` (None values are ignored)."""
    return recipe_module(name).CONFIG.replace(**{k: v for k, v in overrides.items() if v is not None})


def run_recipe(name: str, config: TrainConfig | dict | None = None, *, resume: str | None = None, echo=print,
               allow_other_build: bool = False) -> dict:
    """Train recipe ``name``; returns a summary dict (out, history, test metrics, ...).

    ``config``: a TrainConfig, or a dict of overrides of the recipe's defaults. With
    ``resume`` (a run folder or its last.pt) the run's own config is used and
    ``config`` may only hold the options that can change (epochs, device, workers,
    stop_after, shards). ``allow_other_build``: resume on a build whose shards differ from the run's.
    """
    if resume is not None:
        if isinstance(config, TrainConfig):
            raise HamdataError("run_recipe(resume=...): pass a dict of the options to change, not a TrainConfig")
        check_paths(resume=resume, shards=(config or {}).get("shards"))
        folder = Path(resume)
        _refuse_a_written_out(folder if folder.is_dir() else folder.parent)
        from ..run import run  # torch: only once the arguments are known to be good

        return run(resume=resume, overrides={**(config or {}), "recipe": name}, echo=echo, allow_other_build=allow_other_build)
    if not isinstance(config, TrainConfig):
        config = recipe_config(name, **(config or {}))
    elif config.recipe != name:
        raise HamdataError(f"run_recipe({name!r}): the config is for recipe {config.recipe!r}")
    check_paths(shards=config.shards, weights=config.weights)
    if config.out:
        _refuse_a_written_out(Path(config.out))
    from ..run import run

    return run(config, echo=echo)


def _refuse_a_written_out(out: Path) -> None:
    """A run folder that another command writes is refused before torch is imported (~5 s), with the line the run's
    own lock would give (trainers.run takes that lock for the whole run: this is only a look)."""
    holder = holder_of(out)
    if holder is not None and holder != str(os.getpid()):
        raise HamdataError(f"--out {refusal(out, holder)}")


def check_paths(shards=None, resume=None, weights=None, checkpoints=(), images=()) -> None:
    """The paths a run reads, checked before torch is imported (a mistyped folder answers at once, not after 8 s)."""
    from pathlib import Path

    if shards is not None and not Path(shards).exists():
        raise HamdataError(f"{shards}: no such folder (expected a build made by `hamdata build-shards`)")
    if resume is not None and not Path(resume).exists():
        raise HamdataError(f"{resume}: no such checkpoint")
    if weights not in (None, "imagenet", "none") and not Path(weights).exists():
        raise HamdataError(f"--weights {weights}: no such file (expected imagenet, none or a .pt file)")
    for path in checkpoints:
        if not Path(path).exists():
            raise HamdataError(f"{path}: no such checkpoint")
    for path in images:
        if not Path(path).is_file():
            raise HamdataError(f"{path}: no such image file")

"""Any saved checkpoint: evaluate it on a split of a build, or predict classes of raw images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from hamdata.classes import CLASSES
from hamdata.errors import HamdataError

from .checkpoints import load_checkpoint, model_from_checkpoint
from .config import EVAL_SPLITS
from .data import open_build, split_shards
from .loop import Dist, Env, make_env, predict_split, resolve_device, tta_views
from .metrics import write_evaluation


def _checkpoint_env(state: dict, device: str, path: Path) -> tuple[Env, nn.Module]:
    dev = resolve_device(device, Dist())
    env = make_env(Dist(), dev, state["data"])
    return env, model_from_checkpoint(state, dev, path)


def evaluate_checkpoint(checkpoint, shards=None, split: str = "test", tta: bool = False, out=None, device: str = "auto",
                        batch_size: int = 64, workers: int = 0, echo=print) -> dict:
    """Metrics, report, confusion matrix and ISIC CSV of a checkpoint on a split of a build."""
    path, state = load_checkpoint(checkpoint)
    if split not in EVAL_SPLITS:
        raise HamdataError(f"--split: expected {' or '.join(EVAL_SPLITS)}, got {split!r}")
    build = Path(shards or state["data"]["build"])
    card = open_build(build)
    if card["config"]["preprocess"] != state["data"]["preprocess"]:
        echo(f"warning: {build} was preprocessed differently from the checkpoint's training build")
    env, model = _checkpoint_env(state, device, path)
    ids, labels, probs = predict_split(env, model, *split_shards(build, card, split), image_size=state["data"]["image_size"],
                                       batch_size=batch_size, workers=workers, tta=tta, what=f"{split} split")
    out = Path(out) if out else path.parent / f"eval-{path.stem}-{split}{'-tta' if tta else ''}"
    info = {"split": split, "checkpoint": str(path), "build": str(build), "epoch": state.get("epoch"), "tta": tta}
    metrics = write_evaluation(out, ids, labels, probs, info)
    echo(f"{split} ({path.name}{', TTA' if tta else ''}): macro-F1 {metrics['macro_f1']:.3f}, balanced acc "
         f"{metrics['balanced_accuracy']:.3f}, accuracy {metrics['accuracy']:.3f} on {metrics['samples']} images -> {out}")
    return {"out": str(out), "metrics": metrics}


def prepare_image(path: Path, state: dict) -> torch.Tensor:
    """A raw image through the build's own preprocessing and encoding, then the eval preset: uint8 (3, S, S)."""
    from hamdata.preprocess import ImageError, PreprocessConfig, decode_image, encode_image, preprocess

    from .data import decode, eval_preset

    data = state["data"]
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise HamdataError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        rgb, _ = decode_image(raw)
    except ImageError as exc:
        raise HamdataError(f"{path}: {exc.cause}") from None
    rgb = preprocess(rgb, PreprocessConfig.from_dict(data["preprocess"]))
    encoded = encode_image(rgb, data["format"], data["quality"])  # what a shard would hold
    return eval_preset(data["image_size"])(decode(encoded))


def predict_images(checkpoint, images, tta: bool = False, device: str = "auto") -> list[dict]:
    """Class probabilities of raw images: [{"image", "dx", "probabilities": {dx: p}}]."""
    path, state = load_checkpoint(checkpoint)
    env, model = _checkpoint_env(state, device, path)
    results = []
    for path in images:
        x = env.batch(prepare_image(Path(path), state).unsqueeze(0))
        with torch.no_grad(), env.autocast():
            views = tta_views(x) if tta else [x]
            p = torch.stack([torch.softmax(model(v).float(), 1) for v in views]).mean(0)[0].cpu().tolist()
        results.append({"image": str(path), "dx": CLASSES[int(np.argmax(p))], "probabilities": dict(zip(CLASSES, p))})
    return results

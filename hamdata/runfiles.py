"""The files of a training run folder, named once: the trainers write them, the run report reads them.

They live here, not in trainers/, because hamdata (hamdata.pages.run) reads run
folders and never imports trainers. An evaluation folder (``evaluate``) holds
only the four evaluation files, METRICS to PREDICTIONS.
"""

from __future__ import annotations

CONFIG = "config.json"  # the resolved config, the data it trained on, device and versions
HISTORY = "metrics.jsonl"  # one JSON object per finished epoch
CURVES = "curves.png"  # the training curves drawn from HISTORY
LAST = "last.pt"  # everything needed to resume
BEST = "best.pt"  # weights of the best validation macro-F1
BEST_EMA = "best_ema.pt"  # likewise for the EMA weights

METRICS = "metrics.json"  # the evaluation of a checkpoint on a split
REPORT = "classification_report.txt"
CONFUSION = "confusion_matrix.png"
PREDICTIONS = "predictions_isic2018.csv"  # the ISIC 2018 Task 3 submission format
GRADCAM = "gradcam"  # folder of gradcam_name() PNGs
RELIABILITY = "reliability.png"  # reliability diagram of a calibrated evaluation (evaluate/ensemble --calibrate)
ENSEMBLE = "ensemble.json"  # an ensemble's members, their scores, the selection and the temperature

RUN_MARKERS = (HISTORY, METRICS)  # either makes a folder a run


def gradcam_name(true_dx: str, kind: str, image_id: str) -> str:
    """``<true class>_<correct|wrong>_<image id>.png``; the run report's captions parse it back."""
    return f"{true_dx}_{kind}_{image_id}.png"

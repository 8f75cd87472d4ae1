"""Grad-CAM overlays (Selvaraju et al., 2017): where the network looked for its prediction."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hamdata.inputs.classes import CLASSES
from hamdata.plots import new_figure, save_png
from hamdata.runfiles import gradcam_name


def pick_examples(labels: np.ndarray, predicted: np.ndarray, classes=CLASSES) -> list[tuple[int, str]]:
    """Index of the first correct and the first wrong sample of each true class (of ``classes``), where they exist."""
    chosen = []
    for c in range(len(classes)):
        for kind, hit in (("correct", True), ("wrong", False)):
            idx = np.flatnonzero((labels == c) & ((predicted == c) == hit))
            if len(idx):
                chosen.append((int(idx[0]), kind))
    return chosen


def grad_cam(model: nn.Module, layer: nn.Module, image: torch.Tensor, target: int) -> np.ndarray:
    """Heat map in [0, 1] of shape (H, W) for class ``target`` of one normalised image (3, H, W)."""
    saved = {}

    def keep(_module, _inputs, output):
        saved["act"] = output
        output.register_hook(lambda grad: saved.__setitem__("grad", grad))

    handle = layer.register_forward_hook(keep)
    try:
        model.eval()
        with torch.enable_grad():
            model.zero_grad(set_to_none=True)
            model(image.unsqueeze(0))[0, target].backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    act, grad = saved["act"].detach()[0], saved["grad"].detach()[0]
    cam = F.relu((grad.mean((1, 2), keepdim=True) * act).sum(0))
    cam = F.interpolate(cam[None, None], size=image.shape[1:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    return (cam / cam.max() if cam.max() > 0 else cam).cpu().numpy()


def save_overlay(path: Path, image_uint8: np.ndarray, cam: np.ndarray, title: str) -> None:
    """Image, heat map and their blend side by side, as a PNG: one strip in one axes (three axes took three times
    as long to draw, ~14 of these end every Phase 4 run)."""
    heat = matplotlib.colormaps["jet"](cam)[..., :3]
    image = image_uint8 / 255.0
    blend = (0.55 * image + 0.45 * heat).clip(0, 1)
    height, width = cam.shape
    gap = max(1, width // 25)  # white between the panels, as the three axes had
    strip = np.ones((height, 3 * width + 2 * gap, 3))
    fig = new_figure(9, 3.4)
    ax = fig.add_axes((0.01, 0.02, 0.98, 0.8))  # no ticks: fixed margins suffice
    for k, (data, name) in enumerate(zip((image, heat, blend), ("image", "Grad-CAM", "overlay"))):
        left = k * (width + gap)
        strip[:, left:left + width] = data
        ax.text(left + width / 2, -0.5 - height / 40, name, ha="center", va="bottom", fontsize=9)
    ax.imshow(strip)
    ax.axis("off")
    fig.suptitle(title, fontsize=9)
    save_png(fig, path, dpi=100, tight=False)


def write_gradcams(env, model, config, shards, ids, labels, probs, out: Path, classes=CLASSES) -> list[Path]:
    """Overlays for one correct and one wrong test sample per class (by true class), where they exist;
    ``classes``: the build's class list (the model's outputs)."""
    from .data import StreamSpec, make_loader
    from .models import cam_layer

    predicted = np.asarray(probs).argmax(1)
    wanted = {ids[i]: (i, kind) for i, kind in pick_examples(np.asarray(labels), predicted, classes)}
    out.mkdir(parents=True, exist_ok=True)
    spec = StreamSpec.evaluation(shards, image_size=config.image_size, batch_size=1)
    layer, written = cam_layer(model, config.arch), []
    for batch in make_loader(spec, 0):
        image_id = batch["image_ids"][0]
        if image_id not in wanted:
            continue
        i, kind = wanted[image_id]
        truth, guess = classes[labels[i]], classes[predicted[i]]
        cam = grad_cam(model, layer, env.batch(batch["images"])[0].float(), int(predicted[i]))
        path = out / gradcam_name(truth, kind, image_id)
        title = f"{image_id}: true {truth}, predicted {guess} ({probs[i][predicted[i]]:.2f}); Grad-CAM of {guess}"
        save_overlay(path, batch["images"][0].permute(1, 2, 0).numpy(), cam, title)
        written.append(path)
    return sorted(written)

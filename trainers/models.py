"""Backbones from torchvision with a new head (one output per class of the build), and the three ways to get their weights.

``--weights imagenet`` goes through torchvision's weights API (downloaded once
into $TORCH_HOME, as users expect); ``none`` starts from random weights; a
file is a state dict (a torchvision model's, or this project's checkpoint).
Add a torchvision architecture: its row in ARCH_LAYERS and its name in config.ARCHS.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torchvision
from torch import nn

from hamdata.inputs.classes import CLASSES
from hamdata.errors import HamdataError

from .config import ARCHS
from .fusion import FusionNet, MetadataEncoding


class ArchLayers(NamedTuple):
    head: str  # the module holding the classifier's last Linear layer
    cam: str  # the last convolutional stage, Grad-CAM's target


# One row per torchvision architecture in config.ARCHS (the name is torchvision's model name).
ARCH_LAYERS = {
    "mobilenet_v3_large": ArchLayers(head="classifier.3", cam="features"),
    "efficientnet_b0": ArchLayers(head="classifier.1", cam="features"),
    "resnet18": ArchLayers(head="fc", cam="layer4"),
    "convnext_tiny": ArchLayers(head="classifier.2", cam="features"),
    "efficientnet_b3": ArchLayers(head="classifier.1", cam="features"),
    "efficientnet_v2_s": ArchLayers(head="classifier.1", cam="features"),
    "resnet50": ArchLayers(head="fc", cam="layer4"),
}
BN_MOMENTUM = 0.1


def _set_module(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def new_head(model: nn.Module, arch: str, num_classes: int) -> nn.Module:
    """Replace the ImageNet classifier by a freshly initialised ``num_classes`` one."""
    head_name = ARCH_LAYERS[arch].head
    old = model.get_submodule(head_name)
    head = nn.Linear(old.in_features, num_classes)
    nn.init.normal_(head.weight, 0, 0.01)
    nn.init.zeros_(head.bias)
    _set_module(model, head_name, head)
    return model


def _imagenet(arch: str) -> nn.Module:
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    try:
        return torchvision.models.get_model(arch, weights=weights)
    except OSError as exc:  # URLError and socket errors are OSErrors
        reason = getattr(exc, "reason", exc)
        raise HamdataError(
            f"--weights imagenet: could not download {weights} ({reason}); without network use "
            f"--weights none, or --weights FILE with a saved state dict"
        ) from None


def _load_file(model: nn.Module, arch: str, path: Path) -> None:
    """Load a state dict or a checkpoint's model into ``model``; the head only where shapes match."""
    if not path.is_file():
        raise HamdataError(f"--weights {path}: no such file (expected imagenet, none or a .pt file)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike: the file is not usable
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]  # an empty file's error has no message
        raise HamdataError(f"--weights {path}: not a readable PyTorch state dict ({reason})") from None
    if isinstance(blob, dict) and "model" in blob and "classes" in blob:
        if blob.get("arch") != arch:
            raise HamdataError(f"--weights {path}: a {blob.get('arch')} checkpoint, but this run uses --arch {arch}")
        blob = blob["model"]
    if isinstance(blob, dict) and any(k.startswith("backbone.") for k in blob):  # a fusion model: its image part
        blob = {k[len("backbone."):]: v for k, v in blob.items() if k.startswith("backbone.")}
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise HamdataError(f"--weights {path}: expected a state dict (parameter name -> tensor)")
    own = model.state_dict()
    head = ARCH_LAYERS[arch].head + "."
    usable = {k: v for k, v in blob.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable and not k.startswith(head)]
    if missing:
        raise HamdataError(f"--weights {path}: does not fit {arch} ({len(missing)} of {len(own)} tensors "
                           f"missing or of another shape, first {missing[0]})")
    model.load_state_dict(usable, strict=False)


def set_bn_momentum(model: nn.Module, momentum: float) -> nn.Module:
    """torchvision's MobileNetV3 uses 0.01, tuned for 600-epoch ImageNet runs; its running
    statistics then trail the weights for hundreds of steps, so a short fine-tune evaluates
    (in eval mode) far worse than it trains. 0.1 is PyTorch's and timm's default, and
    what EfficientNet-B0 and ResNet-18 already use."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
    return model


def build_model(arch: str, weights: str = "none", num_classes: int = len(CLASSES), metadata: dict | None = None) -> nn.Module:
    """A torchvision ``arch`` with a ``num_classes`` head; ``weights``: imagenet | none | FILE.

    num_classes: the length of the build's class list (a run and a checkpoint pass it; the default is HAM10000's 7).
    A FILE whose head has another number of classes gives the backbone only; the head starts fresh.

    metadata: a fitted MetadataEncoding as a dict: the backbone's classifier gives way to a FusionNet
    (pooled image features + the metadata MLP -> one linear classifier).
    """
    if arch not in ARCHS:
        raise HamdataError(f"--arch: expected one of {', '.join(ARCHS)}, got {arch!r}")
    if weights == "imagenet":
        model = new_head(_imagenet(arch), arch, num_classes)
    else:
        model = new_head(torchvision.models.get_model(arch, weights=None), arch, num_classes)
        if weights != "none":
            _load_file(model, arch, Path(weights))
    if metadata is not None:
        head = ARCH_LAYERS[arch].head
        features = model.get_submodule(head).in_features
        _set_module(model, head, nn.Identity())
        model = FusionNet(model, features, MetadataEncoding.from_dict(metadata).missing(), num_classes)
    return set_bn_momentum(model, BN_MOMENTUM)


def cam_layer(model: nn.Module, arch: str) -> nn.Module:
    """The last convolutional stage, whose activations Grad-CAM weighs."""
    backbone = model.backbone if isinstance(model, FusionNet) else model
    return backbone.get_submodule(ARCH_LAYERS[arch].cam)

"""Offline augmentation policies (albumentations) and their exact, seeded replay.

An augmented copy is recorded as ``recipe = {"policy", "version", "seed"}``;
``replay(parent, recipe)`` recomputes its pixels before encoding, bit for bit,
on any machine with the same library versions.

Why not ``A.Compose(..., seed=s)``: albumentations 2 gives every transform of
the pipeline its own generator seeded with the same ``s``, so transforms with
the same probability fire together (HorizontalFlip and VerticalFlip always
both or neither) and draw the same first numbers. One shared generator pair,
set with ``set_random_state``, gives independent draws.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.abc
import os
import random
import sys

import cv2
import numpy as np

from hamdata.errors import HamdataError


class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("not needed by hamdata.image.augment")
        return None


def _albumentations():
    """albumentations, without its PyTorch helpers unless torch is loaded already.

    Its __init__ imports ``albumentations.pytorch`` (ToTensorV2) whenever torch is importable, and skips it on
    ImportError; this module never uses it, and torch would cost every balance worker 450 MiB and 4 s. The
    guard lasts for this one import; a later ``import torch`` works as always.
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # its import would otherwise query PyPI
    if "torch" in sys.modules or "albumentations" in sys.modules:
        import albumentations
        return albumentations
    guard = _NoTorch()
    sys.meta_path.insert(0, guard)
    try:
        import albumentations
    finally:
        sys.meta_path.remove(guard)
    return albumentations


A = _albumentations()

POLICY_VERSION = 1
POLICIES = ("light", "strong")
DESCRIPTIONS = {
    "light": "dihedral: horizontal flip (p 0.5), vertical flip (p 0.5), 90-degree rotation by 0/90/180/270 "
             "(square images only; other shapes get the flips alone, which keep the shape)",
    "strong": "light, then free rotation in [-180, 180] with reflected borders (p 0.75), affine scale 0.9-1.1 and "
              "translation up to 5% with reflected borders (p 0.75), random resized crop of 80-100% of the area "
              "back to the input size (p 1), colour jitter brightness/contrast/saturation 0.2, hue 0.02 (p 0.8)",
}


def _light(height: int, width: int) -> list:
    flips = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    return flips + [A.RandomRotate90(p=1.0)] if height == width else flips


def _strong(height: int, width: int) -> list:
    aspect = width / height
    return _light(height, width) + [
        A.Rotate(limit=(-180, 180), border_mode=cv2.BORDER_REFLECT_101, p=0.75),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), border_mode=cv2.BORDER_REFLECT_101, p=0.75),
        A.RandomResizedCrop(size=(height, width), scale=(0.8, 1.0), ratio=(aspect * 0.9, aspect / 0.9), p=1.0),
        # hue stays within a few degrees: colour is diagnostic in dermoscopy
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8),
    ]


def build_policy(name: str, size: tuple[int, int]) -> A.Compose:
    """The named policy for images of ``size`` = (width, height); output has the same size."""
    if name not in POLICIES:
        raise HamdataError(f"augmentation policy: expected one of {', '.join(POLICIES)}, got {name!r}")
    width, height = int(size[0]), int(size[1])
    transforms = _light(height, width) if name == "light" else _strong(height, width)
    return A.Compose(transforms)


def describe_policy(name: str, size: tuple[int, int]) -> dict:
    """What dataset.json records of a policy: version, a description and every transform's parameters."""
    serialized = A.to_dict(build_policy(name, size))["transform"]["transforms"]
    return {"version": POLICY_VERSION, "description": DESCRIPTIONS[name], "size": [int(size[0]), int(size[1])],
            "transforms": serialized}


def augment_seed(seed: int, key: str) -> int:
    """A 32-bit seed for the copy ``key`` of a run seeded with ``seed`` (stable across runs and machines)."""
    digest = hashlib.sha256(f"hamdata-augment:{int(seed)}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big")


def make_recipe(policy: str, seed: int) -> dict:
    """The record stored with an augmented copy; ``replay`` turns it back into pixels."""
    if policy not in POLICIES:
        raise HamdataError(f"augmentation policy: expected one of {', '.join(POLICIES)}, got {policy!r}")
    return {"policy": policy, "version": POLICY_VERSION, "seed": int(seed)}


def _check_recipe(recipe) -> None:
    if not isinstance(recipe, dict) or set(recipe) != {"policy", "version", "seed"}:
        raise HamdataError(f"augmentation recipe: expected keys policy, version, seed, got {recipe!r}")
    if recipe["policy"] not in POLICIES:
        raise HamdataError(f"augmentation recipe: unknown policy {recipe['policy']!r}, expected one of {', '.join(POLICIES)}")
    if recipe["version"] != POLICY_VERSION:
        raise HamdataError(f"augmentation recipe: policy version {recipe['version']!r} is not this hamdata's {POLICY_VERSION}; "
                           "replay it with the hamdata version that wrote it")
    seed = recipe["seed"]
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise HamdataError(f"augmentation recipe: seed must be a non-negative integer, got {seed!r}")


@functools.lru_cache(maxsize=16)
def _cached_policy(name: str, width: int, height: int) -> A.Compose:
    # Building a Compose costs more than applying it; its only state is the
    # random generators, which replay replaces before every call.
    return build_policy(name, (width, height))


def replay(parent_rgb_uint8: np.ndarray, recipe: dict) -> np.ndarray:
    """The augmented copy's pixels (RGB uint8, same shape as the parent) before encoding."""
    _check_recipe(recipe)
    rgb = parent_rgb_uint8
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise HamdataError(f"replay: expected an RGB uint8 array (h, w, 3), got {getattr(rgb, 'dtype', type(rgb))} "
                           f"{getattr(rgb, 'shape', '')}")
    height, width = rgb.shape[:2]
    policy = _cached_policy(recipe["policy"], width, height)
    seed = int(recipe["seed"])
    policy.set_random_state(np.random.default_rng(seed), random.Random(seed))
    out = policy(image=np.ascontiguousarray(rgb).copy())["image"]
    return np.ascontiguousarray(out, dtype=np.uint8)

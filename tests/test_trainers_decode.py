"""--decode gpu: raw-byte batches from the loader, the batched train preset (run here on CPU tensors), fallback."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torchvision.transforms.v2 import functional as F

from hamdata.errors import HamdataError
from trainers import TrainConfig, run_recipe
from trainers.data import StreamSpec, decode_sample, make_loader, open_build, read_tars, split_shards
from trainers.decode import (BatchParams, colour_affine, crop_boxes, decode_batch, draw_params, pack, raw_batch_images,
                             unpack, augment_batch)


def train_spec(build: Path, decode: str, **changes) -> StreamSpec:
    shards, _ = split_shards(open_build(build), "train")
    fields = {"shards": shards, "preset": "train", "image_size": 24, "batch_size": 8, "seed": 3, "epoch": 1,
              "batches": 4, "decode": decode, **changes}
    return StreamSpec(**fields)


def jpeg(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=95)
    return out.getvalue()


@pytest.mark.parametrize("workers", [0, 2])
def test_gpu_mode_loader_yields_the_samples_bytes_and_labels(build, workers):
    stored = {s["__key__"]: s for s in read_tars(list(train_spec(build, "gpu").shards))}
    batches = list(make_loader(train_spec(build, "gpu"), workers))
    assert len(batches) == 4
    for batch in batches:
        assert "images" not in batch and batch["data"].dtype == torch.uint8 and batch["data"].ndim == 1
        blobs = unpack(batch["data"], batch["lengths"])
        assert len(blobs) == len(batch["keys"]) == len(batch["labels"]) == 8 and batch["size"] == 24
        for key, blob, label in zip(batch["keys"], blobs, batch["labels"].tolist()):
            assert blob.numpy().tobytes() == stored[key]["jpg"]
            assert label == int(stored[key]["cls"])
    assert len({b["seed"] for b in batches}) == 4  # each batch its own augmentation seed
    cpu = list(make_loader(train_spec(build, "cpu"), workers))
    assert [b["keys"] for b in batches] == [b["keys"] for b in cpu]  # the decode mode never changes what is read


def test_gpu_preset_on_cpu_tensors_gives_seeded_training_batches(build):
    batch = next(iter(make_loader(train_spec(build, "gpu"), 0)))
    x = raw_batch_images(batch, "cpu")
    assert x.shape == (8, 3, 24, 24) and x.dtype == torch.uint8 and x.device.type == "cpu"
    assert torch.equal(x, raw_batch_images(batch, "cpu"))
    assert not torch.equal(x, raw_batch_images({**batch, "seed": batch["seed"] + 1}, "cpu"))
    assert x.float().std() > 5  # pictures, not a constant


def test_cpu_and_gpu_mode_give_the_same_augmentation_for_a_seed(build):
    on_workers = next(iter(make_loader(train_spec(build, "cpu"), 0)))["images"]
    on_device = raw_batch_images(next(iter(make_loader(train_spec(build, "gpu"), 0))), "cpu")
    assert on_workers.shape == on_device.shape and on_workers.is_contiguous(memory_format=torch.channels_last)
    assert (on_workers.float() - on_device.float()).abs().mean() < 3  # OpenCV against torch resampling


def test_a_damaged_image_names_its_shard_and_sample():
    good = jpeg(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(HamdataError, match=r"a\.tar: sample k1: truncated JPEG .*hamdata verify"):
        decode_sample({"__url__": "a.tar", "__key__": "k1", "jpg": good[:-10]})
    with pytest.raises(HamdataError, match="sample k2: not a decodable"):
        decode_sample({"__url__": "a.tar", "__key__": "k2", "jpg": b"junk" * 10})
    assert decode_sample({"__key__": "k3", "jpg": good}).shape == (16, 16, 3)


def test_decode_batch_matches_pillow_and_takes_png_too():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG")
    blobs = [jpeg(rgb), png.getvalue()]
    data, lengths = pack(blobs)
    out = decode_batch(unpack(data, lengths), "cpu")
    with Image.open(io.BytesIO(blobs[0])) as image:
        assert torch.equal(out[0], torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1))
    assert torch.equal(out[1], torch.from_numpy(rgb).permute(2, 0, 1))


def stored_jpegs(build: Path, n: int) -> list[bytes]:
    """The first ``n`` stored images of the build's train split (OpenCV-encoded JPEGs, 4:2:0, quality 95)."""
    shards, _ = split_shards(open_build(build), "train")
    return [sample["jpg"] for sample, _ in zip(read_tars(list(shards)), range(n))]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nvJPEG)")
def test_nvjpeg_decodes_like_the_cpu(build):
    # nvJPEG and libjpeg-turbo differ in IDCT rounding and in chroma upsampling ("fancy" in
    # libjpeg-turbo), so pixels differ by a few levels at colour edges; a channel swap, a
    # transposed or flipped image, or a wrong colour conversion differs by tens on average
    blobs = unpack(*pack(stored_jpegs(build, 16)))
    gpu, cpu = decode_batch(blobs, "cuda"), decode_batch(blobs, "cpu")
    assert all(g.is_cuda for g in gpu) and [g.shape for g in gpu] == [c.shape for c in cpu]
    diffs = torch.cat([(g.cpu().float() - c.float()).abs().flatten() for g, c in zip(gpu, cpu)])
    assert diffs.mean() < 1.5, diffs.mean()
    assert torch.quantile(diffs[:1_000_000], 0.99) <= 12, torch.quantile(diffs[:1_000_000], 0.99)
    data, lengths = pack(stored_jpegs(build, 16))
    batch = {"data": data, "lengths": lengths, "seed": 5, "size": 24}
    on_gpu, on_cpu = raw_batch_images(batch, "cuda"), raw_batch_images(batch, "cpu")
    assert on_gpu.is_cuda and on_gpu.shape == on_cpu.shape == (16, 3, 24, 24)
    assert (on_gpu.cpu().float() - on_cpu.float()).abs().mean() < 3


def test_crop_boxes_stay_inside_and_follow_the_scale_and_ratio():
    rng = np.random.default_rng(0)
    heights, widths = np.full(2000, 256), np.full(2000, 300)
    boxes = crop_boxes(heights, widths, rng)
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 256).all() and (left + w <= 300).all()
    area = h * w / (256 * 300)
    assert area.min() > 0.34 and area.max() <= 1.0 and 0.6 < area.mean() < 0.7
    assert (w / h).min() > 0.74 and (w / h).max() < 1.35
    assert len({(a, b) for a, b in zip(top, left)}) > 1000  # placed anywhere, not centred
    # a strip where no try can fit falls back to torchvision's centre crop
    assert crop_boxes([4], [400], rng).tolist() == [[0, 197, 4, 5]]


def test_draw_params_is_seeded():
    a, b = (draw_params([(32, 32)] * 16, np.random.default_rng(9)) for _ in range(2))
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.factors, b.factors) and a.order == b.order
    assert 0 < a.hflip.sum() < 16 and ((a.factors >= 0.9) & (a.factors <= 1.1)).all()


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_colour_affine_matches_torchvision_colour_ops(order):
    """Away from clamping, the one affine map equals torchvision's brightness, contrast, saturation in order."""
    rng = np.random.default_rng(len(order) + order[0])
    image = torch.from_numpy(rng.uniform(0.3, 0.7, (2, 3, 16, 16))).float()
    factors = torch.tensor([[1.08, 0.93, 1.05], [0.91, 1.1, 0.95]])
    a, t = colour_affine(factors, order, image.mean((2, 3)) * 255)
    ours = (torch.einsum("bij,bjhw->bihw", a, image * 255) + t[:, :, None, None]) / 255
    ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
    for i in range(2):
        expected = image[i]
        for op in order:
            expected = ops[op](expected, float(factors[i, op]))
        assert torch.allclose(ours[i], expected, atol=1e-4)


def test_augment_batch_crops_flips_and_keeps_the_input():
    image = torch.arange(3 * 8 * 8, dtype=torch.float32).reshape(3, 8, 8).to(torch.uint8)
    before = image.clone()
    ones = np.ones((2, 3))
    whole = np.array([[0, 0, 8, 8]] * 2)
    params = BatchParams(whole, np.array([False, True]), np.array([False, False]), ones, (0, 1, 2))
    out = augment_batch([image, image], 8, params)
    assert torch.equal(out[0], image) and torch.equal(out[1], image.flip(2))
    corner = BatchParams(np.array([[4, 4, 4, 4]]), np.array([False]), np.array([True]), ones[:1], (0, 1, 2))
    assert torch.equal(augment_batch([image], 4, corner)[0], image[:, 4:, 4:].flip(1))
    assert torch.equal(image, before)


def test_decode_gpu_with_device_cpu_is_refused_in_one_line(build):
    with pytest.raises(HamdataError, match="--decode gpu: .*--device cpu"):
        TrainConfig(recipe="phase5", arch="resnet18", device="cpu", decode="gpu")
    with pytest.raises(HamdataError, match="--decode: expected one of cpu, gpu"):
        TrainConfig(recipe="phase5", arch="resnet18", decode="nvjpeg")
    from cli import main

    result = CliRunner().invoke(main, ["train", "phase5", "--shards", str(build), "--device", "cpu", "--decode", "gpu"])
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith("error: --decode gpu:")


@pytest.mark.skipif(torch.cuda.is_available(), reason="there is a GPU here: --decode gpu does not fall back")
def test_decode_gpu_without_a_gpu_falls_back_with_one_warning(build, tmp_path):
    lines = []
    summary = run_recipe("phase5", {"shards": str(build), "out": str(tmp_path / "run"), "weights": "none", "arch": "resnet18",
                                    "image_size": 32, "batch_size": 16, "workers": 0, "device": "auto", "decode": "gpu",
                                    "epochs": 1, "max_steps": 1}, echo=lines.append)
    warnings = [line for line in lines if "--decode gpu" in line]
    assert warnings == ["warning: --decode gpu: no CUDA GPU is visible; the loader workers decode and augment on the CPU instead"]
    assert summary["epochs"] == 1 and summary["history"][0]["steps"] == 1

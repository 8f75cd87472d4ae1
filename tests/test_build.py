"""build-shards end to end: real images, synthetic sets, determinism, bad input, atomic output."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import main
from hamdata.build import BuildConfig, build_shards
from hamdata.inputs.classes import CLASSES
from hamdata.errors import HamdataError
from hamdata.image.preprocess import PreprocessConfig
from hamdata.split.stratified import SplitConfig, canonical_path, read_split_file
from hamdata.verify import verify_tree
from helpers import synthetic_data

SMALL = PreprocessConfig(size=(64, 64))


def build(data, out, workers=1, overwrite=False, **options):
    cfg = BuildConfig(data=str(data), out=str(out), preprocess=options.pop("preprocess", SMALL), **options)
    return build_shards(cfg, workers=workers, overwrite=overwrite, progress=False)


def read_tars(out: Path):
    """Every sample of a build, read with tarfile and PIL alone (no hamdata code)."""
    card = json.loads((out / "dataset.json").read_text())
    samples = []
    for shard in card["shards"]:
        with tarfile.open(out / shard["path"]) as tar:
            members = tar.getmembers()
            for i in range(0, len(members), 3):
                names = [m.name for m in members[i:i + 3]]
                key = names[0].split(".")[0]
                assert names == [f"{key}.jpg", f"{key}.cls", f"{key}.json"]
                data = [tar.extractfile(m).read() for m in members[i:i + 3]]
                samples.append({"key": key, "shard": shard["path"], "image": data[0],
                                "label": int(data[1]), "meta": json.loads(data[2])})
    return card, samples


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    """160 synthetic images (seed 3), shared read-only."""
    return synthetic_data(tmp_path_factory, 160, seed=3)


@pytest.fixture(scope="module")
def synth_build(synth_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "shards"
    summary = build(synth_data, out, workers=2, shard_size=40)
    return out, summary


@pytest.fixture(scope="module")
def real_flat(real_metadata_csv, real_images_dir, tmp_path_factory):
    """The real metadata table beside the 23 real images (links, not copies), in the flat layout."""
    root = tmp_path_factory.mktemp("real") / "ham"
    root.mkdir()
    (root / "HAM10000_metadata.csv").symlink_to(real_metadata_csv)
    for image in sorted(real_images_dir.glob("*.jpg")):
        (root / image.name).symlink_to(image)
    return root


def test_real_images_build_and_verify(real_flat, real_metadata_csv, tmp_path):
    out = tmp_path / "shards"
    result = CliRunner().invoke(main, ["build-shards", "--data", str(real_flat), "--out", str(out),
                                       "--allow-missing", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "canonical HAM10000 split" in result.output
    assert verify_tree(out, progress=False) == []
    card, samples = read_tars(out)
    real = pd.read_csv(real_metadata_csv).set_index("image_id")
    ids = [s["key"] for s in samples]
    assert sorted(ids) == sorted(p.stem for p in Path(real_flat).glob("*.jpg"))  # each image exactly once
    canon = read_split_file(canonical_path()).set_index("image_id")["split"]
    lesion_splits = {}
    for s in samples:
        image = Image.open(io.BytesIO(s["image"]))
        assert image.size == (256, 256) and image.mode == "RGB"
        row, meta = real.loc[s["key"]], s["meta"]
        assert (meta["lesion_id"], meta["dx"], meta["dx_type"], meta["sex"], meta["localization"]) == \
               (row.lesion_id, row.dx, row.dx_type, row.sex, row.localization)
        assert meta["age"] == (None if np.isnan(row.age) else row.age)
        assert s["label"] == CLASSES.index(row.dx)
        assert meta["split"] == canon[s["key"]]
        lesion_splits.setdefault(meta["lesion_id"], set()).add(meta["split"])
    assert all(len(v) == 1 for v in lesion_splits.values())
    missing = [s for s in card["skipped"] if s["reason"].startswith("missing")]
    assert len(missing) == 10015 - 23
    assert card["split"]["source"] == "canonical"


def test_missing_images_are_an_error_without_allow_missing(real_flat, tmp_path):
    with pytest.raises(HamdataError, match=r"9992 of 10015 listed images have no file.*--allow-missing"):
        build(real_flat, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_same_sha256_whatever_workers(synth_data, synth_build, tmp_path):
    out2, _ = synth_build
    out1 = tmp_path / "one"
    build(synth_data, out1, workers=1, shard_size=40)
    card1, card2 = (json.loads((o / "dataset.json").read_text()) for o in (out1, out2))
    assert [s["sha256"] for s in card1["shards"]] == [s["sha256"] for s in card2["shards"]]
    assert len(card1["shards"]) >= 4
    for name in ["manifest.csv", "_info.json"] + [s["path"] for s in card1["shards"]]:
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes(), name
    assert card1["train_stats"] == card2["train_stats"]


def test_workers_left_out_start_no_pool_for_a_small_build(synth_data, synth_build, tmp_path, monkeypatch):
    import hamdata.parallel

    def no_pool(*args, **kwargs):
        raise AssertionError("a pool was started for 160 images")

    monkeypatch.setattr(hamdata.parallel, "ProcessPoolExecutor", no_pool)
    summary = build(synth_data, tmp_path / "auto", workers=None, shard_size=40)
    assert summary["workers"] == 1
    out2, _ = synth_build  # built with workers=2 asked for: a pool of two
    assert (tmp_path / "auto" / "manifest.csv").read_bytes() == (out2 / "manifest.csv").read_bytes()


def test_pool_size_takes_an_asked_count_and_sizes_a_left_out_one_by_the_work(monkeypatch):
    from hamdata.parallel import ITEMS_PER_WORKER, pool_size

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert [pool_size(n, 3) for n in (1, 2, 5)] == [1, 2, 5]  # asked for: as asked, however small the work
    assert pool_size(None, 0) == pool_size(0, 2 * ITEMS_PER_WORKER - 1) == 1
    assert pool_size(None, 2 * ITEMS_PER_WORKER) == 2 and pool_size(None, 5 * ITEMS_PER_WORKER + 1) == 5
    assert pool_size(None, 10_015) == 8  # HAM10000: every CPU
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert pool_size(None, 10_015) == 1


def test_tars_read_back_with_tarfile_and_pil_match_manifest(synth_build):
    out, summary = synth_build
    card, samples = read_tars(out)
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(manifest["key"]) == [s["key"] for s in samples]
    for s, row in zip(samples, manifest.itertuples(index=False)):
        assert hashlib.sha256(s["image"]).hexdigest() == row.sha256
        assert s["label"] == int(row.label) and CLASSES[s["label"]] == row.dx == s["meta"]["dx"]
        assert (s["meta"]["split"], s["meta"]["lesion_id"], s["shard"]) == (row.split, row.lesion_id, row.shard)
        assert np.asarray(Image.open(io.BytesIO(s["image"]))).shape == (64, 64, 3)
    per_split = manifest.groupby("split").size().to_dict()
    assert per_split == {k: sum(v.values()) for k, v in card["counts"].items() if sum(v.values())}
    assert sum(per_split.values()) == 160 == summary["samples"]


def test_synthetic_split_is_fresh_lesion_aware_and_stats_are_from_train(synth_build):
    out, summary = synth_build
    card, samples = read_tars(out)
    assert card["split"] == {"source": "fresh", "val": 0.15, "test": 0.15, "seed": 42}
    meta = pd.DataFrame([s["meta"] for s in samples])
    assert meta.groupby("lesion_id")["split"].nunique().max() == 1
    train = [np.asarray(Image.open(io.BytesIO(s["image"])), dtype=np.float64) / 255 for s in samples
             if s["meta"]["split"] == "train"]
    pixels = np.concatenate([t.reshape(-1, 3) for t in train])
    assert np.allclose(card["train_stats"]["mean"], pixels.mean(0), atol=0.01)  # JPEG noise only
    assert np.allclose(card["train_stats"]["std"], pixels.std(0), atol=0.01)


def test_sample_order_is_shuffled_by_seed(synth_data, synth_build, tmp_path):
    out, _ = synth_build
    other = tmp_path / "other"
    build(synth_data, other, split=SplitConfig(seed=42), shard_size=40, workers=1)
    keys = pd.read_csv(out / "manifest.csv")["key"].tolist()
    train = pd.read_csv(out / "manifest.csv").query("split == 'train'")["key"].tolist()
    assert train != sorted(train)  # interleaved, not sorted by id or class
    assert pd.read_csv(other / "manifest.csv")["key"].tolist() == keys
    reseeded = tmp_path / "reseeded"
    build(synth_data, reseeded, split=SplitConfig(seed=7), shard_size=40, workers=1)
    assert pd.read_csv(reseeded / "manifest.csv")["key"].tolist() != keys


def test_options_reach_the_build(synth_data, tmp_path):
    out = tmp_path / "png"
    result = CliRunner().invoke(main, ["build-shards", "--data", str(synth_data), "--out", str(out), "--size", "48x36",
                                       "--format", "png", "--no-hair-removal", "--no-clahe", "--workers", "1",
                                       "--fresh-split", "--val", "0.2", "--test", "0.1", "--shard-size", "1000"])
    assert result.exit_code == 0, result.output
    card = json.loads((out / "dataset.json").read_text())
    assert card["config"]["preprocess"]["hair_removal"] is False and card["config"]["preprocess"]["clahe"] is False
    assert card["config"]["format"] == "png" and [s["path"] for s in card["shards"]][0] == "train/train-000000.tar"
    with tarfile.open(out / "train/train-000000.tar") as tar:
        first = tar.getmembers()[0]
        image = Image.open(io.BytesIO(tar.extractfile(first).read()))
    assert first.name.endswith(".png") and image.format == "PNG" and image.size == (48, 36)
    assert verify_tree(out, progress=False) == []


def test_refuses_to_replace_without_overwrite(synth_data, synth_build, tmp_path):
    out, _ = synth_build
    before = (out / "dataset.json").read_bytes()
    result = CliRunner().invoke(main, ["build-shards", "--data", str(synth_data), "--out", str(out), "--size", "64"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {out} already exists and is not empty; pass --overwrite to replace it"]
    assert (out / "dataset.json").read_bytes() == before
    again = tmp_path / "again"
    build(synth_data, again, shard_size=40)
    build(synth_data, again, shard_size=40, overwrite=True)
    assert verify_tree(again, progress=False) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _bad_image(kind: str, good: bytes) -> bytes:
    """Damaged or unusual image files, made from a real synthetic JPEG."""
    image = Image.open(io.BytesIO(good))
    buf = io.BytesIO()
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "zero-byte":
        return b""
    if kind == "not-an-image":
        return b"this is a text file, not a JPEG\n" * 20
    if kind == "grayscale":
        image.convert("L").save(buf, "JPEG")
    elif kind == "rgba-opaque":
        image.convert("RGBA").save(buf, "PNG")
    elif kind == "png-in-jpg":
        image.save(buf, "PNG")
    elif kind == "cmyk":
        image.convert("CMYK").save(buf, "JPEG")
    return buf.getvalue()


def _dataset_with(synth_data: Path, tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A copy of the synthetic set (links) where one image is replaced by a bad one."""
    root = tmp_path / f"data-{kind}"
    root.mkdir()
    (root / "HAM10000_metadata.csv").symlink_to(synth_data / "HAM10000_metadata.csv")
    victim = None
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        (root / part).mkdir()
        for image in sorted((synth_data / part).glob("*.jpg")):
            if victim is None:
                victim = image.stem
                (root / part / image.name).write_bytes(_bad_image(kind, image.read_bytes()))
            else:
                (root / part / image.name).symlink_to(image)
    return root, victim


@pytest.mark.parametrize("kind", ["truncated", "zero-byte", "not-an-image"])
def test_unreadable_image_fails_or_is_skipped_with_cause(synth_data, tmp_path, kind):
    data, victim = _dataset_with(synth_data, tmp_path, kind)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["build-shards", "--data", str(data), "--out", str(out), "--size", "32", "--workers", "1"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if "error" in line]
    assert len(errors) == 1 and result.output.strip().splitlines()[-1] == errors[0]
    assert errors[0].startswith("error: ") and f"{victim}.jpg" in errors[0] and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    result = CliRunner().invoke(main, ["build-shards", "--data", str(data), "--out", str(out), "--size", "32",
                                       "--workers", "2", "--on-error", "skip"])
    assert result.exit_code == 0, result.output
    card = json.loads((out / "dataset.json").read_text())
    assert [s["image_id"] for s in card["skipped"]] == [victim]
    assert card["skipped"][0]["reason"] and victim not in (out / "manifest.csv").read_text()
    assert sum(s["samples"] for s in card["shards"]) == 159
    assert verify_tree(out, progress=False) == []


@pytest.mark.parametrize("kind,note", [("grayscale", "grayscale"), ("rgba-opaque", "alpha"),
                                       ("png-in-jpg", "PNG"), ("cmyk", "CMYK")])
def test_convertible_images_are_built_and_recorded(synth_data, tmp_path, kind, note):
    data, victim = _dataset_with(synth_data, tmp_path, kind)
    out = tmp_path / "out"
    build(data, out, preprocess=PreprocessConfig(size=(32, 32)))
    card, samples = read_tars(out)
    assert victim in [s["key"] for s in samples] and card["skipped"] == []
    converted = {c["image_id"]: c["notes"] for c in card["converted"]}
    assert any(note.lower() in n.lower() for n in converted[victim]), converted[victim]
    image = next(Image.open(io.BytesIO(s["image"])) for s in samples if s["key"] == victim)
    assert image.mode == "RGB" and image.size == (32, 32)


def test_cli_errors_are_one_line(synth_data, tmp_path):
    runner = CliRunner()
    cases = [
        (["build-shards", "--data", str(tmp_path / "nowhere")], "--data: no such folder"),
        (["build-shards", "--data", str(synth_data), "--size", "abc"], "--size"),
        (["build-shards", "--data", str(synth_data), "--shard-size", "0"], "--shard-size"),
        (["build-shards", "--data", str(synth_data), "--out", str(synth_data / "shards")], "inside the input folder"),
        (["build-shards", "--data", str(synth_data), "--val", "0.6", "--test", "0.5"], "--val + --test"),
        (["verify", str(tmp_path / "nothing")], "nothing: no such folder (expected a build made by"),
        # click's own usage errors, under the same contract, with the command's --help as the hint
        (["evaluate", "x", "--split", "tset"], "error: Invalid value for '--split': 'tset' is not one of"),
        (["evaluate"], "error: Missing argument 'CHECKPOINT'. (see `main evaluate --help`)"),
        (["build-shards", "--bogus"], "error: No such option '--bogus'."),
        (["balance", "--target", "abc"], "is not a valid integer. (see `main balance --help`)"),
    ]
    for args, expected in cases:
        result = runner.invoke(main, args)
        assert result.exit_code == 2, args  # the one contract: a user mistake is one line, "error: ...", exit 2
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: "), result.output
        assert expected in result.output and "Traceback" not in result.output, (args, result.output)


def test_verify_names_a_damaged_shard(synth_data, tmp_path):
    out = tmp_path / "shards"
    build(synth_data, out, shard_size=40)
    shard = out / "val" / "val-000000.tar"
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["verify", str(out)])
    assert result.exit_code == 1
    assert f"{shard}: sha256 differs" in result.output

"""Deterministic tar writing and plain reading."""

import json
import tarfile

import pytest

from hamdata.store.schema import JSON_FIELDS, sample_json
from hamdata.store.shards import MTIME, OWNER, ShardWriter, iter_samples, sha256_file


def record(i, split="train"):
    return {"image_id": f"ID_{i}", "lesion_id": f"L_{i // 2}", "dx": "nv", "dx_type": "histo", "age": 40 + i,
            "sex": "male", "localization": "back", "split": split, "source": "original", "parent": None, "recipe": None}


def write(root, n, per_shard):
    writer = ShardWriter(root, "train", "train", "train", per_shard)
    for i in range(n):
        writer.write(f"ID_{i}", "jpg", bytes([i % 256]) * (100 + i), 5, sample_json(record(i)))
    return writer.close()


def test_round_trip_and_shard_boundaries(tmp_path):
    shards = write(tmp_path, 7, per_shard=3)
    assert [s.samples for s in shards] == [3, 3, 1]
    assert [s.path for s in shards] == [f"train/train-00000{k}.tar" for k in range(3)]
    samples = [s for info in shards for s in iter_samples(tmp_path / info.path)]
    assert [s.key for s in samples] == [f"ID_{i}" for i in range(7)]
    for i, sample in enumerate(samples):
        assert [ext for ext, _ in sample.members] == ["jpg", "cls", "json"]
        assert sample.get("jpg") == bytes([i]) * (100 + i)
        assert sample.get("cls") == b"5"
        assert json.loads(sample.get("json")) == record(i)
    for info in shards:
        assert info.sha256 == sha256_file(tmp_path / info.path)
        assert info.bytes == (tmp_path / info.path).stat().st_size


def test_same_samples_give_same_bytes(tmp_path):
    a = write(tmp_path / "a", 5, 2)
    b = write(tmp_path / "b", 5, 2)
    assert [s.sha256 for s in a] == [s.sha256 for s in b]


def test_headers_are_fixed(tmp_path):
    info = write(tmp_path, 2, 10)[0]
    with tarfile.open(tmp_path / info.path) as tar:
        members = tar.getmembers()
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(MTIME, 0, 0, OWNER, OWNER, 0o444)}


def test_json_field_order_and_schema():
    data = json.loads(sample_json({**record(1), "extra": 1}))
    assert list(data) == list(JSON_FIELDS)
    bad = record(1)
    del bad["recipe"]
    with pytest.raises(ValueError, match="recipe"):
        sample_json(bad)


def test_keys_with_dots_are_refused(tmp_path):
    writer = ShardWriter(tmp_path, "train", "train", "train", 10)
    with pytest.raises(ValueError, match="dots"):
        writer.write("ISIC_1.jpg", "jpg", b"x", 0, sample_json(record(1)))
    writer.abort()


def test_webdataset_reads_our_tars(tmp_path):
    webdataset = pytest.importorskip("webdataset")
    info = write(tmp_path, 4, 10)[0]
    rows = list(webdataset.WebDataset(str(tmp_path / info.path), shardshuffle=False).to_tuple("__key__", "cls", "json"))
    assert [r[0] for r in rows] == [f"ID_{i}" for i in range(4)]
    assert all(r[1] == b"5" for r in rows)

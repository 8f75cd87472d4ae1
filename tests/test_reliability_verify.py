"""Reliability 2: `verify` detects and names every kind of damage to a build.

Each test damages a copy of one small build the way a disk, a copy or a person
would, then runs `python cli.py verify` (in-process) and asserts the line that
names the file and, where there is one, the sample.
"""

import hashlib
import io
import json
import random
import shutil
import tarfile
from pathlib import Path

import pytest

from hamdata.inputs.classes import CLASSES
from hamdata.verify import verify_folder
from helpers import build_once, verify


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """40 synthetic images at 32 px, 10 a tar (the lines below count on 10), shared read-only: tests damage a copy."""
    shards = build_once(tmp_path_factory, 40, 32, shard_size=10, seed=4, hair_removal=False, clahe=False)
    assert verify_folder(shards, progress=False) == []
    return shards


@pytest.fixture
def build(pristine, tmp_path):
    out = tmp_path / "shards"
    shutil.copytree(pristine, out)
    return out


def members(tar: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(tar) as t:
        return t.getmembers()


def flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


FIRST = "train/train-000000.tar"


@pytest.mark.parametrize("member", [0, 1, 2], ids=["image", "cls", "json"])
def test_flipped_byte_in_a_member_names_the_shard_and_sample(build, member):
    tar = build / FIRST
    m = members(tar)[3 + member]  # the second sample
    key = m.name.split(".")[0]
    offset = m.offset_data + (m.size // 2 if member == 0 else 0)
    flip(tar, offset)
    code, lines = verify(build)
    assert code == 1
    assert f"{tar}: sha256 differs from dataset.json (the file was changed or damaged)" in lines
    about_sample = [line for line in lines if line.startswith(f"{tar}: sample {key}: ")]
    expected = {0: "manifest.csv sha256 is", 1: "unreadable cls or json", 2: "unreadable cls or json"}[member]
    assert any(expected in line for line in about_sample), lines


def test_flipped_bit_in_cls_makes_another_valid_label(build):
    tar = build / FIRST
    m = members(tar)[1]
    key = m.name.split(".")[0]
    with tarfile.open(tar) as t:
        label = int(t.extractfile(m).read())
        dx = json.loads(t.extractfile(members(tar)[2]).read())["dx"]
    flip(tar, m.offset_data, 0x01)  # '5' -> '4': still a digit
    code, lines = verify(build)
    assert code == 1
    assert f"{tar}: sample {key}: label {label ^ 1} disagrees with json dx {dx!r}" in lines
    assert f"{tar}: sample {key}: manifest.csv label is '{label}', the shard says '{label ^ 1}'" in lines


@pytest.mark.parametrize("field", ["dx", "lesion_id"])
def test_flipped_byte_inside_a_json_value(build, field):
    tar = build / FIRST
    m = members(tar)[2]
    key = m.name.split(".")[0]
    with tarfile.open(tar) as t:
        text = t.extractfile(m).read()
    record = json.loads(text)
    at = text.index(f'"{field}":"'.encode()) + len(field) + 4  # first character of the value
    flip(tar, m.offset_data + at, 0x01)
    changed = chr(ord(record[field][0]) ^ 1) + record[field][1:]
    code, lines = verify(build)
    assert code == 1
    assert f"{tar}: sample {key}: manifest.csv {field} is {record[field]!r}, the shard says {changed!r}" in lines
    if field == "dx":
        assert f"{tar}: sample {key}: label {CLASSES.index(record['dx'])} disagrees with json dx {changed!r}" in lines


@pytest.mark.parametrize("which", [0, 4], ids=["first header", "header mid-tar"])
def test_flipped_byte_in_a_tar_header(build, which):
    tar = build / FIRST
    before = members(tar)
    flip(tar, before[which].offset + 10)  # inside the member name
    code, lines = verify(build)
    assert code == 1
    read = (which + 2) // 3  # samples read, the last one cut short by the damaged header
    damaged = [line for line in lines if line.startswith(f"{tar}: unreadable tar after {read} samples")]
    assert len(damaged) == 1, lines
    if which:  # tarfile alone would take it for the end of the archive and drop the rest silently
        assert damaged[0].endswith(f"(ReadError: damaged member header at byte {before[which].offset}, after {before[which - 1].name})")
        key = before[which - 1].name.split(".")[0]
        assert f"{tar}: sample {key}: members ['jpg'], expected [jpg|png, cls, json] in that order" in lines
    assert f"{tar}: {read} samples, dataset.json says 10" in lines


def test_any_single_flipped_byte_is_found(build):
    """Flip one byte anywhere in a shard (headers, data, padding, end blocks): verify never passes."""
    tar = build / FIRST
    original = tar.read_bytes()
    rng = random.Random(0)
    m = members(tar)
    offsets = [x.offset for x in m[:4]] + [x.offset_data for x in m[:4]] + [len(original) - 1, m[-1].offset_data + m[-1].size]
    offsets += [rng.randrange(len(original)) for _ in range(24)]
    for offset in offsets:
        flip(tar, offset)
        problems = verify_folder(build, progress=False)
        assert problems and all(isinstance(p, str) and "\n" not in p for p in problems), offset
        assert any(p.startswith(f"{tar}: ") for p in problems), (offset, problems)
        tar.write_bytes(original)
    assert verify_folder(build, progress=False) == []


@pytest.mark.parametrize("cut", ["inside member data", "inside a header", "at a sample boundary", "end blocks cut off"])
def test_truncated_tar(build, cut):
    tar = build / FIRST
    size = tar.stat().st_size
    m = members(tar)
    length = {"inside member data": m[7].offset_data + m[7].size // 2, "inside a header": m[6].offset + 100,
              "at a sample boundary": m[6].offset, "end blocks cut off": m[-1].offset_data + m[-1].size + (-m[-1].size) % 512}[cut]
    with open(tar, "r+b") as handle:
        handle.truncate(length)
    code, lines = verify(build)
    assert code == 1
    assert f"{tar}: {length} bytes, dataset.json says {size}" in lines
    assert f"{tar}: sha256 differs from dataset.json (the file was changed or damaged)" in lines
    unreadable = {"inside member data": f"{tar}: unreadable tar after 2 samples (ReadError: unexpected end of data)",
                  "inside a header": f"{tar}: unreadable tar after 2 samples (ReadError: truncated at byte {length}, "
                                     f"inside the member header after {m[5].name})"}
    if cut in unreadable:
        assert unreadable[cut] in lines
    if cut != "end blocks cut off":  # every sample was still there
        assert f"{tar}: 2 samples, dataset.json says 10" in lines
        assert any(line.startswith(f"{build / 'manifest.csv'}: 8 rows have no sample in any shard") for line in lines)


def test_missing_tar(build):
    tar = build / "val" / "val-000000.tar"
    keys = {m.name.split(".")[0] for m in members(tar)}
    tar.unlink()
    code, lines = verify(build)
    assert code == 1
    assert lines[0] == f"{tar}: shard listed in dataset.json is missing"
    assert f"{build / 'manifest.csv'}: {len(keys)} rows have no sample in any shard (first: {', '.join(sorted(keys)[:3])})" in lines


@pytest.mark.parametrize("name", ["train/train-000099.tar", "notes.txt", "val/.hidden", "extra/thing.json"])
def test_extra_unlisted_file(build, name):
    extra = build / name
    extra.parent.mkdir(parents=True, exist_ok=True)
    extra.write_bytes(b"x")
    code, lines = verify(build)
    assert (code, lines) == (1, [f"{extra}: not listed in dataset.json"])


def test_leftover_temp_folder_inside_a_build(build):
    temp = build / ".balanced-100.tmp-99999999"
    temp.mkdir()
    (temp / "train-000000.tar").write_bytes(b"")
    code, lines = verify(build)
    assert (code, lines) == (1, [f"{temp}: left over from an interrupted run; delete it"])


@pytest.mark.parametrize("column,value", [("lesion_id", "HAM_9999999"), ("split", "test"), ("dx", "df"),
                                          ("image_id", "ISIC_9999999"), ("shard", "train/train-000001.tar")])
def test_edited_manifest_row(build, column, value):
    path = build / "manifest.csv"
    lines_in = path.read_text().splitlines()
    header = lines_in[0].split(",")
    row = lines_in[5].split(",")
    key, old = row[0], row[header.index(column)]
    row[header.index(column)] = value
    lines_in[5] = ",".join(row)
    path.write_text("\n".join(lines_in) + "\n")
    code, lines = verify(build)
    assert code == 1
    shard = build / old if column == "shard" else build / row[header.index("shard")]
    assert f"{shard}: sample {key}: manifest.csv {column} is {value!r}, the shard says {old!r}" in lines


def test_manifest_row_deleted_or_key_edited(build):
    path = build / "manifest.csv"
    rows = path.read_text().splitlines()
    key, shard = rows[3].split(",")[0], rows[3].split(",")[9]
    path.write_text("\n".join(rows[:3] + rows[4:]) + "\n")
    code, lines = verify(build)
    assert code == 1 and f"{build / shard}: sample {key}: not in manifest.csv" in lines
    assert any(line.startswith(f"{path}: ") and "rows, dataset.json says" in line for line in lines)


def rewrite_sample(tar: Path, index: int, change) -> str:
    """Rewrite ``tar`` with the members of sample ``index`` passed through ``change``; keep the headers."""
    with tarfile.open(tar) as t:
        items = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    key = items[3 * index][0].name.split(".")[0]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as out:
        for i, (m, data) in enumerate(items):
            if i // 3 == index:
                data = change(m.name.split(".", 1)[1], data)
            m.size = len(data)
            out.addfile(m, io.BytesIO(data))
    tar.write_bytes(buf.getvalue())
    return key


def reseal(build: Path, tar: Path) -> None:
    """Make dataset.json agree with a rewritten tar, as a careless tool would."""
    card = json.loads((build / "dataset.json").read_text())
    entry = next(s for s in card["shards"] if build / s["path"] == tar)
    entry["bytes"] = tar.stat().st_size
    entry["sha256"] = hashlib.sha256(tar.read_bytes()).hexdigest()
    (build / "dataset.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def test_label_disagrees_with_json_even_when_everything_else_agrees(build):
    tar = build / FIRST
    new = {}

    def relabel(ext, data):
        if ext == "cls":
            new["label"] = (int(data) + 1) % len(CLASSES)
            return str(new["label"]).encode()
        if ext == "json":
            new["dx"] = json.loads(data)["dx"]
        return data

    key = rewrite_sample(tar, 2, relabel)
    reseal(build, tar)
    manifest = build / "manifest.csv"
    rows = manifest.read_text().splitlines()
    rows = [",".join(r.split(",")[:2] + [str(new["label"])] + r.split(",")[3:]) if r.startswith(key + ",") else r for r in rows]
    manifest.write_text("\n".join(rows) + "\n")
    code, lines = verify(build)
    assert (code, lines) == (1, [f"{tar}: sample {key}: label {new['label']} disagrees with json dx {new['dx']!r}"])


def edit_json(path: Path, change) -> Path:
    """The JSON file ``path`` (_info.json, dataset.json) after ``change`` (a function of its dict) was applied."""
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    return path


def test_tampered_info_json_one_line_per_mismatch(build):
    train = json.loads((build / "_info.json").read_text())["splits"]["train"]
    files, lengths, n = train["filenames"], train["shard_lengths"], train["num_samples"]
    assert len(files) >= 2

    def tamper(info):
        split = info["splits"]["train"]
        split["num_samples"] += 1
        split["filenames"] = files[::-1]
        split["shard_lengths"][0] -= 1
        del info["splits"]["test"]

    path = edit_json(build / "_info.json", tamper)
    code, lines = verify(build)
    assert code == 1 and sorted(lines) == sorted([
        f"{path}: splits ['train', 'val'], expected ['test', 'train', 'val'] (from dataset.json)",
        f"{path}: train num_samples is {n + 1}, dataset.json gives {n}",
        f"{path}: train filenames is {files[::-1]!r}, dataset.json gives {files!r}",
        f"{path}: train shard_lengths is {[lengths[0] - 1, *lengths[1:]]!r}, dataset.json gives {lengths!r}",
    ])


def test_damaged_info_json(build):
    path = build / "_info.json"
    path.write_bytes(path.read_bytes()[:50])
    code, lines = verify(build)
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"{path}: unreadable ("), lines


def test_build_without_info_json_still_verifies(build):
    """Builds made before _info.json existed have none."""
    (build / "_info.json").unlink()
    assert verify(build) == (0, [])


def test_damaged_dataset_card(build):
    card = build / "dataset.json"
    card.write_bytes(card.read_bytes()[:100])
    code, lines = verify(build)
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"{card}: unreadable dataset card (")


@pytest.mark.parametrize("stats", [[1], "mean", {"mean": 0.5, "std": 0.2}, {"mean": [0.5, 0.5], "std": [0.2] * 3}])
def test_damaged_train_stats_is_a_problem_line_not_a_traceback(build, stats):
    card = edit_json(build / "dataset.json", lambda c: c.update(train_stats=stats))
    code, lines = verify(build)
    assert code == 1 and lines == [f"{card}: train_stats missing or damaged (expected a mean and a std of three numbers "
                                   f"each, the normalisation the trainers use)"]


def test_a_null_count_and_a_truncated_tar_are_each_named(build):
    """A damaged field of the card does not hide the other problems: each is a line of its own."""
    edit_json(build / "dataset.json", lambda c: c["counts"]["train"].update(nv=None))
    val = build / "val" / "val-000000.tar"
    val.write_bytes(val.read_bytes()[:-2048])
    code, lines = verify(build)
    assert code == 1
    assert any(line.startswith(f"{build / 'manifest.csv'}: train/nv has ") and line.endswith("says None")
               for line in lines), lines
    assert any(line.startswith(f"{val}: ") for line in lines), lines
    assert not any("damaged counts or shard list" in line for line in lines), lines

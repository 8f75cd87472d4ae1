"""Duplicates by content, on the real HAM10000 images in ../shared (the issue's acceptance test).

A HAM10000 folder holds 15 of the 23 real images with their real metadata rows. An ISIC 2019 folder holds
re-encodes of 4 of them under the same ids, copies of 6 others under new ids (cropped 3% a side, resized to
0.8x, brightened by 10%, re-encoded at quality 85), and the other 8 real images under new ids. The build must
find every copy, keep no copy in another split than its original, and merge no two different lesions.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import REAL_SAMPLE_MISSING, SHARED, cli, real_sample_present, shard_members, verify

ISIC2019_LABEL = {"akiec": "AK", "bcc": "BCC", "bkl": "BKL", "df": "DF", "mel": "MEL", "nv": "NV", "vasc": "VASC"}
COLUMNS = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")

pytestmark = pytest.mark.skipif(not real_sample_present(), reason=REAL_SAMPLE_MISSING)


def transformed(data: bytes) -> bytes:
    """The issue's copy: crop 3% a side, resize to 0.8x, brightness x1.1, JPEG quality 85."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    dx, dy = round(w * 0.03), round(h * 0.03)
    image = image.crop((dx, dy, w - dx, h - dy)).resize((round(w * 0.8), round(h * 0.8)), Image.BILINEAR)
    pixels = np.clip(np.asarray(image, dtype=np.float32) * 1.1, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=85)
    return out.getvalue()


def reencoded(data: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(out, format="JPEG", quality=85)
    return out.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("real-duplicates")
    metadata = pd.read_csv(SHARED / "HAM10000_metadata.csv")
    ids = sorted(p.stem for p in (SHARED / "images").glob("*.jpg"))
    rows = metadata[metadata["image_id"].isin(ids)].set_index("image_id")
    ham_ids, rest = ids[:15], ids[15:]
    same_id, new_id = ham_ids[:4], ham_ids[4:10]
    ham = root / "ham"
    ham.mkdir()
    for i in ham_ids:
        (ham / f"{i}.jpg").write_bytes((SHARED / "images" / f"{i}.jpg").read_bytes())
    rows.loc[ham_ids].reset_index()[["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]].to_csv(
        ham / "HAM10000_metadata.csv", index=False)
    isic = root / "isic"
    folder = isic / "ISIC_2019_Training_Input"
    folder.mkdir(parents=True)
    truth, meta, copies = [], [], {}
    for n, i in enumerate(same_id + new_id + rest):
        data = (SHARED / "images" / f"{i}.jpg").read_bytes()
        if i in same_id:
            name, image, lesion = i, reencoded(data), rows.at[i, "lesion_id"]
        elif i in new_id:
            name, image, lesion = f"ISIC_99{n:05d}", transformed(data), ""
            copies[name] = i
        else:
            name, image, lesion = f"ISIC_98{n:05d}", reencoded(data), f"BCN_{n:07d}"
        (folder / f"{name}.jpg").write_bytes(image)
        label = ISIC2019_LABEL[rows.at[i, "dx"]]
        truth.append([name] + ["1.0" if c == label else "0.0" for c in COLUMNS])
        meta.append([name, "", "", lesion, ""])
    for path, header, body in ((isic / "ISIC_2019_Training_GroundTruth.csv", ("image",) + COLUMNS, truth),
                               (isic / "ISIC_2019_Training_Metadata.csv",
                                ("image", "age_approx", "anatom_site_general", "lesion_id", "sex"), meta)):
        with open(path, "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([header] + body)
    return {"ham": ham, "isic": isic, "same_id": same_id, "copies": copies, "rest": rest,
            "lesion": dict(zip(metadata["image_id"], metadata["lesion_id"]))}


def _build(inputs, out: Path, *extra) -> tuple[dict, dict]:
    result = cli("build-shards", "--data", inputs["ham"], "--data", inputs["isic"], "--out", out, "--size", "64",
                 "--workers", "1", *extra)
    assert result.exit_code == 0, result.output
    card = json.loads((out / "dataset.json").read_text())
    records = {name[:-5]: json.loads(data) for name, data in shard_members(out) if name.endswith(".json")}
    return card, records


def test_every_copy_found_none_merged_and_dropped(inputs, tmp_path):
    card, records = _build(inputs, tmp_path / "b")
    content = {d["dropped"]: d for d in card["duplicates"] if d["evidence"]["method"] != "image id"}
    same = {d["dropped"] for d in card["duplicates"] if d["evidence"]["method"] == "image id"}
    assert same == set(inputs["same_id"])  # same id: one sample, the HAM10000 one
    assert {d: c["kept"] for d, c in content.items()} == inputs["copies"]  # every copy, paired with its original
    for copy, original in inputs["copies"].items():
        assert copy not in records and original in records
        assert content[copy]["action"] == "dropped" and content[copy]["evidence"]["similarity"] >= content[copy]["evidence"]["threshold"]
    # the other real images are different lesions: all kept, none paired
    kept_rest = [k for k, r in records.items() if r["collection"] == "isic2019"]
    assert len(kept_rest) == len(inputs["rest"])
    assert verify(tmp_path / "b") == (0, [])
    # the HAM10000 images keep their canonical split
    canonical = pd.read_csv(Path(__file__).resolve().parents[1] / "manifests" / "ham10000_split.csv").set_index("image_id")["split"]
    for key, record in records.items():
        if record["collection"] == "ham10000":
            assert record["split"] == canonical[key], key


def test_keep_duplicates_puts_each_copy_in_its_originals_split(inputs, tmp_path):
    card, records = _build(inputs, tmp_path / "b", "--keep-duplicates")
    content = [d for d in card["duplicates"] if d["evidence"]["method"] != "image id"]
    assert {d["dropped"]: d["kept"] for d in content} == inputs["copies"]
    assert all(d["action"] == "kept (--keep-duplicates)" for d in content)
    for copy, original in inputs["copies"].items():
        assert records[copy]["split"] == records[original]["split"]
        assert records[copy]["group"] == records[original]["group"]
    # no two different lesions of HAM10000 share a group
    groups: dict[str, set] = {}
    for record in records.values():
        if record["collection"] == "ham10000":
            groups.setdefault(record["group"], set()).add(record["lesion_id"])
    assert all(len(lesions) == 1 for lesions in groups.values()), groups
    assert verify(tmp_path / "b") == (0, [])

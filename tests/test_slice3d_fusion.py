"""ISIC 2024's tabular measurements in fusion (--metadata-columns): fitted on train, stored in the checkpoint,
read by predict --metadata; a build whose label depends only on two tbp_lv_* columns is learnt with them and
not without them.

Measured on the 2-core CPU of the development machine, one torch thread, ResNet-18 from random weights, 4 epochs:
test AUC with the two columns 0.994 / 0.991 / 0.983, without them 0.469 / 0.472 / 0.435 (seeds 1-3), ~10 s a run.
With AdamW fused on the CPU and a shuffle buffer of one epoch (2026-12-05, a slower 2-core VM, ~20 s a run): 0.984 /
0.997 / 0.988 with the columns, 0.436 / 0.446 / 0.538 without. With the convolutions' weight gradients of
trainers/convgrad.py (same VM, ~10-14 s a run): 1.000 / 0.991 / 0.978 and 0.446 / 0.469 / 0.414; 3 epochs would
save ~2 s a run but gave 0.938 / 0.997 / 0.990, closer to the bound. Unchanged by the matrix products of 1x1
convolutions (ResNet-18 has none at stride 1): the same six figures again, ~10-13 s a run.

The pixels are noise, so the backbone is not what is tested: since 2026-12-05 MobileNetV3-Large (ResNet-18 trains
in the demo's Phase 6 and in test_compile), with its 1x1 products: 0.987 / 1.000 / 0.997 with the columns, 0.358 /
0.459 / 0.394 without, ~6.5-9.5 s a run and a checkpoint of 17 MB instead of 45.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from helpers import cli, cli_error
from test_slice3d import HEADER, jpeg, table_rows

from trainers.fusion import MetadataEncoding

TRAIN = ("--arch", "mobilenet_v3_large", "--weights", "none", "--epochs", 4, "--image-size", 32, "--batch-size", 32, "--lr", 3e-3,
         "--device", "cpu", "--workers", 0, "--seed", 1)


@pytest.fixture(scope="module")
def tabular_build(tmp_path_factory) -> Path:
    """400 SLICE-3D rows whose target is tbp_lv_A + tbp_lv_B > 0.8; the pixels are noise, unrelated to it."""
    root = tmp_path_factory.mktemp("tabular")
    rng = np.random.default_rng(0)
    rows = table_rows(400)
    a_col, b_col = HEADER.index("tbp_lv_A"), HEADER.index("tbp_lv_B")
    for k, row in enumerate(rows):
        a, b = rng.normal(0, 1, 2)
        row[a_col], row[b_col] = f"{a:.5f}", f"{b:.5f}"
        row[1] = "1" if a + b > 0.8 else "0"
        row[HEADER.index("iddx_1")] = "Malignant" if row[1] == "1" else "Benign"
        for c in ("iddx_2", "iddx_3", "iddx_full"):
            row[HEADER.index(c)] = ""
        row[2] = f"IP_{k:07d}"
    data = root / "data"
    data.mkdir()
    with open(data / "train-metadata.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)
    with h5py.File(data / "train-image.hdf5", "w") as f:
        for k, row in enumerate(rows):
            f.create_dataset(row[0], data=np.bytes_(jpeg(k, 40)))
    result = cli("build-shards", "--data", data, "--out", root / "b", "--classes", "malignancy", "--size", 32,
                 "--workers", 1, "--no-duplicate-search", "--no-hair-removal", "--no-clahe")
    assert result.exit_code == 0, result.output
    return root / "b"


def test_the_label_is_learnt_from_the_columns_and_not_without_them(tabular_build, tmp_path):
    with_columns = cli("train", "phase6", "--shards", tabular_build, "--out", tmp_path / "cols", *TRAIN,
                       "--metadata-columns", "tbp_lv_A,tbp_lv_B")
    assert with_columns.exit_code == 0, with_columns.output
    without = cli("train", "phase6", "--shards", tabular_build, "--out", tmp_path / "none", *TRAIN)
    assert without.exit_code == 0, without.output
    auc = {name: json.loads((tmp_path / name / "metrics.json").read_text())["auc"] for name in ("cols", "none")}
    assert auc["cols"] >= 0.9 and abs(auc["none"] - 0.5) < 0.25, auc
    state = torch.load(tmp_path / "cols" / "best.pt", map_location="cpu", weights_only=False)
    encoding = MetadataEncoding.from_dict(state["data"]["metadata"])
    assert encoding.columns == ("tbp_lv_A", "tbp_lv_B") and encoding.dim == 2 + len(encoding.sexes) + len(encoding.sites) + 4
    # predict --metadata reads the columns: a clear positive and a clear negative
    images = tmp_path / "img"
    images.mkdir()
    for name in ("pos", "neg"):
        (images / f"{name}.jpg").write_bytes(jpeg(7, 40))
    table = tmp_path / "meta.csv"
    table.write_text("image,age,sex,localization,tbp_lv_A,tbp_lv_B\npos.jpg,60,male,posterior torso,2.5,2.5\n"
                     "neg.jpg,60,male,posterior torso,-2.5,-2.5\n")
    result = cli("predict", tmp_path / "cols" / "best.pt", images / "pos.jpg", images / "neg.jpg", "--metadata", table,
                 "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert "warning" not in result.output  # both columns given
    out = {Path(r["image"]).stem: r["probabilities"]["malignant"] for r in rows}
    assert out["pos"] > 0.5 > out["neg"]


def test_a_column_the_build_does_not_carry_is_one_line(tabular_build, tmp_path):
    line = cli_error("train", "phase6", "--shards", tabular_build, "--out", tmp_path / "x", *TRAIN,
                     "--metadata-columns", "tbp_lv_A,tbp_lv_nope")
    assert "tbp_lv_nope" in line and "tbp_lv_areaMM2" in line
    line = cli_error("train", "phase6", "--shards", tabular_build, "--out", tmp_path / "y", *TRAIN,
                     "--metadata-columns", "tbp_lv_A", "--no-metadata")
    assert "--metadata-columns" in line and "--no-metadata" in line


def test_the_encoding_scales_with_train_statistics_and_flags_missing():
    records = [{"age": 50, "sex": "male", "site": "torso", "features": {"x": 1.0, "y": None}},
               {"age": 60, "sex": "female", "site": "torso", "features": {"x": 3.0, "y": 5.0}}]
    encoding = MetadataEncoding.fit(records, columns=("x", "y"))
    assert encoding.column_means == (2.0, 5.0) and encoding.column_stds == (1.0, 1.0)  # y: one value, std 1
    vector = encoding.encode_record({"age": None, "sex": "male", "site": "torso", "features": {"x": 4.0}})
    tail = vector[-4:]
    assert tail.tolist() == [2.0, 0.0, 0.0, 1.0]  # x scaled, y missing
    assert MetadataEncoding.from_dict(json.loads(json.dumps(encoding.to_dict()))) == encoding
    plain = MetadataEncoding.fit(records)
    assert "columns" not in plain.to_dict()  # an encoding without columns is the dict it always was

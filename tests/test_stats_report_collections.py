"""stats and report per collection and class, and the report's duplicate pairs side by side.

One small two-input build (synthetic HAM10000 beside a synthetic ISIC 2019 set that copies some of its images
under the same id and under new ids) is made once for the module; its dataset.json and manifest.csv are the
truth the tables are checked against. Raw ISIC folders are made by hand (ISIC 2019, with UNK rows) or by
hamdata.synth.isic (an archive export, whose summary counts its classes independently).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import SOURCE_SIZE, cli

import hamdata.pages.collections as collections_report
from hamdata.inputs.classes import HAM10000_CLASSES, ISIC2019_CLASSES
from hamdata.store.manifest import read_manifest
from hamdata.report import render_report
from hamdata.stats import run_stats, tables_from_records

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory) -> dict:
    from hamdata.synth.ham import make_synthetic
    from hamdata.synth.isic import write_isic2019

    root = tmp_path_factory.mktemp("collections")
    make_synthetic(root / "ham", n_images=80, seed=3, workers=1, progress=False, image_size=SOURCE_SIZE)
    write_isic2019(root / "isic", images=60, seed=3, size=(200, 150), duplicates_of=root / "ham", same_id=3,
                   new_id=6, within=2, workers=1, progress=False)
    result = cli("build-shards", "--data", root / "ham", "--data", root / "isic", "--out", root / "b",
                 "--size", "48", "--workers", "1")
    assert result.exit_code == 0, result.output
    build = root / "b"
    card = json.loads((build / "dataset.json").read_text())
    by_id = [d for d in card["duplicates"] if d["evidence"]["method"] == "image id"]
    by_content = [d for d in card["duplicates"] if d["evidence"]["method"] != "image id"]
    assert len(by_id) == 3, card["duplicates"]  # the three same-id copies
    assert by_content, "the planted new-id copies should give content pairs"
    return {"root": root, "build": build, "card": card, "by_id": by_id, "by_content": by_content,
            "stats": run_stats(build, root / "stats", progress=False)}


def test_stats_per_collection_tables_equal_the_manifest(two_inputs):
    tables, card = two_inputs["stats"]["tables"], two_inputs["card"]
    manifest = read_manifest(two_inputs["build"])
    table = tables["collections"]
    assert list(table.columns) == [*card["classes"], "total"]
    assert list(table.index) == ["ham10000", "isic2019", "total"]
    expected = manifest.groupby(["collection", "dx"]).size()
    for collection in ("ham10000", "isic2019"):
        for dx in card["classes"]:
            assert table.loc[collection, dx] == expected.get((collection, dx), 0), (collection, dx)
        assert table.loc[collection, "total"] == (manifest["collection"] == collection).sum()
    assert table.loc["total", "total"] == len(manifest) == sum(s["samples"] for s in card["shards"])
    assert table.loc["isic2019", "total"] > 0 and table.loc["ham10000", "total"] > 0
    splits = tables["collection_splits"]
    assert list(splits.columns) == ["train", "val", "test", "total"]
    per_split = manifest.groupby(["collection", "split"]).size()
    assert all(splits.loc[c, s] == per_split.get((c, s), 0) for c in ("ham10000", "isic2019") for s in ("train", "val", "test"))
    # SCC has no class among HAM10000's seven: the unmapped table says so, with the card's count
    unmapped = tables["unmapped"]
    scc = unmapped[(unmapped.index == "isic2019") & (unmapped["label"] == "SCC")]
    assert scc["rows"].tolist() == [card["unmapped"]["isic2019"]["SCC"]["rows"]]


def test_stats_text_has_the_tables_and_the_duplicates_line(two_inputs):
    text, card = two_inputs["stats"]["text"], two_inputs["card"]
    assert "Samples per collection and class" in text and "Samples per collection and split" in text
    dropped = sum(d["action"] == "dropped" for d in card["duplicates"])
    assert (f"duplicates: {len(two_inputs['by_id'])} by image id, {len(two_inputs['by_content'])} by content "
            f"({card['duplicate_search']['method']}, threshold {card['duplicate_search']['threshold']}") in text
    assert f"; {dropped} dropped, 0 kept (--keep-duplicates); " in text
    assert "Labels no class took" in text


def test_stats_collections_plot_is_a_png(two_inputs):
    plot = Path(two_inputs["root"] / "stats" / "collections.png")
    assert str(plot) in two_inputs["stats"]["plots"]
    data = plot.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and 10_000 < len(data) < 1_000_000
    with Image.open(plot) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500
    colours = {tuple(p) for p in pixels.reshape(-1, 3)[::7]}
    assert len(colours) > 20  # bars in two colours, text, axes: not a blank canvas


def pair_blocks(page: str) -> list[str]:
    """The side-by-side blocks of the Duplicates section, each up to the end of its text."""
    return [part.split("</div></div>")[0] for part in page.split('<div class="card pair">')[1:]]


def id_table(page: str) -> str:
    start = page.index("The same image id in several inputs or rows")
    return page[start:page.index("</table>", start)]


def test_report_shows_each_content_pair_side_by_side(two_inputs):
    page = render_report(two_inputs["build"])
    assert ">Collections<" in page and ">Duplicates<" in page
    blocks = pair_blocks(page)
    assert len(blocks) == len(two_inputs["by_content"])
    inputs = {i["index"]: i["root"] for i in two_inputs["card"]["inputs"]}
    for d, block in zip(two_inputs["by_content"], blocks):
        assert f'alt="kept {d["kept"]}"' in block and f'alt="dropped {d["dropped"]}"' in block
        sources = re.findall(r'<img src="([^"]*)" alt="(kept|dropped) ', block)
        assert [role for _, role in sources] == ["kept", "dropped"]
        assert all(src.startswith("data:image/jpeg;base64,") for src, _ in sources)
        assert f"similarity {d['evidence']['similarity']:.4f}" in block
        assert f"from input {d['kept_input']}: {inputs[d['kept_input']]}" in block
        assert f"from input {d['input']}: {inputs[d['input']]}" in block
    table = id_table(page)
    for d in two_inputs["by_id"]:
        assert f"<td>{d['dropped']}</td><td>0: {inputs[0]}</td><td>1: {inputs[1]}</td>" in table
    collections = page[page.index('<section id="collections"'):page.index("</section>", page.index('<section id="collections"'))]
    counts = two_inputs["stats"]["tables"]["collections"]
    row = "".join(f'<td class="n">{counts.loc["isic2019", c]}</td>' for c in counts.columns)
    assert f"<tr><td>isic2019</td>{row}</tr>" in collections
    isic = two_inputs["card"]["inputs"][1]
    assert (f'<tr><td class="n">1</td><td>{isic["root"]}</td><td>isic2019</td><td>isic2019</td>'
            f'<td class="n">{isic["rows"]}</td><td class="n">{counts.loc["isic2019", "total"]}</td><td>there</td></tr>') in collections
    assert not re.search(r"\b(?:src|href)=\"(?!data:|#)", page) and "http" not in page.lower()


def test_report_caps_the_pairs_shown(two_inputs, monkeypatch):
    monkeypatch.setattr(collections_report, "MAX_PAIRS", 1)
    page = render_report(two_inputs["build"])
    assert len(pair_blocks(page)) == 1
    assert f"and {len(two_inputs['by_content']) - 1} more, listed in dataset.json" in page


def test_report_when_the_isic_input_is_gone(two_inputs, tmp_path):
    isic = two_inputs["root"] / "isic"
    away = tmp_path / "isic-away"
    shutil.move(isic, away)
    try:
        result = cli("report", two_inputs["build"], "--out", tmp_path / "r.html")
        assert result.exit_code == 0, result.output
    finally:
        shutil.move(away, isic)
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    blocks = pair_blocks(page)
    assert len(blocks) == len(two_inputs["by_content"])
    gone = f"input 1 is gone: {two_inputs['card']['inputs'][1]['root']} no longer exists"
    for d, block in zip(two_inputs["by_content"], blocks):
        assert f'alt="kept {d["kept"]}"' in block  # from the shards, wherever it came from
        if d["input"] == 1:
            assert gone in block and f'alt="dropped {d["dropped"]}"' not in block
        else:
            assert f'alt="dropped {d["dropped"]}"' in block
    assert any(d["input"] == 1 for d in two_inputs["by_content"])
    assert "<td>gone</td>" in page


def test_a_table_without_collections_is_all_ham10000():
    records = pd.DataFrame({"image_id": ["a", "b", "c"], "dx": ["nv", "nv", "mel"], "split": ["train", "val", "train"]})
    tables = tables_from_records(records, HAM10000_CLASSES)
    assert tables["collections"].index.tolist() == ["ham10000", "total"]
    assert tables["collections"].loc["ham10000", ["mel", "nv", "total"]].tolist() == [1, 2, 3]
    assert tables["collection_splits"].loc["ham10000", ["train", "val", "total"]].tolist() == [2, 1, 3]


# ------------------------------------------------------------------ raw ISIC folders

ISIC_LABELS = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")


def raw_isic2019(root: Path) -> Path:
    """A hand-made ISIC 2019 Task 1 folder: every label, UNK three times, one _downsampled name."""
    images = root / "ISIC_2019_Training_Input"
    images.mkdir(parents=True)
    labels = ["NV"] * 6 + ["MEL"] * 4 + ["BCC"] * 3 + ["AK", "BKL", "BKL", "DF", "VASC", "SCC", "SCC"] + ["UNK"] * 3
    rng = np.random.default_rng(0)
    with open(root / "ISIC_2019_Training_GroundTruth.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("image",) + ISIC_LABELS)
        for k, label in enumerate(labels):
            name = f"ISIC_{k + 1:07d}" + ("_downsampled" if k == 2 else "")
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(images / f"{name}.jpg")
            writer.writerow([name] + ["1.0" if c == label else "0.0" for c in ISIC_LABELS])
    return root


def test_stats_on_a_raw_isic2019_folder_counts_its_classes(tmp_path):
    raw = raw_isic2019(tmp_path / "isic")
    with open(raw / "ISIC_2019_Training_GroundTruth.csv") as f:
        truth = pd.DataFrame(list(csv.DictReader(f)))
    per_label = {label: int((truth[label].astype(float) == 1).sum()) for label in ISIC_LABELS}
    result = run_stats(raw, tmp_path / "out", progress=False)
    counts = result["tables"]["class_counts"]
    assert list(counts.index) == [*ISIC2019_CLASSES, "total"]
    assert {dx: int(counts.loc[dx, "all"]) for dx in ISIC2019_CLASSES} == {dx: per_label[dx.upper()] for dx in ISIC2019_CLASSES}
    assert counts.loc["total", "all"] == len(truth) - per_label["UNK"]
    assert result["tables"]["collections"].index.tolist() == ["isic2019", "total"]
    unmapped = result["tables"]["unmapped"]
    assert unmapped["label"].tolist() == ["UNK"] and unmapped["rows"].tolist() == [per_label["UNK"]]
    text = result["text"]
    assert f"(isic2019 layout, collection isic2019): {len(truth)} table rows" in text
    assert "class set: isic2019" in text and f"{per_label['UNK']} rows no class took" in text
    assert (tmp_path / "out" / "collections.png").read_bytes().startswith(PNG_SIGNATURE)


def test_stats_on_a_raw_archive_export_matches_its_summary(tmp_path):
    from hamdata.synth.isic import write_isic_archive

    from hamdata.synth.isic_tables import ARCHIVE_TAXONOMY

    summary = write_isic_archive(tmp_path / "arc", images=30, seed=5, size=(64, 48), workers=1, progress=False)
    result = run_stats(tmp_path / "arc", tmp_path / "out", progress=False)
    # a raw export is read as a build reads it: its non-dermoscopic rows are left out, and counted apart
    table = pd.read_csv(tmp_path / "arc" / "metadata.csv", dtype=str, keep_default_na=False)
    other = table[table["image_type"] != "dermoscopic"]
    assert len(other) > 0  # the synthetic export has some clinical close-ups
    other_classes = [ARCHIVE_TAXONOMY[d][2] for d in other["diagnosis_3"]]
    want = {dx: n - other_classes.count(dx) for dx, n in summary["counts"].items()}
    counts = result["tables"]["class_counts"]
    assert {dx: int(counts.loc[dx, "all"]) for dx in ISIC2019_CLASSES} == want
    untaken = result["tables"]["unmapped"]["rows"].sum() if "unmapped" in result["tables"] else 0
    assert untaken == summary["unmapped"] - other_classes.count(None)
    assert result["tables"]["left_out"]["rows"].sum() == len(other)
    assert "(isic-archive layout, collection isic-archive)" in result["text"]
    assert f"{untaken} rows no class took" in result["text"] and "image types left out" in result["text"]


@pytest.mark.parametrize("field", ["duplicates", "inputs"])
def test_a_null_list_in_the_card_reads_as_empty(two_inputs, tmp_path, field):
    """dataset.json with ``"duplicates": null`` or ``"inputs": null`` (a hand-edited card): stats and report run,
    as they did when they read the card as a dict."""
    build = tmp_path / "b"
    shutil.copytree(two_inputs["build"], build)
    card = json.loads((build / "dataset.json").read_text())
    card[field] = None
    (build / "dataset.json").write_text(json.dumps(card))
    stats = cli("stats", build, "--out", tmp_path / "stats")
    assert stats.exit_code == 0, stats.output
    report = cli("report", build, "--out", tmp_path / "r.html")
    assert report.exit_code == 0, report.output
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert ("pair" not in "".join(pair_blocks(page))) if field == "duplicates" else "Samples per collection" in page

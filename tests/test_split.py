"""Lesion-aware stratified splits, the canonical split, and the leakage audit."""

import numpy as np
import pandas as pd
import pytest

from hamdata.inputs.classes import CLASSES
from hamdata.errors import HamdataError
from hamdata.split.stratified import (
    SplitConfig, audit_leakage, canonical_path, decide_split, make_canonical, read_split_file,
    split_fractions, split_lesions,
)


def toy_metadata(n_lesions=400, seed=0):
    """Lesions of 1-6 images with a skewed class mix, like HAM10000."""
    rng = np.random.default_rng(seed)
    rows = []
    probs = np.array([3.3, 5.1, 11.0, 1.2, 11.1, 67.0, 1.4]); probs /= probs.sum()
    for lesion in range(n_lesions):
        dx = CLASSES[rng.choice(7, p=probs)]
        for _ in range(rng.choice([1, 1, 1, 2, 3, 6])):
            rows.append({"lesion_id": f"L{lesion}", "image_id": f"I{len(rows)}", "dx": dx})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def real(real_metadata_csv):
    return pd.read_csv(real_metadata_csv)


def test_real_metadata_split_is_lesion_aware_and_within_one_point(real):
    split = split_lesions(real, 0.15, 0.15, seed=7)
    df = real.assign(split=split)
    assert audit_leakage(df) == []
    fractions = split_fractions(df)
    assert list(fractions.index) == sorted(CLASSES)
    target = pd.Series({"train": 0.70, "val": 0.15, "test": 0.15})
    assert (fractions.sub(target, axis=1).abs() <= 0.01).all().all(), fractions


def test_every_row_gets_a_split_and_lesions_stay_together():
    df = toy_metadata()
    split = split_lesions(df, 0.2, 0.1, seed=1)
    assert split.notna().all() and set(split) == {"train", "val", "test"}
    assert df.assign(split=split).groupby("lesion_id")["split"].nunique().max() == 1


def test_seed_changes_split_and_same_seed_repeats():
    df = toy_metadata()
    a, b, c = (split_lesions(df, seed=s) for s in (1, 1, 2))
    assert a.equals(b)
    assert not a.equals(c)


def test_zero_test_fraction_puts_nothing_in_test():
    df = toy_metadata()
    split = split_lesions(df, val=0.2, test=0.0, seed=3)
    assert "test" not in set(split)


@pytest.mark.parametrize("val,test", [(-0.1, 0.1), (0.5, 0.5), (1.0, 0.0)])
def test_bad_fractions_are_refused(val, test):
    with pytest.raises(HamdataError, match="--val|--test"):
        SplitConfig(val=val, test=test)


def test_audit_names_leaking_lesion_and_image():
    df = pd.DataFrame({"lesion_id": ["A", "A", "B"], "image_id": ["1", "2", "2"], "split": ["train", "test", "val"]})
    problems = audit_leakage(df)
    assert any("lesion A" in p and "test, train" in p for p in problems)
    assert any("image 2" in p for p in problems)


def test_committed_canonical_split_is_reproduced_by_the_code(real):
    path = canonical_path()
    assert path is not None, "manifests/ham10000_split.csv is missing"
    committed = pd.read_csv(path, dtype=str)
    remade = make_canonical(real.astype({"lesion_id": str, "image_id": str, "dx": str}))
    assert len(committed) == 10015
    pd.testing.assert_frame_equal(committed.reset_index(drop=True), remade.astype(str).reset_index(drop=True))


def test_canonical_split_used_for_real_ids_and_fresh_for_others(real):
    subset = real.iloc[:500]
    split, record = decide_split(subset, SplitConfig())
    assert record["source"] == "canonical"
    canon = read_split_file(canonical_path()).set_index("image_id")["split"]
    assert (split.to_numpy() == canon.loc[subset["image_id"]].to_numpy()).all()
    _, record = decide_split(subset, SplitConfig(fresh=True, seed=5))
    assert record == {"source": "fresh", "val": 0.15, "test": 0.15, "seed": 5}
    _, record = decide_split(toy_metadata(), SplitConfig())
    assert record["source"] == "fresh"


def test_canonical_refused_when_labels_differ(real):
    subset = real.iloc[:50].copy()
    subset.loc[subset.index[3], "dx"] = "df" if subset["dx"].iat[3] != "df" else "nv"
    with pytest.raises(HamdataError, match="--fresh-split"):
        decide_split(subset, SplitConfig())


def test_split_manifest_file(tmp_path):
    df = toy_metadata(50)
    table = df.assign(split=split_lesions(df, seed=9))[["image_id", "split"]]
    path = tmp_path / "split.csv"
    table.to_csv(path, index=False)
    split, record = decide_split(df, SplitConfig(manifest=str(path)))
    assert record["source"] == "file" and split.tolist() == table["split"].tolist()
    table.iloc[:-1].to_csv(path, index=False)
    with pytest.raises(HamdataError, match="not in the split file"):
        decide_split(df, SplitConfig(manifest=str(path)))
    leaky = table.copy()
    first = df["lesion_id"].value_counts().index[0]  # a lesion with several images
    rows = df.index[df["lesion_id"] == first]
    leaky.loc[rows[0], "split"], leaky.loc[rows[1], "split"] = "train", "test"
    leaky.to_csv(path, index=False)
    with pytest.raises(HamdataError, match="several splits"):
        decide_split(df, SplitConfig(manifest=str(path)))
    with pytest.raises(HamdataError, match="no such file"):
        decide_split(df, SplitConfig(manifest=str(tmp_path / "nope.csv")))

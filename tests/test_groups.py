"""Groups (lesions, patients, duplicates merged) and the group-aware split with canonical images pinned."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hamdata.inputs.classes import CLASSES
from hamdata.split.groups import make_groups
from hamdata.split.stratified import SPLITS, SplitConfig, audit_leakage, canonical_path, decide_split, split_lesions


def table(rows) -> pd.DataFrame:
    """rows: (image_id, lesion_id, patient_id, collection[, dx])"""
    return pd.DataFrame([r if len(r) == 5 else r + ("nv",) for r in rows],
                        columns=["image_id", "lesion_id", "patient_id", "collection", "dx"])


def test_lesions_patients_and_pairs_merge_into_named_groups():
    t = table([("a", "L1", "", "isic2019"), ("b", "L1", "", "isic2019"), ("c", "L2", "P1", "isic-archive"),
               ("d", "L3", "P1", "isic-archive"), ("e", "L4", "", "isic-archive"), ("f", "L1", "", "isic-archive")])
    groups = make_groups(t, pairs=[("e", "a")])
    assert groups[0] == groups[1] == groups[4]  # one lesion; e joins by content
    assert groups[2] == groups[3] != groups[0]  # one patient
    assert groups[5] != groups[0]  # lesion ids are namespaced by collection
    assert groups[0] == "isic-archive:L4"  # the smallest namespaced lesion id names the group
    assert groups[2] == "isic-archive:L2"


def test_links_of_dropped_copies_still_join_groups():
    t = table([("a", "HAM_1", "", "ham10000"), ("b", "BCN_1", "", "isic2019"), ("c", "BCN_2", "", "isic2019")])
    dropped = table([("a", "BCN_1", "", "isic2019")])  # image a again, in ISIC 2019, of lesion BCN_1 like b
    groups = make_groups(t, dropped)
    assert groups[0] == groups[1] != groups[2]
    assert make_groups(t)[0] != make_groups(t)[1]


def test_groups_of_a_ham_build_are_its_lesions_and_split_as_before():
    rng = np.random.default_rng(3)
    n = 600
    lesions = [f"HAM_{i // 2 + rng.integers(0, 2):05d}" for i in range(n)]
    dx_of = {lesion: CLASSES[rng.integers(0, len(CLASSES))] for lesion in lesions}
    t = pd.DataFrame({"image_id": [f"I{i:05d}" for i in range(n)], "lesion_id": lesions, "patient_id": "",
                      "collection": "ham10000", "dx": [dx_of[lesion] for lesion in lesions]})
    t["group"] = make_groups(t).to_numpy()
    assert (t["group"] == "ham10000:" + t["lesion_id"]).all()
    by_lesion = split_lesions(t, seed=5)
    by_group = split_lesions(t, seed=5, column="group")
    assert (by_lesion == by_group).all()


def test_pinned_groups_keep_their_split_and_the_rest_fills_the_targets():
    n = 3000
    t = pd.DataFrame({"image_id": [f"I{i:05d}" for i in range(n)], "group": [f"G{i // 3:05d}" for i in range(n)],
                      "dx": [("nv", "mel", "bkl")[(i // 3) % 3] for i in range(n)]})
    pinned = pd.Series([""] * n)
    pinned[:300] = "test"  # 100 groups pinned to test: 10% of the images, of all three classes
    split = split_lesions(t, val=0.15, test=0.15, seed=1, column="group", pinned=pinned)
    assert (split[:300] == "test").all()
    assert not audit_leakage(t.assign(lesion_id=t["group"], split=split.to_numpy()))
    fractions = split.value_counts(normalize=True)
    assert abs(fractions["val"] - 0.15) < 0.01 and abs(fractions["train"] - 0.70) < 0.01
    assert abs(fractions["test"] - 0.15) < 0.01  # the pinned images counted toward test's target


def test_canonical_images_keep_their_split_and_pull_their_group():
    canonical = pd.read_csv(canonical_path(), dtype=str)
    ham = canonical.sample(300, random_state=0)
    ham = ham[~ham["lesion_id"].duplicated()]  # one image per lesion, to pick lesions of two splits below
    other = pd.DataFrame({"image_id": [f"ISIC_9{i:06d}" for i in range(400)], "lesion_id": [f"BCN_{i:07d}" for i in range(400)],
                          "dx": ["nv"] * 300 + ["mel"] * 100, "collection": "isic2019"})
    rows = pd.concat([ham.assign(collection="ham10000")[["image_id", "lesion_id", "dx", "collection"]], other],
                     ignore_index=True)
    rows["patient_id"] = ""
    # a copy of a canonical test image under a new id, and a patient that links a train and a test lesion
    test_image = ham[ham["split"] == "test"]["image_id"].iat[0]
    train_image = ham[ham["split"] == "train"]["image_id"].iat[0]
    rows["group"] = make_groups(rows, pairs=[(test_image, "ISIC_9000000"), (test_image, train_image)]).to_numpy()
    split, record = decide_split(rows, SplitConfig(seed=4))
    split_of = dict(zip(rows["image_id"], split))
    truth = dict(zip(ham["image_id"], ham["split"]))
    assert record["source"] == "canonical+fresh" and record["pinned"] == len(ham) + 1  # the copy pulled along
    assert split_of["ISIC_9000000"] == split_of[test_image]
    moved = record["moved"]
    assert len(moved) == 1 and moved[0]["image_id"] in (test_image, train_image)
    assert moved[0]["split"] == split_of[test_image] == split_of[train_image]
    assert all(split_of[i] == s for i, s in truth.items() if i not in (test_image, train_image))
    assert not audit_leakage(rows.assign(split=split.to_numpy()))
    assert set(split) == set(SPLITS)

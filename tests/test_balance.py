"""`balance --target N`: the pure plan, and balanced-N/ written from a small real build."""

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from hamdata.image.augment import POLICY_VERSION, augment_seed, replay
from hamdata.balance import BalanceConfig, balance_build, plan_balance, spread_across_lesions
from hamdata.inputs.classes import CLASSES, label_of
from hamdata.errors import HamdataError
from hamdata.store.manifest import read_card, read_manifest
from hamdata.image.preprocess import decode_image, encode_image
from hamdata.store.shards import iter_samples
from helpers import synthetic_build

# ------------------------------------------------------------------ plan (pure)

TRAIN = {"akiec": 12, "bcc": 20, "bkl": 40, "df": 3, "mel": 45, "nv": 200, "vasc": 6}


def manifest(train=TRAIN, per_lesion=(1, 2, 3, 1, 4), heldout=5):
    """A manifest like a build's: lesions of varied sizes, plus val/test rows of every class."""
    rows, n = [], 0
    for split, counts in (("train", train), ("val", dict.fromkeys(CLASSES, heldout)), ("test", dict.fromkeys(CLASSES, heldout))):
        for dx, count in counts.items():
            made, lesion = 0, 0
            while made < count:
                size = min(per_lesion[lesion % len(per_lesion)], count - made)
                for _ in range(size):
                    rows.append({"key": f"ISIC_{n:07d}", "split": split, "dx": dx, "image_id": f"ISIC_{n:07d}",
                                 "lesion_id": f"HAM_{split}_{dx}_{lesion:04d}"})
                    n += 1
                made += size
                lesion += 1
    return pd.DataFrame(rows)


def per_class(plan):
    return Counter(s.dx for s in plan.samples)


def test_exactly_target_per_class_unique_keys():
    plan = plan_balance(manifest(), BalanceConfig(target=30))
    assert per_class(plan) == dict.fromkeys(CLASSES, 30)
    keys = [s.key for s in plan.samples]
    assert len(set(keys)) == len(keys) == 210
    assert plan.classes["nv"].summary() == {"originals": 200, "kept": 30, "copies": 0, "policy": "light"}
    assert plan.classes["df"].summary() == {"originals": 3, "kept": 3, "copies": 27, "policy": "strong"}


def test_no_val_or_test_row_is_ever_chosen():
    table = manifest()
    train_keys = set(table.loc[table["split"] == "train", "key"])
    for target in (1, 5, 30, 300):
        plan = plan_balance(table, BalanceConfig(target=target, seed=target))
        assert {s.origin for s in plan.samples} <= train_keys
        assert all(s.key == s.origin or s.key.startswith(s.origin + "_aug") for s in plan.samples)


def test_above_target_keeps_one_image_per_lesion_before_a_second():
    table = manifest()
    plan = plan_balance(table, BalanceConfig(target=30))
    lesion = dict(zip(table["key"], table["lesion_id"]))
    nv_train = table[(table["split"] == "train") & (table["dx"] == "nv")]
    kept = Counter(lesion[k] for k in plan.classes["nv"].kept)
    assert len(kept) == 30 < nv_train["lesion_id"].nunique()  # 30 different lesions, one image each
    plan = plan_balance(table, BalanceConfig(target=120))
    kept = Counter(lesion[k] for k in plan.classes["nv"].kept)
    assert set(kept) == set(nv_train["lesion_id"])  # 120 > lesions: every lesion gives one
    assert max(kept.values()) == 2  # ... and a few give a second, none a third


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=25), fraction=st.floats(0.0, 1.0), seed=st.integers(0, 2**32))
def test_spread_is_water_filling(sizes, fraction, seed):
    keys = [f"K{i}_{j}" for i, size in enumerate(sizes) for j in range(size)]
    lesions = [f"L{i}" for i, size in enumerate(sizes) for _ in range(size)]
    n = round(fraction * len(keys))
    chosen = spread_across_lesions(keys, lesions, n, np.random.default_rng(seed))
    assert len(chosen) == len(set(chosen)) == n
    taken = Counter(key.split("_")[0][1:] for key in chosen)
    level = [taken.get(str(i), 0) for i in range(len(sizes))]
    # a lesion that still has images left is never more than one below the most-used lesion
    deepest = max(level, default=0)
    assert all(lv >= deepest - 1 for lv, size in zip(level, sizes) if lv < size)


def test_copies_round_robin_keys_and_recipes():
    plan = plan_balance(manifest(), BalanceConfig(target=100, seed=5))
    for dx, cp in plan.classes.items():
        parents = Counter(c.origin for c in cp.copies)
        if cp.copies:
            assert set(parents) == set(cp.kept)  # every original is a parent
            assert max(parents.values()) - min(parents.values()) <= 1
        for parent, count in parents.items():
            keys = sorted(c.key for c in cp.copies if c.origin == parent)
            assert keys == [f"{parent}_aug{k:04d}" for k in range(1, count + 1)]
        for copy in cp.copies:
            assert copy.recipe == {"policy": cp.policy, "version": POLICY_VERSION, "seed": augment_seed(5, copy.key)}
    assert len(plan.classes["df"].copies) == 97  # 3 parents: 33, 32, 32


@pytest.mark.parametrize("strong_below, strong", [
    (0.5, set(CLASSES) - {"nv"}),  # fewer than 50 originals for a target of 100
    (0.4, {"akiec", "bcc", "df", "vasc"}),  # bkl has exactly 40 = 0.4 x 100: not fewer, so light
    (0.41, {"akiec", "bcc", "bkl", "df", "vasc"}),
    (0.0, set()),
    (3.0, set(CLASSES)),
])
def test_policy_choice_by_strong_below(strong_below, strong):
    plan = plan_balance(manifest(), BalanceConfig(target=100, strong_below=strong_below))
    assert {dx for dx, cp in plan.classes.items() if cp.policy == "strong"} == strong
    for copy in (c for cp in plan.classes.values() for c in cp.copies):
        assert copy.recipe["policy"] == plan.classes[copy.dx].policy


def test_seed_determinism_and_input_order_independence():
    table = manifest()
    a = plan_balance(table, BalanceConfig(target=50, seed=1))
    b = plan_balance(table.sample(frac=1.0, random_state=3), BalanceConfig(target=50, seed=1))
    c = plan_balance(table, BalanceConfig(target=50, seed=2))
    assert a.samples == b.samples
    assert a.samples != c.samples
    assert set(a.classes["nv"].kept) != set(c.classes["nv"].kept)


def test_order_interleaves_classes():
    plan = plan_balance(manifest(), BalanceConfig(target=30))
    first = [s.dx for s in plan.samples[:35]]
    assert len(set(first)) >= 5  # not written class by class
    runs = sum(1 for x, y in zip(plan.samples, plan.samples[1:]) if x.dx != y.dx)
    assert runs > 100


def test_warning_names_the_figure():
    plan = plan_balance(manifest(), BalanceConfig(target=100))
    assert plan.warnings == ("df: 3 originals, 97 copies = 32.3 copies per original",)
    assert plan_balance(manifest(), BalanceConfig(target=60)).warnings == ()  # df: 19 per original


def test_class_without_train_originals_is_an_error():
    with pytest.raises(HamdataError, match="no df samples"):
        plan_balance(manifest(train={**TRAIN, "df": 0}), BalanceConfig(target=10))


@pytest.mark.parametrize("kwargs, words", [
    ({"target": 0}, "--target: expected a positive number of samples per class, got 0"),
    ({"target": -5}, "got -5"),
    ({"target": 10, "strong_below": -0.1}, "--strong-below"),
    ({"target": 10, "strong_below": float("nan")}, "--strong-below"),
    ({"target": 10, "seed": -1}, "--seed"),
])
def test_config_validation(kwargs, words):
    with pytest.raises(HamdataError) as info:
        BalanceConfig(**kwargs)
    assert words in str(info.value)


# ------------------------------------------------------------------ balanced-N from a small build


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """120 synthetic images at 64 px in one tar per split; a build of its own: balanced-30/ is written into it."""
    return synthetic_build(tmp_path_factory.mktemp("balance"), 120, 64, shard_size=500, seed=1)


@pytest.fixture(scope="module")
def balanced(build):
    summary = balance_build(build, BalanceConfig(target=30), workers=1, progress=False)
    return build / "balanced-30", summary


def samples_of(folder: Path) -> dict:
    card = read_card(folder)
    return {s.key: s for entry in card["shards"] for s in iter_samples(folder / entry["path"])}


def test_balanced_set_has_target_per_class(build, balanced):
    folder, summary = balanced
    assert summary["out"] == str(folder) and summary["samples"] == 210 and summary["workers"] == 1
    rows = read_manifest(folder)
    assert len(rows) == 210 and rows["dx"].value_counts().to_dict() == dict.fromkeys(CLASSES, 30)
    assert (rows["split"] == "train").all()
    card = read_card(folder)
    assert card["kind"] == "balanced" and card["counts"] == {"train": dict.fromkeys(CLASSES, 30)}
    assert sum(s["samples"] for s in card["shards"]) == 210
    assert all("/" not in s["path"] and s["split"] == "train" for s in card["shards"])
    build_card = read_card(build)
    assert card["train_stats"] == build_card["train_stats"]
    assert card["build"]["path"] == ".."
    info = json.loads((folder / "_info.json").read_text())  # timm's split index: its train, its build's val and test
    assert info["splits"]["train"] == {"name": "train", "num_samples": 210, "filenames": [s["path"] for s in card["shards"]],
                                       "shard_lengths": [s["samples"] for s in card["shards"]]}
    for split in ("val", "test"):
        entries = [s for s in build_card["shards"] if s["split"] == split]
        assert info["splits"][split]["filenames"] == [f"../{s['path']}" for s in entries]
        assert info["splits"][split]["num_samples"] == sum(s["samples"] for s in entries)
    assert card["plan"] == summary["classes"] and set(card["policies"]) == set(CLASSES)
    assert {d["version"] for d in card["policy_definitions"].values()} == {POLICY_VERSION}
    for dx, row in summary["classes"].items():
        assert row["kept"] + row["copies"] == 30 and row["kept"] == min(row["originals"], 30)
        assert row["originals"] == build_card["counts"]["train"][dx]


def test_verify_accepts_the_balanced_set(build, balanced):
    from hamdata.verify import verify_tree

    assert verify_tree(build, progress=False) == []


def test_verify_checks_the_balanced_sets_info_against_its_build(build, balanced, tmp_path):
    from hamdata.verify import verify_tree

    copy = tmp_path / "shards"
    shutil.copytree(build, copy)
    path = copy / "balanced-30" / "_info.json"
    info = json.loads(path.read_text())
    info["splits"]["val"]["filenames"] = ["val/val-000000.tar"]  # not by way of the set's path to its build
    path.write_text(json.dumps(info))
    assert verify_tree(copy, progress=False) == [
        f"{path}: val filenames is ['val/val-000000.tar'], dataset.json gives ['../val/val-000000.tar']"]


def test_parents_are_train_samples_and_json_provenance(build, balanced):
    folder, _ = balanced
    base = read_manifest(build).set_index("key")
    parents = samples_of(build)
    for key, sample in samples_of(folder).items():
        record = json.loads(sample.get("json"))
        origin = record["parent"] or key
        assert base.at[origin, "split"] == "train"
        assert record["split"] == "train" and sample.get("cls") == str(label_of(record["dx"])).encode()
        parent_record = json.loads(parents[origin].get("json"))
        assert record["lesion_id"] == parent_record["lesion_id"] and record["image_id"] == parent_record["image_id"]
        if record["source"] == "original":
            assert sample.members == parents[key].members  # bytes unchanged
        else:
            assert record["source"] == "augmented" and key.startswith(f"{record['parent']}_aug")
            assert record["recipe"]["version"] == POLICY_VERSION
    rows = read_manifest(folder).set_index("key")
    copies = rows[rows["source"] == "augmented"]
    assert len(copies) == 210 - sum(min(n, 30) for n in read_card(build)["counts"]["train"].values())
    assert all(json.loads(r)["policy"] in ("light", "strong") for r in copies["recipe"])
    # every row, original or copy, carries its parent's collection and group (they were once left empty)
    origin = [parent or key for key, parent in zip(rows.index, rows["parent"])]
    assert list(rows["collection"]) == list(base.loc[origin, "collection"]) and set(rows["collection"]) == {"ham10000"}
    assert list(rows["group"]) == list(base.loc[origin, "group"]) and all(g.startswith("ham10000:") for g in rows["group"])


def test_replay_reproduces_every_copy_exactly(build, balanced):
    folder, _ = balanced
    fmt, quality = read_card(build)["config"]["format"], read_card(build)["config"]["quality"]
    parents = samples_of(build)
    copies = [s for s in samples_of(folder).values() if json.loads(s.get("json"))["source"] == "augmented"]
    assert copies
    for sample in copies:
        record = json.loads(sample.get("json"))
        parent = parents[record["parent"]]
        pixels = replay(decode_image(parent.get(parent.image_ext))[0], record["recipe"])
        assert encode_image(pixels, fmt, quality) == sample.get(sample.image_ext)
        stored = decode_image(sample.get(sample.image_ext))[0].astype(int)
        assert np.abs(stored - pixels).mean() < 3  # and the stored JPEG is that image


def test_same_bytes_with_one_or_two_workers(build, balanced, tmp_path):
    folder, _ = balanced
    balance_build(build, BalanceConfig(target=30), out=tmp_path / "w2", workers=2, progress=False)
    other = tmp_path / "w2" / "balanced-30"
    card, other_card = read_card(folder), read_card(other)
    assert card["shards"] == other_card["shards"]
    for entry in card["shards"]:
        assert (folder / entry["path"]).read_bytes() == (other / entry["path"]).read_bytes()
    assert (folder / "manifest.csv").read_bytes() == (other / "manifest.csv").read_bytes()


def test_another_seed_gives_another_set(build, tmp_path):
    summary = balance_build(build, BalanceConfig(target=30, seed=7), out=tmp_path, workers=1, progress=False)
    assert summary["samples"] == 210
    assert (tmp_path / "balanced-30" / "manifest.csv").read_bytes() != (build / "balanced-30" / "manifest.csv").read_bytes()


def test_existing_set_needs_overwrite(build, balanced, tmp_path):
    with pytest.raises(HamdataError, match="already exists.*--overwrite"):
        balance_build(build, BalanceConfig(target=30), workers=1, progress=False)
    out = tmp_path / "copy"
    balance_build(build, BalanceConfig(target=12), out=out, workers=1, progress=False)
    (out / "balanced-12" / "stray.txt").write_text("x")
    balance_build(build, BalanceConfig(target=12), out=out, workers=1, overwrite=True, progress=False)
    assert not (out / "balanced-12" / "stray.txt").exists()
    assert [p.name for p in out.iterdir()] == ["balanced-12"]  # no temporary folder left behind


def test_no_build_is_an_error(tmp_path):
    with pytest.raises(HamdataError, match="not a hamdata build"):
        balance_build(tmp_path, BalanceConfig(target=10), progress=False)


def test_build_without_train_split_is_an_error(build, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    shutil.copy(build / "dataset.json", fake)
    rows = read_manifest(build)
    rows[rows["split"] != "train"].to_csv(fake / "manifest.csv", index=False)
    with pytest.raises(HamdataError, match="has no train split"):
        balance_build(fake, BalanceConfig(target=10), progress=False)
    assert not (fake / "balanced-10").exists()


def test_balanced_set_is_not_a_build(balanced):
    folder, _ = balanced
    with pytest.raises(HamdataError, match="expects a build"):
        balance_build(folder, BalanceConfig(target=10), progress=False)


def test_cli_target_zero_is_one_line_exit_2(build):
    from cli import main

    result = CliRunner().invoke(main, ["balance", "--target", "0", "--shards", str(build)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == ["error: --target: expected a positive number of samples per class, got 0"]


def test_cli_writes_summary(build, tmp_path):
    from cli import main

    result = CliRunner().invoke(main, ["balance", "--target", "20", "--shards", str(build), "--out", str(tmp_path), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert f"wrote 140 samples (20 per class) to {tmp_path / 'balanced-20'}" in result.output
    assert (tmp_path / "balanced-20" / "dataset.json").is_file()

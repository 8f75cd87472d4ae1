"""Phase 6 pieces on plain arrays: metadata encoding, temperature scaling, ECE, lesion voting, greedy selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hamdata.errors import HamdataError
from trainers.calibration import (apply_temperature, calibration_summary, expected_calibration_error, fit_temperature,
                                  lesion_mean, nll)
from trainers.ensemble import greedy_select, soft_vote
from trainers.fusion import FusionNet, MetadataEncoding, drop_metadata

RECORDS = [{"age": 40, "sex": "male", "localization": "back"}, {"age": 60, "sex": "female", "localization": "face"},
           {"age": None, "sex": "unknown", "localization": "Back "}]


# ------------------------------------------------------------------ metadata encoding


def test_encoding_fits_train_values_and_scales_age_with_train_statistics():
    enc = MetadataEncoding.fit(RECORDS)
    # sites on the one vocabulary: HAM10000 "back" is "posterior torso", "face" is "head/neck"
    assert enc.sexes == ("female", "male", "unknown") and enc.sites == ("head/neck", "posterior torso", "unknown")
    assert enc.age_mean == 50 and enc.age_std == 10  # population std of 40 and 60; the missing age is left out
    v = enc.encode(70, "female", "face")
    assert v.dtype == np.float32 and v.shape == (2 + 3 + 3,)
    assert v[0] == pytest.approx(2.0) and v[1] == 0
    assert v[2:5].tolist() == [1, 0, 0] and v[5:].tolist() == [1, 0, 0]
    # the ISIC words for the same site, and a format 2 record's own site, encode alike
    assert np.array_equal(enc.encode(70, "female", "head/neck"), v)
    assert np.array_equal(enc.encode_record({"age": 70, "sex": "female", "localization": "x", "site": "head/neck"}), v)


def test_an_encoding_stored_before_sites_keeps_reading_localization():
    old = {"age_mean": 50.0, "age_std": 10.0, "sexes": ["male", "unknown"], "sites": ["back", "unknown"]}
    enc = MetadataEncoding.from_dict(old)
    assert enc.site_field == "localization"
    assert enc.encode(50, "male", "back")[4:].tolist() == [1, 0]
    assert enc.unseen("male", "posterior torso") == ["site 'posterior torso'"]


def test_missing_and_unseen_values_read_as_unknown():
    enc = MetadataEncoding.fit(RECORDS)
    missing = enc.encode(None, None, float("nan"))
    assert missing[:2].tolist() == [0, 1]
    assert missing[2 + enc.sexes.index("unknown")] == 1 and missing[5 + enc.sites.index("unknown")] == 1
    assert np.array_equal(enc.encode("not a number", "other", "mars"), missing)
    assert enc.unseen("male", "mars") == ["site 'mars'"]
    assert enc.unseen("male", "BACK") == []


def test_encoding_round_trips_through_a_dict():
    enc = MetadataEncoding.fit(RECORDS)
    again = MetadataEncoding.from_dict(enc.to_dict())
    assert again == enc
    assert np.array_equal(again.encode(33, "male", "back"), enc.encode(33, "male", "back"))


def test_a_build_without_metadata_is_refused():
    with pytest.raises(HamdataError, match="no metadata.*--no-metadata"):
        MetadataEncoding.fit([{"age": None, "sex": "unknown", "localization": None}] * 5)


def test_metadata_dropout_replaces_rows_and_keeps_the_input():
    enc = MetadataEncoding.fit(RECORDS)
    vectors = np.stack([enc.encode_record(r) for r in RECORDS * 100])
    before = vectors.copy()
    dropped = drop_metadata(vectors, enc.missing(), 0.25, np.random.default_rng(0))
    assert np.array_equal(vectors, before)
    gone = (dropped == enc.missing()).all(1) & ~(before == enc.missing()).all(1)
    assert 0.15 < gone.mean() < 0.35
    assert np.array_equal(drop_metadata(vectors, enc.missing(), 0.0, np.random.default_rng(0)), vectors)
    assert (drop_metadata(vectors, enc.missing(), 1.0, np.random.default_rng(0)) == enc.missing()).all()


def test_fusion_net_reads_missing_metadata_as_the_missing_vector():
    enc = MetadataEncoding.fit(RECORDS)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    torch.manual_seed(0)
    model = FusionNet(backbone, 5, enc.missing(), num_classes=7).eval()
    x = torch.randn(3, 3, 4, 4)
    meta = torch.from_numpy(np.stack([enc.encode_record(r) for r in RECORDS]))
    out = model(x, meta)
    assert out.shape == (3, 7)
    missing = torch.from_numpy(np.stack([enc.missing()] * 3))
    assert torch.allclose(model(x), model(x, missing))
    assert not torch.allclose(model(x), out)  # the metadata reaches the classifier


# ------------------------------------------------------------------ calibration


def overconfident(n=4000, seed=0):
    """A model right 70% of the time that always says 99%."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, n)
    predicted = np.where(rng.random(n) < 0.7, labels, (labels + rng.integers(1, 7, n)) % 7)
    probs = np.full((n, 7), 0.01 / 6)
    probs[np.arange(n), predicted] = 0.99
    return probs, labels


def test_temperature_scaling_lowers_nll_and_ece_of_an_overconfident_model():
    probs, labels = overconfident()
    t = fit_temperature(probs, labels)
    assert t > 1.5
    summary = calibration_summary(probs, labels, t)
    assert summary["val_nll_after"] < summary["val_nll_before"] - 0.5
    assert summary["val_ece_before"] == pytest.approx(0.29, abs=0.02)
    assert summary["val_ece_after"] < 0.05
    scaled = apply_temperature(probs, t)
    assert np.array_equal(scaled.argmax(1), probs.argmax(1))
    assert np.allclose(scaled.sum(1), 1)
    # after scaling the top class says about 70%, what the model achieves
    assert scaled.max(1).mean() == pytest.approx(0.7, abs=0.03)


def test_temperature_one_is_identity_and_nll_matches_its_definition():
    probs, labels = overconfident(50)
    assert np.array_equal(apply_temperature(probs, 1.0), probs)
    by_hand = -np.mean([math.log(probs[i, labels[i]]) for i in range(50)])
    assert nll(probs, labels) == pytest.approx(by_hand)


def test_ece_by_hand():
    probs = np.array([[0.8, 0.2]] * 10)
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0)
    wrong = np.array([[0.9, 0.1]] * 4)
    assert expected_calibration_error(wrong, np.ones(4, dtype=int)) == pytest.approx(0.9)
    # two bins: 0.6 confidence all right (gap 0.4), 0.95 all wrong (gap 0.95), equal shares
    mixed = np.array([[0.6, 0.4], [0.6, 0.4], [0.95, 0.05], [0.95, 0.05]])
    assert expected_calibration_error(mixed, np.array([0, 0, 1, 1])) == pytest.approx(0.5 * 0.4 + 0.5 * 0.95)


# ------------------------------------------------------------------ voting and selection


def test_lesion_mean_gives_each_lesion_the_mean_of_its_images():
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.8], [0.5, 0.5]])
    voted = lesion_mean(probs, ["L1", "L2", "L1", "L3"])
    assert voted[0].tolist() == pytest.approx([0.6, 0.4]) and voted[2].tolist() == pytest.approx([0.6, 0.4])
    assert voted[1].tolist() == [0.0, 1.0] and voted[3].tolist() == [0.5, 0.5]


def test_greedy_selection_keeps_the_member_that_helps():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 200)
    good = np.eye(4)[labels] * 0.7 + 0.075
    noise = rng.dirichlet(np.ones(4), 200)
    result = greedy_select([noise, good], labels)
    assert result["counts"][1] >= 1 and result["counts"][0] == 0
    assert result["weights"] == [0.0, 1.0]
    assert max(result["trace"]) == pytest.approx(1.0)


def test_greedy_selection_combines_complementary_members():
    labels = np.array([0, 0, 1, 1, 2, 2])
    a = np.array([[0.8, 0.1, 0.1]] * 2 + [[0.1, 0.8, 0.1]] * 2 + [[0.4, 0.35, 0.25]] * 2)  # wrong on class 2 only
    b = np.array([[0.3, 0.3, 0.4]] * 4 + [[0.05, 0.05, 0.9]] * 2)  # right on class 2 only
    result = greedy_select([a, b], labels)
    assert result["metric"] == "macro_f1"
    assert result["counts"] == [1, 1]
    assert soft_vote([a, b], result["weights"]).argmax(1).tolist() == [0, 0, 1, 1, 2, 2]


def test_greedy_selection_of_a_two_class_set_ranks_members_by_the_partial_auc():
    """1 malignant in 50: a member whose scores rank the malignant image first but stay under 0.5 (argmax: all
    benign, macro-F1 0.49) beats one that calls it and three benign images malignant (macro-F1 0.68) but ranks a
    benign image above it: ISIC 2024 is judged by the ranking (pAUC above 80% TPR), not by argmax."""
    from sklearn.metrics import roc_curve

    labels = np.zeros(50, dtype=int)
    labels[7] = 1
    ranker = np.full(50, 0.1)
    ranker[7] = 0.3
    caller = np.full(50, 0.2)
    caller[[7, 11, 12, 13]] = [0.7, 0.8, 0.6, 0.6]
    two = [np.stack([1 - p, p], axis=1) for p in (caller, ranker)]
    result = greedy_select(two, labels)
    assert result["metric"] == "pauc_80"
    assert result["counts"] == [0, 1]
    fpr, tpr, _ = roc_curve(labels, ranker)  # perfect ranking: TPR 1 from FPR 0, the whole 0.2 above 80% TPR
    assert tpr[fpr == 0].max() == 1.0 and result["trace"][0] == pytest.approx(0.2, abs=1e-12)


def test_soft_vote_is_the_weighted_mean():
    a, b = np.array([[0.2, 0.8]]), np.array([[0.6, 0.4]])
    assert soft_vote([a, b], [1, 1])[0].tolist() == pytest.approx([0.4, 0.6])
    assert soft_vote([a, b], [3, 1])[0].tolist() == pytest.approx([0.3, 0.7])


# ------------------------------------------------------------------ class-balanced focal loss


def test_class_balanced_alpha_matches_the_formula_on_known_counts():
    from trainers.losses import class_balanced_alpha

    counts, beta = [327, 514, 1099, 115, 1113, 6705, 142], 0.9999
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    expected = [r * 7 / sum(raw) for r in raw]
    alpha = class_balanced_alpha(counts, beta)
    assert alpha == pytest.approx(expected, rel=1e-12)
    assert sum(alpha) / 7 == pytest.approx(1.0)
    assert alpha[3] > alpha[0] > alpha[5]  # df (115) weighs most, nv (6705) least
    # beta 0: every class counts as one effective sample; equal counts: equal weights
    assert class_balanced_alpha(counts, 0.0) == pytest.approx([1.0] * 7)
    assert class_balanced_alpha([50] * 7, 0.999) == pytest.approx([1.0] * 7)
    # an absent class gets 1.0 and does not count towards the mean
    w10, w30 = (1 - 0.9) / (1 - 0.9 ** 10), (1 - 0.9) / (1 - 0.9 ** 30)
    assert class_balanced_alpha([10, 0, 30], 0.9) == pytest.approx([2 * w10 / (w10 + w30), 1.0, 2 * w30 / (w10 + w30)])
    with pytest.raises(ValueError):
        class_balanced_alpha(counts, 1.0)


def test_a_reliability_diagram_with_every_bin_at_one_accuracy_is_flagged_not_drawn():
    from trainers.calibration import flat_accuracy

    assert flat_accuracy([{"count": 5, "accuracy": 1.0}, {"count": 3, "accuracy": 1.0}, {"count": 0, "accuracy": 0.0}]) == 1.0
    assert flat_accuracy([{"count": 5, "accuracy": 1.0}, {"count": 3, "accuracy": 0.5}]) is None

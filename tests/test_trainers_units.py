"""The pure pieces of the trainers: sampling arithmetic, schedules, focal loss, metrics, config."""

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score

from hamdata.inputs.classes import CLASSES, ISIC2018_COLUMNS
from hamdata.errors import HamdataError
from helpers import go_offline
from trainers import TrainConfig, recipe_config
from trainers.data import quota, repeat_factors, resample, seed_of, slot_of
from trainers.losses import FocalLoss, inverse_frequency_alpha
from trainers.loop import batches_per_rank, tta_views
from trainers.metrics import classification_metrics, isic_rows, read_isic_csv, write_isic_csv
from trainers.models import build_model
from trainers.regularize import ema_decay_at
from trainers.schedules import cosine_factor, make_scheduler

REPO = Path(__file__).resolve().parents[1]
HAM_COUNTS = {"akiec": 327, "bcc": 514, "bkl": 1099, "df": 115, "mel": 1113, "nv": 6705, "vasc": 142}


# ------------------------------------------------------------------ sampling


def test_repeat_factors_are_inverse_frequency_and_keep_the_pass_length():
    r = repeat_factors(HAM_COUNTS)
    total = sum(HAM_COUNTS.values())
    assert sum(HAM_COUNTS[dx] * r[dx] for dx in CLASSES) == pytest.approx(total)
    for dx in CLASSES:  # every class gets the same expected share of a pass
        assert HAM_COUNTS[dx] * r[dx] == pytest.approx(total / 7)
    assert r["df"] / r["nv"] == pytest.approx(6705 / 115)


def test_repeat_factors_on_balanced_and_missing_classes():
    assert set(repeat_factors({dx: 50 for dx in CLASSES}).values()) == {1.0}
    r = repeat_factors({"akiec": 10, "bcc": 30, "bkl": 0, "df": 0, "mel": 0, "nv": 0, "vasc": 0})
    assert r["bkl"] == 0 and r["akiec"] == pytest.approx(2.0) and r["bcc"] == pytest.approx(40 / 60)


def test_resample_emits_expected_copies():
    samples = [{"cls": str(i % 2).encode()} for i in range(20000)]
    out = list(resample(iter(samples), [2.5, 0.25], np.random.default_rng(0)))
    labels = np.array([int(s["cls"]) for s in out])
    assert np.sum(labels == 0) / 10000 == pytest.approx(2.5, abs=0.03)
    assert np.sum(labels == 1) / 10000 == pytest.approx(0.25, abs=0.02)
    exact = list(resample(iter(samples[:10]), [3.0, 1.0], np.random.default_rng(0)))
    assert len(exact) == 5 * 3 + 5


def test_quota_splits_batches_across_workers():
    for batches in range(0, 30):
        for workers in range(1, 6):
            parts = [quota(batches, w, workers) for w in range(workers)]
            assert sum(parts) == batches and max(parts) - min(parts) <= 1


def test_seeds_and_slots_are_stable():
    assert seed_of(1, 2, 3) == seed_of(1, 2, 3) != seed_of(1, 2, 4)
    slots = [slot_of(f"ISIC_{i:07d}", 42, 0, 4) for i in range(4000)]
    assert slots == [slot_of(f"ISIC_{i:07d}", 42, 0, 4) for i in range(4000)]
    assert min(np.bincount(slots)) > 900  # roughly even
    assert slots != [slot_of(f"ISIC_{i:07d}", 42, 1, 4) for i in range(4000)]  # reshuffled per epoch


def test_batches_per_rank():
    assert batches_per_rank(100, 1, 32, 0) == 3
    assert batches_per_rank(100, 2, 16, 0) == 3
    assert batches_per_rank(100, 1, 10, 4) == 4
    with pytest.raises(HamdataError, match="--batch-size"):
        batches_per_rank(20, 2, 16, 0)


# ------------------------------------------------------------------ schedules


def test_cosine_factor_warms_up_then_decays_to_floor():
    f = [cosine_factor(s, 100, 10, 0.01) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[100] == pytest.approx(0.01)


def test_ema_decay_warms_up():
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 10 ** 6) == 0.999


def test_warm_restarts_cycle_length_is_in_epochs():
    cfg = recipe_config("phase5", restart_epochs=2, lr=1.0, min_lr=0.0)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = make_scheduler(cfg, opt, steps_per_epoch=5)
    lrs = []
    for _ in range(20):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[9] == pytest.approx(1.0) and lrs[19] == pytest.approx(1.0)  # restart after 2 epochs of 5 steps
    assert lrs[8] < 0.05


# ------------------------------------------------------------------ focal loss


def test_focal_loss_reduces_to_cross_entropy():
    logits, target = torch.randn(16, 7), torch.randint(0, 7, (16,))
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert FocalLoss(None, gamma=0.0)(logits, target) == pytest.approx(ce.item(), rel=1e-5)
    soft = torch.nn.functional.one_hot(target, 7).float()
    assert FocalLoss([1.0] * 7, 2.0)(logits, soft) == pytest.approx(FocalLoss(None, 2.0)(logits, target).item(), rel=1e-5)


def test_focal_loss_down_weights_easy_examples_and_applies_alpha():
    easy = torch.tensor([[8.0, 0, 0, 0, 0, 0, 0]])
    hard = torch.tensor([[0.5, 0, 0, 0, 0, 0, 0]])
    zero = torch.tensor([0])
    ce = torch.nn.functional.cross_entropy
    assert FocalLoss(None, 2.0)(easy, zero) / ce(easy, zero) < FocalLoss(None, 2.0)(hard, zero) / ce(hard, zero)
    alpha = [3.0] + [1.0] * 6
    assert FocalLoss(alpha, 2.0)(hard, zero) == pytest.approx(3 * FocalLoss(None, 2.0)(hard, zero).item(), rel=1e-5)


def test_inverse_frequency_alpha():
    assert inverse_frequency_alpha([10] * 7) == pytest.approx([1.0] * 7)
    alpha = inverse_frequency_alpha([HAM_COUNTS[dx] for dx in CLASSES])
    assert np.mean(alpha) == pytest.approx(1.0)
    assert alpha[CLASSES.index("df")] / alpha[CLASSES.index("nv")] == pytest.approx(6705 / 115)
    assert inverse_frequency_alpha([5, 0, 5, 5, 5, 5, 5])[1] == 1.0


# ------------------------------------------------------------------ metrics and the ISIC CSV


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 300)
    probs = rng.dirichlet(np.ones(7), 300)
    probs[np.arange(150), labels[:150]] += 1  # half of them right
    probs /= probs.sum(1, keepdims=True)
    m = classification_metrics(labels, probs)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, probs.argmax(1)))
    assert m["macro_f1"] == pytest.approx(f1_score(labels, probs.argmax(1), average="macro"))
    assert m["accuracy"] == pytest.approx(np.mean(labels == probs.argmax(1)))
    assert all(m["per_class"][dx]["auc"] is not None for dx in CLASSES)


def test_macro_f1_is_sklearns_macro_over_the_classes_in_labels_or_predictions():
    from trainers.metrics import macro_f1

    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        labels, predicted = rng.integers(0, 7, n), rng.integers(0, 7, n)
        labels[labels == 3] = 2  # a class in neither: not averaged in
        present = np.union1d(labels, predicted)
        expected = f1_score(labels, predicted, labels=present, average="macro", zero_division=0)
        assert macro_f1(labels, predicted) == pytest.approx(expected)
    assert macro_f1(np.array([0, 0]), np.array([1, 1])) == 0.0  # sklearn: 0/0 of each class -> 0
    assert macro_f1(np.array([], dtype=int), np.array([], dtype=int)) == 0.0


def test_metrics_with_a_class_absent_from_the_split():
    labels = np.array([0, 0, 1, 1])
    probs = np.eye(7)[[0, 0, 1, 0]]
    m = classification_metrics(labels, probs)
    assert m["per_class"]["vasc"]["auc"] is None and m["per_class"]["vasc"]["support"] == 0
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)


def test_isic_columns_are_mapped_by_name(tmp_path):
    probs = np.zeros((len(CLASSES), 7))
    probs[np.arange(7), np.arange(7)] = 1.0  # row i: certainty for CLASSES[i]
    ids = [f"ISIC_{i}.jpg" for i in range(7)]
    rows = isic_rows(ids, probs)
    for i, row in enumerate(rows):
        assert row[0] == f"ISIC_{i}"
        assert row[1 + ISIC2018_COLUMNS.index(CLASSES[i].upper())] == "1.000000"
    write_isic_csv(tmp_path / "p.csv", ids, probs)
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"
    read_ids, read_probs = read_isic_csv(tmp_path / "p.csv")
    assert read_ids == [f"ISIC_{i}" for i in range(7)] and np.array_equal(read_probs, probs)


# ------------------------------------------------------------------ config, models, CLI wiring


def test_config_validation_is_one_line_errors():
    cfg = recipe_config("phase5")
    assert cfg.arch == "mobilenet_v3_large" and cfg.batch_size == 48 and cfg.epochs == 40 and cfg.focal_gamma == 2.0
    assert recipe_config("phase4").arch == "efficientnet_b0"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ({"epochs": 0}, {"lr": -1.0}, {"device": "tpu"}, {"arch": "vit"}, {"workers": -1}):
        with pytest.raises(HamdataError, match="expected"):
            recipe_config("phase5", **bad)
    with pytest.raises(HamdataError, match="unknown recipe"):
        recipe_config("phase9")
    with pytest.raises(HamdataError, match="unknown field"):
        TrainConfig.from_dict({**cfg.to_dict(), "colour": 1})


def test_every_choice_is_wired():
    """A recipe is its module plus its name in RECIPES; an arch its ARCH_LAYERS row plus its name in ARCHS."""
    from trainers.config import ARCHS, RECIPES
    from trainers.models import ARCH_LAYERS
    from trainers.recipes import recipe_doc

    assert set(ARCH_LAYERS) == set(ARCHS)
    for name in RECIPES:
        assert recipe_config(name).recipe == name and recipe_doc(name).strip()


def test_hamdata_never_imports_trainers():
    import ast

    for path in sorted((REPO / "hamdata").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # lazy imports inside functions too
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not any(n.split(".")[0] == "trainers" for n in names), f"{path.name} imports {names}"


@pytest.mark.parametrize("arch", ["mobilenet_v3_large", "efficientnet_b0", "resnet18"])
def test_models_have_a_seven_class_head(arch):
    model = build_model(arch, "none").eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_weights_from_a_file(tmp_path):
    torch.manual_seed(0)
    source = build_model("resnet18", "none").eval()
    torch.save(source.state_dict(), tmp_path / "w.pt")
    loaded = build_model("resnet18", str(tmp_path / "w.pt")).eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(source(x), loaded(x))
    with pytest.raises(HamdataError, match="does not fit efficientnet_b0"):
        build_model("efficientnet_b0", str(tmp_path / "w.pt"))
    with pytest.raises(HamdataError, match="no such file"):
        build_model("resnet18", str(tmp_path / "missing.pt"))


def test_imagenet_weights_offline_is_one_clear_line(monkeypatch):
    go_offline(monkeypatch)
    with pytest.raises(HamdataError, match="--weights none") as info:
        build_model("mobilenet_v3_large", "imagenet")
    assert "\n" not in str(info.value)


# the convolutions' gradients on the CPU where the kernel overhangs the map, and of 1x1 convolutions on maps of a few
# pixels (trainers/convgrad.py), against PyTorch's own convolution
CONV_CASES = [  # (in, out, groups, height, width, kernel, stride, padding, dilation, bias, channels_last)
    (48, 48, 48, 1, 1, 5, 1, 2, 1, False, True),  # EfficientNet-B0's last stage on 32 px crops: 1 tap of 25 sees the image
    (32, 32, 32, 2, 2, 5, 2, 2, 1, False, True),  # depthwise, stride 2 onto a 1x1 map
    (24, 24, 24, 2, 2, 3, 1, 1, 1, True, False),  # depthwise, NCHW, with a bias
    (16, 16, 16, 3, 1, 5, 1, 2, 1, False, True),  # not square: only the height fits the kernel
    (8, 8, 8, 4, 4, 3, 1, 2, 2, True, True),  # dilated: a 5-pixel reach on a 4x4 map
    (12, 12, 12, 4, 3, 7, 2, 3, 1, False, False),  # ConvNeXt's 7x7, stride 2
    (40, 40, 1, 1, 1, 3, 1, 1, 1, False, True),  # ResNet-18's layer4 on 32 px crops
    (24, 40, 1, 2, 2, 3, 2, 1, 1, True, True),  # a plain stride-2 convolution onto a 1x1 map, with a bias
    (10, 6, 1, 2, 3, 3, 1, 1, 1, False, False),  # plain, NCHW, not square
    (40, 10, 1, 1, 1, 1, 1, 0, 1, True, True),  # 1x1: a squeeze-and-excitation layer (always on a 1x1 map)
    (24, 36, 1, 2, 2, 1, 1, 0, 1, False, False),  # 1x1 on a 2x2 map, NCHW: an expansion of a late stage
    (36, 12, 1, 1, 2, 1, 1, 0, 1, False, True),  # 1x1 on a 1x2 map
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[0]}-{c[1]}g{c[2]}-{c[3]}x{c[4]}-k{c[5]}s{c[6]}p{c[7]}d{c[8]}")
def test_conv_gradients_equal_pytorchs_where_the_kernel_overhangs_the_map(case):
    from trainers.convgrad import cpu_conv_grads, pointwise_grads, weight_grad

    cin, cout, groups, height, width, kernel, stride, padding, dilation, bias, last = case
    fmt = torch.channels_last if last else torch.contiguous_format
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups=groups, bias=bias).to(memory_format=fmt)
    ours = cpu_conv_grads(torch.nn.Sequential(copy.deepcopy(plain)))[0]
    grads = []
    for conv in (plain, ours):
        x = torch.randn(6, cin, height, width, generator=torch.Generator().manual_seed(1)).to(memory_format=fmt)
        x.requires_grad_(True)
        out = conv(x)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(2)))
        grads.append([out.detach(), x.grad, conv.weight.grad] + ([conv.bias.grad] if bias else []))
        names = type(out.grad_fn).__name__
    # our backward ran (plain's is ConvolutionBackward0)
    assert names == ("_PointwiseConvBackward" if kernel == 1 else "_TapConvBackward")
    # the gradient layout contract (DDP's buckets): weight_grad and pointwise_grads give the weight's strides
    # themselves (autograd would copy any other layout into the parameter's, so conv.weight.grad cannot tell)
    x = torch.randn(6, cin, height, width).to(memory_format=fmt)
    out = plain(x)
    grad = torch.randn(out.shape).to(memory_format=fmt)
    given = (pointwise_grads(x, grad, plain.weight)[1] if kernel == 1 else
             weight_grad(x, grad, plain.weight, plain.stride, plain.padding, plain.dilation, groups))
    assert given.shape == plain.weight.shape and given.stride() == plain.weight.stride()
    for theirs, mine in zip(*grads):
        assert mine.shape == theirs.shape
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_conv_grads_keep_pytorchs_convolution_where_the_map_is_as_large_as_the_kernel_and_without_grad(monkeypatch):
    from trainers import convgrad

    conv = convgrad.cpu_conv_grads(torch.nn.Sequential(torch.nn.Conv2d(8, 8, 5, padding=2, groups=8)))[0]
    assert type(conv(torch.randn(2, 8, 5, 5, requires_grad=True)).grad_fn).__name__ == "ConvolutionBackward0"
    assert type(conv(torch.randn(2, 8, 4, 4)).grad_fn).__name__ == "_TapConvBackward"
    calls = []
    real = convgrad._TapConv.apply
    monkeypatch.setattr(convgrad._TapConv, "apply", lambda *args: calls.append(1) or real(*args))
    conv(torch.randn(2, 8, 1, 1))
    assert calls == [1]  # the counter counts
    with torch.no_grad():
        conv(torch.randn(2, 8, 1, 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(2, 8, 1, 1)).dtype == torch.bfloat16
    conv(torch.randn(8, 1, 1))  # unbatched, as nn.Conv2d takes it
    conv.weight.requires_grad_(False)
    conv(torch.randn(2, 8, 1, 1, requires_grad=True)).sum().backward()  # a frozen layer: PyTorch's input gradient
    assert calls == [1]  # none of these took the tap path
    grouped = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1, groups=2))  # neither plain nor depthwise
    assert type(convgrad.cpu_conv_grads(grouped)[0]) is torch.nn.Conv2d


def test_1x1_convolutions_take_the_matrix_products_on_maps_of_up_to_4_pixels_only():
    from trainers import convgrad

    def grad_fn(conv, height, width):
        conv = convgrad.cpu_conv_grads(torch.nn.Sequential(conv))[0]
        return type(conv(torch.randn(2, 8, height, width, requires_grad=True)).grad_fn).__name__

    assert convgrad.POINTWISE_MAX_POSITIONS == 4
    assert grad_fn(torch.nn.Conv2d(8, 4, 1), 2, 2) == "_PointwiseConvBackward"
    assert grad_fn(torch.nn.Conv2d(8, 4, 1), 4, 1) == "_PointwiseConvBackward"
    assert grad_fn(torch.nn.Conv2d(8, 4, 1), 3, 2) == "ConvolutionBackward0"  # 6 pixels: oneDNN is as fast
    assert grad_fn(torch.nn.Conv2d(8, 4, 1, stride=2), 2, 2) == "ConvolutionBackward0"  # not a product of all pixels
    assert grad_fn(torch.nn.Conv2d(8, 4, 1, padding=1), 1, 1) == "ConvolutionBackward0"
    conv = convgrad.cpu_conv_grads(torch.nn.Sequential(torch.nn.Conv2d(8, 4, 1)))[0]
    empty = torch.randn(0, 8, 2, 2, requires_grad=True)  # an empty batch, as nn.Conv2d takes it
    conv(empty).sum().backward()
    assert empty.grad.shape == empty.shape and torch.equal(conv.weight.grad, torch.zeros_like(conv.weight))


@pytest.mark.parametrize("arch", ["efficientnet_b0", "mobilenet_v3_large", "resnet18"])
def test_cpu_conv_grads_models_keep_their_state_dict_and_train_to_the_same_gradients(arch, monkeypatch):
    from trainers import convgrad

    torch.manual_seed(0)
    plain = build_model(arch, "none").to(memory_format=torch.channels_last)
    convs = sum(convgrad.covered(m) for m in plain.modules())
    ours = convgrad.cpu_conv_grads(copy.deepcopy(plain))
    assert convs >= 15 and sum(isinstance(m, convgrad.TapConv2d) for m in ours.modules()) == convs
    assert plain.state_dict().keys() == ours.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), ours.state_dict().values()))
    calls = {"_TapConv": 0, "_PointwiseConv": 0}
    for name in calls:
        real = getattr(convgrad, name).apply
        monkeypatch.setattr(getattr(convgrad, name), "apply",
                            lambda *args, name=name, real=real: calls.__setitem__(name, calls[name] + 1) or real(*args))
    # in float64, where PyTorch's and our sums of the same products differ by ~1e-16 (in float32 by its rounding,
    # which the layers before amplify in the smallest gradients)
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64).to(memory_format=torch.channels_last)
    for model in (plain.double(), ours.double()):
        torch.manual_seed(1)  # the same dropout and stochastic depth
        torch.nn.functional.cross_entropy(model(x), torch.arange(8) % 7).backward()
    assert calls["_TapConv"] > 0 and (calls["_PointwiseConv"] > 0) == (arch != "resnet18"), calls  # ResNet: no 1x1 at stride 1
    for (name, a), b in zip(plain.named_parameters(), ours.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-12, msg=name)


def test_tta_views_are_the_eight_flips_and_rotations():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    views = tta_views(x)
    assert len(views) == 8 and len({tuple(v.flatten().tolist()) for v in views}) == 8


def test_cli_import_stays_torch_free_and_lists_the_commands():
    code = "import sys, cli; assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules), 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    out = subprocess.run([sys.executable, "cli.py", "train", "--help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "phase4" in out and "phase5" in out
    bad = subprocess.run([sys.executable, "cli.py", "train", "phase9"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "phase9" in bad.stderr


# ------------------------------------------------------------------ curves.png


def test_curves_are_redrawn_after_30_seconds_and_always_at_the_end(tmp_path, monkeypatch):
    import hamdata.plots as plots

    clock = [1000.0]
    monkeypatch.setattr(plots.time, "monotonic", lambda: clock[0])
    png = tmp_path / "curves.png"
    curves = plots.Curves(png, "a run")
    history = [{"epoch": 1, "train_loss": 1.0, "lr": 1e-3, "val_macro_f1": 0.2}]
    clock[0] += 29
    curves.update(history)
    assert not png.exists()  # epochs of a second or two: no drawing after each
    clock[0] += 2
    curves.update(history)
    assert png.read_bytes().startswith(b"\x89PNG")
    drawn = png.stat().st_mtime_ns
    history.append({"epoch": 2, "train_loss": 0.5, "lr": 1e-4, "val_macro_f1": 0.4})
    clock[0] += 5
    curves.update(history)
    assert png.stat().st_mtime_ns == drawn
    png.unlink()
    curves.update(history, final=True)  # the end of a run draws whatever the time
    assert png.read_bytes().startswith(b"\x89PNG")
    png.unlink()
    curves.update(history, final=True)  # nothing new since: not drawn twice
    assert not png.exists()


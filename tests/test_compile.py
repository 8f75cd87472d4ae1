"""--compile: torch.compile of the training steps' model.

The checkpoints of a compiled run hold plain state_dict keys (no ``_orig_mod.``), so `evaluate` loads them into an
uncompiled model; the trained weights, compiled again, give the same test probabilities as that uncompiled evaluation,
within 1e-5; a compiled run resumes without --compile. Phase 4, for its EMA (updated from the compiled module's
parameters) and its best_ema.pt; ResNet-18, the smallest backbone the trainers offer.

The trainers call ``torch.compile(net)`` (inductor, the default); here that call goes through aot_eager, which
traces the same graphs (dynamo, then AOTAutograd's forward and backward) and runs them with eager kernels. What this
file checks is the trainers' side: what the compiled module trains, the EMA, the checkpoints and `evaluate` read.
Inductor's code generation is torch's to test, and it cost this test 35-60 s of CPU with inductor's cache empty (as
on every CI machine). With inductor itself this test last passed on 2026-12-05 (this CPU, gcc 12, torch 2.14.1,
channels_last weights): 34.5 s. A compiler that fails is one error line."""

from __future__ import annotations

import json

import torch

from hamdata import runfiles
from helpers import cli, one_error_line

ARGS = ["--arch", "resnet18", "--weights", "none", "--epochs", 1, "--max-steps", 3, "--image-size", 32,
        "--batch-size", 8, "--workers", 0, "--device", "cpu", "--precision", "fp32"]


def test_a_compiled_run_keeps_plain_weights_that_an_uncompiled_evaluation_reads_to_1e_5(build, tmp_path, monkeypatch):
    import hamdata
    from trainers.batches import Loader
    from trainers.metrics import read_isic_csv
    from trainers.models import build_model

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **options: real(module, **{**options, "backend": "aot_eager"}))
    run = tmp_path / "run"
    result = cli("train", "phase4", "--shards", build, *ARGS, "--out", run, "--compile")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["config"]["compile"] is True

    state = torch.load(run / runfiles.LAST, map_location="cpu", weights_only=False)
    model = build_model("resnet18", "none", 7)
    assert list(state["model"]) == list(model.state_dict())  # plain keys, in the uncompiled model's order
    ema = torch.load(run / runfiles.BEST_EMA, map_location="cpu", weights_only=False)
    assert list(ema["model"]) == list(model.state_dict())
    assert any(not torch.equal(ema["model"][k], state["model"][k]) for k in ema["model"])  # the EMA kept its own
    model.load_state_dict(state["model"])
    model.eval()

    evaluation = cli("evaluate", run / runfiles.LAST, "--device", "cpu", "--workers", 0, "--out", tmp_path / "eval")
    assert evaluation.exit_code == 0, evaluation.output
    ids, uncompiled = read_isic_csv(tmp_path / "eval" / runfiles.PREDICTIONS, hamdata.open_build(build).classes)
    row = {image_id: k for k, image_id in enumerate(ids)}

    compiled = torch.compile(model)  # aot_eager, as the run
    batch = next(iter(Loader(build, "test", image_size=32, batch_size=16, train=False)))
    with torch.no_grad():
        probs = torch.softmax(compiled(batch["images"]), dim=1).numpy()
    assert probs.shape == (16, 7)
    expected = uncompiled[[row[key] for key in batch["keys"]]]
    assert abs(probs - expected).max() < 1e-5

    resumed = cli("train", "phase4", "--resume", run, "--epochs", 2, "--no-compile")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run / "config.json").read_text())["config"]["compile"] is False
    assert len((run / runfiles.HISTORY).read_text().splitlines()) == 2


def test_a_compiler_that_fails_is_one_error_line(build, tmp_path, monkeypatch):
    real = torch.compile

    def broken(graph, inputs):
        raise RuntimeError("no working C++ compiler on this machine")

    monkeypatch.setattr(torch, "compile", lambda module, **options: real(module, backend=broken))
    result = cli("train", "phase5", "--shards", build, *ARGS, "--out", tmp_path / "run", "--compile")
    line = one_error_line(result, "--compile: torch.compile failed", "no working C++ compiler", "--no-compile")
    assert str(tmp_path / "run") in line

"""DDP on CPU: two gloo processes read disjoint samples, run the same number of batches, and only rank 0 writes."""

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hamdata.inputs.classes import CLASSES

REPO = Path(__file__).resolve().parents[1]


def _loader_worker(rank: int, world: int, build: str, init_file: str, out: str) -> None:
    """One rank: read one training epoch and the whole val split, as the loop does."""
    from trainers.data import StreamSpec, make_loader, open_build, repeat_factors, split_shards
    from trainers.loop import batches_per_rank

    # As under torchrun: one thread per rank, and loader workers forked (a spawned rank would spawn them too).
    torch.set_num_threads(1)
    multiprocessing.set_start_method("fork", force=True)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        card = open_build(Path(build))
        train, n_train = split_shards(card, "train")
        factors = repeat_factors(dict(card.counts["train"]))
        batches = batches_per_rank(n_train, world, 4, 0)
        spec = StreamSpec(train, "train", 32, 4, 5, 0, dist.get_rank(), world, batches, tuple(factors[dx] for dx in CLASSES))
        train_keys = [b["keys"] for b in make_loader(spec, 2)]
        val, _ = split_shards(card, "val")
        spec = StreamSpec(val, "eval", 32, 4, 5, 0, dist.get_rank(), world)
        val_ids = [i for b in make_loader(spec, 1) for i in b["image_ids"]]
        counts = [None] * world
        dist.all_gather_object(counts, len(train_keys))  # the collective works with these ranks
        Path(out, f"rank{rank}.json").write_text(json.dumps({"train": train_keys, "val": val_ids, "batches": counts}))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_read_disjoint_samples_and_the_same_number_of_batches(build, tmp_path):
    mp.spawn(_loader_worker, args=(2, str(build), str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(ranks[0]["train"]) == len(ranks[1]["train"]) > 0
    assert ranks[0]["batches"] == ranks[1]["batches"]
    keys = [{k for batch in r["train"] for k in batch} for r in ranks]
    assert not keys[0] & keys[1]
    val = ranks[0]["val"] + ranks[1]["val"]
    card = json.loads((build / "dataset.json").read_text())
    assert len(val) == len(set(val)) == sum(card["counts"]["val"].values())


def test_torchrun_two_processes_only_rank0_writes(build, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "cli.py", "train", "phase5",
           "--shards", str(build), "--out", str(out), "--weights", "none", "--epochs", "2", "--max-steps", "2",
           "--image-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # the parameters take the batches' channels_last layout before the DDP wrap: no gradient copied per step
    assert "Grad strides do not match bucket view strides" not in done.stderr
    assert done.stdout.count("epoch 1/2") == 1 and done.stdout.count("test macro-F1") == 1, done.stdout
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]  # one writer: no doubled lines
    assert json.loads(lines[0])["steps"] == 2
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    card = json.loads((build / "dataset.json").read_text())
    rows = (out / "predictions_isic2018.csv").read_text().splitlines()[1:]
    assert len(rows) == sum(card["counts"]["test"].values())
    assert not list(out.glob(".*tmp*"))
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2

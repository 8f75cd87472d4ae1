"""Processes and devices: the DDP process group that torchrun sets up, the device of each rank, and the few
collective steps a run needs (gather, broadcast, barrier), each a no-op for a single process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from hamdata.errors import HamdataError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the process group torchrun set up (WORLD_SIZE > 1); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not torch_dist.is_initialized():
        cuda = device != "cpu" and torch.cuda.is_available()
        torch_dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(torch_dist.get_rank(), torch_dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, dist: Dist) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise HamdataError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu or auto")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(dist.local_rank)
    torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels once
    return torch.device("cuda", dist.local_rank)


def gather(obj, dist: Dist) -> list:
    if dist.world == 1:
        return [obj]
    out = [None] * dist.world
    torch_dist.all_gather_object(out, obj)
    return out


def broadcast(obj, dist: Dist):
    if dist.world == 1:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(dist: Dist) -> None:
    if dist.world > 1:
        torch_dist.barrier()

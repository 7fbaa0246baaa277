"""Data-parallel training (DDP) under torchrun: one process per device, gloo on CPU, NCCL on CUDA.

`tuneline stage train` relaunches itself under `python -m torch.distributed.run` when `train.processes` (or, when
that is null, the number of CUDA devices) is above one; each process then trains on its share of the batches and
rank 0 alone writes the model, the metrics and the checkpoints.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional, Sequence

import torch

UNDER_TORCHRUN = "LOCAL_RANK"  # torchrun sets it for every process it starts


def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return rank_and_world()[0] == 0


def init(device: torch.device) -> torch.device:
    """Join the process group when several processes run; returns this process's device."""
    _, world = rank_and_world()
    if world == 1:
        return device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(batches: list, rank: int, world: int) -> list:
    """Every process gets the same number of batches (DDP needs it), interleaved so lengths stay mixed."""
    usable = len(batches) // world * world
    return batches[rank:usable:world]


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP over the parameters that train now: call again after (un)freezing, as DDP fixes its set on creation."""
    if rank_and_world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def wanted_processes(processes: Optional[int]) -> int:
    if processes is not None:
        return processes
    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def relaunch_under_torchrun(processes: Optional[int], argv: Sequence[str]) -> Optional[int]:
    """Run this command again under torchrun with N processes; None when one process is enough or we already are one."""
    n = wanted_processes(processes)
    if n <= 1 or UNDER_TORCHRUN in os.environ:
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "tasks.cli", *argv]
    return subprocess.run(cmd).returncode

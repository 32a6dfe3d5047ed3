"""Multi-process (torch DDP) helpers for runs started with ``torchrun``.

Launch any run command through torchrun to train on several GPUs, e.g. four GPUs of one machine::

    torchrun --standalone --nproc_per_node 4 -m taskeval.cli.main segment --methods ir,vis,average \\
        --data msrs --protocol paper --out runs/seg-msrs

Every process runs the same command. Process 0 creates the run directory and fuses (the others then
find the cache); tasks whose spec says ``distributed`` (segmentation) train on every process (the
protocol's ``batch`` is the global batch, split evenly; BatchNorm layers become SyncBatchNorm on GPUs),
other tasks train on process 0 (ultralytics runs its own DDP with ``--device 0,1``), and process 0 alone
predicts, scores and writes results. Several machines need a shared file system for ``--out`` and the
fusion cache. Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from taskeval.devices import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def world_from_env() -> int:
    """The process count torchrun announces (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str | torch.device | None = "auto") -> DistInfo:
    """Join the process group that torchrun describes in the environment (no-op without it).

    Under DDP on CUDA each process takes the GPU ``LOCAL_RANK``; the backend is NCCL on CUDA, gloo on CPU.
    """
    dev = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(0, 1, dev)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), dev)


def current() -> DistInfo:
    """Rank and world size of the running process group (rank 0 of 1 without one); device unset (CPU)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size())
    return DistInfo()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def mean_across(value: torch.Tensor) -> torch.Tensor:
    """Average a scalar tensor over all processes (identity without a process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def broadcast_object(obj):
    """Process 0's ``obj`` on every process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj

"""Data-parallel runs on an existing launcher: ``accelerate launch -m vrp_bench ...`` or ``torchrun -m vrp_bench``.

The launcher starts one process per device and sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``. Every process validates the run, loads the model on its own device
(``cuda:<LOCAL_RANK>`` when the run's device is a GPU; on CPUs each process takes its share of the cores) and
answers every ``WORLD_SIZE``-th batch of each task (batch b goes to rank b mod WORLD_SIZE, so every batch holds
the same docs as in one process, and every doc is seeded by its id). The records go to rank 0 over a gloo process
group (CPU tensors, whatever the devices), which puts them back in doc order and scores, ablates and writes
the run exactly as one process would: the report is the single-process one. Every other rank ends after its
share (the library call returns None there, as lm-eval's ``simple_evaluate`` does).

A rank that fails sends its error instead of records, and rank 0 ends the run with it (exit 1) rather than
wait. A multi-node run needs only what the launcher needs (the same ``MASTER_ADDR`` / ``MASTER_PORT`` reachable
from every node, ``--num_machines`` / ``--machine_rank`` or ``torchrun --nnodes`` / ``--node_rank``); the output
folder is written by rank 0 alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from vrp_bench.api.errors import RunError

ENVIRONMENT = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


def launched() -> bool:
    """Whether a launcher started this process as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _environment_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise RunError(f"the launcher set {name}={value!r}, which is not an integer") from None


@dataclass
class ProcessGroup:
    """This process's place among the launched ones, and the collectives ``evaluator.evaluate`` needs."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @staticmethod
    def from_environment() -> ProcessGroup:
        """Join the launcher's process group (gloo: records travel as CPU tensors on any device)."""
        import torch.distributed as dist

        world = _environment_int("WORLD_SIZE", 1)
        group = ProcessGroup(
            rank=_environment_int("RANK", 0),
            world_size=world,
            local_rank=_environment_int("LOCAL_RANK", 0),
            local_world_size=_environment_int("LOCAL_WORLD_SIZE", world),
        )
        if not dist.is_initialized():
            dist.init_process_group("gloo", rank=group.rank, world_size=group.world_size)
        return group

    @property
    def main(self) -> bool:
        """Whether this is rank 0, which gathers, scores and writes."""
        return self.rank == 0

    def mine(self, batch: int) -> bool:
        """Whether this rank answers batch ``batch`` of a task."""
        return batch % self.world_size == self.rank

    def device(self, device: str | None) -> str | None:
        """The run's ``--device`` for this process: a GPU becomes this process's own (``cuda:<LOCAL_RANK>``)."""
        import torch

        wants_gpu = device in (None, "auto") and torch.cuda.is_available() or device == "cuda"
        return f"cuda:{self.local_rank}" if wants_gpu else device

    def cpu_threads(self) -> int:
        """This process's share of the machine's cores."""
        return max(1, len(os.sched_getaffinity(0)) // max(1, self.local_world_size))

    def gather(self, records: list[Any] | BaseException) -> list[Any] | None:
        """Every rank's records (or error) to rank 0, which gets them merged in doc order; None elsewhere. An
        error on any rank ends the run on rank 0 (``RunError`` naming the rank)."""
        import torch.distributed as dist

        gathered: list[Any] | None = [None] * self.world_size if self.main else None
        payload: Any = records if not isinstance(records, BaseException) else _Failure(type(records).__name__,
                                                                                       str(records))
        dist.gather_object(payload, gathered, dst=0)
        if isinstance(records, BaseException):
            raise records
        if gathered is None:
            return None
        for rank, part in enumerate(gathered):
            if isinstance(part, _Failure):
                raise RunError(f"rank {rank} of {self.world_size} failed: {part.kind}: {part.message}")
        return sorted((record for part in gathered for record in part), key=lambda record: record.doc_id)

    def close(self) -> None:
        """Leave the process group."""
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class _Failure:
    """A rank's error as it travels to rank 0."""

    kind: str
    message: str

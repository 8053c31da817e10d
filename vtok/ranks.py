"""Splitting a dataset's work across the processes of ``accelerate launch``, and merging it back.

vtok has no launcher of its own: ``accelerate launch -m vtok.cli encode ...`` (one
machine or many) starts N copies of a command, and each reads its place from the
environment the launcher sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). Work is
cut by fixed rules, so the result does not depend on how many ranks ran it:

- token shards: shard ``k`` is written by rank ``k % world`` (:func:`my_shards`);
- evaluation: contiguous blocks of whole batches (:func:`batch_block`), so every
  image meets the model in the batch it would meet in one process, and statistics
  concatenated in rank order are those of one process.

A single process (no launcher, or ``--num_processes 1``) never starts
``torch.distributed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of a launch: ``rank`` of ``world``, ``local_rank`` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank is here (a no-op for one process)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` in rank order on rank 0 (None on the others); ``[obj]`` for one process."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world if self.main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def device(self, device: str) -> str:
        """``--device`` for this rank: a bare ``cuda`` becomes this rank's GPU, ``cuda:LOCAL_RANK``."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.world > 1 else device


def current_ranks() -> Ranks:
    """This process's :class:`Ranks`, joining the launch's process group when there are several ranks.

    accelerate's ``PartialState`` picks the backend (NCCL on GPUs, gloo on CPUs) and the
    device from the launcher's environment, as the trainers do.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    from accelerate import PartialState

    from vtok.training import accelerator_available

    state = PartialState(cpu=not accelerator_available())  # without a GPU: gloo on the CPU, as the trainers do
    return Ranks(state.process_index, state.num_processes, state.local_process_index)


def my_shards(count: int, ranks: Ranks) -> list[int]:
    """The shard numbers this rank writes: ``k`` with ``k % world == rank``."""
    return [k for k in range(count) if k % ranks.world == ranks.rank]


def batch_block(count: int, batch_size: int, ranks: Ranks) -> range:
    """The item indices of this rank: a contiguous block of whole batches (the last rank may end short).

    Batches are shared out as evenly as their number allows, in rank order, so rank 0
    holds the first images and ranks concatenated give the one-process order.
    """
    batches = -(-count // batch_size)
    first, last = batches * ranks.rank // ranks.world, batches * (ranks.rank + 1) // ranks.world
    return range(min(first * batch_size, count), min(last * batch_size, count))

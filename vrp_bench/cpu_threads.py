"""How many CPU threads the model's kernels use (``--threads``).

torch's default, one thread per core, is right on a quiet machine and badly wrong on a busy one: every
operation waits for its slowest thread, and a thread that other processes keep off its core stalls them all
(the README's main command ran 150 s on 2 quiet cores and 58 minutes beside other jobs). The default here is
the idle cores: the cores this process may use (its affinity), shared among the processes of a data-parallel
run on this machine, less the load the others already put on them (the 1-minute load average), at least one;
and one for a model under ``SMALL_MODEL_PARAMETERS`` weights, whose kernels are too small to split (the tiny
zoo's 1 M-parameter models ran the README's main command at --limit 100 in 58 s on 1 thread and 61 s on 2,
measured side by side on 2 quiet cores). ``--threads N`` or ``OMP_NUM_THREADS`` set it outright.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

SMALL_MODEL_PARAMETERS = 10_000_000


def default_threads(local_processes: int = 1, load: float | None = None, parameters: int | None = None) -> int:
    """The idle cores' share of this process (module docstring); ``load``: the load average (default: now);
    ``parameters``: the model's weight count, when it is known."""
    if parameters is not None and parameters < SMALL_MODEL_PARAMETERS:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max(1, cores // max(1, local_processes))
    load = os.getloadavg()[0] if load is None and hasattr(os, "getloadavg") else (load or 0.0)
    idle = cores - load
    return max(1, min(share, int(idle / max(1, local_processes) + 0.5)))


def set_threads(threads: int | None, local_processes: int = 1, parameters: int | None = None) -> int:
    """Set torch's intra-op threads: ``threads``, else ``OMP_NUM_THREADS``, else ``default_threads``."""
    import torch

    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    chosen = threads if threads is not None else default_threads(local_processes, parameters=parameters)
    torch.set_num_threads(max(1, chosen))
    log.debug("torch uses %d CPU thread(s)", chosen)
    return chosen

"""How many threads torch uses, and how its OpenMP threads wait, on a machine others share.

Two OpenMP threads on a machine with one free core lose badly: each parallel region ends at a
barrier where the finished thread spins (libgomp's default is to spin for a while before it
sleeps) while its sibling waits to be scheduled. Measured here: the digits training at 73 s of
audio per second on one thread beside a busy neighbour, 5 on two; `asr transcribe` over the same
files 13.5 s once and 3.3 s a minute later (issue 22). So:

- the wait policy is passive (OMP_WAIT_POLICY=PASSIVE, and KMP_BLOCKTIME=0 for an Intel OpenMP
  runtime): a thread with no work sleeps at once. OpenMP reads these when the runtime loads, i.e.
  when torch is imported, so `set_wait_policy()` runs at the top of `asr.cli`, before any import
  of torch; a value the user set is kept.
- the thread count is the number of cores this process may use (its CPU affinity) that the load
  average says are free, at least one: `choose_threads()`. `--threads N` overrides it.

This module must not import torch (see above).
"""
from __future__ import annotations

import os

WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


def set_wait_policy(environ=os.environ) -> dict[str, str]:
    """Set the passive OpenMP wait policy unless the user chose one; returns what was set.

    Effective only before torch (its OpenMP runtime) is loaded in this process.
    """
    applied = {}
    for key, value in WAIT_POLICY.items():
        if key not in environ:
            environ[key] = applied[key] = value
    return applied


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def choose_threads(requested: int | None = None, cores: int | None = None, load: float | None = None) -> int:
    """The intra-op thread count: `requested` if given, else OMP_NUM_THREADS if set, else the
    usable cores minus those the 1-minute load average says are busy, at least 1.

    The load average counts the runnable processes of the whole machine; on a machine with more
    cores than this process may use, the busy ones are assumed to be among ours (the safe side).
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads: {requested} is not a thread count (use 1 or more)")
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cores, cores - int(round(load))))


def apply(requested: int | None = None) -> int:
    """Choose the thread count and set it in torch (intra-op); returns it."""
    import torch

    n = choose_threads(requested)
    torch.set_num_threads(n)
    return n

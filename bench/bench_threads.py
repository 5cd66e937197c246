"""What a busy neighbour costs `asr transcribe`, before and after the thread policy (asr/threads.py).

    python bench/bench_threads.py [--files 120] [--repeats 2]

The same transcription (N one-second FSDD clips, the default model and decoder) as a fresh
process, (a) with the machine as it is and (b) beside a CPU-bound process (`while True: pass`,
started and killed here, bounded by a timeout), in two configurations:
  before: 2 threads (torch's default here: one per core) and libgomp's default wait policy (it
          spins before sleeping); OMP_WAIT_POLICY is set to an empty value, which asr leaves alone
          and libgomp ignores;
  after:  asr's defaults: passive wait policy, threads from the affinity mask and load average.
Wall time of the whole process (torch import included). Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FSDD = Path(os.environ.get("ASR_SHARED_DATA", ROOT.parent / "shared" / "data")) / "fsdd" / "recordings"


def transcribe(paths, before: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    args = [sys.executable, "-m", "asr", "transcribe", "-q"]
    if before:
        env["OMP_WAIT_POLICY"] = ""
        args += ["--threads", "2"]
    t0 = time.perf_counter()
    subprocess.run(args + [str(p) for p in paths], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=600)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    paths = sorted(FSDD.glob("*.wav"))[: a.files]
    load = os.getloadavg()[0]
    rows = {}
    for neighbour in (False, True):
        busy = None
        if neighbour:  # a CPU-bound neighbour, killed below; `timeout` bounds it if we die first
            busy = subprocess.Popen(["timeout", "900", sys.executable, "-c", "while True: pass"])
            time.sleep(2)
        try:
            for before in (True, False):
                rows[(neighbour, before)] = min(transcribe(paths, before) for _ in range(a.repeats))
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    print(f"### Thread policy ({date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load {load:.1f} at start)\n")
    print(f"`asr transcribe` of {len(paths)} one-second FSDD clips, whole process, best of {a.repeats}.\n")
    print("| neighbour | before (2 threads, spinning waits) s | after (asr's policy) s | after vs before |")
    print("|---|---|---|---|")
    for neighbour in (False, True):
        b, n = rows[(neighbour, True)], rows[(neighbour, False)]
        print(f"| {'+ busy loop' if neighbour else 'as is'} | {b:.2f} | {n:.2f} | {b / n:.2f}x faster |")
    print(f"\nbusy loop's cost: before {rows[(True, True)] / rows[(False, True)]:.2f}x, "
          f"after {rows[(True, False)] / rows[(False, False)]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load test of `asr serve` on loopback: N concurrent clients (the `openai` package, one client
each) send real FSDD recordings, three spliced per file so that almost every file has its own
transcript and a reply handed to the wrong request shows; throughput, p50/p99 latency, the
server's RSS and thread count before and after, and whether every reply is its own file's offline
transcript (the same model in this process, one file at a time).

    python bench/bench_serve.py [--requests 2000] [--clients 8] [--workers 2] [--max-seconds 900]
                                [--max-rss-growth-mb 50] [--json out.json]
It stops after --requests or --max-seconds, whichever comes first; exit status 1 if any request
failed or got another file's transcript, or if the server's RSS grew by more than
--max-rss-growth-mb between the warm-up and the end. Prints a markdown table for BENCHMARKS.md;
--json writes the numbers (tests/test_serve.py's slow load test reads them).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.audio import load_audio  # noqa: E402
from asr.registry import load_model  # noqa: E402
from asr.transcribe import Transcriber  # noqa: E402

FSDD = Path(os.environ.get("ASR_SHARED_DATA", ROOT.parent / "shared" / "data")) / "fsdd" / "recordings"


def make_files(tmp: Path, n: int) -> list[Path]:
    """n WAV files of three random FSDD recordings each (one speaker per file), 0.2 s apart."""
    rng = np.random.default_rng(0)
    speakers = sorted({p.name.split("_")[1] for p in FSDD.glob("*.wav")})
    paths = []
    for i in range(n):
        spk = speakers[i % len(speakers)]
        parts = []
        for d in rng.integers(0, 10, 3):
            take = rng.integers(0, 50)
            parts += [load_audio(FSDD / f"{d}_{spk}_{take}.wav", 8000)[0], np.zeros(1600, np.float32)]
        p = tmp / f"f{i:03d}_{spk}.wav"
        sf.write(p, np.concatenate(parts), 8000, subtype="PCM_16")
        paths.append(p)
    return paths


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def rss_mb(pid: int) -> float:
    return int(proc_status(pid)["VmRSS"].split()[0]) / 1024


def threads(pid: int) -> int:
    return int(proc_status(pid)["Threads"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, workers: int, proc, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if json.loads(r.read())["ready"] >= workers:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready in time")


def run_clients(url: str, files: list[tuple[str, bytes]], expected: dict[str, str], total: int, clients: int,
                deadline: float, server_pid: int) -> dict:
    import openai

    lock = threading.Lock()
    issued = 0
    rss_trace: list[float] = []  # the server's RSS at each tenth of the requests: growth or a plateau
    latencies: list[float] = []
    wrong: list[tuple[str, str, str]] = []
    failed: list[tuple[str, str]] = []

    def client_loop():
        nonlocal issued
        client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=120)
        while True:
            with lock:
                if issued >= total or time.monotonic() > deadline:
                    return
                i = issued
                issued += 1
                if i % max(1, total // 10) == 0:
                    rss_trace.append(rss_mb(server_pid))
            name, data = files[i % len(files)]
            t0 = time.perf_counter()
            try:
                text = client.audio.transcriptions.create(model="digits", file=(name, data),
                                                          response_format="text").strip()
            except Exception as e:  # counted and shown, never retried: nothing may be lost
                with lock:
                    failed.append((name, f"{type(e).__name__}: {e}"))
                continue
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                if text != expected[name]:
                    wrong.append((name, expected[name], text))

    t0 = time.perf_counter()
    pool = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {"elapsed": time.perf_counter() - t0, "latencies": latencies, "wrong": wrong, "failed": failed,
            "issued": issued, "rss_trace": rss_trace}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--files", type=int, default=200, help="distinct files, sent round-robin")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--max-seconds", type=float, default=900.0, help="stop issuing requests after this long")
    # after the warm-up the 1,000-request run grew 12 MB, all in its first tenth (torch's allocator
    # settling), then stayed flat: a leak of even 25 kB a request would pass 50 MB at 2,000
    ap.add_argument("--max-rss-growth-mb", type=float, default=50.0, help="fail if the server's RSS grows more")
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_files(Path(tmp), a.files)
        tr = Transcriber(load_model("digits"))
        expected = {p.name: tr.transcribe(p).text for p in paths}
        audio_s = {p.name: sf.info(p).duration for p in paths}
        files = [(p.name, p.read_bytes()) for p in paths]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        # a waiting room for every client: the bench measures service, not 429s
        server = subprocess.Popen([sys.executable, "-m", "asr", "serve", "--port", str(port), "--workers",
                                   str(a.workers), "--queue", str(2 * a.clients), "--log-level", "warning",
                                   "--speaker-db", str(Path(tmp) / "speakers.json")], cwd=ROOT)
        try:
            wait_ready(url, a.workers, server)
            warm = run_clients(url, files, expected, a.warmup, min(a.clients, a.warmup), time.monotonic() + 300,
                               server.pid)
            rss0, threads0 = rss_mb(server.pid), threads(server.pid)
            res = run_clients(url, files, expected, a.requests, a.clients, time.monotonic() + a.max_seconds,
                              server.pid)
            rss1, threads1 = rss_mb(server.pid), threads(server.pid)
        finally:
            server.terminate()
            server.wait(60)

    lat = np.array(res["latencies"]) * 1000
    done = len(lat)
    sent_audio = sum(audio_s[files[i % len(files)][0]] for i in range(res["issued"]))
    print(f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"{time.strftime('%Y-%m-%d')}; server: {a.workers} workers, client: {a.clients} threads")
    print()
    print("| requests | clients | workers | answered | wrong text | failed | throughput | audio/s | p50 | p99 | max | "
          "server RSS before -> after | threads before -> after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {res['issued']} | {a.clients} | {a.workers} | {done} | {len(res['wrong'])} | {len(res['failed'])} | "
          f"{done / res['elapsed']:.1f} req/s | {sent_audio / res['elapsed']:.1f} s/s | "
          f"{np.percentile(lat, 50):.0f} ms "
          f"| {np.percentile(lat, 99):.0f} ms | {lat.max():.0f} ms | {rss0:.0f} -> {rss1:.0f} MB | "
          f"{threads0} -> {threads1} |")
    print()
    print(f"{len(set(expected.values()))} distinct transcripts among {len(files)} files; warm-up "
          f"{len(warm['latencies'])} requests; {res['elapsed']:.1f} s")
    print(f"server RSS at each tenth of the requests: {' '.join(f'{r:.0f}' for r in res['rss_trace'])} MB")
    for name, want, got in res["wrong"][:5]:
        print(f"WRONG {name}: expected {want!r}, got {got!r}")
    for name, msg in (warm["failed"] + res["failed"])[:5]:
        print(f"FAILED {name}: {msg}")
    grew = rss1 - rss0 > a.max_rss_growth_mb
    if grew:
        print(f"RSS grew {rss1 - rss0:.0f} MB, more than --max-rss-growth-mb {a.max_rss_growth_mb:g}")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "requests": a.requests, "issued": res["issued"], "answered": done, "wrong": len(res["wrong"]),
            "failed": len(res["failed"]) + len(warm["failed"]), "elapsed_s": res["elapsed"],
            "throughput_rps": done / res["elapsed"], "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max()), "rss_before_mb": rss0,
            "rss_after_mb": rss1, "rss_trace_mb": res["rss_trace"], "threads_before": threads0,
            "threads_after": threads1}, indent=1))
    return 1 if res["wrong"] or res["failed"] or warm["failed"] or done < res["issued"] or grew else 0


if __name__ == "__main__":
    sys.exit(main())

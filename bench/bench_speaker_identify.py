"""Speaker identification cost per clip: cold start, audio, embedding, scoring against N speakers,
and the batched path (speaker_db.Identifier) against the per-clip one, measured in the same run.

    python bench/bench_speaker_identify.py [--model speaker] [--clips 1000] [--speakers 100]

Clips: the first --clips FSDD recordings (0.2-2.3 s, 8 kHz, resampled to the model's rate on load).
The database: --speakers speakers, each enrolled from 3 other FSDD clips (their embeddings' mean,
as `asr speaker enroll` makes it); what matters here is its size, not who is in it.
- cold start: `asr speaker identify` on one clip in a fresh process (imports, model load, DB read),
  the price of one command per clip.
- per-clip path: `identify(model, db_file, [clip])` once per clip in one process: the database
  read and the model checked against it every time, an embedding batch of one.
- batched path: one Identifier over all clips: the check once, embeddings batched by length, one
  matrix product for the scores.
Times are wall-clock on --threads intra-op threads; ratios are of two paths in the same run.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asr.audio import load_audio  # noqa: E402
from asr.registry import load_model  # noqa: E402
from asr.speaker_db import Enrolled, Identifier, SpeakerDB, identify, model_name  # noqa: E402
from asr.speaker_embed import embed_arrays, model_id  # noqa: E402


def make_db(model, clips: list[Path], speakers: int, path: Path) -> None:
    sr = model.cfg.features.sample_rate
    emb = embed_arrays(model, [load_audio(p, sr)[0] for p in clips[: 3 * speakers]])
    db = SpeakerDB(path, {"name": model_name(model), "id": model_id(model)})
    for k in range(speakers):
        part = emb[3 * k: 3 * k + 3]
        db.speakers[f"spk{k:03d}"] = Enrolled(part.mean(0), 3, [str(p) for p in clips[3 * k: 3 * k + 3]])
    db.save()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="speaker")
    ap.add_argument("--audio-dir", default=str(ROOT.parent / "shared" / "data" / "fsdd" / "recordings"))
    ap.add_argument("--clips", type=int, default=1000)
    ap.add_argument("--speakers", type=int, default=100)
    ap.add_argument("--per-clip", type=int, default=100, help="clips run through the per-clip path")
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    files = sorted(Path(a.audio_dir).glob("*.wav"))
    enroll_files, clips = files[-3 * a.speakers:], files[: a.clips]
    if len(clips) < a.clips or len(enroll_files) < 3 * a.speakers or set(clips) & set(enroll_files):
        sys.exit(f"{a.audio_dir}: {len(files)} wav files, need {a.clips} + {3 * a.speakers} distinct ones")
    t0 = time.perf_counter()
    model = load_model(a.model)
    load_s = time.perf_counter() - t0
    tmp = Path(tempfile.mkdtemp())
    db_path = tmp / "speakers.json"
    make_db(model, enroll_files, a.speakers, db_path)
    sr = model.cfg.features.sample_rate
    identify(model, db_path, clips[:4])  # warm-up: first-call allocations are no clip's cost

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(a.threads)}
    cold = []
    for k in range(a.cold_runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "asr", "speaker", "identify", "--model", a.model, "--db", str(db_path),
                        str(clips[k])], check=True, capture_output=True, env=env)
        cold.append(time.perf_counter() - t0)

    sub = clips[: a.per_clip]
    t0 = time.perf_counter()
    one = [identify(model, db_path, [c])[0] for c in sub]
    per_clip_s = (time.perf_counter() - t0) / len(sub)

    t0 = time.perf_counter()
    ident = Identifier(model, db_path)
    setup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = list(ident.files(clips))
    batched_s = (time.perf_counter() - t0) / len(clips)
    agree = sum(o["speaker"] == b["speaker"] for o, b in zip(one, batched))
    diff = max(abs(o["scores"][n] - b["scores"][n]) for o, b in zip(one, batched) for n in o["scores"])

    # where a batched clip's time goes
    t0 = time.perf_counter()
    wavs = [load_audio(c, sr)[0] for c in clips]
    audio_s = (time.perf_counter() - t0) / len(clips)
    t0 = time.perf_counter()
    emb = embed_arrays(model, wavs, 32)
    embed_s = (time.perf_counter() - t0) / len(clips)
    t0 = time.perf_counter()
    ident.embeddings(emb)
    score_s = (time.perf_counter() - t0) / len(clips)
    seconds = sum(len(w) for w in wavs) / sr / len(clips)

    ms = lambda s: f"{1000 * s:.2f}"  # noqa: E731
    print(f"{date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {a.threads} thread(s); model {a.model} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, loaded in {load_s:.2f} s); "
          f"{len(clips)} FSDD clips ({seconds:.2f} s each on average) against {a.speakers} enrolled speakers\n")
    print("| path | ms per clip | vs batched |")
    print("|---|---|---|")
    print(f"| one `asr speaker identify` process per clip (cold start, median of {a.cold_runs}) | "
          f"{ms(float(np.median(cold)))} | {np.median(cold) / batched_s:.0f}x |")
    print(f"| per-clip `identify()` in one process ({len(sub)} clips) | {ms(per_clip_s)} | {per_clip_s / batched_s:.1f}x |")
    print(f"| batched `Identifier.files` ({len(clips)} clips) | {ms(batched_s)} | 1x |")
    print(f"\nbatched, per clip: audio load + resample {ms(audio_s)} ms, embedding {ms(embed_s)} ms, scoring against "
          f"{a.speakers} speakers {ms(score_s)} ms; setup once (DB read, model check, matrix) {ms(setup_s)} ms")
    print(f"same decision for {agree} of {len(sub)} clips; largest score difference {diff:.4f}")
    print(json.dumps({"cold_s": cold, "per_clip_ms": 1000 * per_clip_s, "batched_ms": 1000 * batched_s,
                      "audio_ms": 1000 * audio_s, "embed_ms": 1000 * embed_s, "score_ms": 1000 * score_s,
                      "setup_ms": 1000 * setup_s, "agree": agree, "max_score_diff": diff}))


if __name__ == "__main__":
    main()

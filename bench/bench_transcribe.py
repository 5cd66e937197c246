"""Transcription speed on CPU: real-time factor of the full pipeline (file read, resampling,
segmentation, features, model, decoding) against the bare model forward on the same audio in the
same run, for the embedded digits model (with its packaged decoder: an ensemble with a lexicon
beam search, and one of its members alone, greedy) and a DeepSpeech2-size model (5x1024 BiLSTM,
random weights); and cold start (process start to first transcript).

    python bench/bench_transcribe.py [--files N] [--ds2-seconds S]
Prints a markdown table; numbers go to BENCHMARKS.md with date and machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.audio import load_audio  # noqa: E402
from asr.config import ExperimentConfig, FeatureConfig, ModelConfig  # noqa: E402
from asr.models import CTCModel  # noqa: E402
from asr.registry import load_model  # noqa: E402
from asr.text import Vocabulary  # noqa: E402
from asr.transcribe import Transcriber  # noqa: E402

FSDD = Path(os.environ.get("ASR_SHARED_DATA", ROOT.parent / "shared" / "data")) / "fsdd" / "recordings"


def make_files(tmp: Path, n: int, seconds: float, sr: int) -> list[Path]:
    """Files of real speech: FSDD clips of one speaker strung together with short pauses."""
    clips = sorted(FSDD.glob("*_theo_*.wav"))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        parts, total = [], 0
        while total < seconds * sr:
            w, _ = load_audio(clips[rng.integers(len(clips))], sr)
            parts += [w, np.zeros(int(0.2 * sr), np.float32)]
            total += len(w) + int(0.2 * sr)
        p = tmp / f"f{i:03d}.wav"
        sf.write(p, np.concatenate(parts)[: int(seconds * sr)], sr)
        paths.append(p)
    return paths


def bare_forward(model, paths, batch_size) -> float:
    """The model alone: pre-loaded waveforms, same batches, no decoding."""
    sr = model.cfg.features.sample_rate
    waves = [torch.from_numpy(load_audio(p, sr)[0]) for p in paths]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(waves), batch_size):
            chunk = waves[i:i + batch_size]
            lens = torch.tensor([len(w) for w in chunk])
            x = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True)
            model(x, lens)
    return time.perf_counter() - t0


def pipeline(model, paths, batch_size) -> float:
    tr = Transcriber(model, batch_size=batch_size, max_segment=20.0)
    t0 = time.perf_counter()
    list(tr.transcribe_files(paths))
    return time.perf_counter() - t0


def measure(name, model, paths, batch_size, audio_s, repeats=3):
    pipeline(model, paths[:2], batch_size)  # warm-up (oneDNN kernels, allocator)
    bare = min(bare_forward(model, paths, batch_size) for _ in range(repeats))
    full = min(pipeline(model, paths, batch_size) for _ in range(repeats))
    return {"model": name, "batch": batch_size, "audio_s": audio_s, "rtf_pipeline": full / audio_s,
            "rtf_forward": bare / audio_s, "overhead": full / bare - 1}


def ds2_model() -> CTCModel:
    cfg = ExperimentConfig()
    cfg.features = FeatureConfig(sample_rate=16000, n_fft=320, win_length=320, hop_length=160, n_mels=161)
    cfg.model = ModelConfig(num_layers=5, hidden_size=1024, subsample="conv", conv_channels=32, dropout=0.0)
    torch.manual_seed(0)
    return CTCModel(cfg, Vocabulary.from_texts(["abcdefghijklmnopqrstuvwxyz '"])).eval()


def cold_start(path: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "asr", "transcribe", str(path)], check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--ds2-files", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        digits = load_model("digits")
        paths = make_files(Path(tmp), args.files, args.seconds, 8000)
        variants = [("digits (embedded)", digits)]
        if hasattr(digits, "members"):  # an ensemble: what one member alone costs, greedy
            member = digits.members[0]
            member.info, member.package_path = {}, None
            variants.append((f"one member of it alone, {member.cfg.decode.decoder}", member))
        for name, model in variants:
            for bs in (1, 8):
                rows.append(measure(name, model, paths, bs, args.files * args.seconds))
        ds2 = ds2_model()
        n_params = sum(p.numel() for p in ds2.parameters()) / 1e6
        paths16 = make_files(Path(tmp), args.ds2_files, args.seconds, 16000)
        for bs in (1, 8):
            rows.append(measure(f"DS2-size 5x1024 BiLSTM ({n_params:.0f}M)", ds2, paths16, bs,
                                args.ds2_files * args.seconds, repeats=1))
        cold = [cold_start(paths[0]) for _ in range(3)]
    print(f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}")
    print()
    print("| model | batch | audio | RTF pipeline | RTF bare forward | pipeline overhead |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['audio_s']:.0f} s | {r['rtf_pipeline']:.4f} | "
              f"{r['rtf_forward']:.4f} | {100 * r['overhead']:+.1f} % |")
    print()
    print(f"Cold start (`asr transcribe clip.wav`, process start to transcript): "
          f"median {sorted(cold)[1]:.2f} s (runs: {', '.join(f'{c:.2f}' for c in cold)})")


if __name__ == "__main__":
    main()

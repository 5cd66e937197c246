"""Inference speed on CPU: fp32 torch vs int8 torch (asr/quantize.py) vs ONNX Runtime fp32 and
int8 (asr/export.py), batch 1 and 8, one thread, all in one run; with WER on the FSDD test takes
for a model that knows digits (the shipped members), and the max |log-prob diff| against fp32
torch for each.

    python bench/bench_inference.py [--model digits] [--ds2] [--seconds 5] [--repeats 3]

--model: a CTC package or an ensemble (its first member is benchmarked); `english` once it exists
(then also give --data DIR, a data dir, for its WER). --ds2: add the DeepSpeech2 size (conv +
5x1024 BiLSTM, random weights: speed and log-prob agreement only). Prints a markdown table.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.audio import load_audio  # noqa: E402
from asr.export import OnnxCTCModel, export_onnx  # noqa: E402
from asr.metrics import corpus_wer  # noqa: E402
from asr.registry import load_model  # noqa: E402
from asr.quantize import quantize_int8  # noqa: E402
from asr.transcribe import Transcriber  # noqa: E402

FSDD = Path(os.environ.get("ASR_SHARED_DATA", ROOT.parent / "shared" / "data")) / "fsdd" / "recordings"
WORDS = "zero one two three four five six seven eight nine".split()


def test_set(data: str | None):
    if data:
        from asr.datadir import read_data_dir

        utts = read_data_dir(data)
        return [u.audio for u in utts], [u.text for u in utts]
    paths = sorted(p for p in FSDD.glob("*.wav") if int(p.stem.split("_")[2]) < 5)  # takes 0-4
    return paths, [WORDS[int(p.stem.split("_")[0])] for p in paths]


def variants(model, tmp: Path):
    yield "torch fp32", model
    yield "torch int8", quantize_int8(copy.deepcopy(model))
    yield "onnxruntime fp32", OnnxCTCModel(export_onnx(model, tmp / "fp32.onnx"), threads=1)
    yield "onnxruntime int8", OnnxCTCModel(export_onnx(model, tmp / "int8.onnx", int8=True), threads=1)


def forward_seconds(model, wav, lens, repeats: int) -> float:
    with torch.inference_mode():
        model(wav[:, : lens.min()], lens.clamp(max=lens.min()))  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(wav, lens)
            best = min(best, time.perf_counter() - t0)
    return best


def batches(sr: int, seconds: float, sizes=(1, 8)):
    """A batch of each size: speech-like lengths between 0.6 and 1.0 x `seconds`."""
    rng = np.random.default_rng(0)
    for b in sizes:
        lens = torch.from_numpy((rng.uniform(0.6, 1.0, b) * seconds * sr).astype(np.int64))
        lens[0] = int(seconds * sr)
        yield b, torch.from_numpy(rng.standard_normal((b, int(lens.max()))).astype(np.float32) * 0.1), lens


def bench_model(name, model, seconds, repeats, wer_set=None):
    rows, ref_out = [], {}
    sr = model.cfg.features.sample_rate
    with tempfile.TemporaryDirectory() as tmp:
        for variant, m in variants(model, Path(tmp)):
            for b, wav, lens in batches(sr, seconds):
                s = forward_seconds(m, wav, lens, repeats)
                with torch.inference_mode():
                    lp, n = m(wav, lens)
                if variant == "torch fp32":
                    ref_out[b] = (lp, n)
                rl, rn = ref_out[b]
                diff = max(float((lp[i, :k] - rl[i, :k]).abs().max()) for i, k in enumerate(rn.tolist()))
                rows.append({"model": name, "variant": variant, "batch": b, "rtf": s / (float(lens.sum()) / sr),
                             "diff": diff})
            if wer_set is not None:
                paths, refs = wer_set
                hyps = [t.text for t in Transcriber(m, decoder="greedy", batch_size=8).transcribe_files(paths)]
                for r in rows[-2:]:
                    r["wer"] = corpus_wer(refs, hyps).rate
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="digits")
    ap.add_argument("--data", default=None, help="data dir for WER (default: FSDD test takes 0-4)")
    ap.add_argument("--ds2", action="store_true", help="also the DeepSpeech2 size, random weights")
    ap.add_argument("--seconds", type=float, default=5.0, help="longest utterance of each batch")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(a.model, quantized=False)
    if model.arch == "ctc-ensemble":
        model = model.members[0]
    rows = bench_model(f"{a.model} (member 0)" if a.model == "digits" else a.model, model, a.seconds, a.repeats,
                       test_set(a.data) if a.data or FSDD.is_dir() else None)
    if a.ds2:
        sys.path.insert(0, str(ROOT / "bench"))
        from bench_transcribe import ds2_model

        rows += bench_model("DS2 size (random)", ds2_model(), a.seconds, a.repeats)
    print(f"### Inference backends ({date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, 1 thread, load {os.getloadavg()[0]:.1f})\n")
    print("| model | backend | batch | RTF | speed-up vs torch fp32 | max abs log-prob diff | WER % |")
    print("|---|---|---|---|---|---|---|")
    base = {(r["model"], r["batch"]): r["rtf"] for r in rows if r["variant"] == "torch fp32"}
    for r in rows:
        wer = f"{r['wer']:.2f}" if "wer" in r else "-"
        print(f"| {r['model']} | {r['variant']} | {r['batch']} | {r['rtf']:.4f} | "
              f"{base[(r['model'], r['batch'])] / r['rtf']:.2f}x | {r['diff']:.2g} | {wer} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

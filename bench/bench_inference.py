"""Inference speed on CPU: fp32 torch vs int8 torch (asr/quantize.py) vs ONNX Runtime fp32 and
int8 (asr/export.py), batch 1 and 8, one thread, all in one run; with WER on the FSDD test takes
for a model that knows digits (the shipped members), and each backend's agreement with fp32 torch.

    python bench/bench_inference.py [--model digits] [--ds2] [--seconds 5] [--rounds 5] [--torch-only]

--model: a CTC package or an ensemble (its first member is benchmarked); `english` once it exists
(then also give --data DIR, a data dir, for its WER). --ds2: add the DeepSpeech2 size (conv +
5x1024 BiLSTM, random weights: speed and log-prob agreement only). Prints a markdown table.

Timing is built for a shared machine (here 2 cores, one of them training): each round runs every
backend once on the same batch, in alternating order (ABCD, DCBA, ...), after one untimed warm-up
call each; a speed-up is the median over rounds of fp32's time / the backend's time in that round,
so load that drifts between rounds cancels. Both the process's CPU time (time.process_time: what
the work costs, nearly blind to being preempted) and wall time are reported; where they disagree
the wall clock measured the neighbours.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


def variants(model, tmp: Path, torch_only: bool):
    yield "torch fp32", model
    if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        # int8 also runs its float convolutions channels-last (asr/quantize.py); this row tells
        # that layout's share of the int8 speed-up from the quantization's
        nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
        yield "torch fp32, channels-last conv", nhwc
    yield "torch int8", quantize_int8(copy.deepcopy(model))
    if not torch_only:
        yield "onnxruntime fp32", OnnxCTCModel(export_onnx(model, tmp / "fp32.onnx"), threads=1)
        yield "onnxruntime int8", OnnxCTCModel(export_onnx(model, tmp / "int8.onnx", int8=True), threads=1)


def timed_rounds(models: dict, wav, lens, rounds: int) -> dict:
    """{name: [(wall s, CPU s) per round]}, every model once per round, the order reversed every
    other round so a load that rises or falls during a round favours no one."""
    names = list(models)
    times = {n: [] for n in names}
    with torch.inference_mode():
        for n in names:  # warm-up: allocator, oneDNN primitives, fbgemm packing caches
            models[n](wav, lens)
        for r in range(rounds):
            for n in names if r % 2 == 0 else names[::-1]:
                w0, c0 = time.perf_counter(), time.process_time()
                models[n](wav, lens)
                times[n].append((time.perf_counter() - w0, time.process_time() - c0))
    return times


def agreement(lp, n, ref_lp, ref_n) -> tuple[float, float]:
    """(max |log-prob diff| over every label of every valid frame, fraction of valid frames whose
    greedy label is the same) against the reference."""
    diff = max(float((lp[i, :k] - ref_lp[i, :k]).abs().max()) for i, k in enumerate(ref_n.tolist()))
    same = sum(int((lp[i, :k].argmax(-1) == ref_lp[i, :k].argmax(-1)).sum()) for i, k in enumerate(ref_n.tolist()))
    return diff, same / int(ref_n.sum())


def batches(sr: int, seconds: float, sizes=(1, 8)):
    """A batch of each size: speech-like lengths between 0.6 and 1.0 x `seconds`."""
    rng = np.random.default_rng(0)
    for b in sizes:
        lens = torch.from_numpy((rng.uniform(0.6, 1.0, b) * seconds * sr).astype(np.int64))
        lens[0] = int(seconds * sr)
        yield b, torch.from_numpy(rng.standard_normal((b, int(lens.max()))).astype(np.float32) * 0.1), lens


def bench_model(name, model, seconds, rounds, wer_set=None, torch_only=False):
    rows = []
    sr = model.cfg.features.sample_rate
    with tempfile.TemporaryDirectory() as tmp:
        models = dict(variants(model, Path(tmp), torch_only))
        for b, wav, lens in batches(sr, seconds):
            times = timed_rounds(models, wav, lens, rounds)
            audio = float(lens.sum()) / sr
            with torch.inference_mode():
                outs = {v: m(wav, lens) for v, m in models.items()}
            base = times["torch fp32"]
            for v, t in times.items():
                diff, same = agreement(*outs[v], *outs["torch fp32"])
                cpu_ratios = [f[1] / x[1] for f, x in zip(base, t)]
                rows.append({"model": name, "variant": v, "batch": b, "diff": diff, "same": same,
                             "cpu_rtf": statistics.median(x[1] for x in t) / audio,
                             "wall_rtf": statistics.median(x[0] for x in t) / audio,
                             "cpu_x": statistics.median(cpu_ratios), "cpu_x_range": (min(cpu_ratios), max(cpu_ratios)),
                             "wall_x": statistics.median(f[0] / x[0] for f, x in zip(base, t))})
        if wer_set is not None:
            paths, refs = wer_set
            hyps = {v: [t.text for t in Transcriber(m, decoder="greedy", batch_size=8).transcribe_files(paths)]
                    for v, m in models.items()}
            for r in rows:
                if r["model"] == name:
                    r["wer"] = corpus_wer(refs, hyps[r["variant"]]).rate
                    r["same_text"] = np.mean([a == b for a, b in zip(hyps[r["variant"]], hyps["torch fp32"])])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="digits")
    ap.add_argument("--data", default=None, help="data dir for WER (default: FSDD test takes 0-4)")
    ap.add_argument("--ds2", action="store_true", help="also the DeepSpeech2 size, random weights")
    ap.add_argument("--seconds", type=float, default=5.0, help="longest utterance of each batch")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds after the warm-up")
    ap.add_argument("--torch-only", action="store_true", help="fp32 and int8 torch only, no ONNX Runtime")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    model = load_model(a.model, quantized=False)
    if model.arch == "ctc-ensemble":
        model = model.members[0]
    rows = bench_model(f"{a.model} (member 0)" if a.model == "digits" else a.model, model, a.seconds, a.rounds,
                       test_set(a.data) if a.data or FSDD.is_dir() else None, a.torch_only)
    if a.ds2:
        sys.path.insert(0, str(ROOT / "bench"))
        from bench_transcribe import ds2_model

        rows += bench_model("DS2 size (random)", ds2_model(), a.seconds, a.rounds, torch_only=a.torch_only)
    print(f"### Inference backends ({date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, 1 thread, load {load:.1f} at start / {os.getloadavg()[0]:.1f} at end, "
          f"{a.rounds} rounds, longest utterance {a.seconds:g} s, {time.perf_counter() - t0:.0f} s in all)\n")
    print("| model | backend | batch | CPU RTF | speed-up vs torch fp32, CPU time (min-max) | wall RTF "
          "| speed-up, wall | max abs log-prob diff | same greedy label % | same transcript % | WER % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        wer = f"{r['wer']:.2f}" if "wer" in r else "-"
        same_text = f"{100 * r['same_text']:.1f}" if "same_text" in r else "-"
        lo, hi = r["cpu_x_range"]
        print(f"| {r['model']} | {r['variant']} | {r['batch']} | {r['cpu_rtf']:.4f} | "
              f"{r['cpu_x']:.2f}x ({lo:.2f}-{hi:.2f}) | {r['wall_rtf']:.4f} | {r['wall_x']:.2f}x | "
              f"{r['diff']:.2g} | {100 * r['same']:.1f} | {same_text} | {wer} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

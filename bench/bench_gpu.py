"""Training throughput of the DeepSpeech2-size model (conf/librispeech/ds2_100h.yaml: 2-D conv +
5x1024 BiLSTM, ~115 M parameters) on one GPU, toolkit loop against a naive one, self-contained.

    python bench/bench_gpu.py --device cuda [--out FILE] [--steps 30 --naive-steps 12 --utts 640]
    python bench/bench_gpu.py --device cpu  --steps 3 --naive-steps 0 --batch-seconds 40   (this machine)

The audio is synthetic (the device gets the repository only, not ../shared/data): utterances of
2-16 s (LibriSpeech's spread) of band-limited noise and tones, written as 16 kHz wav files into a
Kaldi data dir, with random letter transcripts of ~14 characters per second, so CTC has targets of
realistic length. What is measured is the cost of the computation, which does not depend on what
the audio says.

- toolkit: the trainer's step (asr/train.py) with its parts: the real data loader (AudioDataset
  + BucketBatchSampler, batch_seconds of padded audio, speed perturbation, DataLoader workers),
  packed sequences for cuDNN (RecurrentLayer's CUDA path), bf16 autocast, AdamW, gradient clipping;
- naive: fp32, random batches of the toolkit's mean batch size, and a plain bidirectional
  nn.LSTM over the padded batch (no packing; what a first version does);
- both report audio seconds per second, padding efficiency (real / padded samples of the
  batches they trained on) and peak GPU memory; on CUDA the CPU figure measured on the 2-core
  development machine (--cpu-audio-per-s, BENCHMARKS.md) gives the GPU/CPU ratio.
Writes `key: value` lines to --out (and stdout).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.config import load_config  # noqa: E402
from asr.data import AudioDataset, BucketBatchSampler, collate, make_loader  # noqa: E402
from asr.datadir import Utterance  # noqa: E402
from asr.models import CTCModel  # noqa: E402
from asr.models.rnn import RecurrentLayer  # noqa: E402

CONFIG = ROOT / "conf" / "librispeech" / "ds2_100h.yaml"
LETTERS = "abcdefghijklmnopqrstuvwxyz '"
# `bench/gpu.sh --cpu` on the 2-core development machine (1 thread, 16 s batches, exact padded
# CPU path, fp32), 2026-12-04 at load ~8 (BENCHMARKS.md, "GPU"): a pessimistic figure, so the
# GPU/CPU ratio it gives is an upper bound. ASR_CPU_AUDIO_PER_S overrides it.
CPU_AUDIO_PER_S = float(os.environ.get("ASR_CPU_AUDIO_PER_S", "0.139") or 0)


def synthetic_corpus(folder: Path, n: int, sr: int, seed: int = 0) -> list[Utterance]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    utts = []
    for i in range(n):
        seconds = float(np.clip(rng.gamma(4.0, 3.0), 2.0, 16.0))  # mean ~12 s, like train-clean-100
        t = np.arange(int(seconds * sr)) / sr
        tone = np.sin(2 * np.pi * rng.uniform(100, 400) * t * (1 + 0.1 * np.sin(2 * np.pi * 3 * t)))
        wav = (0.3 * tone + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
        path = folder / f"u{i:05d}.wav"
        sf.write(path, wav, sr)
        words = "".join(rng.choice(list(LETTERS[:26]), int(seconds * 14)))
        text = " ".join(words[j:j + 5] for j in range(0, len(words), 5))
        utts.append(Utterance(f"u{i:05d}", str(path), text, "s", seconds))
    return utts


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(model, batches, device, steps: int, amp: bool, sr: int, lr: float, clip: float, warmup: int) -> dict:
    """Trainer-style steps over `batches`; the first `warmup` are not timed (cuDNN plans, allocator)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    done, audio, real, padded, t0 = 0, 0.0, 0, 0, None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    while done < steps + warmup:
        for batch in batches():
            if done == warmup:
                sync(device)
                t0 = time.perf_counter()
            batch.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = model.compute_loss(batch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            if done >= warmup:
                audio += float(batch.wav_lens.sum()) / sr
                real += int(batch.wav_lens.sum())
                padded += batch.wav.numel()
            done += 1
            if done == steps + warmup:
                break
    sync(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"audio_per_s": audio / dt, "s_per_step": dt / steps, "padding": real / max(padded, 1), "peak_gib": peak}


def naive_padded_lstm(layer: RecurrentLayer):
    """The plain bidirectional nn.LSTM over the padded batch: its backward direction reads padding."""
    def forward(x, lengths):
        return layer.rnn(x)[0]
    return forward


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=None)
    ap.add_argument("--utts", type=int, default=640)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--naive-steps", type=int, default=12)
    ap.add_argument("--batch-seconds", type=float, default=None, help="default: the config's (1600)")
    ap.add_argument("--workers", type=int, default=None, help="default: min(8, cores)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before each loop")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1 on --device cpu)")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: --device cuda but CUDA is not available (torch "
              f"{torch.__version__}, CUDA build {torch.version.cuda}); use bench/gpu.sh --cpu here", file=sys.stderr)
        return 3
    if device.type == "cpu":
        torch.set_num_threads(a.threads or 1)
    cfg = load_config(str(CONFIG))
    tc = cfg.train
    batch_seconds = a.batch_seconds or tc.batch_seconds
    workers = a.workers if a.workers is not None else min(8, os.cpu_count() or 1)
    sr = cfg.features.sample_rate
    lines = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": torch.cuda.get_device_name() if device.type == "cuda"
             else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s))",
             "torch": torch.__version__, "model": f"{CONFIG.name}: conv + {cfg.model.num_layers}x{cfg.model.hidden_size} "
             f"Bi{cfg.model.cell.upper()}", "batch_seconds": batch_seconds, "loader_workers": workers}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        utts = synthetic_corpus(Path(tmp) / "wav", a.utts, sr)
        lines["synthetic_corpus"] = f"{len(utts)} utts, {sum(u.duration for u in utts) / 3600:.2f} h, " \
                                    f"made in {time.perf_counter() - t0:.0f} s"
        torch.manual_seed(0)
        model = CTCModel.from_training_data(cfg, utts).to(device).train()
        lines["parameters_M"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
        sampler = BucketBatchSampler([u.duration for u in utts], batch_seconds, tc.max_batch_size, seed=tc.seed)
        loader = make_loader(AudioDataset(utts, sr, cfg.augment, tc.seed), sampler, workers,
                             torch.Generator().manual_seed(0))
        toolkit = run(model, lambda: loader, device, a.steps, device.type == "cuda", sr, tc.lr, tc.clip_grad_norm, a.warmup)
        lines.update({f"toolkit_{k}": round(v, 4) for k, v in toolkit.items()})
        lines["toolkit_planned_padding"] = round(sampler.padding_efficiency(), 4)
        if a.naive_steps:
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
            torch.manual_seed(0)
            naive = CTCModel.from_training_data(cfg, utts).to(device).train()
            for m in naive.modules():
                if isinstance(m, RecurrentLayer):
                    m.forward = naive_padded_lstm(m)
            mean_batch = max(1, round(len(utts) / len(sampler)))
            plain = torch.utils.data.DataLoader(AudioDataset(utts, sr, cfg.augment, tc.seed), batch_size=mean_batch,
                                                shuffle=True, collate_fn=collate, num_workers=workers, drop_last=True,
                                                generator=torch.Generator().manual_seed(0))
            base = run(naive, lambda: plain, device, a.naive_steps, False, sr, tc.lr, tc.clip_grad_norm, a.warmup)
            lines.update({f"naive_{k}": round(v, 4) for k, v in base.items()})
            lines["naive_batch_size"] = mean_batch
            lines["toolkit_vs_naive"] = round(toolkit["audio_per_s"] / base["audio_per_s"], 2)
        if device.type == "cuda" and CPU_AUDIO_PER_S:
            lines["cpu_audio_per_s_1_thread"] = CPU_AUDIO_PER_S
            lines["gpu_vs_one_cpu_thread"] = round(toolkit["audio_per_s"] / CPU_AUDIO_PER_S, 1)
    text = "".join(f"{k}: {v}\n" for k, v in lines.items())
    print(text, end="")
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

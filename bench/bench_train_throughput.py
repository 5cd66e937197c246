"""Training throughput of the digits config (conf/digits/train.yaml, FSDD + 300 spliced digit strings).

In one run, on the same data and model:
  * toolkit: `asr.train.train` itself: length-bucketed batches of `batch_seconds` padded audio; on
    CPU the exact padded RNN path, on CUDA packed sequences (cuDNN) under bf16 autocast;
  * naive:   a hand loop with random order and fixed-size batches (the toolkit's mean batch size),
    fp32, and nn.LSTM on pack_padded_sequence on any device;
  * the loaders alone (files: BucketBatchSampler + AudioDataset; shards: ShardLoader), each with
    the config's data-loader workers, against what the toolkit's loop consumes.
Padding efficiency is real samples / padded samples of the batches delivered (after speed
perturbation), i.e. the share of the frontend and padded-RNN work spent on real audio.

    python bench/bench_train_throughput.py [--device cpu|cuda] [--steps 15] [--naive-steps 6] [--loader-seconds 8]
Prints a markdown table; numbers go to BENCHMARKS.md with date and machine.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.config import load_config  # noqa: E402
from asr.data import AudioDataset, BucketBatchSampler, collate  # noqa: E402
from asr.models import CTCModel  # noqa: E402
from asr.models.rnn import RecurrentLayer  # noqa: E402
from asr.shards import ShardLoader, write_shards  # noqa: E402
from asr.train import read_utterances, seed_everything, train  # noqa: E402


def prepare(tmp: Path, num_conn: int) -> list[str]:
    subprocess.run([sys.executable, "-m", "data_prep.fsdd", "--num-conn-train", str(num_conn), "--num-conn-dev", "0",
                    "--num-conn-test", "0", str(tmp / "data")], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return [str(tmp / "data" / "train"), str(tmp / "data" / "train_conn")]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def toolkit_loop(cfg, utts, tmp: Path, steps: int, device: str) -> dict:
    exp = tmp / "exp"
    t0 = time.perf_counter()
    train(cfg, exp, max_steps=steps, device=device)
    wall = time.perf_counter() - t0
    rows = [r for r in csv.DictReader(open(exp / "train_log.csv")) if r["split"] == "train"]
    # The log gives rates per interval of log_every steps; to add the intervals up, take each one's
    # utterance count from the trainer's own batch order (same filter, sampler and seed).
    tc = cfg.train
    skipped = {line.split("\t")[0] for line in (exp / "skipped_utts.txt").read_text().splitlines()}
    kept = [u for u in utts if u.utt_id not in skipped]
    order = BucketBatchSampler([u.duration for u in kept], tc.batch_seconds, tc.max_batch_size, seed=tc.seed)
    batches = []
    while len(batches) < steps:
        order.load_state_dict({"epoch": len(batches) // len(order), "position": 0})
        batches += order.epoch_batches()
    n_utts = audio = seconds = 0.0
    for r in rows[1:]:  # the first interval pays for start-up
        step = int(r["step"])
        u = sum(len(b) for b in batches[step - tc.log_every: step])
        dt = u / float(r["utts_per_s"])
        n_utts, audio, seconds = n_utts + u, audio + float(r["audio_s_per_s"]) * dt, seconds + dt
    return {"steps": steps, "measured": len(rows[1:]) * tc.log_every, "utts_per_s": n_utts / seconds,
            "audio_per_s": audio / seconds, "wall": wall}


def naive_loop(cfg, utts, batch_size: int, steps: int, device: str) -> dict:
    seed_everything(cfg.train.seed)
    model = CTCModel.from_training_data(cfg, utts).to(device).train()
    for m in model.modules():
        if isinstance(m, RecurrentLayer):
            m.packed = True  # nn.LSTM on pack_padded_sequence, whatever the device
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    ds = AudioDataset(utts, cfg.features.sample_rate, cfg.augment, cfg.train.seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, collate_fn=collate,
                                         num_workers=cfg.train.num_workers, drop_last=True,
                                         generator=torch.Generator().manual_seed(0),
                                         prefetch_factor=4 if cfg.train.num_workers else None)
    warmup, done, n_utts, audio, real, padded = 2, 0, 0, 0.0, 0, 0
    t0 = None
    while done < steps + warmup:
        for batch in loader:
            if done == warmup:
                sync(device)
                t0 = time.perf_counter()
            batch.to(device)
            out = model.compute_loss(batch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
            opt.step()
            if done >= warmup:
                n_utts += len(batch)
                audio += float(batch.wav_lens.sum()) / cfg.features.sample_rate
                real += int(batch.wav_lens.sum())
                padded += batch.wav.shape[0] * batch.wav.shape[1]
            done += 1
            if done == steps + warmup:
                break
    sync(device)
    dt = time.perf_counter() - t0
    return {"steps": steps, "utts_per_s": n_utts / dt, "audio_per_s": audio / dt, "padding": real / padded}


def drain(batches, sr: int, seconds: float) -> dict:
    """Pull batches for up to `seconds` (after the first, which pays for worker start-up)."""
    it = iter(batches)
    next(it)
    t0, n, audio, real, padded = time.perf_counter(), 0, 0.0, 0, 0
    for b in it:
        n += 1
        audio += float(b.wav_lens.sum()) / sr
        real += int(b.wav_lens.sum())
        padded += b.wav.shape[0] * b.wav.shape[1]
        if time.perf_counter() - t0 > seconds:
            break
    dt = time.perf_counter() - t0
    return {"batches": n, "batches_per_s": n / dt, "audio_per_s": audio / dt, "padding": real / max(padded, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=15, help="measured steps of the toolkit loop (+5 warm-up)")
    ap.add_argument("--naive-steps", type=int, default=6, help="measured steps of the naive loop (+2 warm-up)")
    ap.add_argument("--loader-seconds", type=float, default=8.0)
    ap.add_argument("--num-conn-train", type=int, default=300)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        train_dirs = prepare(tmp, args.num_conn_train)
        prep_s = time.perf_counter() - t0
        cfg = load_config(ROOT / "conf" / "digits" / "train.yaml",
                          [f"train.train_data=[{','.join(train_dirs)}]", "train.dev_data=[]", "train.log_every=5",
                           "train.checkpoint_every=1000000", "train.warmup_steps=10"])
        tc, sr = cfg.train, cfg.features.sample_rate
        utts = read_utterances(train_dirs, _Quiet(), [])
        sampler = BucketBatchSampler([u.duration for u in utts], tc.batch_seconds, tc.max_batch_size, seed=tc.seed)
        mean_batch = round(len(utts) / len(sampler.batches))

        files = torch.utils.data.DataLoader(AudioDataset(utts, sr, cfg.augment, tc.seed), batch_sampler=sampler,
                                            collate_fn=collate, num_workers=tc.num_workers,
                                            prefetch_factor=4 if tc.num_workers else None)
        load_files = drain(files, sr, args.loader_seconds)
        write_shards(utts, tmp / "shards", max_shard_bytes=2_000_000)
        shards = ShardLoader(str(tmp / "shards"), sr, cfg.augment, tc.batch_seconds, tc.max_batch_size, tc.seed,
                             num_workers=tc.num_workers)
        load_shards = drain(shards, sr, args.loader_seconds)

        ours = toolkit_loop(cfg, utts, tmp, args.steps + 5, args.device)
        naive = naive_loop(cfg, utts, mean_batch, args.naive_steps, args.device)

    machine = (f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
               f"load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, device {args.device}")
    if args.device.startswith("cuda"):
        machine += f" ({torch.cuda.get_device_name(0)})"
    print(f"Training throughput, digits config ({cfg.model.num_layers}x{cfg.model.hidden_size} BiLSTM, "
          f"{len(utts)} training utterances, {sum(u.duration for u in utts) / 60:.1f} min); {machine}; "
          f"data preparation {prep_s:.0f} s\n")
    print("| loop | batches | utts/s | audio s/s | padding efficiency | vs naive |")
    print("|---|---|---|---|---|---|")
    print(f"| toolkit: asr.train (bucketed {tc.batch_seconds:g} s, "
          f"{'exact padded' if args.device == 'cpu' else 'packed, bf16'}) | {ours['measured']} steps "
          f"| {ours['utts_per_s']:.1f} | {ours['audio_per_s']:.1f} | {load_files['padding']:.3f} "
          f"| {ours['audio_per_s'] / naive['audio_per_s']:.2f}x |")
    print(f"| naive: random order, {mean_batch} utts/batch, fp32, packed nn.LSTM | {naive['steps']} steps "
          f"| {naive['utts_per_s']:.1f} | {naive['audio_per_s']:.1f} | {naive['padding']:.3f} | 1.00x |")
    for name, r in (("files (BucketBatchSampler + AudioDataset)", load_files), ("shards (ShardLoader)", load_shards)):
        print(f"| loader alone: {name}, {tc.num_workers} worker(s) | {r['batches']} ({r['batches_per_s']:.1f}/s) "
              f"| | {r['audio_per_s']:.1f} | {r['padding']:.3f} "
              f"| {r['audio_per_s'] / ours['audio_per_s']:.1f}x what the toolkit loop consumes |")
    print(f"\ntoolkit loop wall time {ours['wall']:.0f} s for {ours['steps']} steps (start-up, first interval "
          f"excluded from the rates); padding efficiency of the toolkit row measured on its loader's batches.")


class _Quiet:
    def info(self, *a):
        pass


if __name__ == "__main__":
    main()

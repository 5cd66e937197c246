"""DDP on CPU (gloo): two ranks under torchrun follow the same loss curve as one process that
accumulates the same two batches per step, and only rank 0 writes into the experiment dir.

    torchrun --standalone --nproc_per_node 2 -m asr train --config C --exp-dir E --device cpu

Tolerance: the two runs differ only in how the two batches' gradients are combined (gloo's
all-reduce of g0 and g1, then / 2, against accumulating g0 / 2 + g1 / 2 in .grad), so per-step
losses must agree to a relative 1e-4 and weights to 1e-4 absolute after 10 AdamW steps (measured:
identical losses and bit-identical weights on x86 CPU, since halving is exact in floating point).
A batch on the wrong rank or a missing all-reduce changes which data a step sees, far beyond that.
"""
import csv
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from asr.audio import audio_duration
from asr.data import BucketBatchSampler
from asr.datadir import Utterance, read_data_dir, write_data_dir

from .conftest import ROOT, needs_fsdd
from .test_train import final_weights, make_data

pytestmark = [needs_fsdd, pytest.mark.slow]

STEPS = 10
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-4

# Every rank records the files it opens for writing (or renames) inside the experiment dir.
AUDIT = textwrap.dedent("""
    import os, sys
    _watch, _out = os.environ.get("AUDIT_WATCH"), os.environ.get("AUDIT_OUT")
    if _watch and _out:
        _log = open(os.path.join(_out, "rank%s.%d" % (os.environ.get("RANK", "main"), os.getpid())), "a", buffering=1)
        _log.write("started\\n")
        def _hook(event, args):
            if event == "open":
                path, mode, flags = args
                writes = (any(c in mode for c in "wax+") if isinstance(mode, str)
                          else bool(flags & (os.O_WRONLY | os.O_RDWR)))
            elif event == "os.rename":
                path, writes = args[1], True
            else:
                return
            if writes and isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).startswith(_watch):
                _log.write(os.fsdecode(path) + "\\n")
        sys.addaudithook(_hook)
""")


def config(tmp_path, data, name, **train):
    cfg = {
        "features": {"sample_rate": 8000, "n_fft": 256, "win_length": 200, "hop_length": 80, "n_mels": 20,
                     "dither": 0.0},  # dither and dropout draw from the torch RNG, which differs per process
        "model": {"num_layers": 1, "hidden_size": 16, "subsample": "stack", "dropout": 0.0},
        "train": {"train_data": [str(data)], "max_steps": STEPS, "max_epochs": 100, "batch_seconds": 1.2,
                  "max_batch_size": 8, "checkpoint_every": 5, "num_workers": 0, "log_every": 1,
                  "warmup_steps": 2, "lr": 5e-3, **train},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def losses(exp):
    with open(exp / "train_log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r["split"] == "train"]


def run(cmd, tmp_path, exp):
    audit = tmp_path / "audit" / exp.name
    audit.mkdir(parents=True)
    (tmp_path / "site").mkdir(exist_ok=True)
    (tmp_path / "site" / "sitecustomize.py").write_text(AUDIT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUDIT_WATCH": str(exp), "AUDIT_OUT": str(audit),
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)])}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return {p.name.split(".")[0]: p.read_text().split("\n")[1:-1] for p in audit.iterdir()}


def test_two_ranks_match_one_process_with_grad_accum_and_only_rank0_writes(tmp_path):
    data = make_data(tmp_path, n=24)
    # An even number of batches per epoch, so both runs pair the same batches across epoch ends.
    durations = [audio_duration(u.audio) for u in read_data_dir(data)]
    assert len(BucketBatchSampler(durations, 1.2, 8)) % 2 == 0

    train = [sys.executable, "-m", "asr", "train", "--device", "cpu"]
    single = tmp_path / "single"
    run([*train, "--config", str(config(tmp_path, data, "single", grad_accum=2)), "--exp-dir", str(single)],
        tmp_path, single)
    ddp = tmp_path / "ddp"
    writes = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                  *train[1:], "--config", str(config(tmp_path, data, "ddp")), "--exp-dir", str(ddp)], tmp_path, ddp)

    a, b = losses(single), losses(ddp)
    assert len(a) == len(b) == STEPS
    assert a[-1] < a[0]
    for step, (x, y) in enumerate(zip(a, b), 1):
        assert abs(x - y) <= LOSS_RTOL * abs(x) + 1e-5, f"step {step}: single {x} vs ddp {y}"
    wa, wb = final_weights(single), final_weights(ddp)
    assert wa["step"] == wb["step"] == STEPS
    print(f"losses single {a}\n       ddp    {b}\nmax relative loss difference "
          f"{max(abs(x - y) / abs(x) for x, y in zip(a, b)):.2e}, max weight difference "
          f"{max(float((wa['model'][k].float() - wb['model'][k].float()).abs().max()) for k in wa['model']):.2e}")
    for k in wa["model"]:
        assert torch.allclose(wa["model"][k], wb["model"][k], atol=WEIGHT_ATOL, rtol=0), k

    assert set(writes) >= {"rank0", "rank1"}, writes  # both ranks ran with the audit hook
    assert writes["rank1"] == []
    assert any("checkpoints" in p for p in writes["rank0"]) and any(p.endswith("train.log") for p in writes["rank0"])


def test_two_ranks_stream_shards_to_the_end(tmp_path):
    # Shards dealt to ranks rarely hold equal audio: the loader must still give both ranks the
    # same number of batches, or the rank that runs dry first leaves the other hanging in all-reduce.
    data = make_data(tmp_path, n=24)
    r = subprocess.run([sys.executable, "-m", "asr", "shards", "write", str(data), str(tmp_path / "shards"),
                        "--max-shard-mb", "0.04"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    exp = tmp_path / "ddp"
    conf = config(tmp_path, data, "shards", train_shards=str(tmp_path / "shards"), num_workers=1, max_epochs=3,
                  max_steps=0)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "asr", "train", "--device", "cpu", "--config", str(conf), "--exp-dir", str(exp)], tmp_path, exp)
    log = (exp / "train.log").read_text()
    steps = len(losses(exp))
    assert "epoch 2 done" in log and f"finished at step {steps}" in log
    assert steps > 3 and final_weights(exp)["step"] == steps


def test_a_rank_whose_batch_is_all_broken_audio_does_not_hang_the_others(tmp_path):
    # utt2dur vouches for the broken files, so they pass the startup scan and fail inside a batch;
    # batches of one utterance give some rank a batch with nothing readable in it.
    # One broken file only: ranks that skip different numbers of batches fall out of step.
    good = [u for u in read_data_dir(make_data(tmp_path / "good", n=9))]
    broken = []
    for i in range(1):
        bad = tmp_path / f"broken{i}.wav"
        bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
        broken.append(Utterance(f"theo_broken_{i}", str(bad), "one", "theo", duration=0.4))
    data = tmp_path / "data"
    write_data_dir(data, [*[Utterance(u.utt_id, u.audio, u.text, u.speaker, audio_duration(u.audio)) for u in good],
                          *broken])
    exp = tmp_path / "ddp"
    conf = config(tmp_path, data, "broken", max_batch_size=1, max_steps=6, num_workers=0)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "asr", "train", "--device", "cpu", "--config", str(conf), "--exp-dir", str(exp)], tmp_path, exp)
    assert final_weights(exp)["step"] == 6
    assert all(x == x for x in losses(exp))  # idle ranks add a zero loss, never a NaN
    assert "theo_broken" in (exp / "bad_utts.txt").read_text() + (exp / "train.log").read_text()

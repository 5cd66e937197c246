"""The trainer on a few real FSDD clips: exact resume after kill -9, broken and too-short input."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from asr.audio import audio_duration
from asr.checkpoint import list_checkpoints, load_checkpoint
from asr.datadir import Utterance, read_data_dir, write_data_dir

from .conftest import FSDD, ROOT, needs_fsdd

pytestmark = needs_fsdd


def make_data(tmp_path, n=16, broken=0, short=0):
    utts = []
    for i in range(n):
        d, spk, take = i % 10, ["george", "jackson"][i % 2], 10 + i // 10
        utts.append(Utterance(f"{spk}_{d}_{take:02d}", str(FSDD / f"{d}_{spk}_{take}.wav"),
                              ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"][d], spk))
    for i in range(broken):
        bad = tmp_path / f"broken{i}.wav"
        bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
        utts.append(Utterance(f"theo_broken_{i}", str(bad), "one", "theo"))
    for i in range(short):
        # A 0.14 s clip cannot hold this many labels at 30 ms frames.
        utts.append(Utterance(f"theo_short_{i}", str(FSDD / "1_theo_1.wav"), "one two three four five six", "theo"))
    write_data_dir(tmp_path / "data", utts)
    return tmp_path / "data"


def write_config(tmp_path, data, **train):
    cfg = {
        "features": {"sample_rate": 8000, "n_fft": 256, "win_length": 200, "hop_length": 80, "n_mels": 20},
        "augment": {"speed_perturb": [0.9, 1.0, 1.1], "freq_masks": 1, "freq_mask_width": 3},
        "model": {"num_layers": 1, "hidden_size": 16, "subsample": "stack", "dropout": 0.1},
        "train": {"train_data": [str(data)], "dev_data": [], "max_steps": 8, "max_epochs": 100, "batch_seconds": 3.0,
                  "checkpoint_every": 2, "num_workers": 1, "log_every": 1, "warmup_steps": 2, **train},
    }
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_train(conf, exp, *extra, env=None):
    cmd = [sys.executable, "-m", "asr", "train", "--config", str(conf), "--exp-dir", str(exp), "--device", "cpu", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)


def final_weights(exp):
    return load_checkpoint(list_checkpoints(exp / "checkpoints")[0])


def test_kill_minus_9_then_resume_equals_uninterrupted_run(tmp_path):
    data = make_data(tmp_path)
    conf = write_config(tmp_path, data)
    ref = run_train(conf, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]

    killed = run_train(conf, tmp_path / "run", env={"ASR_TEST_KILL_AT_STEP": "5"})
    assert killed.returncode == -9
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")][0] == "ckpt_00000004.pt"
    resumed = run_train(conf, tmp_path / "run", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step 4" in resumed.stderr

    a, b = final_weights(tmp_path / "ref"), final_weights(tmp_path / "run")
    assert a["step"] == b["step"] == 8
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_resuming_an_early_stopped_run_stays_stopped_and_keeps_its_log(tmp_path):
    # Dev = train data, patience 1: a tiny model's dev WER stalls within a few epochs and stops the run.
    data = make_data(tmp_path, n=4)
    conf = write_config(tmp_path, data, dev_data=[str(data)], max_steps=0, max_epochs=40, patience=1,
                        batch_seconds=10.0, lr=1e-4)
    first = run_train(conf, tmp_path / "exp")
    assert first.returncode == 0, first.stderr[-2000:]
    steps = final_weights(tmp_path / "exp")["step"]
    assert steps < 40, "the run should have stopped early"
    log_before = (tmp_path / "exp" / "train_log.csv").read_text()
    again = run_train(conf, tmp_path / "exp", "--resume")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resumed from step {steps}" in again.stderr and f"finished at step {steps}" in again.stderr
    assert final_weights(tmp_path / "exp")["step"] == steps
    assert (tmp_path / "exp" / "train_log.csv").read_text() == log_before
    # raising the patience continues the run, with the old rows' dev columns kept
    more = run_train(conf, tmp_path / "exp", "--resume", "train.patience=3")
    assert more.returncode == 0, more.stderr[-2000:]
    assert final_weights(tmp_path / "exp")["step"] > steps
    assert "wer" in (tmp_path / "exp" / "train_log.csv").read_text().splitlines()[0]


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path):
    data = make_data(tmp_path)
    conf = write_config(tmp_path, data, max_steps=4)
    assert run_train(conf, tmp_path / "exp").returncode == 0
    newest, older = list_checkpoints(tmp_path / "exp" / "checkpoints")[:2]
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    newest.write_bytes(bytes(raw))
    res = run_train(conf, tmp_path / "exp", "--resume", "train.max_steps=6")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "checksum mismatch" in res.stderr
    assert f"resumed from step {int(older.stem.split('_')[1])}" in res.stderr


def test_broken_and_too_short_utterances_are_skipped_and_reported(tmp_path):
    data = make_data(tmp_path, broken=2, short=1)
    conf = write_config(tmp_path, data, max_steps=3)
    res = run_train(conf, tmp_path / "exp")
    assert res.returncode == 0, res.stderr[-2000:]
    skipped = (tmp_path / "exp" / "skipped_utts.txt").read_text()
    assert "theo_broken_0" in skipped and "theo_broken_1" in skipped and "not readable" in skipped
    assert "theo_short_0" in skipped and "too short for CTC" in skipped
    assert (tmp_path / "exp" / "model.safetensors").exists()
    assert (tmp_path / "exp" / "train_curve.png").exists()


def test_broken_file_inside_a_batch_is_listed_in_bad_utts_and_training_goes_on(tmp_path):
    # utt2dur vouches for the broken file, so it passes the startup scan and fails in the loader
    good = read_data_dir(make_data(tmp_path / "good", n=8))
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    write_data_dir(tmp_path / "data", [*[Utterance(u.utt_id, u.audio, u.text, u.speaker, audio_duration(u.audio))
                                         for u in good], Utterance("theo_broken_0", str(bad), "one", "theo", 0.4)])
    conf = write_config(tmp_path, tmp_path / "data", max_steps=4, num_workers=0)
    res = run_train(conf, tmp_path / "exp")
    assert res.returncode == 0, res.stderr[-2000:]
    bad_utts = (tmp_path / "exp" / "bad_utts.txt").read_text().splitlines()
    assert bad_utts and all(line.startswith("theo_broken_0\t") for line in bad_utts)
    assert "not readable" in bad_utts[0]
    assert (tmp_path / "exp" / "skipped_utts.txt").read_text() == ""  # not caught at startup
    assert final_weights(tmp_path / "exp")["step"] == 4


# Run `asr train`, SIGKILLed after checkpoint KILL_STEP is renamed into place and before its sidecar is written.
KILL_BEFORE_SIDECAR = """
import os, signal, sys
from asr import checkpoint
write = checkpoint.atomic_write_bytes
def atomic_write_bytes(path, data):
    if str(path).endswith(f"ckpt_{int(os.environ['KILL_STEP']):08d}.pt.sha256"):
        os.kill(os.getpid(), signal.SIGKILL)
    write(path, data)
checkpoint.atomic_write_bytes = atomic_write_bytes
from asr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_between_checkpoint_rename_and_sidecar_resumes_from_the_previous_one(tmp_path):
    data = make_data(tmp_path)
    conf = write_config(tmp_path, data, max_steps=6)
    exp = tmp_path / "exp"
    args = ["train", "--config", str(conf), "--exp-dir", str(exp), "--device", "cpu"]
    killed = subprocess.run([sys.executable, "-c", KILL_BEFORE_SIDECAR, *args], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, "KILL_STEP": "4"}, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    ckpts = exp / "checkpoints"
    newest, previous = list_checkpoints(ckpts)[:2]
    assert newest.name == "ckpt_00000004.pt" and not (ckpts / "ckpt_00000004.pt.sha256").exists()
    resumed = run_train(conf, exp, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # as asr/checkpoint.py documents: refused for want of its sidecar, the previous one resumed
    assert "ckpt_00000004.pt: no checksum file" in resumed.stderr
    assert f"resumed from step {load_checkpoint(previous)['step']} " in resumed.stderr
    assert final_weights(exp)["step"] == 6
    assert load_checkpoint(ckpts / "ckpt_00000004.pt")["step"] == 4  # rewritten whole on the way


def test_transcript_outside_vocabulary_names_the_utterance(tmp_path):
    data = make_data(tmp_path, n=4)
    dev = tmp_path / "dev"
    utts = read_data_dir(data)
    utts[0].text = "zqölf"
    write_data_dir(dev, utts)
    conf = write_config(tmp_path, data, dev_data=[str(dev)], max_steps=2)
    res = run_train(conf, tmp_path / "exp")
    assert res.returncode != 0
    assert utts[0].utt_id in res.stderr and "'q'" in res.stderr


def test_sortagrad_epochs_go_shortest_first_then_shuffle_and_resume_exactly():
    from asr.data import BucketBatchSampler

    durations = [((i * 7) % 23) / 4 + 0.5 for i in range(40)]
    sampler = BucketBatchSampler(durations, 6.0, 4, shuffle=True, seed=3, sorted_epochs=1)
    longest = lambda batch: max(durations[i] for i, _ in batch)  # noqa: E731
    first = [longest(b) for b in sampler]
    assert first == sorted(first) and len(first) > 3
    second = [longest(b) for b in sampler]
    assert sorted(second) == first and second != first  # same batches, shuffled from epoch 2
    # resuming in the middle of the sorted epoch continues it, not a shuffled one
    resumed = BucketBatchSampler(durations, 6.0, 4, shuffle=True, seed=3, sorted_epochs=1)
    resumed.load_state_dict({"epoch": 0, "position": 2})
    assert [longest(b) for b in resumed] == first[2:]

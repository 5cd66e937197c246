"""Hostile inputs, security and data integrity (issue 15 items 1-4, 12, 13): one test per item.

Each test is what a hostile user or a downloaded corpus/package would try; each failed on the code
before its fix. The CLI-output and traceback items are in test_hostile_inputs_cli.py.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from asr.audio import AudioError, load_audio, save_audio
from asr.datadir import (DataDirError, Utterance, read_data_dir, read_manifest, utterance_file,
                         validate_data_dir, write_data_dir)

from .conftest import ROOT

SR = 8000
EVIL = "x; touch PWNED; cat a.wav |"


def tone(seconds: float, f0: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def tiny_ctc(tmp_path: Path) -> Path:
    """A one-layer CTC package at 8 kHz: enough to run every path a file name takes."""
    from asr.config import ExperimentConfig, FeatureConfig, ModelConfig
    from asr.models import CTCModel
    from asr.pretrained import save_package
    from asr.text import Vocabulary

    cfg = ExperimentConfig()
    cfg.features = FeatureConfig(sample_rate=SR, n_fft=256, win_length=200, hop_length=80, n_mels=20)
    cfg.model = ModelConfig(num_layers=1, hidden_size=8)
    torch.manual_seed(0)
    return save_package(CTCModel(cfg, Vocabulary.from_texts(["yes no"])).eval(), tmp_path / "tiny.safetensors")


def run_asr(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "asr", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=300)


# -- 1. a path is opened, never run; wav.scp commands are opt-in; ids never name paths ---------

def test_item1_paths_never_run_and_ids_never_name_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("ASR_ALLOW_PIPES", raising=False)
    pkg = tiny_ctc(tmp_path)
    w = tmp_path / "w"
    w.mkdir()
    monkeypatch.chdir(w)
    save_audio(w / "a.wav", tone(0.5), SR)
    shutil.copy(w / "a.wav", w / EVIL)  # a real wav with a hostile name
    pwned = w / "PWNED"

    # load_audio opens the name as a file (or says there is none); it never runs it
    samples, _ = load_audio(EVIL)
    assert len(samples) == SR // 2
    with pytest.raises(AudioError, match="no such file"):
        load_audio("y; touch PWNED; cat a.wav |")
    # model.transcribe, a manifest's audio_filepath, a data dir without wav.scp
    from asr.pretrained import load_model

    model = load_model(pkg)
    assert model.transcribe(EVIL).duration == 0.5
    assert [t.duration for t in model.transcribe([EVIL, str(w / EVIL)])] == [0.5, 0.5]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.jsonl").write_text(json.dumps({"utt_id": "u1", "audio_filepath": EVIL,
                                                               "duration": 0.5}) + "\n")
    (u,) = read_data_dir(tmp_path / "m")
    assert not u.pipe and len(u.load_audio()[0]) == SR // 2
    # the CLI, through a glob, an argument and stdin
    res = run_asr("transcribe", "--model", pkg, "*", EVIL, cwd=w)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count(EVIL) == 2, res.stdout
    res = subprocess.run([sys.executable, "-m", "asr", "transcribe", "--model", str(pkg), "-"], cwd=w,
                         input=EVIL + "\n", capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert res.returncode == 0 and EVIL in res.stdout, res.stderr
    assert not pwned.exists()

    # wav.scp: a command is refused at its line, saying how to allow it ...
    d = tmp_path / "d"
    write_data_dir(d, [Utterance("u1", str(w / "a.wav")),
                       Utterance("u2", f"touch {pwned}; cat {w / 'a.wav'} |", pipe=True)])
    with pytest.raises(DataDirError, match=r"wav\.scp:2: utterance 'u2' is a shell command.*ASR_ALLOW_PIPES=1"):
        read_data_dir(d)
    assert any("wav.scp:2" in p and "--allow-pipes" in p for p in validate_data_dir(d))
    assert run_asr("decode", "--model", pkg, "--data", d, "--out-dir", tmp_path / "dec", cwd=tmp_path).returncode != 0
    assert not pwned.exists()
    # ... and runs when the reader allows it (the only way a command runs)
    utts = read_data_dir(d, allow_pipes=True)
    assert [u.pipe for u in utts] == [False, True] and len(utts[1].load_audio()[0]) == SR // 2
    assert pwned.exists()
    pwned.unlink()
    monkeypatch.setenv("ASR_ALLOW_PIPES", "1")
    assert validate_data_dir(d) == [] and pwned.exists()
    # a file name ending in '|' is not written into wav.scp as if it were a command
    with pytest.raises(DataDirError, match="reads as a command"):
        write_data_dir(tmp_path / "e", [Utterance("u1", EVIL)])

    # utterance ids cannot name paths: not in wav.scp, not in a manifest, not as an output file
    for bad in ("../../x", "/tmp/x", "..", ".", "a\\b"):
        e = tmp_path / "ids"
        e.mkdir(exist_ok=True)
        (e / "wav.scp").write_text(f"{bad} a.wav\n")
        (e / "utt2spk").write_text(f"{bad} s\n")
        (e / "spk2utt").write_text(f"s {bad}\n")
        with pytest.raises(DataDirError, match=r"wav\.scp:1: utt id .* would name a path"):
            read_data_dir(e)
        assert any("would name a path" in p for p in validate_data_dir(e, check_audio=False))
        (e / "manifest.jsonl").write_text(json.dumps({"utt_id": bad, "audio_filepath": "a.wav", "duration": 1}) + "\n")
        with pytest.raises(DataDirError, match="manifest.jsonl:1: utt id .* would name a path"):
            read_manifest(e / "manifest.jsonl")
        with pytest.raises(DataDirError, match="would name a path"):
            utterance_file(tmp_path / "out", bad, ".wav")
        with pytest.raises(DataDirError, match="would name a path"):
            write_data_dir(tmp_path / "w", [Utterance(bad, "a.wav")])
    assert utterance_file(tmp_path / "out", "u1", ".wav") == tmp_path / "out" / "u1.wav"

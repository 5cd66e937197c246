"""Tar shards: round trip, rank x worker splitting, exact mid-epoch resume, damaged input, full disk."""
import errno
import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from asr import shards
from asr.audio import load_audio
from asr.config import AugmentConfig
from asr.data import Batch
from asr.datadir import Utterance, read_data_dir, write_data_dir
from asr.shards import ShardError, ShardLoader, write_shards

from .conftest import ROOT, needs_fsdd

SR = 8000


def make_utts(tmp_path, n=40, seed=0) -> list[Utterance]:
    """Tiny wavs and flacs of 0.1-0.6 s: noise at random levels, so every utterance differs."""
    rng = np.random.default_rng(seed)
    (tmp_path / "audio").mkdir(exist_ok=True)
    utts = []
    for i in range(n):
        spk = f"spk{i % 3}"
        x = (rng.standard_normal(int(SR * rng.uniform(0.1, 0.6))) * rng.uniform(0.01, 0.3)).astype(np.float32)
        path = tmp_path / "audio" / f"{spk}_{i:03d}.{'flac' if i % 2 else 'wav'}"
        sf.write(path, x, SR, subtype="PCM_16")
        utts.append(Utterance(f"{spk}_{i:03d}", str(path), f"words {i}", spk, len(x) / SR))
    return utts


def loader(spec, **kw) -> ShardLoader:
    args = dict(sample_rate=SR, augment=None, batch_seconds=1.5, max_batch_size=8, seed=0, shuffle_buffer=12)
    args.update(kw)
    return ShardLoader(spec if isinstance(spec, list) else str(spec), **args)


def epoch_ids(ld: ShardLoader) -> list[list[str]]:
    return [b.utt_ids for b in ld]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shards")
    utts = make_utts(tmp)
    index = write_shards(utts, tmp / "out", max_shard_bytes=40_000)
    return tmp, utts, index


def test_round_trip_keeps_audio_text_and_index(written):
    tmp, utts, index = written
    by_id = {u.utt_id: u for u in utts}
    assert len(index["shards"]) >= 6 and index["utterances"] == len(utts)
    assert index["duration"] == pytest.approx(sum(u.duration for u in utts), abs=0.05)
    assert sum(s["utterances"] for s in index["shards"]) == len(utts)
    assert shards.verify_shards(tmp / "out") == []
    assert json.loads((tmp / "out" / "shards.json").read_text())["shards"][0]["sha256"] == index["shards"][0]["sha256"]

    ld = loader(tmp / "out")
    n = len(ld)
    batches = list(ld)
    assert len(batches) == n and all(isinstance(b, Batch) for b in batches)
    seen = [u for b in batches for u in b.utt_ids]
    assert sorted(seen) == sorted(by_id)
    for b in batches:
        assert not b.errors
        assert b.wav.shape[1] == int(b.wav_lens.max())
        for i, u in enumerate(b.utt_ids):
            ref = load_audio(by_id[u].audio, SR)[0]
            assert torch.equal(b.wav[i, : b.wav_lens[i]], torch.from_numpy(ref)), u
            assert b.texts[i] == by_id[u].text and b.speakers[i] == by_id[u].speaker
    assert 0.5 < ld.padding_efficiency() <= 1.0
    assert ld.state_dict()["epoch"] == 1  # an exhausted pass moves on to the next epoch


def test_two_ranks_two_workers_cover_every_utterance_once_per_epoch(written):
    tmp, utts, _ = written
    for epoch in (0, 1):
        per_rank = []
        for rank in (0, 1):
            ld = loader(tmp / "out", rank=rank, world_size=2, num_workers=2)
            ld.load_state_dict({"epoch": epoch, "position": 0})
            per_rank.append(epoch_ids(ld))
        assert len(per_rank[0]) == len(per_rank[1])  # DDP: no rank waits for another
        counts = Counter(u for r in per_rank for b in r for u in b)
        assert sorted(counts) == sorted(u.utt_id for u in utts) and set(counts.values()) == {1}
        assert not set(u for b in per_rank[0] for u in b) & set(u for b in per_rank[1] for u in b)
    ld = loader(tmp / "out", num_workers=2)
    assert epoch_ids(ld) != epoch_ids(ld)  # epoch 0 and epoch 1 differ


def test_uneven_shards_still_give_equal_batch_counts(tmp_path):
    # Three shards over two ranks: one rank reads twice the audio and the other splits batches to keep up.
    utts = make_utts(tmp_path, n=24)
    index = write_shards(utts, tmp_path / "out", max_shard_bytes=60_000)
    assert len(index["shards"]) == 3
    lds = [loader(tmp_path / "out", rank=r, world_size=2, max_batch_size=3) for r in (0, 1)]
    raw = [sum(map(len, ld._rank_batches(0, r)[1])) for r, ld in enumerate(lds)]
    assert raw[0] != raw[1]
    per_rank = [epoch_ids(ld) for ld in lds]
    assert len(per_rank[0]) == len(per_rank[1]) == max(raw)
    counts = Counter(u for r in per_rank for b in r for u in b)
    assert set(counts.values()) == {1} and len(counts) == 24


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_yields_the_same_remaining_batches(written, workers):
    tmp, _, _ = written
    aug = AugmentConfig(speed_perturb=[0.9, 1.0, 1.1], gain_db=[-6, 6], noise_snr_db=[20, 40])
    full = loader(tmp / "out", augment=aug, num_workers=workers, seed=3)
    full.load_state_dict({"epoch": 1, "position": 0})
    ref = list(full)
    resumed = loader(tmp / "out", augment=aug, num_workers=workers, seed=3)
    resumed.load_state_dict({"epoch": 1, "position": 5})  # odd: the DataLoader restarts at the other worker
    assert len(resumed) == len(ref)
    rest = list(resumed)
    assert len(rest) == len(ref) - 5
    for a, b in zip(ref[5:], rest):
        assert a.utt_ids == b.utt_ids and torch.equal(a.wav, b.wav)
    with pytest.raises(ValueError, match="world_size"):
        resumed.load_state_dict({"epoch": 0, "position": 0, "world_size": 4})


def test_corrupt_audio_and_truncated_shard_become_error_records(tmp_path):
    utts = make_utts(tmp_path, n=20)
    bad = tmp_path / "audio" / "garbage.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + os.urandom(200))
    utts.append(Utterance("spk0_bad", str(bad), "broken", "spk0", 0.3))  # utt2dur known: bytes copied as they are
    index = write_shards(utts, tmp_path / "out", max_shard_bytes=30_000)
    victim = tmp_path / "out" / index["shards"][-1]["name"]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])  # a download cut short
    assert shards.verify_shards(tmp_path / "out")

    batches = list(loader(tmp_path / "out", num_workers=0))
    errors = dict(e for b in batches for e in b.errors)
    good = [u for b in batches for u in b.utt_ids]
    assert "spk0_bad" in errors and "not readable as audio" in errors["spk0_bad"]
    lost = set(errors) - {"spk0_bad"}
    assert lost and all(index["shards"][-1]["name"] in errors[u] for u in lost)
    assert sorted(good + list(errors)) == sorted(u.utt_id for u in utts)


def test_full_disk_leaves_no_loadable_partial_shard(tmp_path, monkeypatch):
    utts = make_utts(tmp_path, n=30)
    real_write = shards._HashingFile.write
    written_bytes = [0]

    def write(self, data):
        written_bytes[0] += len(data)
        if written_bytes[0] > 60_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(shards._HashingFile, "write", write)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space"):
        write_shards(utts, out, max_shard_bytes=25_000)
    left = sorted(p.name for p in out.iterdir())
    assert left and all(n.startswith("shard-") and n.endswith(".tar") for n in left)  # no temp file
    assert not (out / "shards.json").exists()
    with pytest.raises(ShardError, match="cannot read the shard index"):
        loader(out)
    monkeypatch.setattr(shards._HashingFile, "write", real_write)
    for name in left:  # the shards that did complete are whole tar files
        assert subprocess.run(["tar", "tf", str(out / name)], capture_output=True).returncode == 0
    index = write_shards(utts, out, max_shard_bytes=25_000)  # a re-run replaces everything
    assert shards.verify_shards(out) == [] and index["utterances"] == 30


def test_pipe_urls_keep_filter_and_cli(tmp_path):
    utts = make_utts(tmp_path, n=12)
    write_data_dir(tmp_path / "data", utts)
    cli = [sys.executable, "-m", "asr", "shards"]
    r = subprocess.run([*cli, "write", str(tmp_path / "data"), str(tmp_path / "out"), "--max-shard-mb", "0.02"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "12 utterances" in r.stdout
    r = subprocess.run([*cli, "verify", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "all shards match" in r.stdout
    n = len(json.loads((tmp_path / "out" / "shards.json").read_text())["shards"])
    pattern = f"pipe:cat {tmp_path}/out/shard-{{000000..{n - 1:06d}}}.tar"
    keep = [u.utt_id for u in utts[::2]]
    got = [u for b in loader(pattern, keep=keep) for u in b.utt_ids]
    assert sorted(got) == sorted(keep)
    with pytest.raises(ShardError, match="does not list"):
        loader([f"{tmp_path}/out/other-000000.tar"], index=str(tmp_path / "out" / "shards.json"))


@needs_fsdd
def test_trainer_streams_from_shards_not_from_the_source_audio(tmp_path):
    from .test_train import final_weights, make_data, run_train, write_config

    # a copy of the FSDD clips, sharded, then overwritten with noise bytes: only the shards hold audio
    utts = []
    (tmp_path / "audio").mkdir()
    for u in read_data_dir(make_data(tmp_path / "fsdd", n=12)):
        copy = tmp_path / "audio" / os.path.basename(u.audio)
        shutil.copy(u.audio, copy)
        utts.append(Utterance(u.utt_id, str(copy), u.text, u.speaker))
    data = tmp_path / "data"
    write_data_dir(data, utts)
    r = subprocess.run([sys.executable, "-m", "asr", "shards", "write", str(data), str(tmp_path / "shards"),
                        "--max-shard-mb", "0.05"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rng = np.random.default_rng(0)
    for u in utts:
        size = os.path.getsize(u.audio)
        with open(u.audio, "wb") as f:
            f.write(rng.integers(0, 256, size, dtype=np.uint8).tobytes())

    conf = write_config(tmp_path, data, max_steps=3, train_shards=str(tmp_path / "shards"), num_workers=0)
    r = run_train(conf, tmp_path / "exp")
    assert r.returncode == 0, r.stderr[-2000:]
    assert final_weights(tmp_path / "exp")["step"] == 3
    assert (tmp_path / "exp" / "skipped_utts.txt").read_text() == ""
    assert (tmp_path / "exp" / "bad_utts.txt").read_text() == ""
    assert yaml.safe_load((tmp_path / "exp" / "config.yaml").read_text())["train"]["train_shards"]
    # the same run reading the data dir's audio finds nothing to train on
    r = run_train(write_config(tmp_path, data, max_steps=3, num_workers=0), tmp_path / "from_files")
    assert r.returncode != 0
    assert "no usable utterances" in r.stderr


@needs_fsdd
@pytest.mark.slow
def test_trainer_kill_and_resume_from_shards_equals_uninterrupted_run(tmp_path):
    from .test_train import final_weights, make_data, run_train, write_config

    data = make_data(tmp_path, n=16)
    assert subprocess.run([sys.executable, "-m", "asr", "shards", "write", str(data), str(tmp_path / "shards"),
                           "--max-shard-mb", "0.03"], cwd=ROOT, capture_output=True).returncode == 0
    conf = write_config(tmp_path, data, max_steps=8, train_shards=str(tmp_path / "shards"), num_workers=2)
    assert run_train(conf, tmp_path / "ref").returncode == 0
    killed = run_train(conf, tmp_path / "run", env={"ASR_TEST_KILL_AT_STEP": "5"})
    assert killed.returncode == -9
    resumed = run_train(conf, tmp_path / "run", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = final_weights(tmp_path / "ref"), final_weights(tmp_path / "run")
    assert a["step"] == b["step"] == 8
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k

"""Corpus preparation end to end on the real FSDD and yes/no recordings (../shared/data)."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.audio import load_audio
from asr.datadir import read_data_dir, validate_data_dir
from data_prep import common, fsdd, yesno

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ASR_SHARED_DATA") or REPO.parent / "shared" / "data")
FSDD, YESNO = SHARED / "fsdd", SHARED / "yesno"
needs_fsdd = pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=f"no FSDD at {FSDD}")
needs_yesno = pytest.mark.skipif(not (YESNO / "waves_yesno").is_dir(), reason=f"no yes/no corpus at {YESNO}")

CONN = ["--num-conn-train", "12", "--num-conn-dev", "5", "--num-conn-test", "8"]
WORD = {w: d for d, w in enumerate(fsdd.WORDS)}


def run_fsdd(out: Path, *extra: str, corpus: Path = FSDD) -> int:
    return fsdd.main(["--corpus-dir", str(corpus), *CONN, *extra, str(out)])


def take(utt_id: str) -> int:
    return int(utt_id.rsplit("_", 1)[1])


def source_file(utt_id: str) -> Path:
    """`george_3_07` -> FSDD/recordings/3_george_7.wav"""
    speaker, digit, number = utt_id.split("_")
    return FSDD / "recordings" / f"{digit}_{speaker}_{int(number)}.wav"


@pytest.fixture(scope="module")
def fsdd_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdd")
    assert run_fsdd(out) == 0
    return out


@needs_fsdd
def test_fsdd_isolated_sets(fsdd_out):
    sets = {name: read_data_dir(fsdd_out / name) for name in ("train", "dev", "test")}
    # 5 speakers x 10 digits x takes: test 0-4 and dev 5-9 (250 each), train 10-49 (2000).
    assert {name: len(u) for name, u in sets.items()} == {"train": 2000, "dev": 250, "test": 250}
    assert {take(u.utt_id) for u in sets["test"]} == set(range(5))
    assert {take(u.utt_id) for u in sets["dev"]} == set(range(5, 10))
    assert {take(u.utt_id) for u in sets["train"]} == set(range(10, 50))
    u = next(u for u in sets["test"] if u.utt_id == "jackson_7_03")
    assert (u.text, u.speaker, Path(u.audio).name) == ("seven", "jackson", "7_jackson_3.wav")
    assert u.duration == pytest.approx(sf.info(u.audio).duration, abs=1e-3)
    assert {u.speaker for u in sets["train"]} == {"george", "jackson", "nicolas", "theo", "yweweler"}
    for name in sets:
        assert validate_data_dir(fsdd_out / name, check_audio=False) == []
        assert (fsdd_out / name / ".done").exists()
    log = (fsdd_out / "prepare.log").read_text()
    assert "train: wrote 2000 utterances" in log


@needs_fsdd
@pytest.mark.parametrize("name, count, takes", [
    ("train_conn", 12, range(10, 50)), ("dev_conn", 5, range(5, 10)), ("test_conn", 8, range(0, 5))])
def test_fsdd_connected_sets(fsdd_out, name, count, takes):
    set_dir = fsdd_out / name
    utts = read_data_dir(set_dir)
    assert len(utts) == count
    assert validate_data_dir(set_dir) == []  # reads every wav, checks utt2dur against it
    sources = {line.split()[0]: line.split()[1:] for line in (set_dir / "utt2src").read_text().splitlines()}
    for u in utts:
        info = sf.info(u.audio)
        assert (info.samplerate, info.subtype, info.channels) == (8000, "PCM_16", 1)
        assert Path(u.audio).parent == set_dir / "wavs"
        words = u.text.split(" ")
        assert 1 <= len(words) <= 7 and all(w in WORD for w in words)
        pieces = sources[u.utt_id]
        assert [int(p.split("_")[1]) for p in pieces] == [WORD[w] for w in words]
        assert {p.split("_")[0] for p in pieces} == {u.speaker}  # one speaker per utterance
        assert u.utt_id.startswith(f"{u.speaker}_conn_")
        assert all(take(p) in takes for p in pieces)  # only that split's recordings
        # Duration = trimmed pieces + 50-300 ms pauses + 100-300 ms at each edge.
        speech = sum(len(fsdd.trim_silence(load_audio(source_file(p), 8000)[0])) for p in pieces) / 8000
        gaps = len(pieces) - 1
        assert speech + 0.2 + 0.05 * gaps - 0.002 <= u.duration <= speech + 0.6 + 0.3 * gaps + 0.002
        # The pauses are quiet noise, not digital zero.
        samples, _ = load_audio(u.audio)
        edge = samples[: int(0.1 * 8000)]
        assert 0 < np.sqrt(np.mean(edge**2)) < 0.005


def _conn_bytes(out: Path) -> dict[str, bytes]:
    return {f"{p.parent.parent.name}/{p.name}": p.read_bytes() for p in sorted(out.glob("*_conn/wavs/*.wav"))}


@needs_fsdd
def test_fsdd_is_deterministic(fsdd_out, tmp_path):
    again = tmp_path / "again"
    assert run_fsdd(again) == 0
    assert _conn_bytes(again) == _conn_bytes(fsdd_out)
    for name in ("train_conn", "test_conn", "train"):
        assert (again / name / "text").read_bytes() == (fsdd_out / name / "text").read_bytes()
    other = tmp_path / "other"
    assert fsdd.main(["--corpus-dir", str(FSDD), "--num-conn-train", "12", "--num-conn-dev", "0",
                      "--num-conn-test", "0", "--seed", "1", str(other)]) == 0
    assert (other / "train_conn" / "text").read_text() != (fsdd_out / "train_conn" / "text").read_text()
    assert not (other / "dev_conn").exists()


@needs_fsdd
def test_fsdd_rerun_skips_finished_sets(tmp_path, capsys):
    out = tmp_path / "out"

    def run(num_train: int) -> int:
        return fsdd.main(["--corpus-dir", str(FSDD), "--num-conn-train", str(num_train), "--num-conn-dev", "0",
                          "--num-conn-test", "0", str(out)])

    assert run(3) == 0
    wav = next((out / "train_conn" / "wavs").glob("*.wav"))
    stamp = wav.stat().st_mtime_ns
    capsys.readouterr()
    assert run(3) == 0
    assert "train_conn: already prepared, kept" in capsys.readouterr().out
    assert wav.stat().st_mtime_ns == stamp
    # Other options: the connected set is rebuilt, and no wav of the old run lingers.
    assert run(2) == 0
    assert len(list((out / "train_conn" / "wavs").glob("*.wav"))) == 2 == len(read_data_dir(out / "train_conn"))


@needs_fsdd
def test_fsdd_holdout_speaker(tmp_path):
    out = tmp_path / "holdout"
    assert run_fsdd(out, "--holdout-speaker", "george") == 0
    sets = {p.name: read_data_dir(p) for p in out.iterdir() if p.is_dir()}
    assert {name: len(u) for name, u in sets.items()} == {
        "train": 1600, "dev": 200, "test": 500, "train_conn": 12, "dev_conn": 5, "test_conn": 8}
    assert {u.speaker for u in sets["test"]} == {u.speaker for u in sets["test_conn"]} == {"george"}
    for name in ("train", "dev", "train_conn", "dev_conn"):
        assert "george" not in {u.speaker for u in sets[name]}
    assert {take(u.utt_id) for u in sets["train"]} == set(range(10, 50))
    assert {take(u.utt_id) for u in sets["dev"]} == set(range(5, 10))


@needs_fsdd
def test_fsdd_unknown_holdout_speaker(tmp_path, capsys):
    assert run_fsdd(tmp_path / "x", "--holdout-speaker", "nobody") == 1
    assert "'nobody' is not a speaker of the corpus (speakers: george, jackson" in capsys.readouterr().err


@needs_fsdd
def test_fsdd_skips_broken_files(tmp_path, capsys):
    # A small copy of the corpus: two speakers, all digits, takes 0-11, plus three bad files.
    rec = tmp_path / "corpus" / "recordings"
    rec.mkdir(parents=True)
    for speaker in ("george", "theo"):
        for digit in range(10):
            for t in range(12):
                (rec / f"{digit}_{speaker}_{t}.wav").symlink_to(FSDD / "recordings" / f"{digit}_{speaker}_{t}.wav")
    (rec / "3_theo_10.wav").unlink()
    (rec / "3_theo_10.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage" * 3)  # corrupt header
    (rec / "4_theo_2.wav").unlink()
    (rec / "4_theo_2.wav").write_bytes(b"")  # empty
    (rec / "notes.wav").symlink_to(FSDD / "recordings" / "0_theo_0.wav")  # not digit_speaker_take
    out = tmp_path / "out"
    assert fsdd.main(["--corpus-dir", str(tmp_path / "corpus"), "--num-conn-train", "20", "--num-conn-dev", "2",
                      "--num-conn-test", "2", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "skipped 3 broken or unexpected file(s)" in summary
    log = (out / "prepare.log").read_text()
    for bad in ("3_theo_10.wav", "4_theo_2.wav", "notes.wav"):
        assert bad in summary and bad in log
    assert "empty file" in summary
    counts = {name: len(read_data_dir(out / name)) for name in ("train", "dev", "test")}
    assert counts == {"train": 2 * 10 * 2 - 1, "dev": 100, "test": 99}
    wav_scp = (out / "train" / "wav.scp").read_text() + (out / "test" / "wav.scp").read_text()
    assert "3_theo_10.wav" not in wav_scp and "4_theo_2.wav" not in wav_scp
    assert "theo_3_10" not in (out / "train_conn" / "utt2src").read_text()


@needs_yesno
def test_yesno(tmp_path):
    out = tmp_path / "yesno"
    assert yesno.main(["--corpus-dir", str(YESNO), str(out)]) == 0
    train, test = read_data_dir(out / "train"), read_data_dir(out / "test")
    names = sorted(p.stem for p in (YESNO / "waves_yesno").glob("*.wav"))
    assert (len(train), len(test)) == (31, 29)
    assert [u.utt_id for u in train] == names[:31] and [u.utt_id for u in test] == names[31:]
    u = next(u for u in train if u.utt_id == "0_0_1_0_1_0_0_1")
    assert (u.text, u.speaker) == ("no no yes no yes no no yes", "global")
    assert 5 < u.duration < 8
    for d in (out / "train", out / "test"):
        assert validate_data_dir(d) == []


@needs_yesno
def test_yesno_broken_file_does_not_shift_the_split(tmp_path, capsys):
    corpus = tmp_path / "corpus" / "waves_yesno"
    corpus.mkdir(parents=True)
    for p in (YESNO / "waves_yesno").glob("*.wav"):
        (corpus / p.name).symlink_to(p)
    (corpus / "0_0_0_0_1_1_1_1.wav").unlink()
    (corpus / "0_0_0_0_1_1_1_1.wav").write_bytes(b"not a wav at all")
    out = tmp_path / "out"
    assert yesno.main(["--corpus-dir", str(tmp_path / "corpus"), str(out)]) == 0
    assert "0_0_0_0_1_1_1_1.wav" in capsys.readouterr().out
    assert (len(read_data_dir(out / "train")), len(read_data_dir(out / "test"))) == (30, 29)


def test_missing_corpus_exits_nonzero_naming_the_path(tmp_path):
    missing = tmp_path / "no_such_corpus"
    proc = subprocess.run([sys.executable, "-m", "data_prep.fsdd", "--corpus-dir", str(missing), str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0
    assert str(missing) in proc.stderr and "--download" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_resolve_corpus_dir_order(tmp_path, monkeypatch):
    def corpus(root: Path) -> Path:
        (root / "fsdd" / "recordings").mkdir(parents=True)
        return root / "fsdd"

    monkeypatch.setattr(common, "REPO", tmp_path / "repo")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ASR_DATA", raising=False)
    with pytest.raises(common.CorpusNotFound) as e:
        common.resolve_corpus_dir("fsdd")
    assert str(tmp_path / "shared" / "data" / "fsdd") in str(e.value)
    shared = corpus(tmp_path / "shared" / "data")
    assert common.resolve_corpus_dir("fsdd") == shared
    monkeypatch.setenv("ASR_DATA", str(tmp_path / "asr_data"))
    env = corpus(tmp_path / "asr_data")
    assert common.resolve_corpus_dir("fsdd") == env
    explicit = corpus(tmp_path / "explicit")
    assert common.resolve_corpus_dir("fsdd", explicit) == explicit
    assert common.resolve_corpus_dir("fsdd", explicit / "recordings") == explicit  # the layout folder itself
    with pytest.raises(common.CorpusNotFound, match="--corpus-dir"):
        common.resolve_corpus_dir("fsdd", tmp_path / "elsewhere")  # an explicit path is never second-guessed


def test_download_only_when_asked(tmp_path, monkeypatch):
    calls = []

    def fake_download(name, dest):
        calls.append((name, dest))
        (dest / "waves_yesno").mkdir(parents=True)

    monkeypatch.setattr(common, "download", fake_download)
    monkeypatch.setattr(common, "REPO", tmp_path / "repo")
    monkeypatch.setenv("ASR_DATA", str(tmp_path / "data"))
    with pytest.raises(common.CorpusNotFound, match="--download"):
        common.resolve_corpus_dir("yesno")
    assert calls == []
    assert common.resolve_corpus_dir("yesno", allow_download=True) == tmp_path / "data" / "yesno"
    assert calls == [("yesno", tmp_path / "data" / "yesno")]


def test_download_unpacks_the_published_layout(tmp_path, monkeypatch):
    # The GitHub archive nests recordings/ one level down; the hook must still leave dest/recordings.
    src = tmp_path / "src" / "free-spoken-digit-dataset-1.0.10" / "recordings"
    src.mkdir(parents=True)
    (src / "0_a_0.wav").write_bytes(b"x")
    archive = tmp_path / "v1.0.10.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "free-spoken-digit-dataset-1.0.10", arcname="free-spoken-digit-dataset-1.0.10")
    fetched = []
    monkeypatch.setattr(common.urllib.request, "urlretrieve",
                        lambda url, to: fetched.append(url) or Path(to).write_bytes(archive.read_bytes()))
    dest = tmp_path / "corpora" / "fsdd"
    assert common.resolve_corpus_dir("fsdd", dest, allow_download=True) == dest
    assert fetched == [common.URLS["fsdd"]]
    assert [p.name for p in dest.iterdir()] == ["recordings"]  # no archive or temp dir left behind
    assert (dest / "recordings" / "0_a_0.wav").read_bytes() == b"x"

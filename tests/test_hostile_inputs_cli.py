"""Everyday mistakes and hostile inputs at the command line (issue 15, items 5-11, 14, 15): each
ends in one line naming the file or option and a non-zero exit, or in output a strict parser
accepts."""
import io
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import asr.registry
from asr.audio import load_audio
from asr.cli import main
from asr.transcribe import Transcriber

from .conftest import FSDD, ROOT, needs_fsdd
from .helpers import parse_ctm, parse_subtitles

pytestmark = needs_fsdd
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def model():
    return asr.load_model("digits")


def trimmed(path) -> np.ndarray:
    """A clip without its leading and trailing frames more than 30 dB below its loudest 30 ms."""
    wav, _ = load_audio(path)
    hop = 240
    db = 10 * np.log10(np.array([np.mean(wav[i:i + hop] ** 2) for i in range(0, len(wav), hop)]) + 1e-12)
    keep = np.flatnonzero(db > db.max() - 30)
    return wav[keep[0] * hop:(keep[-1] + 1) * hop]


def spliced(speaker: str, digits: list[int], takes: range) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Clips spliced with silences of known length (1 s first, then 0.4, 0.6, ... s): the audio
    and each clip's true (start, end) in seconds."""
    parts, spans, t = [np.zeros(8000, np.float32)], [], 1.0
    for k, (d, take) in enumerate(zip(digits, takes)):
        clip = trimmed(FSDD / f"{d}_{speaker}_{take}.wav")
        spans.append((t, t + len(clip) / 8000))
        gap = np.zeros(int((0.4 + 0.2 * k) * 8000), np.float32)
        parts += [clip, gap]
        t += (len(clip) + len(gap)) / 8000
    return np.concatenate(parts), spans


def run(argv, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *named, argv=None):
    assert rc != 0 and "Traceback" not in err, (argv, err)
    lines = [line for line in err.splitlines() if not line.startswith("usage:") and line.strip()]
    assert len(lines) == 1, err
    for n in named:
        assert str(n) in lines[0], (n, err)


# -- 5 ------------------------------------------------------------------------------------------

def test_5_an_output_that_is_an_input_is_refused_and_left_whole(tmp_path, capsys):
    victim = tmp_path / "victim.wav"
    victim.write_bytes((FSDD / "7_jackson_3.wav").read_bytes())
    size = victim.stat().st_size
    link = tmp_path / "link.wav"
    os.link(victim, link)  # the same file under another name
    for out in (victim, link):
        rc, _, err = run(["transcribe", "-o", out, victim], capsys)
        assert_one_line_error(rc, err, out, "input")
        assert victim.stat().st_size == size


# -- 6 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_6_subtitles_of_several_inputs_are_one_valid_file_each(tmp_path, capsys, fmt):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    x, _ = spliced("theo", [3, 1, 4], range(3))
    inputs = [tmp_path / "a" / "same.wav", tmp_path / "b" / "same.wav", tmp_path / "silent.wav"]
    sf.write(inputs[0], x, 8000)
    sf.write(inputs[1], x[::-1].copy(), 8000)
    sf.write(inputs[2], np.zeros(8000, np.float32), 8000)  # no words: a valid empty subtitle file
    rc, _, err = run(["transcribe", "--format", fmt, *inputs], capsys)  # several into one stream
    assert_one_line_error(rc, err, f"--format {fmt}", "-o DIR/")
    rc, _, err = run(["transcribe", "--format", fmt, "-o", tmp_path / "subs", *inputs], capsys)
    assert_one_line_error(rc, err, "-o DIR/")  # not yet a folder and no trailing slash: a file name
    rc, _, err = run(["transcribe", "--format", fmt, "-o", f"{tmp_path / 'subs'}/", *inputs], capsys)
    assert rc == 0, err
    cues = parse_subtitles((tmp_path / "subs" / "a" / f"same.{fmt}").read_text(), fmt)
    assert " ".join(c[2] for c in cues) == "three one four"
    parse_subtitles((tmp_path / "subs" / "b" / f"same.{fmt}").read_text(), fmt)
    assert parse_subtitles((tmp_path / "subs" / f"silent.{fmt}").read_text(), fmt) == []


def test_6_ctm_ids_are_unique_and_one_field(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    inputs = [tmp_path / "a" / "my take.wav", tmp_path / "b" / "my take.wav"]
    for p in inputs:
        p.write_bytes((FSDD / "7_jackson_3.wav").read_bytes())
    rc, out, err = run(["transcribe", "--format", "ctm", *inputs], capsys)
    assert rc == 0, err
    utts = parse_ctm(out)
    assert sorted(utts) == ["a/my%20take", "b/my%20take"]
    assert all([w[2] for w in words] == ["seven"] for words in utts.values())


# -- 7 ------------------------------------------------------------------------------------------

def test_7_word_spans_are_the_words_sound(model):
    # a word's span comes from its CTC spikes, not from where the search emitted its labels; a
    # first letter spiked in the pause before the word does not count (test_transcribe has others)
    tr = Transcriber(model)
    for speaker, digits in [("nicolas", [8, 6, 5, 2, 3]), ("george", [8, 6, 5, 2, 3])]:
        audio, spans = spliced(speaker, digits, range(5))
        t = tr.transcribe(audio, 8000)
        assert [w.word for w in t.words] == [NAMES[d] for d in digits]
        for w, (start, end) in zip(t.words, spans):
            assert abs(w.start - start) <= 0.15 and abs(w.end - end) <= 0.15, (speaker, w, (start, end))


# -- 8 ------------------------------------------------------------------------------------------

def test_8_nbest_is_whole_file_alternatives(model):
    audio, _ = spliced("jackson", [2, 7, 5, 9, 0, 3], range(6))
    tr = Transcriber(model, nbest=3, max_segment=2.5)  # several segments, as a minute-long file has
    t = tr.transcribe(audio, 8000)
    assert len(t.text.split()) == 6
    assert len(t.nbest) == 3 and t.nbest[0]["text"] == t.text
    assert len({h["text"] for h in t.nbest}) == 3
    for h in t.nbest[1:]:  # each a whole-file transcript, at most one segment's choice changed
        assert abs(len(h["text"].split()) - 6) <= 2, h
        assert h["score"] <= t.nbest[0]["score"] + 1e-6
    assert t.nbest[1]["score"] >= t.nbest[2]["score"]


# -- 9 ------------------------------------------------------------------------------------------

def test_9_silence_noise_and_dc_give_no_words(model):
    rng = np.random.default_rng(0)
    non_speech = {"silence": np.zeros(16000, np.float32), "dc": np.full(16000, 0.3, np.float32),
                  "white noise": (0.1 * rng.standard_normal(16000)).astype(np.float32),
                  "quiet noise": (0.003 * rng.standard_normal(16000)).astype(np.float32),
                  "hum": (0.2 * np.sin(2 * np.pi * 50 * np.arange(16000) / 8000)).astype(np.float32)}
    for name, wav in non_speech.items():
        t = model.transcribe(wav, sample_rate=8000)
        assert t.text == "" and t.words == [], (name, t.text)
    # speech over the same noise is still heard
    clip = trimmed(FSDD / "4_george_2.wav")
    noisy = np.concatenate([non_speech["quiet noise"][:4000], clip, non_speech["quiet noise"][:4000]])
    assert model.transcribe(noisy + 0.3, sample_rate=8000).text == "four"


# -- 10 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("option,value", [("--alpha", "nan"), ("--alpha", "inf"), ("--beta", "-inf"),
                                          ("--beam-width", "0"), ("--nbest", "0")])
def test_10_non_finite_weights_are_refused(capsys, option, value):
    with pytest.raises(SystemExit) as e:
        main(["transcribe", f"{option}={value}", str(FSDD / "7_jackson_3.wav")])
    err = capsys.readouterr().err
    assert e.value.code != 0 and option in err and value in err and "Traceback" not in err
    with pytest.raises(ValueError, match="alpha: nan"):
        Transcriber(asr.load_model("digits"), alpha=float("nan"))


# -- 11 -----------------------------------------------------------------------------------------

def with_rate(path, rate: int):
    """A copy of a wav whose header claims `rate` Hz."""
    data = bytearray(path.read_bytes() if hasattr(path, "read_bytes") else open(path, "rb").read())
    assert data[:4] == b"RIFF" and data[12:16] == b"fmt "
    block_align = struct.unpack_from("<H", data, 32)[0]
    struct.pack_into("<II", data, 24, rate, rate * block_align)
    return bytes(data)


def test_11_an_absurd_sample_rate_names_the_file_and_the_others_are_transcribed(tmp_path, capsys):
    for rate in (100_000_000, 1):
        bad = tmp_path / f"rate{rate}.wav"
        bad.write_bytes(with_rate(FSDD / "3_theo_1.wav", rate))
        rc, out, err = run(["transcribe", bad, FSDD / "7_jackson_3.wav"], capsys)
        assert rc == 1 and "Traceback" not in err
        assert f"{bad}: file declares sample rate {rate} Hz" in err
        assert out.strip() == f"{FSDD / '7_jackson_3.wav'}\tseven"


# -- 14 -----------------------------------------------------------------------------------------

def test_14_everyday_mistakes_end_in_one_line(tmp_path, capsys):
    clip = FSDD / "7_jackson_3.wav"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    wav = tmp_path / "d.wav"
    wav.mkdir()  # a folder where the output file should go
    lines = tmp_path / "lines.txt"
    lines.write_text("one two\n")
    list_config = tmp_path / "list.yaml"
    list_config.write_text("- model\n- train\n")
    string_config = tmp_path / "string.yaml"
    string_config.write_text("just a sentence\n")
    forged = tmp_path / "forged.safetensors"
    forged.write_bytes(forged_package(asr.registry.resolve("digits")))
    db = tmp_path / "db.json"
    db.write_text(json.dumps({"format": "asr-speakers", "version": 1, "dim": 4, "model": None,
                              "speakers": {"ann": {"mean": [0.5] * 4, "count": 1, "files": 3}}}))
    cases = [
        (["transcribe", "-o", tmp_path, clip], [tmp_path, "folder"]),
        (["transcribe", "-o", a_file / "out.txt", clip], [a_file]),
        *([(["transcribe", "-o", locked / "out.txt", clip], [locked, "not writable"])] if os.geteuid() else []),
        (["transcribe", "-o", "/proc/asr-out.txt", clip], ["-o /proc/asr-out.txt"]),  # unwritable even for root
        (["transcribe", "--model", "digits-speaker", clip], ["digits-speaker", "speaker model"]),
        (["transcribe", "--model", "digits-tts", clip], ["digits-tts", "tts model"]),
        (["decode", "--model", "digits-tts", "--data", tmp_path, "--out-dir", tmp_path / "d"], ["digits-tts"]),
        (["transcribe", "--decoder", "beam", "--lm", clip, clip], ["--lm", str(clip)]),
        (["transcribe", "--model", forged, clip], [forged]),
        (["synthesize", "--text", "one two", "-o", wav], [wav, "folder"]),
        (["synthesize", "--text-file", lines, "-o", a_file], [a_file, "is a file"]),
        (["train", "--config", list_config, "--exp-dir", tmp_path / "e"], [list_config, "list"]),
        (["train", "--config", string_config, "--exp-dir", tmp_path / "e"], [string_config, "str"]),
        (["train", "--config", list_config, "--exp-dir", a_file], ["--exp-dir", a_file]),
        (["speaker", "list", "--db", db], [db, "files"]),
    ]
    for argv, named in cases:
        rc, _, err = run(argv, capsys)
        assert_one_line_error(rc, err, *named, argv=argv)
    for option in ("-1", "0"):
        with pytest.raises(SystemExit):
            main(["transcribe", "--batch-size", option, str(clip)])
        assert "--batch-size" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []  # no d.wav.tmpPID


def forged_package(path) -> bytes:
    """The package with its model description's keys dropped from the header (weights untouched)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = json.loads(header["__metadata__"]["model_meta"])
    for member in meta.get("members", [meta]):
        member.pop("model_meta", None)
        member.pop("vocab", None)
    header["__metadata__"]["model_meta"] = json.dumps(meta)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


def test_14_a_closed_pipe_is_no_traceback(tmp_path):
    # long files, one batch each: the second transcript is written after `head` has gone
    audio, _ = spliced("jackson", [1, 2, 3], range(3))
    files = []
    for k in range(3):
        files.append(str(tmp_path / f"long{k}.wav"))
        sf.write(files[-1], np.tile(audio, 8), 8000)
    proc = subprocess.run(f"{sys.executable} -m asr transcribe -q --batch-size 1 {' '.join(files)} | head -1", shell=True,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.stdout.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr


# -- 15 -----------------------------------------------------------------------------------------

def test_15_empty_stdin_manifests_long_text_and_symlink_loops(tmp_path, capsys, monkeypatch):
    rc, out, err = run(["transcribe", "-"], capsys, stdin="", monkeypatch=monkeypatch)
    assert rc != 0 and "no input paths on stdin" in err

    # a manifest's relative paths are relative to it, and audio_filepath is all it needs
    (tmp_path / "m" / "wavs").mkdir(parents=True)
    (tmp_path / "m" / "wavs" / "a.wav").write_bytes((FSDD / "7_jackson_3.wav").read_bytes())
    manifest = tmp_path / "m" / "list.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": "wavs/a.wav"}) + "\n")
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(["transcribe", manifest], capsys)
    assert rc == 0 and out.strip().endswith("wavs/a.wav\tseven"), err

    # 2,000 digits would be cut off after a minute of work: refused before any
    rc, _, err = run(["synthesize", "--text", "7" * 2000, "-o", tmp_path / "long.wav"], capsys)
    assert_one_line_error(rc, err, "--text", "--max-steps")
    assert not (tmp_path / "long.wav").exists()

    # a folder that links to itself: each real folder is searched once
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "x.wav").write_bytes((FSDD / "7_jackson_3.wav").read_bytes())
    (loop / "again").symlink_to(loop, target_is_directory=True)
    proc = subprocess.run([sys.executable, "-m", "asr", "transcribe", f"{loop}/**/*.wav"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"{loop}/x.wav\tseven", proc.stderr
    rc, out, err = run(["transcribe", loop], capsys)
    assert rc == 0 and out.strip() == f"{loop}/x.wav\tseven"

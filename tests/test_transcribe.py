"""`asr transcribe` and model.transcribe() with the embedded digits model, on real FSDD audio."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import asr
from asr.audio import AudioError, load_audio
from asr.metrics import corpus_wer
from asr.package import PackageError
from asr.registry import load_model, resolve
from asr.transcribe import Transcriber, split_on_pauses
from data_prep.fsdd import trim_silence

from .conftest import FSDD, ROOT, needs_fsdd

pytestmark = needs_fsdd

CLIP = FSDD / "7_jackson_3.wav"  # a test take (0-4)


@pytest.fixture(scope="module")
def model():
    return asr.load_model("digits")


def digits_wav(tmp_path, words, name="seq.wav", pause=0.3):
    """A real connected-digit recording spliced from test takes of one speaker."""
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    parts = []
    for k, d in enumerate(words):
        wav, sr = load_audio(FSDD / f"{d}_theo_{k % 5}.wav")
        parts += [wav, np.zeros(int(pause * sr), np.float32)]
    path = tmp_path / name
    sf.write(path, np.concatenate(parts), 8000)
    return path, " ".join(names[d] for d in words)


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "asr", "transcribe", *map(str, args)], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_python_api_on_path_array_and_batch(model, tmp_path):
    assert model.transcribe(CLIP).text == "seven"
    wav, sr = sf.read(CLIP, dtype="float32")
    assert model.transcribe(wav, sample_rate=sr).text == "seven"
    path, ref = digits_wav(tmp_path, [3, 1, 9])
    out = model.transcribe([CLIP, path])
    # Batched output equals one-at-a-time output: padding never leaks into an utterance.
    assert [t.text for t in out] == ["seven", model.transcribe(path).text]
    assert len(out[1].text.split()) == 3
    with pytest.raises(ValueError, match="sample_rate"):
        model.transcribe(wav)


def test_arrays_at_another_rate_are_resampled_not_misread(model, tmp_path):
    # audio at twice or half the model's rate, read as if at its rate, is heard at another speed
    # (how TTS evaluation scored 81 % WER on intelligible 8 kHz speech with a 16 kHz ASR model)
    from asr.audio import resample

    path, ref = digits_wav(tmp_path, [3, 1, 9, 4])
    wav, sr = sf.read(path, dtype="float32")
    tr = Transcriber(model)
    other = 16000 if tr.sr != 16000 else 8000
    [resampled] = tr.transcribe_arrays([("seq", resample(wav, sr, other))], sample_rate=other)
    assert resampled.text == model.transcribe(path).text == ref


@pytest.mark.parametrize("fmt,subtype,sr,channels", [
    ("wav", "PCM_16", 16000, 1), ("flac", "PCM_16", 44100, 2), ("ogg", "VORBIS", 22050, 1), ("mp3", None, 16000, 2),
    ("wav", "FLOAT", 8000, 2),
])
def test_any_format_rate_and_channel_count(model, tmp_path, fmt, subtype, sr, channels):
    path, ref = digits_wav(tmp_path, [2, 9, 5])
    wav, _ = load_audio(path, sr)
    data = np.stack([wav] * channels, axis=1) if channels > 1 else wav
    out = tmp_path / f"x.{fmt}"
    sf.write(out, data, sr, **({"subtype": subtype} if subtype else {}))
    assert model.transcribe(out).text == ref


def test_word_times_are_the_spans_of_the_spliced_clips(model, tmp_path):
    # Each clip (trimmed at 30 dB below its loudest 30 ms) is placed after a silence of known
    # length, so its true span is known; a word's span must be within 0.15 s of it at both ends.
    # Before: a word started where the previous one ended ("six" at [1.86, 4.21] s for a clip at
    # [2.71, 3.21] s) and the last one ran to the end of the file.
    from .test_hostile_inputs_cli import spliced

    audio, spans = spliced("theo", [8, 6, 5, 2, 3], range(5))
    path = tmp_path / "seq.wav"
    sf.write(path, audio, 8000)
    t = model.transcribe(path)
    assert t.text == "eight six five two three"
    ends = 0.0
    for w, (start, end) in zip(t.words, spans):
        assert ends <= w.start < w.end <= t.duration + 1e-6
        assert abs(w.start - start) <= 0.15 and abs(w.end - end) <= 0.15, (w, (start, end))
        assert 0 < w.confidence <= 1
        ends = w.end


@pytest.mark.parametrize("fmt", ["text", "json", "ctm", "srt", "vtt"])
def test_cli_output_formats(tmp_path, fmt):
    from .helpers import parse_ctm, parse_subtitles

    path, ref = digits_wav(tmp_path, [8, 0, 6])
    if fmt in ("srt", "vtt"):  # one subtitle file per input, in an output folder
        res = run_cli("--format", fmt, "-o", f"{tmp_path}/subs/", path, CLIP)
        assert res.returncode == 0, res.stderr
        cues = parse_subtitles((tmp_path / "subs" / f"seq.{fmt}").read_text(), fmt)  # numbering, times, header
        assert " ".join(c[2] for c in cues) == ref
        assert [c[2] for c in parse_subtitles((tmp_path / "subs" / f"7_jackson_3.{fmt}").read_text(), fmt)] == ["seven"]
        return
    res = run_cli("--format", fmt, path, CLIP)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    if fmt == "text":
        assert out.splitlines() == [f"{path}\t{ref}", f"{CLIP}\tseven"]
    elif fmt == "json":
        objs = [json.loads(line) for line in out.splitlines()]
        assert objs[0]["text"] == ref and objs[0]["path"] == str(path) and objs[0]["duration"] > 0
        assert {"word", "start", "end", "confidence"} <= set(objs[0]["words"][0])
    else:
        utts = parse_ctm(out)  # six fields a line, times in order within each utterance
        assert {u: [w[2] for w in ws] for u, ws in utts.items()} == {"seq": ref.split(), "7_jackson_3": ["seven"]}


def test_cli_inputs_folder_glob_manifest_stdin(tmp_path):
    a, ra = digits_wav(tmp_path, [1], "a.wav")
    (tmp_path / "sub").mkdir()
    b, rb = digits_wav(tmp_path / "sub", [2], "b.wav")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": str(a), "duration": 1.0, "text": ra}) + "\n")
    for args, stdin in [([tmp_path], None), ([f"{tmp_path}/**/*.wav"], None), ([manifest], None), (["-"], f"{a}\n{b}\n")]:
        res = run_cli(*args, stdin=stdin)
        assert res.returncode == 0, (args, res.stderr)
        assert f"{a}\t{ra}" in res.stdout


def test_cli_bad_inputs_are_named_and_the_rest_transcribed(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0, np.float32), 8000)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(800, np.nan, np.float32), 8000, subtype="FLOAT")
    res = run_cli(tmp_path / "missing.wav", empty, text, zero, nan, CLIP)
    assert res.returncode == 1
    assert res.stdout.strip() == f"{CLIP}\tseven"
    for p, why in [("missing.wav", "no such file"), ("empty.wav", "empty"), ("notes.wav", "not readable"),
                   ("zero.wav", "zero-length"), ("nan.wav", "NaN")]:
        assert p in res.stderr and why in res.stderr, (p, res.stderr)


def test_package_with_wrong_checksum_is_refused(tmp_path):
    src = resolve("digits").read_bytes()
    bad = bytearray(src)
    bad[-100] ^= 0x01  # a weight, not the header
    (tmp_path / "bad.safetensors").write_bytes(bytes(bad))
    with pytest.raises(PackageError, match="checksum"):
        load_model(tmp_path / "bad.safetensors")
    (tmp_path / "trunc.safetensors").write_bytes(src[: len(src) // 2])
    with pytest.raises(PackageError, match="truncated or corrupt package"):  # the error, not the file name
        load_model(tmp_path / "trunc.safetensors")
    res = run_cli("--model", tmp_path / "bad.safetensors", CLIP)
    assert res.returncode == 2 and "bad.safetensors" in res.stderr


def test_ten_minute_recording_memory_stays_bounded(model, monkeypatch):
    # Ten minutes of theo's test takes (trimmed) with 0.25-0.5 s pauses of noise at the level of
    # the clips' own background (-74 dBFS): every word's position is known.
    sr, rng = 8000, np.random.default_rng(0)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    clips = {(d, k): trim_silence(load_audio(FSDD / f"{d}_theo_{k}.wav")[0]) for d in range(10) for k in range(5)}
    parts, word_spans, ref = [], [], []
    length = 0
    while length < 600 * sr:
        parts.append(rng.normal(0, 2e-4, int(rng.uniform(0.25, 0.5) * sr)).astype(np.float32))
        length += len(parts[-1])
        d, k = int(rng.integers(10)), int(rng.integers(5))
        parts.append(clips[d, k])
        word_spans.append((length, length + len(clips[d, k])))
        ref.append(names[d])
        length += len(clips[d, k])
    long = np.concatenate(parts)[: 600 * sr]
    ref = [w for w, (start, _) in zip(ref, word_spans) if start < len(long)]

    # Through the real Transcriber: the segmenter's cuts and every input the model is given.
    cuts, inputs = [], []
    monkeypatch.setattr("asr.transcribe.split_on_pauses",
                        lambda *args: cuts.append(split_on_pauses(*args)) or cuts[-1])
    forward = model.forward
    monkeypatch.setattr(model, "forward",
                        lambda wav, lens, *args: inputs.append(lens.tolist()) or forward(wav, lens, *args))
    t = Transcriber(model, batch_size=4, max_segment=20.0).transcribe(long, sample_rate=sr)

    spans = cuts[0]
    assert spans[0][0] == 0 and spans[-1][1] == len(long) and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    # memory is bounded by the segment, not the recording: no model input is longer than 20 s
    fed = sorted(n for call in inputs for n in call)
    assert fed == sorted(b - a for a, b in spans) and max(fed) <= 20 * sr and len(spans) >= 30
    inside_words = [c for _, c in spans[:-1] if any(a <= c < b for a, b in word_spans)]
    assert not inside_words, f"{len(inside_words)} of {len(spans) - 1} cuts inside a word"
    # the words, against what was said: 3 % is above the shipped model's WER on spliced strings
    # (README), which 20 s segments of one speaker's takes should not exceed
    stats = corpus_wer([" ".join(ref)], [t.text])
    print(stats.kaldi_line())
    assert stats.rate <= 3.0, stats.kaldi_line()
    assert all(w1.start <= w2.start for w1, w2 in zip(t.words, t.words[1:]))
    assert t.words[-1].end <= 600 + 1e-6


def test_decode_and_score_from_python_writes_what_asr_decode_writes(model, tmp_path):
    from asr.cli import main as cli_main
    from asr.datadir import Utterance, write_data_dir
    from asr.transcribe import decode_and_score

    clips = ["7_jackson_3", "2_theo_1", "9_george_4"]
    utts = [Utterance(c, str(FSDD / f"{c}.wav"), "seven", c.split("_")[1]) for c in clips]
    utts.append(Utterance("broken", str(tmp_path / "missing.wav"), "one", "nobody"))
    write_data_dir(tmp_path / "data", utts)
    failed = []
    res = decode_and_score(Transcriber(model, "greedy"), tmp_path / "data", tmp_path / "py",
                           on_error=lambda p, m: failed.append(p))
    assert failed == [str(tmp_path / "missing.wav")] and [p for p, _ in res.failed] == failed
    # two references are not "seven", and the unreadable one counts as deleted: 3 errors of 4 words
    assert (res.stats.errors, res.stats.total) == (3, 4) and res.rtf > 0
    assert cli_main(["decode", "--model", "digits", "--decoder", "greedy", "--data", str(tmp_path / "data"),
                     "--out-dir", str(tmp_path / "cli")]) == 1
    for name in ("wer", "hyp.txt", "per_utt"):
        assert (tmp_path / "py" / name).read_text() == (tmp_path / "cli" / name).read_text(), name

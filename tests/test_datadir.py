"""Kaldi data dirs and manifests: round trips, every parse error names file and line, the validator,
and fuzzing that only DataDirError/AudioError ever escape the parsers."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asr.audio import AudioError, save_audio
from asr.datadir import (DataDirError, Utterance, read_data_dir, read_manifest, read_text_file, subset,
                         validate_data_dir, write_data_dir, write_text_file)

REPO = Path(__file__).resolve().parents[1]

UTTS = [
    Utterance("spk1_b", "/data/b.wav", "hello world", "spk1", 1.25),
    Utterance("spk1_a", "sph2pipe -f wav /data/a.sph |", "grüße 你好", "spk1", 0.5, pipe=True),
    Utterance("spk2_a", "/data/with space.wav", "", "spk2", 2.0),
    Utterance("Spk0_x", "/data/x.wav", "x", "Spk0", 0.001),
]


def sorted_utts(utts):
    return sorted(utts, key=lambda u: u.utt_id.encode())


@pytest.fixture
def data_dir(tmp_path):
    write_data_dir(tmp_path / "d", UTTS)
    return tmp_path / "d"


def test_round_trip(data_dir):
    assert read_data_dir(data_dir, allow_pipes=True) == sorted_utts(UTTS)
    assert [u.pipe for u in read_data_dir(data_dir, allow_pipes=True)] == [False, True, False, False]
    assert read_manifest(data_dir / "manifest.jsonl") == sorted_utts(UTTS)
    assert validate_data_dir(data_dir, check_audio=False, allow_pipes=True) == []


def test_files_are_sorted_in_c_locale_order(data_dir):
    # Upper case sorts before lower case in LC_ALL=C, unlike most locales.
    assert (data_dir / "wav.scp").read_text().splitlines()[0] == "Spk0_x /data/x.wav"
    assert (data_dir / "spk2utt").read_text() == "Spk0 Spk0_x\nspk1 spk1_a spk1_b\nspk2 spk2_a\n"
    assert (data_dir / "utt2dur").read_text().splitlines() == [
        "Spk0_x 0.001", "spk1_a 0.500", "spk1_b 1.250", "spk2_a 2.000"]
    assert (data_dir / "text").read_bytes().decode("utf-8").splitlines()[1] == "spk1_a grüße 你好"
    for name in ("wav.scp", "text", "utt2spk", "utt2dur"):
        ids = [line.split()[0] for line in (data_dir / name).read_text().splitlines()]
        assert ids == sorted(ids, key=str.encode)


def test_manifest_fields(data_dir):
    first = json.loads((data_dir / "manifest.jsonl").read_text().splitlines()[0])
    assert first == {"utt_id": "Spk0_x", "audio_filepath": "/data/x.wav", "duration": 0.001,
                     "text": "x", "speaker": "Spk0"}


def test_text_files(data_dir, tmp_path):
    assert read_text_file(data_dir) == read_text_file(data_dir / "text") == {
        "Spk0_x": "x", "spk1_a": "grüße 你好", "spk1_b": "hello world", "spk2_a": ""}
    write_text_file(tmp_path / "hyp", {"b": "two words", "a": "", "B": "x"})
    assert (tmp_path / "hyp").read_text() == "B x\na\nb two words\n"
    assert read_text_file(tmp_path / "hyp") == {"B": "x", "a": "", "b": "two words"}
    with pytest.raises(DataDirError, match="line break"):
        write_text_file(tmp_path / "hyp", {"a": "one\ntwo"})
    (tmp_path / "hyp").write_text("a x\na y\n")
    with pytest.raises(DataDirError, match=f"{tmp_path / 'hyp'}:2: duplicate utt id 'a'"):
        read_text_file(tmp_path / "hyp")


def test_optional_files_and_defaults(tmp_path):
    write_data_dir(tmp_path, [Utterance("b", "b.wav"), Utterance("a", "a.wav")])
    assert not (tmp_path / "text").exists() and not (tmp_path / "utt2dur").exists()
    (tmp_path / "utt2spk").unlink()
    assert read_data_dir(tmp_path) == [Utterance("a", "a.wav", None, "a"), Utterance("b", "b.wav", None, "b")]


def test_write_accepts_paths_and_normalizes_blanks(tmp_path):
    write_data_dir(tmp_path, [Utterance("a", tmp_path / "a.wav", "  hi  there\t")])
    expected = [Utterance("a", str(tmp_path / "a.wav"), "hi  there")]
    assert read_data_dir(tmp_path) == read_manifest(tmp_path / "manifest.jsonl") == expected


def test_rewrite_removes_stale_optional_files(data_dir):
    write_data_dir(data_dir, [Utterance("a", "a.wav")])
    assert read_data_dir(data_dir) == [Utterance("a", "a.wav")]


def test_falls_back_to_manifest(data_dir):
    for name in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur"):
        (data_dir / name).unlink()
    assert read_data_dir(data_dir) == sorted_utts(UTTS)


def test_nemo_manifest_without_utt_id(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"audio_filepath": "/x/one.wav", "duration": 3, "text": "a b"}\n'
                    '{"audio_filepath": "/y/two.flac", "duration": 1.5}\n')
    assert read_manifest(path) == [Utterance("one", "/x/one.wav", "a b", "one", 3.0),
                                   Utterance("two", "/y/two.flac", None, "two", 1.5)]


@pytest.mark.parametrize("utts, message", [
    ([Utterance("a", "x.wav"), Utterance("a", "y.wav")], "duplicate utt id 'a'"),
    ([Utterance("a b", "x.wav")], "whitespace"),
    ([Utterance("a", "x.wav", "two\nlines")], "line break"),
    ([Utterance("a", "")], "audio must be a non-empty string"),
    ([Utterance("a", "x.wav", "t"), Utterance("b", "y.wav")], "text is given for some"),
    ([Utterance("a", "x.wav", duration=-1.0)], "duration must be a finite number >= 0"),
    ([Utterance("a", "x.wav", speaker="s 1")], "speaker 's 1'"),
])
def test_write_refuses_bad_utterances(tmp_path, utts, message):
    with pytest.raises(DataDirError, match=message):
        write_data_dir(tmp_path, utts)
    assert not (tmp_path / "wav.scp").exists()


# (file, content, line the error is on, words of the message); the rest of the dir is valid.
BAD_FILES = [
    ("wav.scp", b"a a.wav\n\nb b.wav\n", 2, "empty line"),
    ("wav.scp", b"a a.wav\n  \t\nb b.wav\n", 2, "empty line"),
    ("wav.scp", b"a a.wav\nb\n", 2, "only the utt id 'b', no audio"),
    ("wav.scp", b"a a.wav\nb b.wav\na c.wav\n", 3, "duplicate utt id 'a' (first on line 1)"),
    ("wav.scp", b"a a.wav\nb b\xff.wav\n", 2, "invalid UTF-8"),
    ("wav.scp", b"a a.wav\nb\x01c b.wav\n", 2, "control character"),
    ("text", b"a yes\nc no\n", 2, "utt id 'c' is not in wav.scp"),
    ("text", b"a yes\nb \xc3\n", 2, "invalid UTF-8"),
    ("utt2spk", b"a s1\nb s1 s2\n", 2, "exactly 2 fields"),
    ("utt2spk", b"a\n", 1, "no speaker"),
    ("utt2spk", b"a s1\n", 2, "utt id 'b' has no line in utt2spk"),  # line 2 of wav.scp
    ("utt2dur", b"a 1.0\nb abc\n", 2, "non-numeric or negative duration 'abc'"),
    ("utt2dur", b"a -1.0\nb 1\n", 1, "non-numeric or negative duration '-1.0'"),
    ("utt2dur", b"a nan\nb 1\n", 1, "duration 'nan'"),
    ("utt2dur", b"a 1_0\nb 1\n", 1, "duration '1_0'"),
    ("utt2dur", b"a 1e999\nb 1\n", 1, "not finite"),
    ("utt2dur", b"a 1.0\nb 2.0\nzz 3\n", 3, "utt id 'zz' is not in wav.scp"),
]


@pytest.mark.parametrize("name, content, line, message", BAD_FILES)
def test_parse_errors_name_file_and_line(tmp_path, name, content, line, message):
    write_data_dir(tmp_path, [Utterance("a", "a.wav", "yes", "s1", 1.0), Utterance("b", "b.wav", "no", "s1", 1.0)])
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataDirError) as e:
        read_data_dir(tmp_path)
    where = "wav.scp" if "has no line in" in message else name
    assert f"{tmp_path / where}:{line}: " in str(e.value)
    assert message in str(e.value)
    # The validator reports the same problem instead of raising.
    assert any(message in p for p in validate_data_dir(tmp_path, check_audio=False))


BAD_MANIFESTS = [
    ('{"audio_filepath": "a.wav", "duration": 1}\n\n', 2, "empty line"),
    ('{"audio_filepath": "a.wav", "duration": 1}\n{"duration": 1}\n', 2, "missing field 'audio_filepath'"),
    ('{"audio_filepath": "a.wav"}\n', 1, "missing field 'duration'"),
    ('{"audio_filepath": "a.wav", "duration": 1\n', 1, "not valid JSON"),
    ('["a.wav", 1]\n', 1, "expected a JSON object, got list"),
    ('{"audio_filepath": "a.wav", "duration": -2}\n', 1, "duration must be a finite number >= 0"),
    ('{"audio_filepath": "a.wav", "duration": "2.0"}\n', 1, "non-numeric duration '2.0'"),
    ('{"audio_filepath": "a.wav", "duration": NaN}\n', 1, "finite"),
    ('{"audio_filepath": "a.wav", "duration": true}\n', 1, "non-numeric duration True"),
    ('{"audio_filepath": 5, "duration": 1}\n', 1, "audio_filepath must be a non-empty string"),
    ('{"audio_filepath": "a.wav", "duration": 1, "text": 7}\n', 1, "text must be a string"),
    ('{"audio_filepath": "a.wav", "duration": 1, "speaker": "a b"}\n', 1, "speaker 'a b'"),
    ('{"audio_filepath": "a.wav", "duration": 1, "offset": 2.5}\n', 1, "'offset'"),
    ('{"audio_filepath": "/x/my file.wav", "duration": 1}\n', 1, "taken from the file name"),
    ('{"audio_filepath": "/x/a.wav", "duration": 1}\n{"audio_filepath": "/y/a.wav", "duration": 1}\n',
     2, "duplicate utt id 'a' (taken from the file name) (first on line 1)"),
    ('[' * 100_000 + '\n', 1, "not valid JSON"),
]


@pytest.mark.parametrize("content, line, message", BAD_MANIFESTS)
def test_manifest_errors_name_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "manifest.jsonl"
    path.write_text(content)
    with pytest.raises(DataDirError) as e:
        read_manifest(path)
    assert str(e.value).startswith(f"{path}:{line}: ")
    assert message in str(e.value)


def test_missing_dir_and_files(tmp_path):
    with pytest.raises(DataDirError, match="not a directory"):
        read_data_dir(tmp_path / "nope")
    with pytest.raises(DataDirError, match="no wav.scp or manifest.jsonl"):
        read_data_dir(tmp_path)
    (tmp_path / "segments").write_text("s a 0 1\n")
    (tmp_path / "wav.scp").write_text("a a.wav\n")
    with pytest.raises(DataDirError, match="segments"):
        read_data_dir(tmp_path)
    assert validate_data_dir(tmp_path / "nope") == [f"{tmp_path / 'nope'}: not a directory"]


# ---------------------------------------------------------------------------------------------
# validator


def _problems(d, **kw):
    return "\n".join(validate_data_dir(d, check_audio=False, **{"allow_pipes": True, **kw}))


def test_validator_unsorted(data_dir):
    lines = (data_dir / "wav.scp").read_text().splitlines()
    (data_dir / "wav.scp").write_text("\n".join(reversed(lines)) + "\n")
    assert f"{data_dir / 'wav.scp'}:2: not sorted" in _problems(data_dir)


def test_validator_inconsistent_id_sets(data_dir):
    (data_dir / "text").write_text("Spk0_x x\nspk1_a a\nspk1_b b\n")
    assert "utt id 'spk2_a' has no line in text" in _problems(data_dir)


def test_validator_spk2utt_mismatch(data_dir):
    (data_dir / "spk2utt").write_text("Spk0 Spk0_x\nspk1 spk1_a\nspk2 spk2_a\n")
    assert f"{data_dir / 'spk2utt'}:2: spk2utt does not match utt2spk for speaker 'spk1'" in _problems(data_dir)


def test_validator_empty_dir(tmp_path):
    write_data_dir(tmp_path, [])
    assert _problems(tmp_path) == f"{tmp_path / 'wav.scp'}: no utterances"


def test_validator_missing_required_files(data_dir):
    (data_dir / "spk2utt").unlink()
    assert _problems(data_dir) == f"{data_dir / 'spk2utt'}: missing"


def test_validator_speaker_sort_order_and_prefix_warning(tmp_path, caplog):
    # Utterance ids not prefixed by the speaker: b sorts before a in speaker order.
    write_data_dir(tmp_path, [Utterance("u1", "1.wav", speaker="zed"), Utterance("u2", "2.wav", speaker="amy")])
    with caplog.at_level(logging.WARNING, logger="asr.datadir"):
        assert "sorting by speaker changes the utterance order" in _problems(tmp_path)
    assert "do not start with their speaker id" in caplog.text
    # One speaker ("global", as in yesno): no order problem, no warning.
    caplog.clear()
    write_data_dir(tmp_path, [Utterance("u1", "1.wav", speaker="global"), Utterance("u2", "2.wav", speaker="global")])
    with caplog.at_level(logging.WARNING, logger="asr.datadir"):
        assert _problems(tmp_path) == ""
    assert caplog.text == ""


def test_validator_manifest_disagrees(data_dir):
    lines = (data_dir / "manifest.jsonl").read_text().splitlines()
    (data_dir / "manifest.jsonl").write_text("\n".join(lines[1:]) + "\n")
    assert "utt id 'Spk0_x' from wav.scp is missing" in _problems(data_dir)


def test_validator_reads_audio(tmp_path):
    good, bad, empty = tmp_path / "good.wav", tmp_path / "bad.wav", tmp_path / "empty.wav"
    save_audio(good, np.sin(np.arange(4000) / 5.0) * 0.1, 8000)
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 4)
    empty.write_bytes(b"")
    d = tmp_path / "d"
    write_data_dir(d, [Utterance("g", str(good), duration=0.5), Utterance("b", str(bad), duration=1.0),
                       Utterance("e", str(empty), duration=1.0), Utterance("m", str(tmp_path / "missing.wav"), duration=1.0),
                       Utterance("w", str(good), duration=0.9)])
    problems = validate_data_dir(d)
    assert len(problems) == 4, problems
    assert any("'b'" in p and "bad.wav" in p for p in problems)
    assert any("'e'" in p and "empty file" in p for p in problems)
    assert any("'m'" in p and "no such file" in p for p in problems)
    assert any("'w'" in p and "utt2dur says 0.900 s, the audio lasts 0.500 s" in p for p in problems)
    assert validate_data_dir(d, check_audio=False) == []


def main(argv: list[str]) -> int:
    from asr import cli

    return cli.main(["datadir", *argv])


def test_cli(data_dir, capsys):
    assert main(["validate", str(data_dir), "--no-audio", "--allow-pipes"]) == 0
    assert "valid (4 utterances)" in capsys.readouterr().out
    (data_dir / "utt2spk").write_text("Spk0_x Spk0\n")
    assert main(["validate", str(data_dir), "--no-audio", "--allow-pipes"]) == 1
    assert "has no line in utt2spk" in capsys.readouterr().out


def test_cli_as_module(data_dir):
    (data_dir / "text").write_text("zzz a\n")
    proc = subprocess.run([sys.executable, "-m", "asr", "datadir", "validate", str(data_dir)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"{data_dir / 'text'}:1: utt id 'zzz' is not in wav.scp" in proc.stdout


def test_subset():
    assert [u.utt_id for u in subset(UTTS, speakers=["spk1"])] == ["spk1_b", "spk1_a"]
    assert [u.utt_id for u in subset(UTTS, exclude_speakers=["spk1", "Spk0"])] == ["spk2_a"]
    assert subset(UTTS) == UTTS
    with pytest.raises(ValueError, match="unknown speaker"):
        subset(UTTS, exclude_speakers=["spk9"])


# ---------------------------------------------------------------------------------------------
# fuzzing: whatever the bytes, a parser returns or raises DataDirError/AudioError


FILES = ["wav.scp", "text", "utt2spk", "spk2utt", "utt2dur", "manifest.jsonl"]
fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Lines built from the pieces that matter to the parsers, so the fuzzer reaches past line 1.
piece = st.sampled_from([b"a", b"b", b"spk", b" ", b"\t", b"\n", b"\r", b"1.5", b"-1", b"nan", b"x.wav",
                         b"|", b"\xff", "\u00e4".encode(), b"{", b"}", b'"', b":", b",", b"audio_filepath",
                         b"duration", b"null", b"\xef\xbb\xbf"])
contents = st.one_of(st.binary(max_size=200), st.lists(piece, max_size=40).map(b"".join),
                     st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))


def _only_expected_errors(fn, *args):
    try:
        return fn(*args)
    except (DataDirError, AudioError):
        return None


@fuzz
@given(name=st.sampled_from(FILES), content=contents)
def test_fuzz_data_dir_files(name, content):
    with tempfile.TemporaryDirectory() as tmp:
        write_data_dir(tmp, [Utterance("a", "a.wav", "yes", "s", 1.0), Utterance("b", "b.wav", "no", "s", 2.0)])
        Path(tmp, name).write_bytes(content)
        _only_expected_errors(read_data_dir, tmp)
        _only_expected_errors(read_manifest, Path(tmp, "manifest.jsonl"))
        assert isinstance(validate_data_dir(tmp, check_audio=False), list)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8)
manifest_objects = st.dictionaries(
    st.sampled_from(["utt_id", "audio_filepath", "duration", "text", "speaker", "offset", "other"]),
    json_values | st.text(max_size=12), max_size=6)


@fuzz
@given(objects=st.lists(manifest_objects | json_values, max_size=4))
def test_fuzz_manifest_json(objects):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "manifest.jsonl")
        path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects), encoding="utf-8")
        utts = _only_expected_errors(read_manifest, path)
        if utts is None:
            return
        # Whatever was accepted writes and reads back the same, up to utt2dur's 3 decimals.
        try:
            write_data_dir(Path(tmp, "d"), utts)
        except DataDirError as e:
            # a manifest's path ending in '|' is a file name there, a command in wav.scp
            assert "is given for some utterances but not" in str(e) or "wav.scp reads as a command" in str(e)
            return
        for u in utts:
            u.duration = None if u.duration is None else float(f"{u.duration:.3f}")
        assert read_data_dir(Path(tmp, "d")) == sorted_utts(utts)


ids = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), min_size=1, max_size=8).filter(
    lambda s: not any(c.isspace() for c in s) and not any(c in s for c in "/\\") and s not in (".", ".."))
line_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=20).map(
    lambda s: s.strip(" \t"))


@fuzz
@given(st.dictionaries(ids, st.tuples(line_text.filter(bool), line_text, ids,
                                      st.floats(0, 1e5).map(lambda d: round(d, 3))), min_size=1, max_size=6))
def test_fuzz_round_trip(entries):
    utts = [Utterance(u, audio, text, spk, dur, pipe=audio.endswith("|"))
            for u, (audio, text, spk, dur) in entries.items()]
    with tempfile.TemporaryDirectory() as tmp:
        write_data_dir(tmp, utts)
        assert read_data_dir(tmp, allow_pipes=True) == sorted_utts(utts)
        assert read_manifest(Path(tmp, "manifest.jsonl")) == sorted_utts(utts)
        assert "not sorted" not in _problems(tmp)

"""Kaldi data directories and JSON-lines manifests: the only module that reads or writes them.

A data dir holds `wav.scp`, `text`, `utt2spk`, `spk2utt`, `utt2dur` and `manifest.jsonl`, all
UTF-8 and sorted by utterance id in C-locale byte order, so Kaldi/ESPnet tools accept what we write
and we accept what they write. Parse errors are `DataDirError`s of the form `file:line: problem`,
because a bare KeyError three stages later does not tell anyone which line of which file to fix.

    asr datadir validate DIR [--no-audio] [--allow-pipes]

Kaldi's `cmd |` wav.scp entries are shell commands, and a data dir from elsewhere can hold any
command: they run only when the reader allows it (`allow_pipes=True`, `--allow-pipes`, or the
environment variable ASR_ALLOW_PIPES=1); otherwise reading the data dir fails at that line. A
manifest's `audio_filepath`, like any path a user gives, is always a file name.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from asr.audio import AudioError, audio_duration, decode_audio, load_audio, read_pipe

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
# Kaldi tools split fields on ASCII blanks only; other Unicode spaces belong to the transcript.
_FIELD_SEP = re.compile(r"[ \t]+")
# Python's float() also takes "1_0", "inf" and "nan"; a duration file should not.
_DURATION = re.compile(r"\+?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
# Opt-in for running wav.scp commands without a code change (recipes, `asr train`'s data dirs).
ALLOW_PIPES_ENV = "ASR_ALLOW_PIPES"
# utt2dur keeps 3 decimals; the header and the decoded sample count may disagree by a frame or two.
_DURATION_TOLERANCE = 0.01


class DataDirError(ValueError):
    """A data dir or manifest that cannot be used; the message names the file, line and problem."""


@dataclass
class Utterance:
    utt_id: str
    audio: str  # a path, or (with pipe=True) a Kaldi pipe command ending in "|"
    text: str | None = None
    speaker: str = ""  # empty means "its own speaker", Kaldi's convention when utt2spk is absent
    duration: float | None = None  # seconds
    # Whether `audio` is a command to run: only a wav.scp read with pipes allowed, or a data-prep
    # script that says so, sets it. Not part of equality: a manifest holds the same utterance, it
    # just cannot run it.
    pipe: bool = field(default=False, compare=False)

    def __post_init__(self):
        if self.speaker == "":
            self.speaker = self.utt_id

    def load_audio(self, sample_rate: int | None = None, *, mono: bool = True):
        """(samples, rate) of this utterance: its file, or its command's output when `pipe`."""
        if self.pipe:
            return decode_audio(read_pipe(self.audio), self.audio, sample_rate, mono=mono)
        return load_audio(self.audio, sample_rate, mono=mono)

    def audio_duration(self) -> float:
        """Seconds of audio: from the file's header, or by running the command when `pipe`."""
        if self.pipe:
            samples, sr = self.load_audio(mono=False)
            return len(samples) / sr
        return audio_duration(self.audio)


def _sort_key(utt_id: str) -> bytes:
    # LC_ALL=C sort compares UTF-8 bytes; spelled out so nobody swaps in a locale-aware sort.
    return utt_id.encode("utf-8")


def _token_problem(value, what: str) -> str | None:
    """Why `value` cannot be a utt or speaker id (a single whitespace-free field), or None."""
    if not isinstance(value, str) or not value:
        return f"{what} must be a non-empty string, got {value!r}"
    for c in value:
        if c.isspace() or unicodedata.category(c) in ("Cc", "Cs"):
            return f"{what} {value!r} contains whitespace or a control character {c!r}"
    return None


def _utt_id_problem(value) -> str | None:
    """Why `value` cannot be an utterance id, or None. Ids become file names (`<out>/<id>.wav`),
    so one must not be able to name a path: no separators, not `.` or `..`."""
    if problem := _token_problem(value, "utt id"):
        return problem
    if "/" in value or "\\" in value or value in (".", ".."):
        return f"utt id {value!r} would name a path (contains '/' or '\\', or is '.' or '..')"
    return None


def utterance_file(folder: str | os.PathLike, utt_id: str, suffix: str) -> Path:
    """`folder/<utt_id><suffix>`, refusing an id that would put the file anywhere else."""
    if problem := _utt_id_problem(utt_id):
        raise DataDirError(f"{folder}: {problem}")
    folder = Path(folder)
    path = folder / f"{utt_id}{suffix}"
    if path.resolve().parent != folder.resolve():
        raise DataDirError(f"{folder}: utt id {utt_id!r} would write outside it ({path})")
    return path


def pipes_allowed(allow_pipes: bool | None = None) -> bool:
    """The caller's explicit choice, or else the environment's ASR_ALLOW_PIPES=1."""
    return allow_pipes if allow_pipes is not None else os.environ.get(ALLOW_PIPES_ENV) == "1"


def _is_pipe(audio: str) -> bool:
    return audio.rstrip(" \t").endswith("|")


def _line_problem(value, what: str, allow_empty: bool = False) -> str | None:
    """Why `value` cannot be written as the rest of one line, or None."""
    if not isinstance(value, str) or (not value.strip(" \t") and not allow_empty):
        return f"{what} must be a{'' if allow_empty else ' non-empty'} string, got {value!r}"
    if "\n" in value or "\r" in value:
        return f"{what} {value!r} contains a line break"
    if any(unicodedata.category(c) == "Cs" for c in value):
        return f"{what} {value!r} is not valid Unicode (lone surrogate)"
    return None


def _duration_problem(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"non-numeric duration {value!r}"
    try:
        ok = math.isfinite(float(value)) and value >= 0
    except OverflowError:  # a JSON integer with hundreds of digits
        ok = False
    return None if ok else f"duration must be a finite number >= 0, got {str(value)[:30]}"


def _normalized(u: Utterance) -> Utterance:
    """`u` as the Kaldi files will read it back: blanks around audio and text do not survive."""
    strip = lambda v: v.strip(" \t") if isinstance(v, str) else v  # noqa: E731
    if isinstance(u.duration, int) and not isinstance(u.duration, bool):
        u = replace(u, duration=float(u.duration))
    return replace(u, audio=strip(u.audio), text=strip(u.text))


def _pipe_problem(u: Utterance) -> str | None:
    if u.pipe and not _is_pipe(u.audio):
        return f"audio {u.audio!r} is marked as a pipe but does not end in '|'"
    if not u.pipe and _is_pipe(u.audio):
        return (f"audio {u.audio!r} ends in '|', which wav.scp reads as a command; pass pipe=True "
                "if it is one")
    return None


def _utterance_problem(u: Utterance) -> str | None:
    return (
        _utt_id_problem(u.utt_id)
        or _line_problem(u.audio, "audio")
        or (None if u.text is None else _line_problem(u.text, "text", allow_empty=True))
        or _token_problem(u.speaker, "speaker")
        or _duration_problem(u.duration)
    )


# ---------------------------------------------------------------------------------------------
# reading


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) for each line of a UTF-8 text file; empty lines are errors."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataDirError(f"{path}: cannot read ({e.strerror or e})") from None
    if data.startswith(b"\xef\xbb\xbf"):  # a BOM from a Windows editor would glue onto the first id
        data = data[3:]
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataDirError(f"{path}:{number}: invalid UTF-8 at byte {e.start}") from None
        line = line.strip(" \t\r")
        if not line:
            raise DataDirError(f"{path}:{number}: empty line")
        yield number, line


@dataclass
class _Table:
    """One `key value...` file: values and the line each key came from, in file order."""

    path: Path
    values: dict[str, str]
    line_of: dict[str, int]

    def where(self, key: str) -> str:
        return f"{self.path}:{self.line_of[key]}"


def _read_table(path: Path, value_name: str, allow_empty: bool = False,
                key_name: str = "utt id") -> _Table:
    values: dict[str, str] = {}
    line_of: dict[str, int] = {}
    for number, line in _lines(path):
        key, *rest = _FIELD_SEP.split(line, maxsplit=1)
        if problem := (_utt_id_problem(key) if key_name == "utt id" else _token_problem(key, key_name)):
            raise DataDirError(f"{path}:{number}: {problem}")
        if not rest and not allow_empty:
            raise DataDirError(f"{path}:{number}: line has only the {key_name} {key!r}, no {value_name}")
        if key in values:
            raise DataDirError(f"{path}:{number}: duplicate {key_name} {key!r} (first on line {line_of[key]})")
        values[key], line_of[key] = (rest[0] if rest else ""), number
    return _Table(path, values, line_of)


def _read_single_field(path: Path, value_name: str) -> _Table:
    table = _read_table(path, value_name)
    for key, value in table.values.items():
        if problem := _token_problem(value, value_name):
            raise DataDirError(f"{table.where(key)}: {problem} (expected exactly 2 fields)")
    return table


def _parse_duration(text: str, where: str) -> float:
    if not _DURATION.fullmatch(text):
        raise DataDirError(f"{where}: non-numeric or negative duration {text!r}")
    value = float(text)
    if not math.isfinite(value):
        raise DataDirError(f"{where}: duration {text!r} is not finite")
    return value


def _read_utt2dur(path: Path) -> tuple[_Table, dict[str, float]]:
    table = _read_table(path, "duration")
    return table, {k: _parse_duration(v, table.where(k)) for k, v in table.values.items()}


def _read_spk2utt(path: Path) -> _Table:
    table = _read_table(path, "utterance list", key_name="speaker")
    for spk, utts in table.values.items():
        for utt in _FIELD_SEP.split(utts):
            if problem := _utt_id_problem(utt):
                raise DataDirError(f"{table.where(spk)}: {problem}")
    return table


@dataclass
class _KaldiFiles:
    wav: _Table
    text: _Table | None = None
    utt2spk: _Table | None = None
    utt2dur: _Table | None = None
    durations: dict[str, float] | None = None


def _read_kaldi_files(d: Path) -> _KaldiFiles:
    files = _KaldiFiles(_read_table(d / "wav.scp", "audio path or command"))
    if (d / "text").exists():
        files.text = _read_table(d / "text", "transcript", allow_empty=True)  # empty = silence
    if (d / "utt2spk").exists():
        files.utt2spk = _read_single_field(d / "utt2spk", "speaker")
    if (d / "utt2dur").exists():
        files.utt2dur, files.durations = _read_utt2dur(d / "utt2dur")
    return files


def _id_set_problems(files: _KaldiFiles) -> Iterator[str]:
    """Every utt id must appear in wav.scp and in each optional per-utterance file present."""
    wav = files.wav
    for table in (files.text, files.utt2spk, files.utt2dur):
        if table is None:
            continue
        for key in table.values:
            if key not in wav.values:
                yield f"{table.where(key)}: utt id {key!r} is not in {wav.path.name}"
        for key in wav.values:
            if key not in table.values:
                yield f"{wav.where(key)}: utt id {key!r} has no line in {table.path.name}"


def _pipe_refusal(wav: _Table, utt_id: str) -> str:
    return (f"{wav.where(utt_id)}: utterance {utt_id!r} is a shell command ({wav.values[utt_id]!r}); "
            f"wav.scp commands run only when allowed: pass --allow-pipes (allow_pipes=True) or set "
            f"{ALLOW_PIPES_ENV}=1, for a data dir you trust")


def read_data_dir(dir: str | os.PathLike, allow_pipes: bool | None = None) -> list[Utterance]:
    """The utterances of a data dir, sorted by id: from wav.scp (+ text, utt2spk, utt2dur), or from
    manifest.jsonl when there is no wav.scp. A `cmd |` entry of wav.scp is a DataDirError naming
    its line unless pipes are allowed (`allow_pipes`, else ASR_ALLOW_PIPES=1)."""
    d = Path(dir)
    if not d.is_dir():
        raise DataDirError(f"{d}: not a directory")
    if (d / "segments").exists():
        # Reading whole recordings where segments were meant would silently train on the wrong audio.
        raise DataDirError(f"{d / 'segments'}: segmented data dirs are not supported")
    if not (d / "wav.scp").exists():
        if (d / MANIFEST).exists():
            return sorted(read_manifest(d / MANIFEST), key=lambda u: _sort_key(u.utt_id))
        raise DataDirError(f"{d}: no wav.scp or {MANIFEST}")
    files = _read_kaldi_files(d)
    for problem in _id_set_problems(files):
        raise DataDirError(problem)
    allowed = pipes_allowed(allow_pipes)
    utts = []
    for utt_id, audio in files.wav.values.items():
        pipe = _is_pipe(audio)
        if pipe and not allowed:
            raise DataDirError(_pipe_refusal(files.wav, utt_id))
        utts.append(Utterance(
            utt_id=utt_id,
            audio=audio,
            text=files.text.values[utt_id] if files.text else None,
            speaker=files.utt2spk.values[utt_id] if files.utt2spk else utt_id,
            duration=files.durations[utt_id] if files.durations is not None else None,
            pipe=pipe,
        ))
    return sorted(utts, key=lambda u: _sort_key(u.utt_id))


def read_text_file(path: str | os.PathLike) -> dict[str, str]:
    """utt id -> transcript from a Kaldi `text` file (references or hypotheses, in file order); a
    data dir stands for its `text`. An id alone on its line is an empty transcript."""
    path = Path(path)
    if path.is_dir():
        path = path / "text"
    return _read_table(path, "transcript", allow_empty=True).values


def write_text_file(path: str | os.PathLike, texts: dict[str, str]) -> None:
    """Write utt id -> transcript as a sorted Kaldi `text` file, atomically."""
    for utt_id, text in texts.items():
        if problem := _token_problem(utt_id, "utt id") or _line_problem(text, "text", allow_empty=True):
            raise DataDirError(f"{path}: {problem}")
    _write_atomic(Path(path), [f"{u} {texts[u].strip(' ')}".rstrip(" ") for u in sorted(texts, key=_sort_key)])


def read_manifest(path: str | os.PathLike) -> list[Utterance]:
    """Utterances of a JSON-lines manifest, in file order. Accepts NeMo manifests: `audio_filepath`
    and `duration` are required, `text`, `speaker` and `utt_id` optional (utt_id defaults to the
    audio file's stem)."""
    path = Path(path)
    utts: list[Utterance] = []
    line_of: dict[str, int] = {}
    for number, line in _lines(path):
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise DataDirError(f"{where}: not valid JSON ({str(e)[:100]})") from None
        if not isinstance(obj, dict):
            raise DataDirError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        for name in ("audio_filepath", "duration"):
            if name not in obj:
                raise DataDirError(f"{where}: missing field {name!r}")
        if obj.get("offset"):
            raise DataDirError(f"{where}: 'offset' (a segment of a longer file) is not supported")
        audio = obj["audio_filepath"]
        if problem := _line_problem(audio, "audio_filepath"):
            raise DataDirError(f"{where}: {problem}")
        if "utt_id" in obj:
            utt_id, id_origin = obj["utt_id"], ""
        else:
            utt_id, id_origin = Path(audio.rstrip(" |")).stem, " (taken from the file name)"
        speaker = obj.get("speaker")
        u = Utterance(utt_id=utt_id, audio=audio, text=obj.get("text"),
                      speaker="" if speaker is None else speaker, duration=obj["duration"])
        # A manifest's audio is a file name, whatever it ends in: it is never run.
        if problem := _utterance_problem(u):
            raise DataDirError(f"{where}: {problem}{id_origin}")
        u = _normalized(u)
        if u.utt_id in line_of:
            raise DataDirError(f"{where}: duplicate utt id {u.utt_id!r}{id_origin} "
                               f"(first on line {line_of[u.utt_id]})")
        line_of[u.utt_id] = number
        utts.append(u)
    return utts


# ---------------------------------------------------------------------------------------------
# writing


def _write_atomic(path: Path, lines: Iterable[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _all_or_none(utts: list[Utterance], field: str) -> bool:
    """Whether every utterance has `field`; a mix would write a file missing some ids."""
    have = [getattr(u, field) is not None for u in utts]
    if any(have) and not all(have):
        missing = next(u.utt_id for u, h in zip(utts, have) if not h)
        raise DataDirError(f"{field} is given for some utterances but not for {missing!r}")
    return bool(have) and all(have)


def write_data_dir(dir: str | os.PathLike, utterances: Iterable[Utterance]) -> None:
    """Write wav.scp, utt2spk, spk2utt, manifest.jsonl and (when known) text and utt2dur, sorted
    by utt id; each file is replaced atomically. Raises DataDirError on duplicate or invalid ids."""
    d = Path(dir)
    utts = list(utterances)
    for i, u in enumerate(utts):
        if isinstance(u.audio, os.PathLike):
            u = replace(u, audio=os.fspath(u.audio))
        if problem := _utterance_problem(u) or _pipe_problem(u):
            raise DataDirError(f"utterance {u.utt_id!r}: {problem}")
        utts[i] = _normalized(u)  # so manifest.jsonl and the Kaldi files agree
    utts.sort(key=lambda u: _sort_key(u.utt_id))
    for prev, u in zip(utts, utts[1:]):
        if prev.utt_id == u.utt_id:
            raise DataDirError(f"duplicate utt id {u.utt_id!r}")
    has_text, has_duration = _all_or_none(utts, "text"), _all_or_none(utts, "duration")

    spk2utt: dict[str, list[str]] = {}
    for u in utts:
        spk2utt.setdefault(u.speaker, []).append(u.utt_id)
    files = {
        "wav.scp": [f"{u.utt_id} {u.audio}" for u in utts],
        "utt2spk": [f"{u.utt_id} {u.speaker}" for u in utts],
        "spk2utt": [" ".join([s, *spk2utt[s]]) for s in sorted(spk2utt, key=_sort_key)],
        "text": [f"{u.utt_id} {u.text}".rstrip(" ") for u in utts] if has_text else None,
        "utt2dur": [f"{u.utt_id} {u.duration:.3f}" for u in utts] if has_duration else None,
        MANIFEST: [json.dumps({
            "utt_id": u.utt_id,
            "audio_filepath": u.audio,
            "duration": None if u.duration is None else round(float(u.duration), 3),
            "text": u.text,
            "speaker": u.speaker,
        }, ensure_ascii=False) for u in utts],
    }
    d.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        if lines is None:
            (d / name).unlink(missing_ok=True)  # a stale file would describe other utterances
        else:
            _write_atomic(d / name, lines)


def subset(utterances: Iterable[Utterance], speakers: Iterable[str] | None = None,
           exclude_speakers: Iterable[str] | None = None) -> list[Utterance]:
    """Utterances of `speakers` (all when None) minus those of `exclude_speakers`. A speaker name
    that matches nothing raises ValueError: a typo must not silently keep or drop everyone."""
    utts = list(utterances)
    known = {u.speaker for u in utts}
    keep = None if speakers is None else set(speakers)
    drop = set(exclude_speakers or ())
    unknown = ((keep or set()) | drop) - known
    if unknown:
        raise ValueError(f"unknown speaker(s) {sorted(unknown)}; known: {sorted(known)}")
    return [u for u in utts if (keep is None or u.speaker in keep) and u.speaker not in drop]


# ---------------------------------------------------------------------------------------------
# validation


def _order_problems(table: _Table) -> Iterator[str]:
    keys = list(table.values)
    for prev, key in zip(keys, keys[1:]):
        if _sort_key(key) < _sort_key(prev):
            yield (f"{table.where(key)}: not sorted: {key!r} comes after {prev!r} "
                   f"(expected LC_ALL=C sort order)")
            return


def _speaker_problems(d: Path, utt2spk: _Table) -> Iterator[str]:
    spk_path = d / "spk2utt"
    try:
        spk2utt = _read_spk2utt(spk_path)
    except DataDirError as e:
        yield str(e)
        return
    yield from _order_problems(spk2utt)
    expected: dict[str, list[str]] = {}
    for utt, spk in utt2spk.values.items():
        expected.setdefault(spk, []).append(utt)
    actual = {spk: _FIELD_SEP.split(utts) for spk, utts in spk2utt.values.items()}
    if actual != expected:
        bad = next((s for s in sorted(set(actual) | set(expected)) if actual.get(s) != expected.get(s)))
        where = spk2utt.where(bad) if bad in spk2utt.values else str(spk_path)
        yield (f"{where}: spk2utt does not match utt2spk for speaker {bad!r} "
               f"(utt2spk has {len(expected.get(bad, []))} utterances, spk2utt {len(actual.get(bad, []))})")
    # Kaldi sorts some files by speaker and others by utterance and assumes both orders agree.
    utts = list(utt2spk.values)
    by_speaker = sorted(utts, key=lambda u: (_sort_key(utt2spk.values[u]), _sort_key(u)))
    if by_speaker != sorted(utts, key=_sort_key):
        yield (f"{utt2spk.path}: sorting by speaker changes the utterance order, which Kaldi "
               f"rejects; make each speaker id a prefix of its utt ids")
    unprefixed = [u for u in utts if not u.startswith(utt2spk.values[u])]
    if unprefixed and len(expected) > 1:
        log.warning("%s: %d utt ids do not start with their speaker id (e.g. %r)",
                    utt2spk.path, len(unprefixed), unprefixed[0])


def _manifest_problems(d: Path, utts: list[Utterance]) -> Iterator[str]:
    try:
        listed = {u.utt_id: u for u in read_manifest(d / MANIFEST)}
    except DataDirError as e:
        yield str(e)
        return
    for u in utts:
        m = listed.pop(u.utt_id, None)
        if m is None:
            yield f"{d / MANIFEST}: utt id {u.utt_id!r} from wav.scp is missing"
        elif m != u:
            yield f"{d / MANIFEST}: utt id {u.utt_id!r} differs from the Kaldi files ({m} vs {u})"
    for utt_id in listed:
        yield f"{d / MANIFEST}: utt id {utt_id!r} is not in wav.scp"


def _audio_problems(utts: list[Utterance]) -> Iterator[str]:
    for u in utts:
        try:
            samples, sr = u.load_audio()
        except AudioError as e:
            yield f"utterance {u.utt_id!r}: {e}"
            continue
        actual = len(samples) / sr
        if u.duration is not None and abs(actual - u.duration) > _DURATION_TOLERANCE:
            yield f"utterance {u.utt_id!r}: utt2dur says {u.duration:.3f} s, the audio lasts {actual:.3f} s"


def validate_data_dir(dir: str | os.PathLike, check_audio: bool = True, allow_pipes: bool | None = None) -> list[str]:
    """Problems that would make Kaldi's validate_data_dir.sh (or our loaders) reject `dir`: parse
    errors, unsorted files, differing id sets, spk2utt/utt2spk mismatch, an order that changes when
    sorted by speaker, a manifest that disagrees, unreadable audio. An empty list means valid.
    Utt ids not prefixed by their speaker are only logged as a warning. A wav.scp command is a
    problem unless pipes are allowed (`allow_pipes`, else ASR_ALLOW_PIPES=1); with `check_audio`
    an allowed command is run."""
    d = Path(dir)
    if not d.is_dir():
        return [f"{d}: not a directory"]
    if not (d / "wav.scp").exists() and (d / MANIFEST).exists():
        try:
            utts = read_manifest(d / MANIFEST)
        except DataDirError as e:
            return [str(e)]
        return list(_audio_problems(utts)) if check_audio else []
    problems = [f"{d / name}: missing" for name in ("wav.scp", "utt2spk", "spk2utt")
                if not (d / name).exists()]
    if problems:
        return problems
    try:
        files = _read_kaldi_files(d)
    except DataDirError as e:
        return [str(e)]
    for table in (files.wav, files.text, files.utt2spk, files.utt2dur):
        if table is not None:
            problems += _order_problems(table)
    if not files.wav.values:
        problems.append(f"{files.wav.path}: no utterances")
    problems += _id_set_problems(files)
    problems += _speaker_problems(d, files.utt2spk)
    if problems:
        return problems
    try:
        utts = read_data_dir(d, allow_pipes)
    except DataDirError as e:
        return [str(e)]
    if (d / MANIFEST).exists():
        problems += _manifest_problems(d, utts)
    if check_audio:
        problems += _audio_problems(utts)
    return problems

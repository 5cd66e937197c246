"""Speaker recognition against an enrollment database: enroll, identify, verify.

    asr speaker enroll --name alice a1.wav a2.wav a3.wav
    asr speaker identify x.wav y.wav          # one JSON object per file
    asr speaker verify a.wav b.wav            # score and same/different
    asr speaker list

The enrollment database is one JSON file, by default `$ASR_HOME/speakers.json` (ASR_HOME defaults
to ~/.cache/asr); `--db FILE` picks another.  A speaker is the mean of the L2-normalised embeddings
of their enrollment files; enrolling a name again adds the new files to that mean (each file
weighs the same, old or new), and `--replace` starts the name over.  Embeddings of two models are
not comparable, so the database records which model enrolled it and refuses any other.
An enrollment needs speech: each file at least MIN_FILE_SPEECH s above an energy threshold, all of
them together MIN_ENROLL_SPEECH s (silence or a click would otherwise "capture" real speakers), and
a clip already enrolled for that name (same decoded audio) is refused rather than counted twice.
Enrolling is a read-modify-write of the database under an exclusive lock, so concurrent enrolls
into one database all land.

Scores are cosine similarities in [-1, 1].  EER and minDCF (asr.metrics) take fractions in [0, 1]; the
reports (`results.json`, the trainer's dev log) give EER and accuracies in percent.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .audio import AudioError, load_audio
from .checkpoint import atomic_write_bytes
from .registry import asr_home
from .speaker_embed import embed_arrays, embed_files, model_id, normalize

DEFAULT_MODEL = "speaker"  # 204 real voices, 16 kHz; digits-speaker stays for FSDD (recipes/speaker_digits)
# Used when the model package records no threshold of its own (`info.threshold`, set by a recipe
# to the EER threshold it measured).
DEFAULT_THRESHOLD = 0.5
UNKNOWN = "unknown"
DB_FORMAT, DB_VERSION = "asr-speakers", 1
# Seconds of speech (frames within SPEECH_RANGE_DB of the loudest and above SPEECH_FLOOR_DBFS).
MIN_FILE_SPEECH = 0.05  # the shortest FSDD digit has 0.08 s
MIN_ENROLL_SPEECH = 1.0
SPEECH_FLOOR_DBFS, SPEECH_RANGE_DB = -50.0, 35.0


class SpeakerDBError(ValueError):
    pass


@dataclass
class Enrolled:
    mean: np.ndarray  # mean of the L2-normalised embeddings of `count` files; its direction is the speaker
    count: int
    files: list[str] = field(default_factory=list)
    audio_sha256: list[str] = field(default_factory=list)  # of each file's decoded audio: no clip twice

    @property
    def embedding(self) -> np.ndarray:
        return normalize(self.mean)


def default_db_path() -> Path:
    return asr_home() / "speakers.json"


class SpeakerDB:
    """Enrolled speakers of one model, kept in one JSON file that is replaced atomically on save."""

    def __init__(self, path: str | Path | None = None, model: dict | None = None,
                 speakers: dict[str, Enrolled] | None = None):
        self.path = Path(path) if path is not None else default_db_path()
        self.model = model  # {"name", "id"} of the model that enrolled it; None while empty
        self.speakers: dict[str, Enrolled] = speakers or {}

    @classmethod
    def load(cls, path: str | Path | None = None) -> "SpeakerDB":
        """The database at `path` (default: $ASR_HOME/speakers.json); a missing file is an empty one."""
        path = Path(path) if path is not None else default_db_path()
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SpeakerDBError(f"{path}: not a readable speaker database ({e})") from None
        if not isinstance(data, dict) or data.get("format") != DB_FORMAT:
            raise SpeakerDBError(f"{path}: not a speaker database (no \"format\": \"{DB_FORMAT}\")")
        if not isinstance(data.get("version", 0), int) or not isinstance(data.get("speakers") or {}, dict) \
                or not isinstance(data.get("model"), (dict, type(None))) or not isinstance(data.get("dim", 0), int):
            raise SpeakerDBError(f"{path}: fields of the wrong type (\"version\" and \"dim\" are integers, "
                                 f"\"speakers\" and \"model\" objects)")
        if int(data.get("version", 0)) > DB_VERSION:
            raise SpeakerDBError(f"{path}: database version {data['version']} is newer than this asr reads "
                                 f"({DB_VERSION})")
        speakers = {}
        for name, entry in (data.get("speakers") or {}).items():
            try:
                mean = np.asarray(entry["mean"], dtype=np.float32)
                count = int(entry["count"])
                ok = mean.ndim == 1 and mean.size == data["dim"] and np.isfinite(mean).all() and count > 0
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                raise SpeakerDBError(f"{path}: speaker {name!r}: needs \"mean\" (a list of {data.get('dim')} "
                                     f"finite numbers) and \"count\" > 0")
            files = entry.get("files", [])
            if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
                raise SpeakerDBError(f"{path}: speaker {name!r}: \"files\" must be a list of paths")
            hashes = entry.get("audio_sha256", [])
            if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
                raise SpeakerDBError(f"{path}: speaker {name!r}: \"audio_sha256\" must be a list of hex digests")
            speakers[name] = Enrolled(mean, count, files, hashes)
        return cls(path, data.get("model"), speakers)

    def save(self) -> Path:
        dim = next(iter(self.speakers.values())).mean.size if self.speakers else 0
        data = {"format": DB_FORMAT, "version": DB_VERSION, "model": self.model, "dim": dim,
                "speakers": {name: {"count": e.count, "mean": [round(float(v), 7) for v in e.mean], "files": e.files,
                                    "audio_sha256": e.audio_sha256}
                             for name, e in sorted(self.speakers.items())}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode())
        return self.path

    @contextmanager
    def locked(self):
        """Hold an exclusive lock for a read-modify-write of this database. The lock is on the
        database's folder (flock), not on a lock file: nothing is left behind, and a DB replaced by
        rename keeps its lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def check_model(self, model) -> None:
        """Refuse a model other than the one that enrolled these speakers: scores would be noise."""
        if self.model and self.speakers and self.model.get("id") != model_id(model):
            raise SpeakerDBError(f"{self.path}: speakers were enrolled with model {self.model.get('name')!r}, "
                                 f"not {model_name(model)!r}; enroll them again with this model, or use "
                                 "--db for a separate database")

    def matrix(self) -> tuple[list[str], np.ndarray]:
        names = sorted(self.speakers)
        return names, np.stack([self.speakers[n].embedding for n in names]) if names else np.zeros((0, 0))


def model_name(model) -> str:
    return str(model.package_path or type(model).__name__)


def _as_db(db) -> SpeakerDB:
    return db if isinstance(db, SpeakerDB) else SpeakerDB.load(db)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"speaker name {name!r}: must be non-empty, without leading or trailing spaces")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in name) or any(c in name for c in "/\\"):
        raise ValueError(f"speaker name {name!r}: must not contain line breaks, control characters or path "
                         "separators")
    if name == UNKNOWN:
        raise ValueError(f"speaker name {UNKNOWN!r} is reserved for scores below the threshold")
    return name


def speech_seconds(wav: np.ndarray, sr: int, frame: float = 0.025, hop: float = 0.010) -> float:
    """Seconds of `wav` loud enough to be speech: frames within SPEECH_RANGE_DB of the loudest one
    and above SPEECH_FLOOR_DBFS (digital silence, a hum or a click has next to none)."""
    n, step = int(frame * sr), int(hop * sr)
    if len(wav) < n:
        return 0.0
    frames = np.lib.stride_tricks.sliding_window_view(wav.astype(np.float64), n)[::step]
    db = 10 * np.log10(np.maximum((frames ** 2).mean(axis=1), 1e-20))
    threshold = max(SPEECH_FLOOR_DBFS, db.max() - SPEECH_RANGE_DB)
    return float((db >= threshold).sum() * hop)


@dataclass
class _Clip:
    path: str
    wav: np.ndarray
    sha256: str
    speech: float


def _enrollment_clips(model, name: str, files, on_error) -> list[_Clip]:
    """Readable files with enough speech, each clip once; the others go to on_error (or raise).
    An entry is a path, or (label, samples at the model's rate) for audio that is not a file
    (`asr serve`'s uploads); the database records the absolute path, or the label."""
    sr = model.cfg.features.sample_rate
    clips: dict[str, _Clip] = {}
    for entry in files:
        p = entry[0] if isinstance(entry, tuple) else entry
        try:
            if isinstance(entry, tuple):
                wav = np.asarray(entry[1], dtype=np.float32)
            else:
                wav = load_audio(p, sr)[0]
                p = str(Path(p).absolute())
            speech = speech_seconds(wav, sr)
            if speech < MIN_FILE_SPEECH:
                raise AudioError(f"{p}: {speech:.2f} s of speech in {len(wav) / sr:.2f} s of audio; enrolling "
                                 f"{name!r} needs at least {MIN_FILE_SPEECH} s per file")
            digest = hashlib.sha256(wav.tobytes()).hexdigest()
            if digest in clips:
                raise AudioError(f"{p}: the same audio as {clips[digest].path}, given twice")
            clips[digest] = _Clip(str(p), wav, digest, speech)
        except AudioError as e:
            if on_error is None:
                raise
            on_error(str(p), str(e))
    return list(clips.values())


def enroll_and_count(model, name: str, files, db, replace: bool, on_error, save: bool) -> tuple[SpeakerDB, int]:
    check_name(name)
    files = list(files)
    db = _as_db(db)
    db.check_model(model)
    clips = _enrollment_clips(model, name, files, on_error)
    emb = embed_arrays(model, [c.wav for c in clips]) if clips else None  # slow: before taking the lock

    def merge(into: SpeakerDB) -> int:
        into.check_model(model)
        old = None if replace else into.speakers.get(name)
        keep = []
        for i, c in enumerate(clips):
            if old is not None and c.sha256 in old.audio_sha256:
                problem = f"{c.path}: this audio is already enrolled for {name!r}"
                if on_error is None:
                    raise SpeakerDBError(f"{into.path}: {problem}")
                on_error(c.path, problem)
            else:
                keep.append(i)
        if not keep:
            raise AudioError(f"enroll {name!r}: no new usable audio among {len(files)} file(s)")
        speech = sum(clips[i].speech for i in keep)
        if speech < MIN_ENROLL_SPEECH:
            raise AudioError(f"enroll {name!r}: {speech:.2f} s of speech in {len(keep)} file(s); at least "
                             f"{MIN_ENROLL_SPEECH} s is needed for a usable voice print (add more files)")
        new = emb[keep]
        mean, count = new.mean(0), len(keep)
        paths = [clips[i].path for i in keep]
        hashes = [clips[i].sha256 for i in keep]
        if old is not None:
            mean = (old.mean * old.count + new.sum(0)) / (old.count + count)
            count, paths, hashes = old.count + count, old.files + paths, old.audio_sha256 + hashes
        into.speakers[name] = Enrolled(mean.astype(np.float32), count, paths, hashes)
        into.model = {"name": model_name(model), "id": model_id(model)}
        return len(keep)

    if not save:
        return db, merge(db)
    with db.locked():  # another enroll may have saved since `db` was read: merge into what is on disk
        fresh = SpeakerDB.load(db.path)
        added = merge(fresh)
        fresh.save()
    db.model, db.speakers = fresh.model, fresh.speakers
    return db, added


def enroll(model, name: str, files, db: SpeakerDB | str | Path | None = None, replace: bool = False,
           on_error=None, save: bool = True) -> SpeakerDB:
    """Enroll `name` from `files` into `db` (a SpeakerDB, a path, or None for the default file) and
    save it. An existing name is merged with the new files unless `replace`. Files without enough
    speech, or whose audio is already enrolled for `name`, go to on_error(path, message) (or raise).
    Returns the database."""
    return enroll_and_count(model, name, files, db, replace, on_error, save)[0]


def default_threshold(model) -> float:
    t = model.info.get("threshold")
    return float(t) if t is not None else DEFAULT_THRESHOLD


def _check_identifiable(db: SpeakerDB, model) -> None:
    if not db.speakers:
        raise SpeakerDBError(f"{db.path}: no speakers enrolled (run `asr speaker enroll` first)")
    db.check_model(model)


class Identifier:
    """Identification with one model against one database, set up once: the database read, the
    model checked against it (a hash of every weight, ~0.1 s) and the speakers stacked into one
    matrix. A clip then costs its embedding (batched with clips of similar length) and one row of
    one matrix product; before, `asr speaker identify` paid the check twice per 64 clips, and a
    caller looping over clips paid it, and the database read, per clip (BENCHMARKS.md)."""

    def __init__(self, model, db: SpeakerDB | str | Path | None, threshold: float | None = None):
        self.db = _as_db(db)
        _check_identifiable(self.db, model)  # before any embedding work
        self.model = model
        self.threshold = default_threshold(model) if threshold is None else threshold
        self.names, self.centroids = self.db.matrix()

    def embeddings(self, emb: np.ndarray) -> list[dict]:
        """Per row of embeddings made by the model: {speaker, score, scores}."""
        if not len(emb):
            return []
        scores = emb @ self.centroids.T  # (clips, speakers): every clip against every speaker at once
        best = scores.argmax(1)
        names, results = self.names, []
        for row, k in zip(scores.tolist(), best.tolist()):
            results.append({"speaker": names[k] if row[k] >= self.threshold else UNKNOWN,
                            "score": round(row[k], 4),
                            "scores": {n: round(s, 4) for n, s in zip(names, row)}})
        return results

    def files(self, paths, on_error=None, chunk: int = 512, batch_size: int = 32):
        """Yield {path, speaker, score, scores} per readable file, in order, `chunk` files at a time
        (results stream out of a long list; within a chunk the embeddings are batched by length)."""
        paths = list(paths)
        for start in range(0, len(paths), chunk):
            good, emb = embed_files(self.model, paths[start:start + chunk], on_error, batch_size)
            for path, r in zip(good, self.embeddings(emb)):
                yield {"path": path, **r}


def identify(model, db: SpeakerDB | str | Path | None, files, threshold: float | None = None,
             on_error=None) -> list[dict]:
    """Per readable file: {path, speaker, score, scores}: the enrolled speaker of highest cosine
    score, or "unknown" when that score is below `threshold` (default: the model's own)."""
    return list(Identifier(model, db, threshold).files(files, on_error))


def identify_embeddings(model, db: SpeakerDB | str | Path | None, emb: np.ndarray,
                        threshold: float | None = None) -> list[dict]:
    """`identify` from embeddings already made by `model`: per row {speaker, score, scores}."""
    return Identifier(model, db, threshold).embeddings(emb)


def verify(model, file1, file2, threshold: float | None = None) -> dict:
    """Whether two recordings have the same speaker: {file1, file2, score, same, threshold}."""
    errors = []
    good, emb = embed_files(model, [file1, file2], lambda p, m: errors.append(m))
    if errors:
        raise AudioError("; ".join(errors))
    return {"file1": str(file1), "file2": str(file2), **verify_embeddings(model, emb[0], emb[1], threshold)}


def verify_embeddings(model, emb1: np.ndarray, emb2: np.ndarray, threshold: float | None = None) -> dict:
    """`verify` from two embeddings already made by `model`: {score, same, threshold}."""
    threshold = default_threshold(model) if threshold is None else threshold
    score = float(emb1 @ emb2)
    return {"score": round(score, 4), "same": score >= threshold, "threshold": threshold}

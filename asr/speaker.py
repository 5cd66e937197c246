"""Speaker recognition with a speaker-embedding model: enroll, identify, verify, evaluate.

    asr speaker enroll --name alice a1.wav a2.wav a3.wav
    asr speaker identify x.wav y.wav          # one JSON object per file
    asr speaker verify a.wav b.wav            # score and same/different
    asr speaker list
    asr speaker evaluate --model exp/train --enroll data/train --test data/test --out-dir exp/train/eval_test

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

import argparse
import fcntl
import hashlib
import json
import os
import sys
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import AudioError, load_audio
from .metrics import eer_threshold, min_dcf

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


# -- embeddings ------------------------------------------------------------------------------

def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def embed_arrays(model, wavs: list[np.ndarray], batch_size: int = 16) -> np.ndarray:
    """1-D waveforms at the model's sample rate -> (N, D) L2-normalised embeddings (float32)."""
    was_training = model.training
    model.eval()
    out = None  # the back-end decides the width: the network's embedding, or it joined with statistics
    order = sorted(range(len(wavs)), key=lambda i: len(wavs[i]))  # similar lengths, little padding
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            lens = torch.tensor([len(wavs[i]) for i in idx])
            x = torch.zeros(len(idx), int(lens.max()))
            for row, i in enumerate(idx):
                x[row, : len(wavs[i])] = torch.from_numpy(np.asarray(wavs[i], dtype=np.float32))
            dev = _device(model)
            emb = model.embed(x.to(dev), lens.to(dev)).cpu().numpy()
            if out is None:
                out = np.zeros((len(wavs), emb.shape[1]), dtype=np.float32)
            out[idx] = emb
    finally:
        model.train(was_training)
    return out if out is not None else np.zeros((0, model.cfg.model.embedding_dim), dtype=np.float32)


def embed_files(model, paths, on_error=None, batch_size: int = 16) -> tuple[list[str], np.ndarray]:
    """(readable paths, their embeddings). An unreadable file raises AudioError naming it, or, with
    `on_error`, is passed to on_error(path, message) and left out."""
    sr = model.cfg.features.sample_rate
    good, wavs = [], []
    for p in paths:
        try:
            wavs.append(load_audio(p, sr)[0])
            good.append(str(p))
        except AudioError as e:
            if on_error is None:
                raise
            on_error(str(p), str(e))
    return good, embed_arrays(model, wavs, batch_size)


def model_id(model) -> str:
    from .pretrained import weights_sha256

    return weights_sha256(model.state_dict())


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


# -- the enrollment database -----------------------------------------------------------------

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
        return _normalise(self.mean)


def default_db_path() -> Path:
    from .pretrained import asr_home

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
        from .checkpoint import atomic_write_bytes

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
                                 f"not {_model_name(model)!r}; enroll them again with this model, or use "
                                 "--db for a separate database")

    def matrix(self) -> tuple[list[str], np.ndarray]:
        names = sorted(self.speakers)
        return names, np.stack([self.speakers[n].embedding for n in names]) if names else np.zeros((0, 0))


def _model_name(model) -> str:
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


def _enroll(model, name: str, files, db, replace: bool, on_error, save: bool) -> tuple[SpeakerDB, int]:
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
        into.model = {"name": _model_name(model), "id": model_id(model)}
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
    return _enroll(model, name, files, db, replace, on_error, save)[0]


def default_threshold(model) -> float:
    t = model.info.get("threshold")
    return float(t) if t is not None else DEFAULT_THRESHOLD


def _check_identifiable(db: SpeakerDB, model) -> None:
    if not db.speakers:
        raise SpeakerDBError(f"{db.path}: no speakers enrolled (run `asr speaker enroll` first)")
    db.check_model(model)


def identify(model, db: SpeakerDB | str | Path | None, files, threshold: float | None = None,
             on_error=None) -> list[dict]:
    """Per readable file: {path, speaker, score, scores}: the enrolled speaker of highest cosine
    score, or "unknown" when that score is below `threshold` (default: the model's own)."""
    db = _as_db(db)
    _check_identifiable(db, model)  # before the embedding work
    good, emb = embed_files(model, list(files), on_error)
    return [{"path": path, **r} for path, r in zip(good, identify_embeddings(model, db, emb, threshold))]


def identify_embeddings(model, db: SpeakerDB | str | Path | None, emb: np.ndarray,
                        threshold: float | None = None) -> list[dict]:
    """`identify` from embeddings already made by `model`: per row {speaker, score, scores}."""
    db = _as_db(db)
    _check_identifiable(db, model)
    threshold = default_threshold(model) if threshold is None else threshold
    names, centroids = db.matrix()
    results = []
    for scores in emb @ centroids.T if len(emb) else []:
        best = int(np.argmax(scores))
        results.append({"speaker": names[best] if scores[best] >= threshold else UNKNOWN,
                        "score": round(float(scores[best]), 4),
                        "scores": {n: round(float(s), 4) for n, s in zip(names, scores)}})
    return results


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


# -- evaluation (the recipes' scoring stage) -------------------------------------------------

def make_trials(utts, max_trials: int = 50000, seed: int = 0) -> list[tuple[str, str, bool]]:
    """Pairs of distinct utterances, (utt1, utt2, same speaker): all pairs, or a seeded sample of
    `max_trials` of them when there are more."""
    utts = sorted(utts, key=lambda u: u.utt_id)
    i, j = np.triu_indices(len(utts), k=1)
    if len(i) > max_trials:
        keep = np.sort(np.random.default_rng(seed).choice(len(i), max_trials, replace=False))
        i, j = i[keep], j[keep]
    return [(utts[a].utt_id, utts[b].utt_id, utts[a].speaker == utts[b].speaker) for a, b in zip(i, j)]


def write_trials(path: str | Path, trials) -> None:
    """Kaldi's trials format: `utt1 utt2 target|nontarget`."""
    Path(path).write_text("".join(f"{a} {b} {'target' if t else 'nontarget'}\n" for a, b, t in trials))


def read_trials(path: str | Path) -> list[tuple[str, str, bool]]:
    """Kaldi's `utt1 utt2 target|nontarget` or VoxCeleb's `1|0 utt1 utt2` lines."""
    trials = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if len(parts) == 3 and parts[2] in ("target", "nontarget"):
            trials.append((parts[0], parts[1], parts[2] == "target"))
        elif len(parts) == 3 and parts[0] in ("1", "0"):
            trials.append((parts[1], parts[2], parts[0] == "1"))
        else:
            raise ValueError(f"{path}:{n}: expected `utt1 utt2 target|nontarget` or VoxCeleb's `1|0 utt1 utt2`, "
                             f"got {line!r}")
    return trials


def embed_utterances(model, utts, batch_seconds: float = 100.0) -> dict[str, np.ndarray]:
    """{utt_id: embedding} for data-dir utterances; unreadable ones are reported and left out."""
    from .data import eval_batches

    out = {}
    with torch.no_grad():
        model.eval()
        for batch in eval_batches(utts, model.cfg.features.sample_rate, batch_seconds):
            for utt, why in batch.errors:
                print(f"speaker evaluate: skipped {utt}: {why}", file=sys.stderr)
            if len(batch):
                batch.to(_device(model))
                out.update(zip(batch.utt_ids, model.embed(batch.wav, batch.wav_lens).cpu().numpy()))
    return out


def plot_embeddings(emb: np.ndarray, speakers: list[str], path: str | Path, title: str = "") -> None:
    """Scatter of the embeddings on their first two principal components, one colour per speaker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = emb - emb.mean(0)
    pcs = np.linalg.svd(x, full_matrices=False)[2][:2]
    xy = x @ pcs.T
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name in sorted(set(speakers)):
        sel = [i for i, s in enumerate(speakers) if s == name]
        ax.scatter(xy[sel, 0], xy[sel, 1], s=8, alpha=0.7, label=name)
    ax.set(xlabel="PC 1", ylabel="PC 2", title=title or "speaker embeddings (PCA)")
    ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def evaluate(model, enroll_dirs: list[str], test_dirs: list[str], out_dir: str | Path,
             trials_path: str | Path | None = None, new_speaker_utts: int = 10, seed: int = 0,
             threshold: float | None = None) -> dict:
    """Identification and verification on Kaldi data dirs; writes results.json, identify.jsonl,
    scores, the trial list (when `trials_path` does not exist yet) and embeddings.png to out_dir.

    Speakers of `enroll_dirs` are enrolled from all their utterances there.  A test speaker absent
    from them (a new speaker) is enrolled from `new_speaker_utts` of their test utterances, picked
    with `seed`, which are then not identified.  Every other test utterance is identified among all
    enrolled speakers: `acc` is closed-set accuracy (best score, no threshold), `acc_open` also
    counts a correct speaker scored below the threshold as an error.
    """
    from .datadir import read_data_dir

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    enroll_utts = [u for d in enroll_dirs for u in read_data_dir(d)]
    test_utts = [u for d in test_dirs for u in read_data_dir(d)]
    threshold = default_threshold(model) if threshold is None else threshold
    emb = embed_utterances(model, enroll_utts + test_utts)
    test_utts = [u for u in test_utts if u.utt_id in emb]

    groups: dict[str, list[str]] = {}
    for u in enroll_utts:
        if u.utt_id in emb:
            groups.setdefault(u.speaker, []).append(u.utt_id)
    rng = np.random.default_rng(seed)
    new = sorted({u.speaker for u in test_utts} - set(groups))
    held_back = set()
    for spk in new:
        ids = sorted(u.utt_id for u in test_utts if u.speaker == spk)
        if len(ids) <= new_speaker_utts:
            raise ValueError(f"new speaker {spk!r}: {len(ids)} test utterances, need more than {new_speaker_utts} "
                             "to enroll from and test on")
        groups[spk] = [ids[k] for k in sorted(rng.choice(len(ids), new_speaker_utts, replace=False))]
        held_back.update(groups[spk])
    names = sorted(groups)
    centroids = _normalise(np.stack([_normalise(np.stack([emb[i] for i in groups[n]])).mean(0) for n in names]))

    rows, per_spk = [], {}
    for u in test_utts:
        if u.utt_id in held_back:
            continue
        scores = centroids @ emb[u.utt_id]
        k = int(np.argmax(scores))
        ok = names[k] == u.speaker
        hyp = names[k] if scores[k] >= threshold else UNKNOWN
        rows.append({"utt_id": u.utt_id, "speaker": u.speaker, "hyp": hyp, "best": names[k],
                     "score": round(float(scores[k]), 4)})
        c = per_spk.setdefault(u.speaker, [0, 0, 0])
        c[0] += 1
        c[1] += ok
        c[2] += hyp == u.speaker
    with open(out / "identify.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    n = sum(c[0] for c in per_spk.values())
    res: dict = {"model": _model_name(model), "enroll": list(enroll_dirs), "test": list(test_dirs),
                 "speakers": names, "new_speakers": new, "new_speaker_utts": new_speaker_utts if new else 0,
                 "identified": n, "threshold": round(threshold, 4),
                 "acc": round(100.0 * sum(c[1] for c in per_spk.values()) / max(n, 1), 2),
                 "acc_open": round(100.0 * sum(c[2] for c in per_spk.values()) / max(n, 1), 2),
                 "acc_per_speaker": {s: round(100.0 * c[1] / c[0], 2) for s, c in sorted(per_spk.items())}}
    if new:
        m = sum(per_spk[s][0] for s in new if s in per_spk)
        res["acc_new_speakers"] = round(100.0 * sum(per_spk[s][1] for s in new if s in per_spk) / max(m, 1), 2)

    if trials_path is not None and Path(trials_path).exists():
        trials = read_trials(trials_path)
    else:
        trials = make_trials(test_utts, seed=seed)
        write_trials(trials_path or out / "trials", trials)
    missing = sorted({u for a, b, _ in trials for u in (a, b)} - set(emb))
    if missing:
        raise ValueError(f"{trials_path}: {len(missing)} trial utterance(s) not in the test data, e.g. {missing[:3]}")
    scores = np.array([float(emb[a] @ emb[b]) for a, b, _ in trials])
    labels = np.array([t for _, _, t in trials])
    with open(out / "scores", "w") as f:
        f.writelines(f"{a} {b} {s:.5f} {'target' if t else 'nontarget'}\n" for (a, b, t), s in zip(trials, scores))
    res["trials"] = {"file": str(trials_path or out / "trials"), "target": int(labels.sum()),
                     "nontarget": int((~labels).sum())}
    if labels.any() and not labels.all():
        e, t = eer_threshold(scores, labels)
        res.update(eer=round(100.0 * e, 3), eer_threshold=round(t, 4), min_dcf=round(min_dcf(scores, labels), 4))
    else:
        res.update(eer=None, eer_threshold=None, min_dcf=None)  # one class only: undefined
    plot_embeddings(np.stack([emb[u.utt_id] for u in test_utts]), [u.speaker for u in test_utts],
                    out / "embeddings.png", f"{', '.join(test_dirs)} ({len(test_utts)} utterances)")
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


# -- command line ----------------------------------------------------------------------------

def _load(a):
    from .pretrained import load_model

    return load_model(a.model, a.device, arch="speaker")


def _inputs(files: list[str], failed: list, cmd: str) -> list[str]:
    from .transcribe import expand_inputs

    paths, errors = expand_inputs(files)
    for item, msg in errors:
        failed.append(item)
        print(f"asr speaker {cmd}: {item}: {msg}", file=sys.stderr)
    return paths


def _on_error(failed: list, cmd: str):
    def report(path: str, msg: str) -> None:
        failed.append(path)
        print(f"asr speaker {cmd}: {msg}", file=sys.stderr)
    return report


def cmd_enroll(a) -> int:
    failed: list[str] = []
    paths = _inputs(a.files, failed, "enroll")
    model = _load(a)
    db, added = _enroll(model, a.name, paths, a.db, a.replace, _on_error(failed, "enroll"), save=True)
    print(f"enrolled {a.name!r} from {added} file(s) ({db.speakers[a.name].count} in all) into {db.path}")
    return 1 if failed else 0


def cmd_identify(a) -> int:
    failed: list[str] = []
    paths = _inputs(a.files, failed, "identify")
    model = _load(a)
    db = SpeakerDB.load(a.db)
    for start in range(0, len(paths), 64):  # stream: results appear while a long list runs
        for r in identify(model, db, paths[start:start + 64], a.threshold, _on_error(failed, "identify")):
            print(json.dumps(r, ensure_ascii=False), flush=True)
    if failed:
        print(f"asr speaker identify: {len(failed)} input(s) failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_verify(a) -> int:
    model = _load(a)
    r = verify(model, a.file1, a.file2, a.threshold)
    print(f"{r['score']:.4f} {'same' if r['same'] else 'different'} (threshold {r['threshold']:.4f})")
    return 0


def cmd_list(a) -> int:
    db = SpeakerDB.load(a.db)
    print(f"{db.path}: {len(db.speakers)} speaker(s)" + (f", model {db.model.get('name')}" if db.model else ""))
    for name, e in sorted(db.speakers.items()):
        print(f"  {name}\t{e.count} file(s)")
    return 0


def cmd_evaluate(a) -> int:
    model = _load(a)
    if a.backend:
        model.use_backend(a.backend)
    res = evaluate(model, a.enroll, a.test, a.out_dir, a.trials, a.new_speaker_utts, a.seed, a.threshold)
    eer_s = "n/a" if res["eer"] is None else f"{res['eer']:.2f}%"
    print(f"identification acc {res['acc']:.2f}% ({res['identified']} utts, {len(res['speakers'])} speakers"
          + (f"; new speakers {res['acc_new_speakers']:.2f}%" if "acc_new_speakers" in res else "")
          + f")  EER {eer_s}  minDCF {res['min_dcf']}  -> {a.out_dir}/results.json")
    return 0


def _add_subcommands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="speaker_command", required=True)

    def common(p, threshold=True, db=True):
        p.add_argument("--model", default=DEFAULT_MODEL, help="speaker model name, package file or exp dir "
                       f"(default {DEFAULT_MODEL})")
        p.add_argument("--device", default="cpu")
        if db:
            p.add_argument("--db", default=None, help="enrollment database (default $ASR_HOME/speakers.json)")
        if threshold:
            p.add_argument("--threshold", type=float, default=None,
                           help="cosine score below which a speaker is not accepted "
                                f"(default: the model's, else {DEFAULT_THRESHOLD})")

    p = sub.add_parser("enroll", help="add a speaker to the enrollment database")
    common(p, threshold=False)
    p.add_argument("--name", required=True)
    p.add_argument("--replace", action="store_true", help="forget earlier enrollment files of this name")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files, folders or globs")
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("identify", help="who speaks in each file (one JSON line per file)")
    common(p)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_identify)

    p = sub.add_parser("verify", help="do two files have the same speaker")
    common(p, db=False)
    p.add_argument("file1", metavar="FILE1")
    p.add_argument("file2", metavar="FILE2")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("list", help="speakers in the enrollment database")
    p.add_argument("--db", default=None)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("evaluate", help="identification accuracy, EER and minDCF on data dirs")
    common(p, db=False)
    p.add_argument("--enroll", nargs="*", default=[], metavar="DIR",
                   help="data dirs to enroll speakers from (none: every test speaker is enrolled from "
                        "--new-speaker-utts of its own utterances)")
    p.add_argument("--test", nargs="+", required=True, metavar="DIR",
                   help="data dirs to identify and to pair into trials")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--trials", default=None, help="trial list (utt1 utt2 target|nontarget); written when missing")
    p.add_argument("--new-speaker-utts", type=int, default=10,
                   help="test utterances to enroll a speaker absent from --enroll")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["none", "znorm", "fused", "stats"], default=None,
                   help="score with this back-end instead of the model's fitted one (none: the network's "
                        "embedding alone)")
    p.set_defaults(func=cmd_evaluate)


def add_speaker_commands(subparsers) -> None:
    """`asr speaker enroll|identify|verify|list|evaluate`, for asr.cli's parser."""
    p = subparsers.add_parser("speaker", help="speaker enrollment, identification and verification")
    _add_subcommands(p)

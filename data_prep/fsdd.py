"""Free Spoken Digit Dataset -> isolated-digit and connected-digit data dirs.

    python -m data_prep.fsdd [--corpus-dir DIR] [--download] [--seed 0]
        [--num-conn-train 2000 --num-conn-dev 200 --num-conn-test 500]
        [--holdout-speaker NAME] [--speakers A,B] OUT_DIR

Isolated sets follow the dataset's own split by take: test = takes 0-4, dev = 5-9, train = 10-49.
FSDD has no multi-word audio, so a CTC model trained on it alone never learns word boundaries;
the *_conn sets splice one speaker's recordings of the same split into digit strings, with short
noisy pauses and gain changes so that the joins are not a giveaway.

With --holdout-speaker NAME (leave-one-speaker-out) the other speakers give train (takes 10-49)
and dev (takes 5-9), and NAME alone gives test (all its takes) and test_conn.
With --speakers A,B only those speakers' recordings are used (a one-voice TTS corpus, say).

Free Spoken Digit Dataset (Zohar Jackson et al.), CC BY-SA 4.0.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asr.audio import save_audio
from asr.datadir import Utterance
from data_prep.common import Prep, PrepError, log, prepare_main

WORDS = "zero one two three four five six seven eight nine".split()
SAMPLE_RATE = 8000
FILE_NAME = re.compile(r"(\d)_([^_\s]+)_(\d+)\.wav")
TAKES = {"test": range(0, 5), "dev": range(5, 10), "train": range(10, 10**6)}

MAX_DIGITS = 7
PAUSE_S = (0.05, 0.30)  # between digits
EDGE_S = (0.10, 0.30)  # before the first and after the last digit
GAIN_DB = (-6.0, 3.0)
NOISE_DBFS = -60.0  # pauses are quiet noise: digital zero would mark every join for the model
TRIM_ABOVE_FLOOR_DB, TRIM_BELOW_PEAK_DB, TRIM_MARGIN = 10.0, 40.0, 2  # see trim_silence
PEAK = 0.99  # a gain never pushes a piece past this, so nothing clips


@dataclass(frozen=True)
class Recording:
    path: Path
    digit: int
    speaker: str
    take: int

    @property
    def utt_id(self) -> str:
        # speaker first, so utterance order and speaker order agree the way Kaldi requires
        return f"{self.speaker}_{self.digit}_{self.take:02d}"


def find_recordings(corpus_dir: Path, prep: Prep) -> list[Recording]:
    recordings = []
    for path in sorted((corpus_dir / "recordings").glob("*.wav")):
        m = FILE_NAME.fullmatch(path.name)
        if m is None:
            prep.skip(path, "file name is not {digit}_{speaker}_{take}.wav")
            continue
        recordings.append(Recording(Path(os.path.abspath(path)), int(m[1]), m[2], int(m[3])))
    return recordings


def split_recordings(recordings: list[Recording], holdout: str | None = None) -> dict[str, list[Recording]]:
    """{train, dev, test} by take; with `holdout`, test is all of that speaker and the rest are
    everyone else."""
    def takes(split: str, recs: list[Recording]) -> list[Recording]:
        return [r for r in recs if r.take in TAKES[split]]

    if holdout is None:
        return {split: takes(split, recordings) for split in ("test", "dev", "train")}
    others = [r for r in recordings if r.speaker != holdout]
    return {
        "test": [r for r in recordings if r.speaker == holdout],
        "dev": takes("dev", others),
        "train": takes("train", others),
    }


def trim_silence(x: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """`x` without its leading and trailing silence, judged on 10 ms frames.

    A frame is silence when it is both less than TRIM_ABOVE_FLOOR_DB over the noise floor (the
    quietest tenth of frames) and more than TRIM_BELOW_PEAK_DB under the loudest frame: the /s/
    of "six" sits some 40 dB under its vowel, and cutting speech is worse than keeping silence.
    TRIM_MARGIN frames are kept on each side for soft onsets and releases.
    """
    n = max(1, sr // 100)
    frames = len(x) // n
    if frames < 2 * TRIM_MARGIN + 1:
        return x
    rms = np.sqrt(np.mean(x[: frames * n].reshape(frames, n).astype(np.float64) ** 2, axis=1))
    db = 20 * np.log10(np.maximum(rms, 1e-10))
    threshold = min(np.percentile(db, 10) + TRIM_ABOVE_FLOOR_DB, db.max() - TRIM_BELOW_PEAK_DB)
    loud = np.flatnonzero(db >= threshold)
    start = max(loud[0] - TRIM_MARGIN, 0) * n
    end = len(x) if loud[-1] + 1 + TRIM_MARGIN >= frames else (loud[-1] + 1 + TRIM_MARGIN) * n
    return x[start:end]


def splice(pieces: list[np.ndarray], rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Join trimmed pieces with random gains and low-level noise pauses."""
    def pause(bounds: tuple[float, float]) -> np.ndarray:
        n = int(round(rng.uniform(*bounds) * sr))
        return rng.normal(0.0, 10 ** (NOISE_DBFS / 20), n).astype(np.float32)

    out = [pause(EDGE_S)]
    for i, piece in enumerate(pieces):
        if i:
            out.append(pause(PAUSE_S))
        gain = 10 ** (rng.uniform(*GAIN_DB) / 20)
        peak = float(np.abs(piece).max()) if len(piece) else 0.0
        if peak * gain > PEAK:
            gain = PEAK / peak
        out.append((piece * gain).astype(np.float32))
    out.append(pause(EDGE_S))
    return np.concatenate(out)


def make_connected(name: str, recordings: list[Recording], audio: dict[Path, tuple[np.ndarray, int]],
                   num: int, seed: int, set_dir: Path) -> tuple[list[Utterance], list[str]]:
    """`num` digit strings, each of 1-7 digits from ONE speaker, written as wavs under
    set_dir/wavs. Returns the utterances and `utt_id source_utt_ids...` lines (for utt2src)."""
    # A stable per-set seed: the same --seed gives byte-identical output, sets differ from each other.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    by_speaker: dict[str, list[Recording]] = {}
    for r in sorted(recordings, key=lambda r: r.utt_id):
        if r.path in audio:
            by_speaker.setdefault(r.speaker, []).append(r)
    if not by_speaker:
        raise PrepError(f"{name}: no usable recordings to splice")
    speakers = sorted(by_speaker)
    wav_dir = set_dir / "wavs"
    shutil.rmtree(wav_dir, ignore_errors=True)  # wavs of an earlier, larger run would linger
    wav_dir.mkdir(parents=True)
    utts, sources = [], []
    for index in tqdm(range(num), desc=f"fsdd: {name}", unit="utt", disable=None, leave=False):
        speaker = speakers[rng.integers(len(speakers))]
        pool = by_speaker[speaker]
        chosen = [pool[i] for i in rng.integers(len(pool), size=rng.integers(1, MAX_DIGITS + 1))]
        samples = splice([trim_silence(audio[r.path][0]) for r in chosen], rng)
        utt_id = f"{speaker}_conn_{index:05d}"
        path = wav_dir / f"{utt_id}.wav"
        save_audio(path, samples, SAMPLE_RATE)
        utts.append(Utterance(utt_id, os.path.abspath(path), " ".join(WORDS[r.digit] for r in chosen),
                              speaker, len(samples) / SAMPLE_RATE))
        sources.append(" ".join([utt_id, *(r.utt_id for r in chosen)]))
    return utts, sorted(sources, key=str.encode)


def prepare(prep: Prep, args: argparse.Namespace) -> None:
    recordings = find_recordings(prep.corpus_dir, prep)
    speakers = sorted({r.speaker for r in recordings})
    if args.speakers:
        wanted = [s for s in args.speakers.split(",") if s]
        unknown = [s for s in wanted if s not in speakers]
        if unknown or not wanted:
            raise PrepError(f"--speakers: {', '.join(unknown) or 'none given'} not speakers of the corpus "
                            f"(speakers: {', '.join(speakers)})")
        recordings = [r for r in recordings if r.speaker in wanted]
        speakers = sorted(wanted)
    if args.holdout_speaker is not None and args.holdout_speaker not in speakers:
        raise PrepError(f"--holdout-speaker {args.holdout_speaker!r} is not a speaker of the corpus "
                        f"(speakers: {', '.join(speakers)})")
    splits = split_recordings(recordings, args.holdout_speaker)
    num_conn = {"train": args.num_conn_train, "dev": args.num_conn_dev, "test": args.num_conn_test}
    todo = [s for s in splits if not prep.is_done(s)]
    todo += [f"{s}_conn" for s in splits if num_conn[s] > 0 and not prep.is_done(f"{s}_conn")]
    if not todo:
        return
    needed = {r.path for name in todo for r in splits[name.removesuffix("_conn")]}
    audio = prep.load(sorted(needed), SAMPLE_RATE)
    for name in todo:
        split = name.removesuffix("_conn")
        if name == split:
            utts = [Utterance(r.utt_id, str(r.path), WORDS[r.digit], r.speaker,
                              len(audio[r.path][0]) / SAMPLE_RATE)
                    for r in splits[split] if r.path in audio]
            prep.write_set(name, utts)
        else:
            log.info("%s: splicing %d digit strings", name, num_conn[split])
            utts, sources = make_connected(name, splits[split], audio, num_conn[split], args.seed,
                                           prep.out_dir / name)
            (prep.out_dir / name / "utt2src").write_text("\n".join(sources) + "\n", encoding="utf-8")
            prep.write_set(name, utts)


def _count(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="same seed, byte-identical connected sets")
    parser.add_argument("--num-conn-train", type=_count, default=2000, metavar="N")
    parser.add_argument("--num-conn-dev", type=_count, default=200, metavar="N")
    parser.add_argument("--num-conn-test", type=_count, default=500, metavar="N",
                        help="connected-digit utterances per set (0: no such set)")
    parser.add_argument("--holdout-speaker", metavar="NAME",
                        help="leave-one-speaker-out: test and test_conn are NAME alone")
    parser.add_argument("--speakers", metavar="A,B", default="",
                        help="use only these speakers' recordings (comma-separated)")


def main(argv: list[str] | None = None) -> int:
    return prepare_main("fsdd", prepare, add_arguments, argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())

"""LJ Speech 1.1 (one reader, 13,100 clips) -> train, dev and test data dirs for the TTS recipe.

    python -m data_prep.ljspeech [--corpus-dir DIR] [--num-dev 250] [--num-test 250] OUT_DIR

DIR holds `LJSpeech-1.1/` (or is it): `metadata.csv` with `id|raw text|normalized text` lines and
`wavs/<id>.wav` (22,050 Hz). The transcript is the normalized text (numbers and abbreviations
spelled out), case and punctuation kept, since a TTS model reads them. The split is ESPnet2's
egs2/ljspeech: of the ids in sorted order the last 500 are held out, the first 250 of those for
dev and the last 250 for test. It is made on the metadata, before any broken file is dropped, so
one bad file never moves an utterance between sets. One speaker, `lj`.

LJ Speech (Keith Ito and Linda Johnson), public domain.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from tqdm import tqdm

from asr.audio import AudioError, audio_duration
from asr.datadir import Utterance
from data_prep.common import Prep, PrepError, prepare_main

SPEAKER = "lj"


def find_root(corpus_dir: Path) -> Path:
    for d in (corpus_dir / "LJSpeech-1.1", corpus_dir):
        if (d / "metadata.csv").is_file():
            return d
    raise PrepError(f"{corpus_dir}: no LJSpeech-1.1/metadata.csv (unpack LJSpeech-1.1.tar.bz2 there)")


def read_metadata(prep: Prep, path: Path) -> list[tuple[str, str]]:
    """(id, text) per line, sorted by id. Split on `|` by hand: the texts hold unbalanced quotes
    that a CSV reader would take as quoting."""
    rows = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("|")]
        text = fields[2] if len(fields) > 2 and fields[2] else fields[1] if len(fields) > 1 else ""
        if len(fields) > 3 or not fields[0] or not text:
            prep.skip(f"{path}:{number}", "expected `id|raw text|normalized text`")
        elif fields[0] in rows:
            prep.skip(f"{path}:{number}", f"duplicate id {fields[0]!r}")
        else:
            rows[fields[0]] = " ".join(text.split())
    return sorted(rows.items(), key=lambda r: r[0].encode())


def prepare(prep: Prep, args: argparse.Namespace) -> None:
    root = find_root(prep.corpus_dir)
    rows = read_metadata(prep, root / "metadata.csv")
    if min(args.num_dev, args.num_test) < 0:
        raise PrepError(f"--num-dev and --num-test must be >= 0, got {args.num_dev} and {args.num_test}")
    held = args.num_dev + args.num_test
    if held >= len(rows):
        raise PrepError(f"{root / 'metadata.csv'}: {len(rows)} utterances cannot give {args.num_dev} dev + "
                        f"{args.num_test} test and a training set")
    cut = len(rows) - held
    splits = {"train": rows[:cut], "dev": rows[cut:cut + args.num_dev], "test": rows[cut + args.num_dev:]}
    for name, subset in splits.items():
        if not subset or prep.is_done(name):
            continue
        utts = []
        for utt_id, text in tqdm(subset, desc=f"ljspeech: {name}", unit="utt", disable=None, leave=False):
            path = root / "wavs" / f"{utt_id}.wav"
            try:
                utts.append(Utterance(utt_id, os.path.abspath(path), text, SPEAKER, audio_duration(path)))
            except AudioError as e:
                prep.skip(path, str(e).removeprefix(f"{path}: "))
        prep.write_set(name, utts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-dev", type=int, default=250, metavar="N")
    parser.add_argument("--num-test", type=int, default=250, metavar="N",
                        help="utterances held out at the end of the sorted id list (0: no such set)")


def main(argv: list[str] | None = None) -> int:
    return prepare_main("ljspeech", prepare, add_arguments, argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())

"""Kaldi's "yes/no" corpus (OpenSLR 1) -> train and test data dirs.

    python -m data_prep.yesno [--corpus-dir DIR] [--download] OUT_DIR

The split is Kaldi's egs/yesno/s5: of the sorted file list the first 31 train and the last 29
test (its decode scores 29 x 8 = 232 words). File names are the transcript: 1 = yes, 0 = no.
One speaker, "global", so utt ids need no speaker prefix.
"""
from __future__ import annotations

import argparse
import os
import re

from asr.datadir import Utterance
from data_prep.common import Prep, log, prepare_main

NUM_TRAIN = 31
NUM_FILES = 60
FILE_NAME = re.compile(r"[01](_[01])*\.wav")


def prepare(prep: Prep, args: argparse.Namespace) -> None:
    # Split on the file list, before any broken file is dropped, so that one bad file never
    # moves another utterance from test into train.
    files = sorted((prep.corpus_dir / "waves_yesno").glob("*.wav"), key=lambda p: p.name.encode())
    if len(files) != NUM_FILES:
        log.warning("expected %d recordings, found %d: the split will differ from Kaldi's",
                    NUM_FILES, len(files))
    for name, split in (("train", files[:NUM_TRAIN]), ("test", files[NUM_TRAIN:])):
        if prep.is_done(name):
            continue
        wanted = []
        for path in split:
            if FILE_NAME.fullmatch(path.name):
                wanted.append(path)
            else:
                prep.skip(path, "file name is not a 0/1 sequence like 0_1_1_0_1_0_0_1.wav")
        audio = prep.load(wanted)
        prep.write_set(name, [
            Utterance(path.stem, os.path.abspath(path),
                      " ".join("yes" if bit == "1" else "no" for bit in path.stem.split("_")),
                      "global", len(samples) / sr)
            for path, (samples, sr) in audio.items()
        ])


def main(argv: list[str] | None = None) -> int:
    return prepare_main("yesno", prepare, None, argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())

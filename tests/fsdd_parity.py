"""Shared by the int8 and ONNX parity tests: greedy transcripts of the FSDD test takes."""
from __future__ import annotations

from .conftest import FSDD

WORDS = "zero one two three four five six seven eight nine".split()


def fsdd_test_set():
    """The recipe's isolated test set: takes 0-4 of every speaker (data_prep/fsdd.py)."""
    paths = sorted(p for p in FSDD.glob("*.wav") if int(p.stem.split("_")[2]) < 5)
    return paths, [WORDS[int(p.stem.split("_")[0])] for p in paths]


def greedy_texts(model, paths) -> list[str]:
    from asr.transcribe import Transcriber

    return [t.text for t in Transcriber(model, decoder="greedy", batch_size=8).transcribe_files(paths)]

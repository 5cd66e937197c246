"""CMU AN4 (alphanumeric census utterances) -> train, dev and test data dirs.

    python -m data_prep.an4 [--corpus-dir DIR] [--dev-utts 100] OUT_DIR

DIR holds `an4/` (or is it): `etc/an4_{train,test}.transcription` with lines like
`<s> YES </s> (an251-fash-b)`, `etc/an4_{train,test}.fileids` (`an4_clstk/fash/an251-fash-b`) and
the audio under `wav/an4_clstk/<speaker>/` (train) and `wav/an4test_clstk/<speaker>/` (test), as
NIST sphere (`.sph`, the an4_sphere.tar.gz release), `.wav`/`.flac`, or headerless big-endian
16 kHz `.raw` (an4_raw.bigendian.tar.gz). soundfile reads the uncompressed sphere files as they are,
so no sph2pipe; `.raw` files are converted to wav in OUT_DIR/wavs/.

Utterance ids put the speaker first (`fash-an251-b`, as ESPnet's egs/an4), transcripts are
lowercased. dev is whole speakers taken off the sorted training speakers until it holds
--dev-utts utterances (0: no dev set), so no dev speaker is heard in training.
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import numpy as np

from asr.audio import AudioError, audio_duration, save_audio
from asr.datadir import Utterance
from data_prep.common import Prep, PrepError, prepare_main

SAMPLE_RATE = 16000
AUDIO_EXTS = (".sph", ".wav", ".flac", ".raw")
LINE = re.compile(r"(?P<text>.*?)\s*\((?P<id>[^()\s]+)\)\s*")
WAV_DIRS = {"train": "an4_clstk", "test": "an4test_clstk"}


def find_root(corpus_dir: Path) -> Path:
    for d in (corpus_dir / "an4", corpus_dir):
        if (d / "etc").is_dir() and (d / "wav").is_dir():
            return d
    raise PrepError(f"{corpus_dir}: no an4/etc and an4/wav folders (unpack an4_sphere.tar.gz there)")


def read_transcription(prep: Prep, path: Path) -> list[tuple[str, str]]:
    """(file id, lowercased text) per line; <s> and </s> dropped."""
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        m = LINE.fullmatch(line.strip())
        if m is None:
            prep.skip(f"{path}:{number}", "expected `<s> WORDS </s> (file-id)`")
            continue
        words = [w for w in m["text"].split() if w.lower() not in ("<s>", "</s>")]
        out.append((m["id"], " ".join(words).lower()))
    return out


def audio_paths(root: Path, split: str) -> dict[str, Path]:
    """file id -> audio path, from the .fileids list when present, else from the folders."""
    found: dict[str, Path] = {}
    fileids = root / "etc" / f"an4_{split}.fileids"
    candidates = ([root / "wav" / line.strip() for line in fileids.read_text().splitlines() if line.strip()]
                  if fileids.exists() else
                  [p.with_suffix("") for p in (root / "wav" / WAV_DIRS[split]).glob("*/*") if p.suffix in AUDIO_EXTS])
    for stem in candidates:
        for ext in AUDIO_EXTS:
            if (p := stem.with_name(stem.name + ext)).exists():
                found[stem.name] = p
                break
    return found


def utterance(prep: Prep, file_id: str, text: str, path: Path, wav_dir: Path) -> Utterance | None:
    speaker = path.parent.name
    parts = file_id.split("-")
    if speaker in parts:
        parts.remove(speaker)
    utt_id = "-".join([speaker, *parts])
    try:
        if path.suffix == ".raw":
            samples = np.fromfile(path, dtype=">i2").astype(np.float32) / 32768
            if not len(samples):
                raise AudioError(f"{path}: empty file (0 bytes)")
            out = wav_dir / f"{utt_id}.wav"
            out.parent.mkdir(parents=True, exist_ok=True)
            save_audio(out, samples, SAMPLE_RATE)
            path, duration = out, len(samples) / SAMPLE_RATE
        else:
            duration = audio_duration(path)
    except (AudioError, OSError) as e:
        prep.skip(path, str(e).removeprefix(f"{path}: "))
        return None
    return Utterance(utt_id, os.path.abspath(path), text, speaker, duration)


def prepare(prep: Prep, args: argparse.Namespace) -> None:
    root = find_root(prep.corpus_dir)
    names = {"train": ["train", "dev"] if args.dev_utts else ["train"], "test": ["test"]}
    for split, sets in names.items():
        if all(prep.is_done(name) for name in sets):
            continue
        transcription = root / "etc" / f"an4_{split}.transcription"
        if not transcription.exists():
            raise PrepError(f"{transcription}: missing")
        paths = audio_paths(root, split)
        utts = []
        for file_id, text in read_transcription(prep, transcription):
            if file_id not in paths:
                prep.skip(f"{transcription} ({file_id})",
                          f"no audio file {file_id}{{{','.join(AUDIO_EXTS)}}} under {root / 'wav'}")
            elif u := utterance(prep, file_id, text, paths[file_id], prep.out_dir / "wavs" / split):
                utts.append(u)
        if split == "test":
            prep.write_set("test", utts)
            continue
        dev_speakers: set[str] = set()
        for speaker in sorted({u.speaker for u in utts}):
            if sum(u.speaker in dev_speakers for u in utts) >= args.dev_utts:
                break
            dev_speakers.add(speaker)
        if args.dev_utts:
            prep.write_set("dev", [u for u in utts if u.speaker in dev_speakers])
        prep.write_set("train", [u for u in utts if u.speaker not in dev_speakers])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dev-utts", type=int, default=100, metavar="N",
                        help="dev set: whole training speakers, at least N utterances (0: none)")


def main(argv: list[str] | None = None) -> int:
    return prepare_main("an4", prepare, add_arguments, argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())

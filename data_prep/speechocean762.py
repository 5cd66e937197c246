"""speechocean762 (non-native read English, Mandarin-L1 children and adults) -> train, dev, test.

    python -m data_prep.speechocean762 [--corpus-dir DIR] [--dev-speakers 10] OUT_DIR

DIR is the release's folder: `train/` and `test/` with Kaldi lists (`text`, `utt2spk`, `wav.scp`,
`spk2age`, `spk2gender`), `wav.scp` paths relative to DIR (`WAVE/SPEAKER0001/000010011.wav`, or the
`.opus` files of the copy in ../shared/data). The release's test speakers are disjoint from its
training speakers; dev is --dev-speakers whole training speakers (children and adults in the
proportion of the training set), so neither dev nor test is ever heard in training.

Ids get a corpus prefix, speaker first (`so0001`, `so0001-000010011`), so the sets can be pooled
with other corpora; transcripts are lowercased and NFC-normalised. Each set also gets `spk2age`
and `spk2gender` (Kaldi's optional speaker files), which `asr score --group-by` reads.

speechocean762: Zhang et al., Interspeech 2021 (arXiv 2104.01378); Apache License 2.0.
"""
from __future__ import annotations

import argparse
import os
import unicodedata
from pathlib import Path

from asr.audio import AudioError, audio_duration
from asr.datadir import Utterance
from data_prep.common import Prep, PrepError, prepare_main

SPLITS = ("train", "test")
CHILD_MAX_AGE = 11  # "children < 12" (the English recipe's age groups)
ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


def find_root(corpus_dir: Path) -> Path:
    for d in (corpus_dir / "speechocean762", corpus_dir):
        if all((d / s / "wav.scp").is_file() for s in SPLITS):
            return d
    raise PrepError(f"{corpus_dir}: no train/wav.scp and test/wav.scp (the speechocean762 release's folder)")


def read_list(prep: Prep, path: Path) -> dict[str, str]:
    """`key value...` lines (tab or space separated) -> {key: value}; the value may be empty."""
    out: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition("\t") if "\t" in line else line.strip().partition(" ")
        if key in out:
            prep.skip(f"{path}:{number}", f"duplicate id {key!r}")
            continue
        out[key] = value.strip()
    return out


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFC", text).translate(ZERO_WIDTH)
    return " ".join(text.lower().split())


def age_group(age: str | None) -> str:
    try:
        return "child" if int(age) <= CHILD_MAX_AGE else "adult"
    except (TypeError, ValueError):
        return "unknown"


def read_split(prep: Prep, root: Path, split: str) -> tuple[list[Utterance], dict[str, str], dict[str, str]]:
    d = root / split
    wavs, texts, utt2spk = (read_list(prep, d / name) for name in ("wav.scp", "text", "utt2spk"))
    ages = read_list(prep, d / "spk2age") if (d / "spk2age").exists() else {}
    genders = read_list(prep, d / "spk2gender") if (d / "spk2gender").exists() else {}
    utts = []
    for utt, rel in sorted(wavs.items()):
        if utt not in texts or utt not in utt2spk:
            prep.skip(f"{d / 'wav.scp'} ({utt})", "no " + ("text" if utt not in texts else "utt2spk") + " entry")
            continue
        text = normalize_text(texts[utt])
        if not text:
            prep.skip(f"{d / 'text'} ({utt})", "empty transcript")
            continue
        if not rel:
            prep.skip(f"{d / 'wav.scp'} ({utt})", "no audio path")
            continue
        path = Path(rel) if os.path.isabs(rel) else root / rel
        if not path.exists() and path.with_suffix(".opus").exists():
            path = path.with_suffix(".opus")  # the release lists .wav; the compact copy holds .opus
        try:
            duration = audio_duration(path)
        except (AudioError, OSError) as e:
            prep.skip(path, str(e).removeprefix(f"{path}: "))
            continue
        speaker = f"so{utt2spk[utt]}"
        utts.append(Utterance(f"{speaker}-{utt}", os.path.abspath(path), text, speaker, duration))
    spk2age = {f"so{s}": a for s, a in ages.items()}
    spk2gender = {f"so{s}": g.lower() for s, g in genders.items()}
    return utts, spk2age, spk2gender


def dev_speakers(speakers: list[str], spk2age: dict[str, str], n: int) -> set[str]:
    """n whole speakers, children and adults in proportion, spread over the sorted ids."""
    chosen: set[str] = set()
    groups = {}
    for s in sorted(speakers):
        groups.setdefault(age_group(spk2age.get(s)), []).append(s)
    for members in groups.values():
        k = round(n * len(members) / len(speakers))
        if k:
            step = len(members) / k
            chosen.update(members[int(i * step)] for i in range(k))
    return chosen


def write_speaker_files(set_dir: Path, utts: list[Utterance], spk2age: dict, spk2gender: dict) -> None:
    speakers = sorted({u.speaker for u in utts}, key=lambda s: s.encode("utf-8"))
    for name, table in (("spk2age", spk2age), ("spk2gender", spk2gender)):
        lines = [f"{s} {table[s]}" for s in speakers if s in table]
        if lines:
            (set_dir / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def prepare(prep: Prep, args: argparse.Namespace) -> None:
    root = find_root(prep.corpus_dir)
    for split in SPLITS:
        sets = ["train", "dev"] if split == "train" and args.dev_speakers else [split]
        if all(prep.is_done(name) for name in sets):
            continue
        utts, spk2age, spk2gender = read_split(prep, root, split)
        if split == "train" and args.dev_speakers:
            dev = dev_speakers(sorted({u.speaker for u in utts}), spk2age, args.dev_speakers)
            parts = {"dev": [u for u in utts if u.speaker in dev],
                     "train": [u for u in utts if u.speaker not in dev]}
        else:
            parts = {split: utts}
        for name, part in parts.items():
            set_dir = prep.write_set(name, part)
            write_speaker_files(set_dir, part, spk2age, spk2gender)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dev-speakers", type=int, default=10, metavar="N",
                        help="dev set: N whole training speakers (0: none)")


def main(argv: list[str] | None = None) -> int:
    return prepare_main("speechocean762", prepare, add_arguments, argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())

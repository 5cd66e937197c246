"""VoxCeleb1/2 (wav layout) -> speaker data dirs, with Kaldi trial lists for verification.

    python -m data_prep.voxceleb --corpus-dir DIR [--split auto|veri|iden|none] [--trials FILE] OUT_DIR

DIR holds `wav/<speaker id>/<video id>/<nnnnn>.wav` as VoxCeleb1 is published (VoxCeleb2's aac
must be converted to wav first), optionally with the official lists next to `wav/`:
  - `veri_test2.txt` (or --trials): `1|0 spk/video/n.wav spk/video/n.wav`.  With --split veri the
    speakers of the trial list make `test` (and its `trials` file, `utt1 utt2 target|nontarget`),
    all others `train`: the standard VoxCeleb1-O protocol.
  - `iden_split.txt`: `1|2|3 spk/video/n.wav`.  With --split iden it gives train / dev / test for
    closed-set identification.
--split none puts everything in `train`; auto takes veri, else iden, else none, by the lists found.
Utterance ids are `<speaker>-<video>-<n>`, the speaker the VoxCeleb id; there is no transcript.
Durations come from the file headers, so the 150k files of VoxCeleb1+2 need not be decoded.

VoxCeleb (Nagrani, Chung, Zisserman et al.), CC BY 4.0 for the lists and metadata; the audio
belongs to its YouTube owners.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from tqdm import tqdm

from asr.audio import AudioError, audio_duration
from asr.datadir import Utterance
from data_prep.common import Prep, PrepError, log, prepare_main

VERI_LIST = "veri_test2.txt"
IDEN_LIST = "iden_split.txt"
IDEN_SETS = {"1": "train", "2": "dev", "3": "test"}


def utt_id(rel: str) -> str:
    """`id10001/1zcIwhmdeo4/00001.wav` -> `id10001-1zcIwhmdeo4-00001` (speaker first, as Kaldi sorts)."""
    return "-".join(Path(rel).with_suffix("").parts)


def find_files(prep: Prep) -> dict[str, Path]:
    """{speaker/video/n.wav: absolute path} for every wav of the expected depth."""
    wav = prep.corpus_dir / "wav"
    if not wav.is_dir():
        raise PrepError(f"{prep.corpus_dir}: no wav/ folder (expected wav/<speaker>/<video>/<n>.wav)")
    found = {}
    for p in sorted(wav.rglob("*.wav")):
        rel = p.relative_to(wav)
        if len(rel.parts) != 3:
            prep.skip(p, "not at wav/<speaker>/<video>/<n>.wav")
            continue
        if any(c.isspace() for c in str(rel)):
            prep.skip(p, "whitespace in the path cannot go into a Kaldi id")
            continue
        found[rel.as_posix()] = Path(os.path.abspath(p))
    return found


def read_list(path: Path, fields: int) -> list[list[str]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != fields:
            raise PrepError(f"{path}:{n}: expected {fields} fields, got {line!r}")
        rows.append(parts)
    return rows


def utterances(prep: Prep, files: dict[str, Path]) -> dict[str, Utterance]:
    """{relative path: Utterance} of the readable files; broken ones are skipped and listed."""
    utts = {}
    for rel, path in tqdm(files.items(), desc="voxceleb: reading headers", unit="file", disable=None, leave=False):
        try:
            dur = audio_duration(path)
        except AudioError as e:
            prep.skip(path, str(e).removeprefix(f"{path}: "))
            continue
        if dur <= 0:
            prep.skip(path, "zero-length audio")
            continue
        utts[rel] = Utterance(utt_id(rel), str(path), "", rel.split("/")[0], round(dur, 3))
    return utts


def prepare(prep: Prep, args: argparse.Namespace) -> None:
    trials_file = args.trials or prep.corpus_dir / VERI_LIST
    iden_file = prep.corpus_dir / IDEN_LIST
    split = args.split
    if split == "auto":
        split = "veri" if trials_file.exists() else "iden" if iden_file.exists() else "none"
    for needed, f in (("veri", trials_file), ("iden", iden_file)):
        if split == needed and not f.exists():
            raise PrepError(f"--split {split}: {f} not found")
    log.info("split: %s", split)
    sets = {"veri": ["train", "test"], "iden": ["train", "dev", "test"], "none": ["train"]}[split]
    if all(prep.is_done(s) for s in sets):
        return
    files = find_files(prep)
    if not files:
        raise PrepError(f"{prep.corpus_dir / 'wav'}: no wav files")
    utts = utterances(prep, files)

    if split == "none":
        prep.write_set("train", list(utts.values()))
    elif split == "iden":
        groups: dict[str, list[Utterance]] = {s: [] for s in sets}
        for code, rel in read_list(iden_file, 2):
            if code not in IDEN_SETS:
                raise PrepError(f"{iden_file}: set code {code!r} is not one of 1 (train), 2 (dev), 3 (test)")
            if rel in utts:
                groups[IDEN_SETS[code]].append(utts[rel])
            elif rel not in files:
                prep.skip(rel, f"listed in {iden_file.name} but not under wav/")
        for name in sets:
            prep.write_set(name, groups[name])
    else:
        rows = read_list(trials_file, 3)
        test_speakers = {rel.split("/")[0] for _, a, b in rows for rel in (a, b)}
        prep.write_set("train", [u for u in utts.values() if u.speaker not in test_speakers])
        lines, dropped = [], 0
        for label, a, b in rows:
            if label not in ("0", "1"):
                raise PrepError(f"{trials_file}: label {label!r} is not 1 (same speaker) or 0")
            if a in utts and b in utts:
                lines.append(f"{utt_id(a)} {utt_id(b)} {'target' if label == '1' else 'nontarget'}\n")
            else:
                dropped += 1
        if dropped:
            log.warning("%s: %d trial(s) name files that are missing or broken; left out", trials_file, dropped)
        # Before write_set, whose .done marker must not vouch for a set without its trials.
        (prep.out_dir / "test").mkdir(parents=True, exist_ok=True)
        (prep.out_dir / "test" / "trials").write_text("".join(lines), encoding="utf-8")
        log.info("test/trials: %d trials", len(lines))
        prep.write_set("test", [u for u in utts.values() if u.speaker in test_speakers])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", choices=["auto", "veri", "iden", "none"], default="auto",
                        help="which protocol makes the sets (default: by the lists found in the corpus dir)")
    parser.add_argument("--trials", type=Path, default=None,
                        help=f"verification list in VoxCeleb's format (default CORPUS_DIR/{VERI_LIST})")


def main(argv: list[str] | None = None) -> int:
    return prepare_main("voxceleb", prepare, add_arguments, argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())

"""Kathleen (rhasspy's voice dataset: one US English reader, the CMU ARCTIC prompts) -> train, dev
and test data dirs for the English TTS recipe.

    python -m data_prep.kathleen [--corpus-dir DIR] [--num-dev 50] [--num-test 100] [--seed 0] OUT_DIR

DIR holds `cmuarctic.data` (the 1,132 prompts, `( arctic_a0001 "text" )` a line) and
`data/arctic_<prompt>_<take>.<audio>` beside `arctic_<prompt>_<take>.txt`, where <take> is the
recording's Unix time and <audio> is opus, wav or flac. A prompt may have been read more than
once. The transcript is the `.txt` (what was read, which for 25 takes differs from the prompt),
case and punctuation kept: a TTS model reads them.

The split is of prompts, not recordings: dev and test prompts are drawn (seeded) from the
prompt list in cmuarctic.data, never from what is on disk, so a missing or broken file never
moves a prompt between sets, and no held-out prompt is heard in training in any take. A
held-out prompt gives its latest readable take (a retake usually corrects the one before);
its other takes are used nowhere. Every file that cannot be used is named in prepare.log and
counted in the summary: audio without a transcript and the reverse, an empty or non-UTF-8
transcript, an unreadable or near-empty recording, a name not of the corpus's form, a prompt id
that is not in cmuarctic.data. One speaker, `kathleen`.

Kathleen voice dataset (rhasspy), CC0 1.0; the prompts are CMU ARCTIC's (Kominek and Black).
"""
from __future__ import annotations

import argparse
import os
import random
import re
from pathlib import Path

from tqdm import tqdm

from asr.audio import AudioError, audio_duration
from asr.datadir import Utterance
from data_prep.common import Prep, PrepError, log, prepare_main

SPEAKER = "kathleen"
AUDIO_SUFFIXES = (".opus", ".wav", ".flac")
MIN_SECONDS = 0.2  # shorter than any sentence: a failed or truncated recording
_PROMPT = re.compile(r'^\(\s*(?P<id>arctic_[ab]\d{4})\s+"(?P<text>.*)"\s*\)\s*$')
_NAME = re.compile(r"^(?P<prompt>arctic_[ab]\d{4})_(?P<take>\d+)$")


def read_prompts(prep: Prep, path: Path) -> dict[str, str]:
    """Prompt id -> text from cmuarctic.data; malformed and duplicate lines are skipped, named."""
    if not path.is_file():
        raise PrepError(f"{path}: missing (the corpus's prompt list, `( arctic_a0001 \"text\" )` a line)")
    prompts: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        m = _PROMPT.match(line)
        if not m:
            prep.skip(f"{path}:{number}", 'expected `( arctic_<id> "prompt text" )`')
        elif m["id"] in prompts:
            prep.skip(f"{path}:{number}", f"duplicate prompt id {m['id']!r}")
        else:
            prompts[m["id"]] = m["text"]
    if not prompts:
        raise PrepError(f"{path}: no prompts in it")
    return prompts


def split_prompts(prompt_ids, num_dev: int, num_test: int, seed: int) -> dict[str, str]:
    """Prompt id -> set name: a seeded draw of `num_dev` dev and `num_test` test prompts from the
    sorted ids, the rest train."""
    ids = sorted(prompt_ids)
    if min(num_dev, num_test) < 0:
        raise PrepError(f"--num-dev and --num-test must be >= 0, got {num_dev} and {num_test}")
    if num_dev + num_test >= len(ids):
        raise PrepError(f"{len(ids)} prompts cannot give {num_dev} dev + {num_test} test prompts and a training set")
    drawn = random.Random(seed).sample(ids, num_dev + num_test)
    sets = dict.fromkeys(ids, "train")
    sets.update(dict.fromkeys(drawn[:num_dev], "dev"))
    sets.update(dict.fromkeys(drawn[num_dev:], "test"))
    return sets


def read_recordings(prep: Prep, data: Path, prompts: dict[str, str]) -> list[tuple[str, int, Path, str]]:
    """(prompt id, take, audio path, transcript) of every usable recording in `data`."""
    if not data.is_dir():
        raise PrepError(f"{data}: missing (the corpus's recordings, arctic_<id>_<take>.opus + .txt)")
    by_stem: dict[str, dict[str, Path]] = {}
    for path in sorted(data.iterdir()):
        if path.name.startswith("."):
            continue
        by_stem.setdefault(path.stem, {})[path.suffix.lower()] = path
    found = []
    for stem, files in tqdm(sorted(by_stem.items()), desc="kathleen: reading", unit="recording", disable=None,
                            leave=False):
        audio = [files[s] for s in AUDIO_SUFFIXES if s in files]
        unknown = sorted(set(files) - set(AUDIO_SUFFIXES) - {".txt"})
        for s in unknown:
            prep.skip(files[s], f"not audio ({', '.join(AUDIO_SUFFIXES)}) nor a transcript (.txt)")
        if not audio and ".txt" not in files:
            continue
        m = _NAME.match(stem)
        if not m:
            for p in audio + ([files[".txt"]] if ".txt" in files else []):
                prep.skip(p, "name is not arctic_<a|b><4 digits>_<take>")
            continue
        if m["prompt"] not in prompts:
            for p in audio + ([files[".txt"]] if ".txt" in files else []):
                prep.skip(p, f"prompt {m['prompt']} is not in cmuarctic.data")
            continue
        if ".txt" not in files:
            for p in audio:
                prep.skip(p, f"no transcript {stem}.txt beside it")
            continue
        if not audio:
            prep.skip(files[".txt"], f"no recording {stem}{{{','.join(AUDIO_SUFFIXES)}}} beside it")
            continue
        if len(audio) > 1:
            for p in audio[1:]:
                prep.skip(p, f"a second recording of {stem}; {audio[0].name} is used")
        try:
            text = " ".join(files[".txt"].read_text(encoding="utf-8").split())
        except UnicodeDecodeError as e:
            prep.skip(files[".txt"], f"not UTF-8 text ({e.reason} at byte {e.start})")
            continue
        if not text:
            prep.skip(files[".txt"], "empty transcript")
            continue
        found.append((m["prompt"], int(m["take"]), audio[0], text))
    return found


def prepare(prep: Prep, args: argparse.Namespace) -> None:
    root = prep.corpus_dir
    prompts = read_prompts(prep, root / "cmuarctic.data")
    sets = split_prompts(prompts, args.num_dev, args.num_test, args.seed)
    recordings = read_recordings(prep, root / "data", prompts)
    utts: dict[str, list[Utterance]] = {"train": [], "dev": [], "test": []}
    held: dict[str, Utterance] = {}  # held-out prompt -> its latest readable take
    unused = 0
    for prompt, take, path, text in tqdm(sorted(recordings, key=lambda r: (r[0], -r[1])), desc="kathleen: durations",
                                         unit="file", disable=None, leave=False):
        name = sets[prompt]
        if name != "train" and prompt in held:
            unused += 1  # an earlier take of a held-out prompt: not trained on, not scored
            continue
        try:
            duration = audio_duration(path)
        except AudioError as e:
            prep.skip(path, str(e).removeprefix(f"{path}: "))
            continue
        if duration < MIN_SECONDS:
            prep.skip(path, f"{duration:.3f} s long, shorter than {MIN_SECONDS} s")
            continue
        u = Utterance(f"{SPEAKER}_{prompt.removeprefix('arctic_')}_{take}", os.path.abspath(path), text, SPEAKER,
                      duration)
        if name == "train":
            utts["train"].append(u)
        else:
            held[prompt] = u
            utts[name].append(u)
    missing = {name: sorted(p for p, s in sets.items() if s == name and p not in held)
               for name in ("dev", "test")}
    for name, ids in missing.items():
        if ids:
            log.warning("%s: %d held-out prompt(s) have no usable recording: %s", name, len(ids), " ".join(ids))
    log.info("%d earlier take(s) of held-out prompts left unused (only the latest take of a dev/test prompt "
             "is kept)", unused)
    wanted = {"train": True, "dev": args.num_dev > 0, "test": args.num_test > 0}
    for name, subset in utts.items():
        if wanted[name] and not prep.is_done(name):
            hours = sum(u.duration for u in subset) / 3600
            prep.write_set(name, sorted(subset, key=lambda u: u.utt_id))
            log.info("%s: %d utterances of %d prompts, %.3f h", name, len(subset),
                     len({u.utt_id.rsplit("_", 1)[0] for u in subset}), hours)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-dev", type=int, default=50, metavar="N", help="dev prompts (default 50)")
    parser.add_argument("--num-test", type=int, default=100, metavar="N",
                        help="test prompts (default 100; 0: no such set)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw of held-out prompts")


def main(argv: list[str] | None = None) -> int:
    return prepare_main("kathleen", prepare, add_arguments, argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())

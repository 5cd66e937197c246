"""A synthetic multi-speaker English corpus: sentences spoken by many espeak-ng voices -> train,
dev and test data dirs, and the text for a language model.

    python -m data_prep.espeak [--text FILE] [--num-train 1500] [--num-dev 150] [--num-test 200] OUT_DIR

Nothing is downloaded. The text is the Authorized (King James) Version of the Bible (1611; its
copyright has expired, Debian's bible-kjv-text ships it as public domain), printed by the `bible`
program of Debian's bible-kjv package, or any text file given with --text (one passage a line).
Sentences are clauses of 3-10 words, lower-cased, letters and apostrophes only.

Speaker independence: a speaker is an espeak-ng accent (en, en-us, en-gb-scotland, ...) with a
voice variant (m3, f2, klatt4, ...) at its own rate and pitch. The variants of dev and of test
never occur in train, and dev and test each have one accent that train never hears. With
--all-voices train draws from every variant and accent instead (for a corpus that only adds
training speakers for another corpus's test set, e.g. digits; use it with --num-dev/--num-test 0).

A small text (the ten digit words, one a line) can fill a large set with --repeat-sentences:
sentences are then drawn with replacement instead of each at most once.

Language-model text: OUT_DIR/local/lm_train.txt holds every clause of the text except those of
the passages dev and test sentences are drawn from (blocks of consecutive passages held out
whole), so the LM has seen the domain but never a dev or test sentence.
"""
from __future__ import annotations

import argparse
import io
import random
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from asr.audio import resample, save_audio
from asr.datadir import Utterance
from data_prep.common import Prep, PrepError, log, prepare_main

# espeak-ng's own English voices (no MBROLA data needed); `en` is British English.
TRAIN_ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
DEV_ACCENT, TEST_ACCENT = "en-gb-x-gbclan", "en-gb-x-gbcwmd"
# Voice variants shipped with espeak-ng 1.51, minus the whispered, speeded-up and distorted ones.
# Fixed here rather than listed from the install, so the split is the same on every machine.
VARIANTS = (
    "Alex Alicia Andrea Andy Annie AnxiousAndy Denis Diogo Gene Gene2 Henrique Hugo Jacky Lee Marco "
    "Mario Michael Mike Nguyen RicishayMax RicishayMax2 RicishayMax3 Storm Tweaky UniRobot adam anika "
    "anikaRobot announcer antonio aunty belinda benjamin boris caleb croak david ed edward edward2 f1 "
    "f2 f3 f4 f5 grandma grandpa gustave iven iven2 iven3 iven4 john kaukovalta klatt klatt2 klatt3 "
    "klatt4 klatt5 klatt6 linda m1 m2 m3 m4 m5 m6 m7 m8 marcelo max michel miguel norbert pablo paul "
    "pedro quincy rob robert robosoft robosoft2 robosoft3 robosoft4 robosoft5 robosoft6 robosoft7 "
    "robosoft8 sandro shelby steph steph2 steph3 travis victor zac").split()
RATE_WPM = (130, 200)  # espeak-ng -s
PITCH = (25, 75)  # espeak-ng -p, 0-99
BLOCK = 10  # consecutive passages held out together, so neighbouring verses do not leak
KJV_RANGE = "gen1:1-rev22:21"


def split_variants() -> dict[str, list[str]]:
    """Variants per set: every 8th (by sorted name) for dev, another 8th for test, the rest train."""
    names = sorted(VARIANTS, key=str.lower)
    return {"train": [v for i, v in enumerate(names) if i % 8 not in (3, 6)],
            "dev": names[6::8], "test": names[3::8]}


def accents(name: str) -> list[str]:
    return list(TRAIN_ACCENTS) + {"train": [], "dev": [DEV_ACCENT], "test": [TEST_ACCENT]}[name]


def voices(name: str, all_voices: bool = False) -> tuple[list[str], list[str]]:
    """(accents, variants) set `name` draws its speakers from; `all_voices`: every one of them."""
    if all_voices:
        return list(TRAIN_ACCENTS) + [DEV_ACCENT, TEST_ACCENT], sorted(VARIANTS, key=str.lower)
    return accents(name), split_variants()[name]


# -- text -----------------------------------------------------------------------------------------

def read_kjv() -> list[str]:
    """The King James Version, one verse a line, from Debian's bible-kjv `bible` program."""
    if shutil.which("bible") is None:
        raise PrepError("the `bible` program (Debian package bible-kjv) is not installed: "
                        "`apt-get install bible-kjv`, or pass --text FILE with your own text")
    # -f turns pretty-printing off: one "Ge1:1 In the beginning..." line per verse
    out = subprocess.run(["bible", "-f", KJV_RANGE], stdin=subprocess.DEVNULL, capture_output=True,
                         text=True, check=True).stdout
    return [line.split(" ", 1)[1] for line in out.splitlines() if " " in line]


def normalize_words(text: str) -> list[str]:
    """Lower-case words of letters and inner apostrophes; hyphens split words (espeak reads them so)."""
    text = re.sub(r"[^a-z']+", " ", text.lower().replace("-", " "))
    return [w for w in (w.strip("'") for w in text.split()) if w]


def clauses(passage: str, max_words: int) -> list[list[str]]:
    """Clauses of a passage (split at . ; : ? !), a long one split at commas into pieces of at
    most `max_words` words where the commas allow."""
    out = []
    for clause in re.split(r"[.;:?!]", passage):
        if len(normalize_words(clause)) <= max_words:
            out.append(normalize_words(clause))
            continue
        piece: list[str] = []
        for part in clause.split(","):
            words = normalize_words(part)
            if piece and len(piece) + len(words) > max_words:
                out.append(piece)
                piece = []
            piece = piece + words
        out.append(piece)
    return [c for c in out if c]


@dataclass
class TextSplit:
    sentences: dict[str, list[str]]  # set name -> candidate sentences
    lm_text: list[str]


def split_text(passages: list[str], min_words: int, max_words: int, held_out: dict[str, int],
               seed: int) -> TextSplit:
    """Hold out random blocks of BLOCK passages until each of dev/test has `held_out[set]`
    candidate sentences; train sentences and LM text come from the other blocks."""
    blocks = [passages[i:i + BLOCK] for i in range(0, len(passages), BLOCK)]
    order = list(range(len(blocks)))
    random.Random(seed).shuffle(order)
    owner: dict[int, str] = {}
    need = dict(held_out)
    for b in order:
        name = next((n for n, k in need.items() if k > 0), None)
        if name is None:
            break
        owner[b] = name
        need[name] -= sum(min_words <= len(c) <= max_words for p in blocks[b] for c in clauses(p, max_words))
    if any(k > 0 for k in need.values()):
        raise PrepError(f"the text is too short: {len(passages)} passages give too few sentences "
                        f"of {min_words}-{max_words} words for dev/test ({held_out})")
    sentences: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    lm_text = []
    for b, block in enumerate(blocks):
        for c in (c for p in block for c in clauses(p, max_words)):
            if b not in owner:
                lm_text.append(" ".join(c))
            if min_words <= len(c) <= max_words:
                sentences[owner.get(b, "train")].append(" ".join(c))
    held = set(sentences["dev"]) | set(sentences["test"])
    # a clause repeated word for word elsewhere ("and the lord spake unto moses saying") is
    # still a dev/test sentence: keep it out of the train set and the LM text
    sentences["train"] = [s for s in sentences["train"] if s not in held]
    return TextSplit({k: list(dict.fromkeys(v)) for k, v in sentences.items()},
                     [s for s in lm_text if s not in held])


# -- speech ---------------------------------------------------------------------------------------

def check_espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise PrepError("espeak-ng is not installed: `apt-get install espeak-ng` (Debian/Ubuntu)")
    listed = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True).stdout
    installed = {tok[3:] for tok in listed.split() if tok.startswith("!v/")}
    missing = sorted(set(VARIANTS) - installed)
    if missing:
        raise PrepError(f"espeak-ng lacks voice variants {missing[:8]}: this recipe needs "
                        "espeak-ng >= 1.51 with its espeak-ng-data")
    return exe


def synthesize(exe: str, text: str, voice: str, rate: int, pitch: int, path: Path, sample_rate: int) -> float:
    """Speak `text` into a 16-bit wav at `sample_rate`; returns its duration in seconds."""
    proc = subprocess.run([exe, "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout"],
                          input=text.encode(), capture_output=True)
    if proc.returncode != 0 or not proc.stdout:
        raise PrepError(f"espeak-ng -v {voice} failed on {text!r}: {proc.stderr.decode(errors='replace').strip()}")
    # --stdout writes a wav header with unknown length; soundfile reads it through
    samples, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    samples = resample(samples, sr, sample_rate)
    save_audio(path, samples, sample_rate)
    return len(samples) / sample_rate


def prepare(prep: Prep, args: argparse.Namespace) -> None:
    sizes = {"train": args.num_train, "dev": args.num_dev, "test": args.num_test}
    if args.min_words < 1 or args.max_words < args.min_words:
        raise PrepError(f"--min-words {args.min_words} / --max-words {args.max_words}: need 1 <= min <= max")
    passages = read_kjv() if args.text is None else [
        line for line in args.text.read_text(encoding="utf-8").splitlines() if line.strip()]
    # hold out 3x the sentences needed, so dev/test are drawn from many places in the text
    split = split_text(passages, args.min_words, args.max_words,
                       {"dev": 3 * sizes["dev"], "test": 3 * sizes["test"]}, args.seed)
    lm_file = prep.out_dir / "local" / "lm_train.txt"
    lm_file.parent.mkdir(parents=True, exist_ok=True)
    lm_file.write_text("".join(s + "\n" for s in split.lm_text), encoding="utf-8")
    log.info("LM text: %d clauses -> %s", len(split.lm_text), lm_file)
    for name, n in sizes.items():
        if len(split.sentences[name]) < n and not (args.repeat_sentences and split.sentences[name]):
            raise PrepError(f"{name}: the text has {len(split.sentences[name])} distinct sentences for it, "
                            f"{n} asked (--num-{name})")

    exe = None
    for name, n in sizes.items():
        if n <= 0 or prep.is_done(name):
            continue
        exe = exe or check_espeak()
        rng = random.Random(f"{args.seed}-{name}")
        texts = (rng.choices(split.sentences[name], k=n) if args.repeat_sentences
                 else rng.sample(split.sentences[name], n))
        set_accents, set_variants = voices(name, args.all_voices)
        wav_dir = prep.out_dir / name / "wavs"
        wav_dir.mkdir(parents=True, exist_ok=True)
        jobs = []
        for i, text in enumerate(texts):
            accent, variant = rng.choice(set_accents), rng.choice(set_variants)
            speaker = f"{accent}_{variant}"
            utt_id = f"{speaker}-{name}{i:05d}"
            jobs.append((utt_id, speaker, text, f"{accent}+{variant}",
                         rng.randint(*RATE_WPM), rng.randint(*PITCH), wav_dir / f"{utt_id}.wav"))

        def run(job):
            utt_id, speaker, text, voice, rate, pitch, path = job
            return Utterance(utt_id, str(path.absolute()), text, speaker,
                             synthesize(exe, text, voice, rate, pitch, path, args.sample_rate))

        # espeak-ng runs as a subprocess, so threads synthesise in parallel
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            utts = list(tqdm(pool.map(run, jobs), total=len(jobs), desc=f"espeak: {name}",
                             unit="utt", disable=None, leave=False))
        prep.write_set(name, utts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text", type=Path, help="text to speak, one passage a line "
                        "(default: the King James Bible from Debian's bible-kjv)")
    parser.add_argument("--num-train", type=int, default=1500)
    parser.add_argument("--num-dev", type=int, default=150)
    parser.add_argument("--num-test", type=int, default=200)
    parser.add_argument("--min-words", type=int, default=3)
    parser.add_argument("--max-words", type=int, default=10)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="espeak-ng processes at once")
    parser.add_argument("--all-voices", action="store_true",
                        help="train uses every accent and variant (no voices kept for dev/test)")
    parser.add_argument("--repeat-sentences", action="store_true",
                        help="draw sentences with replacement (a text with fewer lines than utterances asked)")


def main(argv: list[str] | None = None) -> int:
    return prepare_main("espeak", prepare, add_arguments, argv,
                        description=__doc__.split("\n\n")[0], synthetic=True)


if __name__ == "__main__":
    raise SystemExit(main())

"""LibriSpeech (OpenSLR 12) -> one data dir per subset (train_clean_100, ..., test_other).

    python -m data_prep.librispeech [--corpus-dir DIR] [--download] [--subsets dev-clean,test-clean]
        [--mirror URL] [--keep-archives] OUT_DIR

--corpus-dir holds `LibriSpeech/<subset>/` (or is `LibriSpeech/` itself), or the archives
(`<subset>.tar.gz`), which are then unpacked next to them. With --download the missing subsets
are fetched from openslr.org: resumable (an interrupted download continues with an HTTP Range
request), checked against sha256 sums, then unpacked. Transcripts are lowercased; the speaker of
an utterance is `<reader>-<chapter>`, as in Kaldi's egs/librispeech, and durations come from the
flac headers (decoding 960 h just to measure it would take an hour).

LibriSpeech (Vassil Panayotov et al.), CC BY 4.0.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from asr.audio import AudioError, audio_duration
from asr.checkpoint import sha256_file
from asr.datadir import Utterance
from data_prep.common import Prep, PrepError, download_dir, log, prepare_main

SUBSETS = ["train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other", "test-clean",
           "test-other"]
MIRROR = "https://www.openslr.org/resources/12/"
# The sums torchaudio.datasets.LIBRISPEECH checks (openslr.org itself publishes md5 only).
SHA256 = {
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
}
UTT_ID = re.compile(r"(\d+)-(\d+)-(\d+)")
CHUNK = 1 << 20


def fetch(url: str, dest: Path, sha256: str | None = None) -> Path:
    """Download `url` to `dest`, continuing a `dest.part` left by an interrupted run (HTTP Range);
    a finished file whose sha256 does not match is deleted and reported, never used."""
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code != 416:  # 416: nothing left to fetch, the part is complete
            raise PrepError(f"{url}: HTTP {e.code} {e.reason}") from None
        response = None
    except urllib.error.URLError as e:
        raise PrepError(f"{url}: {e.reason}") from None
    if response is not None:
        with response:
            resumed = have and response.status == 206
            if have and not resumed:
                log.info("%s: the server ignored the Range request, starting over", url)
            total = response.length + (have if resumed else 0) if response.length is not None else None
            with open(part, "ab" if resumed else "wb") as f, tqdm(
                    total=total, initial=have if resumed else 0, unit="B", unit_scale=True, desc=dest.name,
                    disable=None, leave=False) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    bar.update(len(block))
    if sha256 is not None and (actual := sha256_file(part)) != sha256:
        part.unlink()
        raise PrepError(f"{url}: sha256 {actual} does not match the expected {sha256}; the partial download "
                        f"was deleted, run again")
    os.replace(part, dest)
    return dest


def extract(archive: Path, dest: Path, subset: str) -> Path:
    """Unpack `archive` so that dest/LibriSpeech/<subset> appears whole or not at all."""
    target = dest / "LibriSpeech" / subset
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("unpacking %s", archive)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".unpack") as tmp:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")  # refuses absolute paths and ../
        except (tarfile.TarError, OSError, EOFError) as e:
            raise PrepError(f"{archive}: not a readable tar archive ({e})") from None
        found = sorted((p for p in Path(tmp).rglob(subset) if p.is_dir()), key=lambda p: len(p.parts))
        if not found:
            raise PrepError(f"{archive}: has no {subset}/ folder")
        shutil.move(str(found[0]), target)
        for doc in Path(tmp).rglob("*.TXT"):  # SPEAKERS.TXT, CHAPTERS.TXT...: keep one copy
            if not (target.parent / doc.name).exists():
                shutil.move(str(doc), target.parent / doc.name)
    return target


def find_subset(corpus_dir: Path, subset: str) -> Path | None:
    for d in (corpus_dir / "LibriSpeech" / subset, corpus_dir / subset):
        if d.is_dir():
            return d
    return None


def obtain(prep: Prep, args: argparse.Namespace, subset: str) -> Path:
    """The subset's folder: found, unpacked from an archive in the corpus dir, or downloaded."""
    if d := find_subset(prep.corpus_dir, subset):
        return d
    archive = prep.corpus_dir / f"{subset}.tar.gz"
    if not archive.exists() and args.download:
        fetch(args.mirror.rstrip("/") + f"/{subset}.tar.gz", archive, SHA256.get(subset))
        downloaded = True
    else:
        downloaded = False
    if archive.exists():
        d = extract(archive, prep.corpus_dir, subset)
        if downloaded and not args.keep_archives:
            archive.unlink()
        return d
    raise PrepError(f"{subset}: not found as {prep.corpus_dir}/LibriSpeech/{subset}/ nor as {archive}; "
                    f"add --download to fetch {args.mirror.rstrip('/')}/{subset}.tar.gz")


def read_subset(prep: Prep, subset_dir: Path) -> list[Utterance]:
    utts = []
    transcripts = sorted(subset_dir.glob("*/*/*.trans.txt"))
    listed: set[Path] = set()
    for trans in tqdm(transcripts, desc=f"librispeech: {subset_dir.name}", unit="chapter", disable=None, leave=False):
        with open(trans, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                utt_id, _, text = line.strip().partition(" ")
                m = UTT_ID.fullmatch(utt_id)
                if not m or not text.strip():
                    prep.skip(f"{trans}:{number}", "expected `<reader>-<chapter>-<n> TRANSCRIPT`")
                    continue
                audio = trans.parent / f"{utt_id}.flac"
                listed.add(audio)
                try:
                    duration = audio_duration(audio)
                except AudioError as e:
                    prep.skip(audio, str(e).removeprefix(f"{audio}: "))
                    continue
                utts.append(Utterance(utt_id, os.path.abspath(audio), " ".join(text.lower().split()),
                                      f"{m[1]}-{m[2]}", duration))
    for audio in sorted(set(subset_dir.glob("*/*/*.flac")) - listed):
        prep.skip(audio, "no line in its chapter's .trans.txt")
    return utts


def prepare(prep: Prep, args: argparse.Namespace) -> None:
    # The set list is not an option of any one set: a later run with more subsets keeps the others.
    prep.params = {k: v for k, v in prep.params.items() if k not in ("subsets", "mirror", "keep_archives")}
    for subset in args.subsets:
        name = subset.replace("-", "_")
        if prep.is_done(name):
            continue
        prep.write_set(name, read_subset(prep, obtain(prep, args, subset)))


def _subsets(text: str) -> list[str]:
    names = [n for n in re.split(r"[,\s]+", text) if n]
    unknown = [n for n in names if n not in SUBSETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown subset(s) {unknown}; known: {','.join(SUBSETS)}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subsets", type=_subsets, default=SUBSETS, metavar="A,B,...",
                        help=f"comma-separated (default: all of {','.join(SUBSETS)})")
    parser.add_argument("--mirror", default=MIRROR, help="base URL of the archives (an openslr mirror)")
    parser.add_argument("--keep-archives", action="store_true", help="keep downloaded .tar.gz after unpacking")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # --download needs a place to download into before the corpus can be "found" there.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--corpus-dir", type=Path)
    pre.add_argument("--download", action="store_true")
    known, _ = pre.parse_known_args(argv)
    if known.download:
        (known.corpus_dir or download_dir("librispeech")).mkdir(parents=True, exist_ok=True)
    return prepare_main("librispeech", prepare, add_arguments, argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())

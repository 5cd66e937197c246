"""What every corpus preparation shares: finding the corpus, the command line, the log file,
skipping broken audio, and writing each set so that a re-run skips the work already done."""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asr.audio import AudioError, load_audio
from asr.datadir import Utterance, write_data_dir

log = logging.getLogger("data_prep")

REPO = Path(__file__).resolve().parents[1]
URLS = {
    "fsdd": "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/v1.0.10.tar.gz",
    "yesno": "https://www.openslr.org/resources/1/waves_yesno.tar.gz",
}
# The folder that makes a directory a copy of the corpus (as laid out in the published archive).
LAYOUT = {"fsdd": "recordings", "yesno": "waves_yesno", "kathleen": "data"}
DONE = ".done"


class CorpusNotFound(FileNotFoundError):
    """No copy of the corpus where we looked; the message lists the places and how to get it."""


class PrepError(RuntimeError):
    """A preparation that cannot produce a usable set (e.g. every file of a set is broken)."""


def download_dir(name: str) -> Path:
    """Where --download puts a corpus when no --corpus-dir is given (and where we look later)."""
    if os.environ.get("ASR_DATA"):
        return Path(os.environ["ASR_DATA"]) / name
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "asr" / "data" / name


def _candidates(name: str) -> list[tuple[str, Path]]:
    found = []
    if os.environ.get("ASR_DATA"):
        found.append(("$ASR_DATA", Path(os.environ["ASR_DATA"]) / name))
    found.append(("shared data next to the repo", REPO.parent / "shared" / "data" / name))
    if download_dir(name) not in [d for _, d in found]:  # it is $ASR_DATA/<name> when that is set
        found.append(("download cache", download_dir(name)))
    return found


def _has_layout(name: str, d: Path) -> Path | None:
    """The corpus root if `d` is one, also accepting the layout folder itself (recordings/)."""
    layout = LAYOUT.get(name)
    if layout is None:
        return d if d.is_dir() else None
    if (d / layout).is_dir():
        return d
    if d.name == layout and d.is_dir():
        return d.parent
    return None


def resolve_corpus_dir(name: str, corpus_dir: str | os.PathLike | None = None,
                       allow_download: bool = False) -> Path:
    """The corpus root: `corpus_dir` when given, else $ASR_DATA/<name>, else
    <repo>/../shared/data/<name>, else the download cache. Only with `allow_download` is it fetched
    (into `corpus_dir`, or $ASR_DATA/<name>, or the cache); otherwise CorpusNotFound."""
    if corpus_dir is not None:
        tried = [("--corpus-dir", Path(corpus_dir))]
    else:
        tried = _candidates(name)
    for _, d in tried:
        if root := _has_layout(name, d):
            return root
    if allow_download:
        dest = Path(corpus_dir) if corpus_dir is not None else download_dir(name)
        download(name, dest)
        if root := _has_layout(name, dest):
            return root
        raise CorpusNotFound(f"{name}: downloaded into {dest} but found no {LAYOUT.get(name)}/ there")
    layout = f" containing {LAYOUT[name]}/" if name in LAYOUT else ""
    lines = [f"{name} corpus not found; looked for a directory{layout} at:"]
    lines += [f"  {how}: {d}{'' if d.exists() else ' (does not exist)'}" for how, d in tried]
    lines.append(f"Pass --corpus-dir DIR, set $ASR_DATA (DIR = $ASR_DATA/{name}), or add --download"
                 + (f" to fetch {URLS[name]}" if name in URLS else ""))
    raise CorpusNotFound("\n".join(lines))


def download(name: str, dest: Path) -> None:
    """Fetch and unpack the published archive of `name`, leaving `dest/<layout folder>`."""
    if name not in URLS:
        raise CorpusNotFound(f"{name}: no download known; pass --corpus-dir")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download") as tmp:
        archive = Path(tmp) / "archive.tar.gz"
        log.info("downloading %s to %s", URLS[name], dest)
        urllib.request.urlretrieve(URLS[name], archive)
        with tarfile.open(archive) as tar:
            tar.extractall(Path(tmp) / "x", filter="data")  # refuses absolute paths and ../
        layout = LAYOUT[name]
        found = sorted((p for p in (Path(tmp) / "x").rglob(layout) if p.is_dir()),
                       key=lambda p: len(p.parts))
        if not found:
            raise CorpusNotFound(f"{name}: {URLS[name]} has no {layout}/ folder")
        shutil.move(str(found[0]), dest / layout)


class Prep:
    """One run of a preparation: the output dir, what was written, reused and skipped.

    `params` (the command-line options) go into each set's `.done` marker, so a re-run with the
    same options skips a finished set and one with other options rebuilds it.
    """

    def __init__(self, corpus: str, out_dir: Path, corpus_dir: Path, params: dict):
        self.corpus, self.out_dir, self.corpus_dir = corpus, out_dir, corpus_dir
        self.params = params
        self.written: dict[str, int] = {}
        self.reused: list[str] = []
        self.skipped: list[tuple[str, str]] = []

    def skip(self, path: str | os.PathLike, reason: str) -> None:
        self.skipped.append((str(path), reason))
        log.warning("skipping %s: %s", path, reason)

    def load(self, paths: Iterable[Path], sample_rate: int | None = None) -> dict[Path, tuple[np.ndarray, int]]:
        """(samples, rate) of each readable file; a broken file is skipped, never fatal."""
        audio = {}
        paths = list(paths)
        for path in tqdm(paths, desc=f"{self.corpus}: reading audio", unit="file", disable=None, leave=False):
            try:
                audio[path] = load_audio(path, sample_rate)
            except AudioError as e:
                self.skip(path, str(e).removeprefix(f"{path}: "))
        return audio

    def is_done(self, name: str) -> bool:
        marker = self.out_dir / name / DONE
        if not marker.exists():
            return False
        try:
            same = json.loads(marker.read_text(encoding="utf-8")) == self.params
        except (OSError, ValueError):
            same = False
        if same:
            log.info("%s: already prepared (%s), skipping", name, marker)
            self.reused.append(name)
        else:
            log.info("%s: prepared with other options, rebuilding", name)
        return same

    def write_set(self, name: str, utterances: list[Utterance]) -> Path:
        if not utterances:
            raise PrepError(f"{name}: no usable recordings")
        set_dir = self.out_dir / name
        write_data_dir(set_dir, utterances)
        (set_dir / DONE).write_text(json.dumps(self.params, sort_keys=True) + "\n", encoding="utf-8")
        self.written[name] = len(utterances)
        log.info("%s: wrote %d utterances to %s", name, len(utterances), set_dir)
        return set_dir

    def summary(self) -> str:
        lines = [f"{self.corpus} -> {self.out_dir}"]
        lines += [f"  {name}: {n} utterances written" for name, n in self.written.items()]
        lines += [f"  {name}: already prepared, kept" for name in self.reused]
        lines.append(f"  skipped {len(self.skipped)} broken or unexpected file(s)"
                     + (":" if self.skipped else ""))
        lines += [f"    {path}: {reason}" for path, reason in self.skipped]
        lines.append(f"  log: {self.out_dir / 'prepare.log'}")
        return "\n".join(lines)


def prepare_main(corpus: str, prepare: Callable[[Prep, argparse.Namespace], None],
                 add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
                 argv: list[str] | None = None, description: str | None = None,
                 synthetic: bool = False) -> int:
    """Parse the command line, find the corpus, log to OUT_DIR/prepare.log, run `prepare`, print a
    summary. Returns the exit status (1 when the corpus is missing or a set comes out empty).
    `synthetic`: the preparation makes its corpus itself (no --corpus-dir/--download; the
    corpus dir is OUT_DIR)."""
    parser = argparse.ArgumentParser(prog=f"python -m data_prep.{corpus}", description=description)
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="one data dir per set goes here")
    if not synthetic:
        parser.add_argument("--corpus-dir", type=Path, help=f"the corpus (a folder holding {LAYOUT.get(corpus, '')}/)")
        parser.add_argument("--download", action="store_true",
                            help=f"fetch {URLS.get(corpus, 'the corpus')} if it is not found")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        corpus_dir = args.out_dir if synthetic else resolve_corpus_dir(
            corpus, args.corpus_dir, allow_download=args.download)
    except CorpusNotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    args.out_dir.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(args.out_dir / "prepare.log", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    log.setLevel(logging.INFO)
    log.addHandler(file_handler)
    log.addHandler(console)
    try:
        params = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                  if k not in ("out_dir", "corpus_dir", "download")}
        params["corpus_dir"] = str(corpus_dir.absolute())
        log.info("preparing %s from %s with %s", corpus, corpus_dir, params)
        prep = Prep(corpus, args.out_dir, corpus_dir, params)
        try:
            prepare(prep, args)
        except PrepError as e:
            log.error("%s", e)
            print(prep.summary(), file=sys.stderr)
            return 1
        log.info("%s", prep.summary())
        print(prep.summary())
        return 0
    finally:
        for handler in (file_handler, console):
            log.removeHandler(handler)
            handler.close()

"""WebDataset tar shards: a corpus as a few hundred large files, streamed in order.

Reading 281k small flacs (LibriSpeech 960 h) one by one is slow on network disks and impossible
from object storage; a tar shard is one sequential read.  Per utterance a shard holds
`<key>.flac` or `<key>.wav` (the original bytes) and `<key>.json` (utt_id, text, speaker,
duration); `shards.json` lists the shards with their utterance ids, durations and sha256.

    asr shards write DATA_DIR [DATA_DIR ...] OUT_DIR [--max-shard-mb 300] [--store audio|flac]
    asr shards verify OUT_DIR

`ShardLoader` plans each epoch from shards.json alone, before any audio is read: the shard order
(shuffled per epoch), which rank and data-loader worker reads which shards, and which utterances
form each batch (a shuffle buffer that cuts length-sorted batches out of itself).  Because the plan
is known up front:
  * `len()` is exact, and every rank gets the same number of batches (a rank that would have fewer
    splits its largest batches in two), so DDP never waits on a rank that ran dry, and every
    utterance is used exactly once per epoch;
  * resuming at batch p replays the same plan and skips the batches before p without decoding
    them; shards holding none of the remaining utterances are not even opened.  The cost of a
    resume is reading (not decoding) the tar bytes of each worker's partially consumed shards;
  * the plan depends on (seed, epoch, world_size, num_workers, shuffle_buffer): resume with the
    same values.
Unreadable audio, a damaged or truncated shard, or a shard that fails to download become error
records in the batch (`Batch.errors`), which the trainer reports and skips.
"""
from __future__ import annotations

import bisect
import hashlib
import heapq
import io
import json
import logging
import os
import random
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from .audio import AudioError, audio_duration, load_audio
from .checkpoint import atomic_write_bytes, sha256_file
from .config import AugmentConfig
from .data import Batch, collate
from .datadir import Utterance
from .features import augment_waveform

log = logging.getLogger(__name__)

INDEX = "shards.json"
FORMAT = "asr-shards/1"
DEFAULT_PATTERN = "shard-%06d.tar"
AUDIO_EXTS = ("flac", "wav")  # what a shard stores as is; anything else is re-encoded to FLAC
_TAR_OVERHEAD = 2 * 512 + 1024  # two member headers and worst-case padding per utterance


class ShardError(ValueError):
    """Shards or an index that cannot be used; the message names the file and the problem."""


# ---------------------------------------------------------------------------------------------
# writing


class _HashingFile:
    """The temp file of a shard being written, hashed on its way to disk."""

    def __init__(self, path: Path):
        self.f = open(path, "wb")
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.f.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def finish(self) -> None:
        """Flush to the disk: the rename that follows must not publish a shard still in the cache."""
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()

    def close(self) -> None:
        self.f.close()


def _audio_member(u: Utterance, store: str) -> tuple[str, bytes, float]:
    """(extension, bytes, duration) of an utterance's audio as stored in a shard."""
    ext = Path(u.audio).suffix.lower().lstrip(".") if not u.pipe else ""
    if ext in AUDIO_EXTS and (store == "audio" or ext == "flac"):
        try:
            data = Path(u.audio).read_bytes()
        except OSError as e:
            raise AudioError(f"{u.audio}: cannot read ({e.strerror or e})") from None
        duration = u.duration if u.duration is not None else audio_duration(u.audio)
        return ext, data, duration
    # Pipes, sphere, mp3... and wavs under store="flac": decode once, keep it lossless from here on.
    samples, sr = u.load_audio(mono=False)
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="FLAC", subtype="PCM_16")
    return "flac", buf.getvalue(), len(samples) / sr


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed mtime: same input, same sha256
    tar.addfile(info, io.BytesIO(data))


def _pattern_regex(pattern: str) -> re.Pattern:
    parts = re.split(r"%0?\d*d", pattern)
    return re.compile(r"\d+".join(re.escape(p) for p in parts))


def write_shards(utterances: Iterable[Utterance], out_pattern: str | os.PathLike,
                 max_shard_bytes: int = 300_000_000, store: str = "audio", seed: int | None = 0) -> dict:
    """Write `utterances` into tar shards named by `out_pattern` (`dir/shard-%06d.tar`, or just a
    directory) plus `shards.json` beside them; returns the index.

    Utterances are shuffled with `seed` first (None keeps their order), so that every shard is a
    random sample of speakers and lengths and a reader streaming a few shards sees a mix.  Each
    shard is written under a temp name and renamed when complete, and the index goes last: a full
    disk or a kill leaves no shard and no index that a reader would take as valid.  Audio that
    cannot be read is skipped and listed under "skipped" in the index.
    """
    if store not in ("audio", "flac"):
        raise ValueError(f"store: {store!r} is not one of ['audio', 'flac']")
    out_pattern = str(out_pattern)
    if "%" not in out_pattern:
        out_pattern = os.path.join(out_pattern, DEFAULT_PATTERN)
    out_dir = Path(out_pattern).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    name_re = _pattern_regex(Path(out_pattern).name)
    # A stale index would describe shards about to be overwritten; temp files are from killed runs.
    (out_dir / INDEX).unlink(missing_ok=True)
    for p in out_dir.iterdir():
        if p.name.startswith(".") and ".tmp" in p.name and name_re.fullmatch(p.name[1:].split(".tmp")[0]):
            p.unlink()

    utts = list(utterances)
    seen: set[str] = set()
    for u in utts:
        if u.utt_id in seen:
            raise ShardError(f"duplicate utt id {u.utt_id!r}")
        seen.add(u.utt_id)
    if seed is not None:
        random.Random(seed).shuffle(utts)

    shards: list[dict] = []
    skipped: list[tuple[str, str]] = []
    state: dict = {}

    def open_shard():
        name = Path(out_pattern % len(shards)).name
        tmp = out_dir / f".{name}.tmp{os.getpid()}"
        f = _HashingFile(tmp)
        state.update(name=name, tmp=tmp, file=f, items=[], duration=0.0, first=key,
                     tar=tarfile.open(fileobj=f, mode="w|", format=tarfile.USTAR_FORMAT))

    def close_shard():
        state["tar"].close()
        f = state["file"]
        f.finish()
        os.replace(state["tmp"], out_dir / state["name"])
        shards.append({"name": state["name"], "first": state["first"], "utterances": len(state["items"]),
                       "duration": round(state["duration"], 3), "bytes": f.size,
                       "sha256": f.sha256.hexdigest(), "items": state["items"]})
        state.clear()

    key = 0
    try:
        for u in tqdm(utts, desc="shards", unit="utt", disable=None, leave=False):
            try:
                ext, audio, duration = _audio_member(u, store)
            except AudioError as e:
                skipped.append((u.utt_id, str(e)))
                log.warning("skipping %s: %s", u.utt_id, e)
                continue
            record = json.dumps({"utt_id": u.utt_id, "text": u.text, "speaker": u.speaker,
                                 "duration": round(duration, 3)}, ensure_ascii=False).encode("utf-8")
            size = len(audio) + len(record) + _TAR_OVERHEAD
            if state and state["items"] and state["file"].size + size > max_shard_bytes:
                close_shard()
            if not state:
                open_shard()
            _member(state["tar"], f"{key:09d}.{ext}", audio)
            _member(state["tar"], f"{key:09d}.json", record)
            state["items"].append([u.utt_id, round(duration, 3)])
            state["duration"] += duration
            key += 1
        if state:
            close_shard()
    finally:
        if state:  # failed mid-shard (ENOSPC, kill...): the partial shard must not survive
            try:
                state["file"].close()
            finally:
                Path(state["tmp"]).unlink(missing_ok=True)

    index = {"format": FORMAT, "store": store, "utterances": sum(s["utterances"] for s in shards),
             "duration": round(sum(s["duration"] for s in shards), 3), "shards": shards,
             "skipped": [list(s) for s in skipped]}
    atomic_write_bytes(out_dir / INDEX, json.dumps(index, ensure_ascii=False).encode("utf-8"))
    names = {s["name"] for s in shards}
    for p in out_dir.iterdir():  # shards of an earlier, larger write
        if name_re.fullmatch(p.name) and p.name not in names:
            p.unlink()
    return index


def verify_shards(index_path: str | os.PathLike) -> list[str]:
    """Problems of local shards against their index (missing, wrong size or sha256)."""
    path = Path(index_path)
    if path.is_dir():
        path = path / INDEX
    index = read_index(str(path))
    problems = []
    for s in index["shards"]:
        p = path.parent / s["name"]
        if not p.exists():
            problems.append(f"{p}: missing")
        elif p.stat().st_size != s["bytes"]:
            problems.append(f"{p}: {p.stat().st_size} bytes, the index says {s['bytes']}")
        elif sha256_file(p) != s["sha256"]:
            problems.append(f"{p}: sha256 differs from the index")
    return problems


# ---------------------------------------------------------------------------------------------
# reading


def read_index(url: str) -> dict:
    """shards.json from a path or any URL webdataset opens (`pipe:...`, http(s), file:)."""
    from webdataset.gopen import gopen

    try:
        stream = gopen(url, "rb")
        try:
            data = stream.read()
        finally:
            stream.close()
    except (OSError, ValueError) as e:
        raise ShardError(f"{url}: cannot read the shard index ({e})") from None
    try:
        index = json.loads(data)
    except ValueError as e:
        raise ShardError(f"{url}: not a valid shard index ({e})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ShardError(f"{url}: not an {FORMAT} index (written by `asr shards write`)")
    return index


_JSON_NAME = re.compile(r"[^/\s]+\.json(?=\s|$)")
_TAR_NAME = re.compile(r"[^/\s]+\.tar(?=\s|$)")


def _last(pattern: re.Pattern, s: str) -> re.Match | None:
    matches = list(pattern.finditer(s))
    return matches[-1] if matches else None


def _with_name(url: str, pattern: re.Pattern, name: str) -> str:
    """`url` with its last file name matching `pattern` replaced, so `pipe:curl -s https://h/d/shards.json`
    gives `pipe:curl -s https://h/d/shard-000001.tar`."""
    m = _last(pattern, url)
    return url[: m.start()] + name + url[m.end():]


def resolve_shards(urls_or_pattern: str | list[str], index: str | None = None) -> tuple[dict, list[tuple[dict, str]]]:
    """(index, [(shard entry, url)]) for an index URL, a directory holding shards.json, a brace
    pattern (`dir/shard-{000000..000099}.tar`, webdataset's syntax) or a list of shard URLs. The
    index of shard URLs is `index`, or shards.json in the same place as the first shard."""
    from webdataset.shardlists import expand_urls

    if isinstance(urls_or_pattern, (str, os.PathLike)):
        spec = os.fspath(urls_or_pattern)
        if os.path.isdir(spec):
            spec = os.path.join(spec, INDEX)
        if _last(_JSON_NAME, spec):
            idx = read_index(spec)
            return idx, [(s, _with_name(spec, _JSON_NAME, s["name"])) for s in idx["shards"]]
        urls = expand_urls(spec)
    else:
        urls = [os.fspath(u) for u in urls_or_pattern]
    if not urls:
        raise ShardError("no shard URLs given")
    names = []
    for url in urls:
        m = _last(_TAR_NAME, url)
        if m is None:
            raise ShardError(f"{url}: cannot tell which shard this is (no `<name>.tar` in it); "
                             f"pass the index (shards.json) instead")
        names.append(m.group(0))
    index = index or _with_name(urls[0], _TAR_NAME, INDEX)
    idx = read_index(index)
    by_name = {s["name"]: s for s in idx["shards"]}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ShardError(f"{index}: does not list shard(s) {missing[:5]}")
    return idx, [(by_name[n], u) for n, u in zip(names, urls)]


def bucket_stream(items: Iterable[tuple[float, int]], batch_seconds: float, max_batch_size: int,
                  pool_size: int, rng: random.Random) -> list[list[tuple[float, int]]]:
    """Batches of (duration, key) items as a streaming reader forms them: items enter a pool kept
    sorted by duration; whenever it holds `pool_size`, a batch is cut around a random pool member:
    neighbours in length, up to `max_batch_size` of them and `batch_seconds` of padded audio."""
    pool: list[tuple[float, int]] = []
    out = []

    def take():
        i = rng.randrange(len(pool))
        j = i + 1
        while j < len(pool) and j - i < max_batch_size and (j - i + 1) * pool[j][0] <= batch_seconds:
            j += 1
        longest = pool[j - 1][0]  # shorter neighbours below add padding, not length
        while i > 0 and j - i < max_batch_size and (j - i + 1) * longest <= batch_seconds:
            i -= 1
        out.append(pool[i:j])
        del pool[i:j]

    for item in items:
        bisect.insort(pool, item)
        if len(pool) >= pool_size:
            take()
    while pool:
        take()
    return out


@dataclass
class _Plan:
    epoch: int
    shards: list[list[int]]  # per worker of this rank: shard numbers, in reading order
    batches: list[list[tuple[int, list[int]]]]  # per worker: (position in the rank's epoch, keys)
    num_batches: int
    padding_efficiency: float


class ShardLoader:
    """Length-bucketed training batches (`asr.data.Batch`) streamed from shards; one object is both
    the trainer's sampler (len, state_dict/load_state_dict of epoch and position) and its loader.

    `urls_or_pattern`: an index (path or URL of shards.json), a directory holding one, a brace
    pattern of shard URLs, or a list of them (`pipe:curl -s https://...`, `pipe:aws s3 cp ... -`
    work like local paths). `keep`: utterance ids to train on (the trainer's filtered list); the
    others are never decoded. `shuffle_buffer`: utterances a worker pools to cut batches from; it
    holds them undecoded (about 0.5 MB per 16 kHz flac utterance of LibriSpeech), and the larger it
    is, the closer in length a batch's utterances and the better mixed. See the module docstring
    for the plan and the cost of a resume.
    """

    def __init__(self, urls_or_pattern: str | list[str], sample_rate: int, augment: AugmentConfig | None = None,
                 batch_seconds: float = 200.0, max_batch_size: int = 64, seed: int = 0, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, shuffle_buffer: int = 1000, *,
                 index: str | None = None, keep: Iterable[str] | None = None):
        self.index, shards = resolve_shards(urls_or_pattern, index)
        self.urls = [url for _, url in shards]
        self.sample_rate, self.augment = sample_rate, augment
        self.batch_seconds, self.max_batch_size = batch_seconds, max_batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.num_workers, self.shuffle_buffer = num_workers, max(1, shuffle_buffer)
        keep = None if keep is None else set(keep)
        # Per shard: the (duration, key) of each utterance to train on, keys being tar member names.
        self.items: list[list[tuple[float, int]]] = []
        self.utt_ids: dict[int, str] = {}
        for s, _ in shards:
            kept = []
            for pos, (utt_id, duration) in enumerate(s["items"]):
                if keep is None or utt_id in keep:
                    kept.append((float(duration), s["first"] + pos))
                    self.utt_ids[s["first"] + pos] = utt_id
            self.items.append(kept)
        if keep is not None and len(self.utt_ids) < len(keep):
            log.warning("%d of the %d utterances to train on are in no shard", len(keep) - len(self.utt_ids), len(keep))
        if not self.utt_ids:
            raise ShardError(f"{urls_or_pattern}: no utterances to train on in {len(shards)} shard(s)")
        if len(shards) < world_size:
            raise ShardError(f"{len(shards)} shard(s) cannot feed {world_size} ranks: write smaller shards "
                             f"(asr shards write --max-shard-mb)")
        self.epoch, self.position = 0, 0
        self._plan_cache: _Plan | None = None

    # -- the plan
    def _rank_streams(self, epoch: int, rank: int) -> list[list[int]]:
        """Shard numbers per worker of `rank`: shuffled per epoch, then dealt greedily to whichever
        rank (then worker) has the least audio so far, so ranks end up with near-equal work."""
        order = list(range(len(self.items)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        workers = max(1, self.num_workers)

        def deal(shards: list[int], n: int) -> list[list[int]]:
            heap = [(0.0, i) for i in range(n)]
            out: list[list[int]] = [[] for _ in range(n)]
            for s in shards:
                load, i = heapq.heappop(heap)
                out[i].append(s)
                heapq.heappush(heap, (load + sum(d for d, _ in self.items[s]), i))
            return out

        return deal(deal(order, self.world_size)[rank], workers)

    def _rank_batches(self, epoch: int, rank: int) -> tuple[list[list[int]], list[list[list[tuple[float, int]]]]]:
        streams = self._rank_streams(epoch, rank)
        batches = []
        for w, shards in enumerate(streams):
            rng = random.Random(f"{self.seed}:{epoch}:{rank}:{w}")
            items = (it for s in shards for it in self.items[s])
            batches.append(bucket_stream(items, self.batch_seconds, self.max_batch_size, self.shuffle_buffer, rng))
        return streams, batches

    def _plan(self, epoch: int) -> _Plan:
        if self._plan_cache is not None and self._plan_cache.epoch == epoch:
            return self._plan_cache
        counts, mine = [], None
        for r in range(self.world_size):
            streams, batches = self._rank_batches(epoch, r)
            counts.append((sum(map(len, batches)), sum(len(b) for w in batches for b in w)))
            if r == self.rank:
                mine = streams, batches
        streams, batches = mine
        # Equal batch counts on every rank: below the most, split the largest batches in two; in
        # the rare case a rank has too few utterances for that, everyone stops at its count.
        target = min(max(n for n, _ in counts), min(u for _, u in counts))
        have = counts[self.rank][0]
        while have < target:  # the largest first, so the extra steps are the cheapest ones
            w, i = max(((w, i) for w, ws in enumerate(batches) for i in range(len(ws))),
                       key=lambda wi: (len(batches[wi[0]][wi[1]]), -wi[0], -wi[1]))
            b = batches[w][i]
            batches[w][i:i + 1] = [b[: len(b) // 2], b[len(b) // 2:]]
            have += 1
        # The rank's order: one batch from each worker in turn, as a DataLoader delivers them.
        numbered: list[list[tuple[int, list[int]]]] = [[] for _ in batches]
        pointers, pos = [0] * len(batches), 0
        while pos < target and any(p < len(ws) for p, ws in zip(pointers, batches)):
            for w, ws in enumerate(batches):
                if pointers[w] < len(ws) and pos < target:
                    numbered[w].append((pos, [k for _, k in ws[pointers[w]]]))
                    pointers[w] += 1
                    pos += 1
        real = sum(d for ws in batches for b in ws for d, _ in b)
        padded = sum(len(b) * max(d for d, _ in b) for ws in batches for b in ws)
        if pos < sum(map(len, batches)):
            log.warning("epoch %d: rank %d drops %d batches to match the other ranks", epoch, self.rank,
                        sum(map(len, batches)) - pos)
        self._plan_cache = _Plan(epoch, streams, numbered, pos, real / padded if padded else 1.0)
        return self._plan_cache

    # -- the sampler interface of the trainer
    def __len__(self) -> int:
        return self._plan(self.epoch).num_batches

    def padding_efficiency(self) -> float:
        """Real seconds / padded seconds over this rank's batches of the current epoch."""
        return self._plan(self.epoch).padding_efficiency

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "world_size": self.world_size, "num_workers": self.num_workers,
                "shuffle_buffer": self.shuffle_buffer}

    def load_state_dict(self, state: dict) -> None:
        for k in ("seed", "world_size", "num_workers", "shuffle_buffer"):
            if k in state and state[k] != getattr(self, k):
                raise ValueError(f"cannot resume: the state was saved with {k}={state[k]}, this loader has "
                                 f"{getattr(self, k)} (the batch order depends on it)")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    # -- iteration
    def __iter__(self) -> Iterator[Batch]:
        plan = self._plan(self.epoch)
        stream = _ShardStream(self, plan, self.position)
        if self.num_workers == 0:
            source = stream.worker_batches(0)
        else:
            source = iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=self.num_workers,
                                                      collate_fn=_identity, prefetch_factor=4))
        waiting: dict[int, Batch] = {}
        for pos, batch in source:
            # Workers finish batches in their own time; deliver in the planned order so a resumed
            # run (whose DataLoader starts again at worker 0) sees exactly the same sequence.
            waiting[pos] = batch
            while self.position in waiting:
                b = waiting.pop(self.position)
                self.position += 1
                yield b
        if self.position != plan.num_batches:
            raise RuntimeError(f"epoch {self.epoch}: delivered {self.position} of {plan.num_batches} planned batches")
        self.epoch, self.position = self.epoch + 1, 0


def _identity(x):
    return x


class _ShardStream(torch.utils.data.IterableDataset):
    """One DataLoader worker's share of an epoch: read its shards, emit its planned batches."""

    def __init__(self, loader: ShardLoader, plan: _Plan, start: int):
        self.loader, self.plan, self.start = loader, plan, start

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        return self.worker_batches(info.id if info is not None else 0)

    def worker_batches(self, worker: int) -> Iterator[tuple[int, Batch]]:
        L = self.loader
        todo = [(pos, keys) for pos, keys in self.plan.batches[worker] if pos >= self.start]
        batch_of = {k: i for i, (_, keys) in enumerate(todo) for k in keys}
        missing = [len(keys) for _, keys in todo]
        pending: dict[int, dict] = {}  # key -> raw sample (decoded only when its batch is complete)
        done = 0

        def arrive(key: int, sample: dict):
            nonlocal done
            pending[key] = sample
            missing[batch_of[key]] -= 1
            while done < len(todo) and missing[done] == 0:
                pos, keys = todo[done]
                done += 1
                yield pos, collate([self._decode(k, pending.pop(k)) for k in keys])

        for s in self.plan.shards[worker]:
            wanted = {k for _, k in L.items[s] if k in batch_of}
            if not wanted:
                continue  # fully consumed before the resume point, or nothing to train on
            url = L.urls[s]
            seen = set()
            try:
                for sample in _read_tar(url):
                    key = sample["__key__"]
                    key = int(key) if key.isdigit() else -1
                    if key in wanted and key not in seen:
                        seen.add(key)
                        yield from arrive(key, sample)
                failure = "not in the shard"
            except Exception as e:  # a damaged shard or failed download must not end the epoch
                failure = f"shard unreadable after {len(seen)} utterances ({type(e).__name__}: {e})"
                log.warning("%s: %s", url, failure)
            for key in sorted(wanted - seen):
                yield from arrive(key, {"error": f"{url}: {failure}"})
        if done != len(todo):
            raise RuntimeError(f"worker {worker}: {len(todo) - done} planned batches never completed")

    def _decode(self, key: int, sample: dict) -> dict:
        L = self.loader
        utt_id = L.utt_ids[key]
        if "error" in sample:
            return {"utt_id": utt_id, "error": sample["error"]}
        where = f"{sample.get('__url__')}: {key:09d}"
        try:
            if "json" not in sample:
                raise AudioError(f"{where}: no .json member")
            meta = json.loads(sample["json"])
            if meta.get("utt_id") != utt_id:
                raise AudioError(f"{where}.json: utt_id {meta.get('utt_id')!r}, the index says {utt_id!r}")
            ext = next((e for e in AUDIO_EXTS if e in sample), None)
            if ext is None:
                raise AudioError(f"{where}: no audio member (.flac or .wav)")
            try:
                wav, _ = load_audio(sample[ext], L.sample_rate)
            except AudioError as e:
                raise AudioError(f"{where}.{ext}: {str(e).removeprefix('<bytes>: ')}") from None
        except (AudioError, KeyError, ValueError) as e:
            return {"utt_id": utt_id, "error": str(e)}
        if L.augment is not None:
            wav = augment_waveform(wav, L.augment, np.random.default_rng([L.seed, self.plan.epoch, key]),
                                   L.sample_rate)
        return {"utt_id": utt_id, "wav": wav, "text": meta.get("text") or "", "speaker": meta.get("speaker") or utt_id}


def _read_tar(url: str) -> Iterator[dict]:
    """Samples ({__key__, flac|wav, json}) of one shard; raises on a damaged archive."""
    from webdataset.gopen import gopen
    from webdataset.tariterators import group_by_keys, tar_file_expander

    stream = gopen(url, "rb")
    try:
        yield from group_by_keys(tar_file_expander([{"url": url, "stream": stream}]))
    finally:
        stream.close()

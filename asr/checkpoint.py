"""Training checkpoints that are never half-written and never run code when loaded.

A checkpoint is written to a temp file, fsynced and renamed into place; its sha256 goes to a
sidecar written after it.  A checkpoint without a matching sidecar (killed mid-write, truncated,
bit-flipped) is refused, and resuming falls back to the previous good one.  Loading uses
`torch.load(weights_only=True)`, which cannot unpickle code.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    pass


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(state: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    atomic_write_bytes(f"{path}.sha256", (hashlib.sha256(data).hexdigest() + "\n").encode())


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    side = Path(f"{path}.sha256")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if not side.exists():
        raise CheckpointError(f"{path}: no checksum file {side.name} (the write did not finish)")
    want = side.read_text().strip()
    got = sha256_file(path)
    if got != want:
        raise CheckpointError(f"{path}: checksum mismatch (file is {got[:12]}…, expected {want[:12]}…): "
                              "truncated or corrupted")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses pickled code with an UnpicklingError
        raise CheckpointError(f"{path}: refused to load: {str(e).splitlines()[0]}") from None


_STEP = re.compile(r"^ckpt_(\d+)\.pt$")


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Checkpoints in a directory, newest step first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _STEP.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def checkpoint_path(ckpt_dir: str | Path, step: int) -> Path:
    return Path(ckpt_dir) / f"ckpt_{step:08d}.pt"


def load_latest(ckpt_dir: str | Path, log=print) -> dict | None:
    """The newest checkpoint that verifies; broken ones are reported and skipped."""
    for p in list_checkpoints(ckpt_dir):
        try:
            return load_checkpoint(p)
        except CheckpointError as e:
            log(f"skipping checkpoint: {e}")
    return None


def prune_checkpoints(ckpt_dir: str | Path, keep: int) -> None:
    for p in list_checkpoints(ckpt_dir)[keep:]:
        p.unlink(missing_ok=True)
        Path(f"{p}.sha256").unlink(missing_ok=True)

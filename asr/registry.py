"""Model names -> package files: the registry of shipped models (asr/pretrained/registry.json,
beside the weights it lists), the download cache for URLs, and `load_model`, which resolves a name,
a file, an experiment dir or a URL and loads the package (asr.package).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import sha256_file
from .models import check_arch
from .package import PACKAGE_FILE, PackageError, load_package, read_header, read_package

EMBEDDED_DIR = Path(__file__).parent / "pretrained"  # the shipped packages (the weights folder)
REGISTRY_FILE = EMBEDDED_DIR / "registry.json"
# Per socket operation, and the window over which a download must keep MIN_DOWNLOAD_RATE.
DOWNLOAD_TIMEOUT = 30.0
MIN_DOWNLOAD_RATE = 1024  # bytes/s: slower than this for a whole window is a stalled server


def asr_home() -> Path:
    return Path(os.environ.get("ASR_HOME", Path.home() / ".cache" / "asr"))


def registry() -> dict[str, dict]:
    """Known model names: {name: {file | url, sha256, description, ...}}."""
    try:
        return json.loads(REGISTRY_FILE.read_text())
    except FileNotFoundError:
        return {}


def resolve(name_or_path: str | Path, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """A registry name, a local file, an experiment dir, a file:// URL or an http(s) URL -> local file."""
    return _resolve(name_or_path, timeout)[0]


def url_cache_path(url: str) -> Path:
    """Where a downloaded package is cached: keyed by a hash of the whole URL (two URLs ending in
    the same file name are two models), with the file name kept for people reading the folder."""
    name = Path(urllib.parse.urlparse(url).path).name or "model.safetensors"
    return asr_home() / "models" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"


def _resolve(name_or_path: str | Path, timeout: float = DOWNLOAD_TIMEOUT) -> tuple[Path, str | None]:
    """(local file, the registry's sha256 of the whole file or None)."""
    s = str(name_or_path)
    reg = registry()
    if s in reg:
        entry = reg[s]
        if "file" in entry:
            return EMBEDDED_DIR / entry["file"], entry.get("sha256")
        return _fetch(entry["url"], entry.get("sha256"), asr_home() / "models" / f"{s}.safetensors", timeout), \
            entry.get("sha256")
    if s.startswith("file://"):
        s = urllib.parse.unquote(urllib.parse.urlparse(s).path)
    elif s.startswith(("http://", "https://")):
        return _fetch(s, None, url_cache_path(s), timeout), None
    p = Path(s)
    if p.is_dir():
        p = p / PACKAGE_FILE
    if not p.exists():
        known = ", ".join(sorted(reg)) or "none"
        raise PackageError(f"{s}: not a known model name (known: {known}) and no such file or directory")
    return p, None


def _download(url: str, dest, timeout: float) -> None:
    """`url` into the open file `dest`, with a progress bar on stderr. Fails when a socket operation
    waits `timeout` s, or when a whole `timeout` window brings less than MIN_DOWNLOAD_RATE: a server
    trickling one byte a second must not hang the command for ever."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        total = int(r.headers.get("Content-Length") or 0) or None
        name = Path(urllib.parse.urlparse(url).path).name or url
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}", file=sys.stderr,
                  disable=None, leave=False) as bar:
            window_start, window_bytes = time.monotonic(), 0
            while chunk := r.read1(1 << 16):
                dest.write(chunk)
                bar.update(len(chunk))
                window_bytes += len(chunk)
                elapsed = time.monotonic() - window_start
                if elapsed >= timeout:
                    if window_bytes < MIN_DOWNLOAD_RATE * elapsed:
                        raise TimeoutError(f"stalled: {window_bytes} bytes in {elapsed:.1f} s")
                    window_start, window_bytes = time.monotonic(), 0


def _fetch(url: str, sha256: str | None, dest: Path, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """`url` cached at `dest`. The download goes to a temporary file and is moved into the cache only
    once it is a package whose checksum verifies: an HTML error page or a cut-off file is never cached."""
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
    try:
        try:
            with open(tmp, "wb") as f:
                _download(url, f, timeout)
        except (OSError, ValueError) as e:  # URLError, timeouts, refused connections are OSErrors
            raise PackageError(f"{url}: download failed ({e}); pass a local path or file:// URL instead") from None
        if sha256 and sha256_file(tmp) != sha256:
            raise PackageError(f"{url}: downloaded file does not match its sha256 {sha256}")
        try:
            read_package(tmp, file_sha256=sha256)
        except PackageError as e:
            raise PackageError(f"{url}: the download is not a usable model package "
                               f"({str(e).removeprefix(f'{tmp}: ')}); nothing was cached") from None
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


DEFAULT_MODEL = "digits"


def load_model(name_or_path: str | Path = DEFAULT_MODEL, device: str | torch.device = "cpu", *,
               arch: str | tuple[str, ...] | None = None, allow_unverified: bool = False, quantized: bool = True):
    """A ready model from a registry name, a package file, an experiment dir or a URL. `arch`: the
    kind(s) of model the caller can use (asr.models.RECOGNIZERS, "speaker", "tts"); another kind is
    refused from its header, before its weights are read. A package without a checksum is refused
    unless `allow_unverified` (a file you made and trust); quantized=False gives the float model of
    an int8 package."""
    path, file_sha256 = _resolve(name_or_path)
    if arch is not None:
        try:
            check_arch(read_header(path).get("arch", "?"), arch, str(name_or_path))
        except ValueError as e:
            raise PackageError(str(e)) from None
    return load_package(path, device, file_sha256=file_sha256, allow_unverified=allow_unverified,
                        quantized=quantized)

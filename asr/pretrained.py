"""Model packages: one safetensors file = weights + config + vocabulary + CMVN + metadata.

Loading never unpickles anything (safetensors holds raw tensors and a string->string header), so a
package from a stranger cannot run code.  The header records the package-format version, so an
old package keeps loading after an upgrade, and a sha256 over the header and the weights
(`package_sha256`, format 2), so a tampered or corrupt file is refused with a message naming it.
Format 1 packages carry a sha256 over the weights only: they load with a warning that their header
is unverified, unless the registry's sha256 of the whole file vouches for them (the shipped ones).
Before a network is built, the sizes its header declares are checked against the stored tensors,
so a 200-byte header cannot make us allocate gigabytes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from tqdm import tqdm

from .checkpoint import atomic_write_bytes, sha256_file
from .config import ExperimentConfig, load_config

FORMAT = "asr-package"
FORMAT_VERSION = 2  # 2: package_sha256 covers the header too; 1: weights_sha256 only
PACKAGE_FILE = "model.safetensors"  # name of the package inside an experiment dir
EMBEDDED_DIR = Path(__file__).parent / "pretrained"


# Per socket operation, and the window over which a download must keep MIN_DOWNLOAD_RATE.
DOWNLOAD_TIMEOUT = 30.0
MIN_DOWNLOAD_RATE = 1024  # bytes/s: slower than this for a whole window is a stalled server

log = logging.getLogger(__name__)


class PackageError(ValueError):
    pass


def weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Hash of names, dtypes, shapes and bytes, independent of file layout."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim too
    return h.hexdigest()


def package_sha256(meta: dict[str, str], weights_digest: str) -> str:
    """Hash of every header field but itself, and of the weights: editing either is detected."""
    fields = {k: v for k, v in meta.items() if k != "package_sha256"}
    h = hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode())
    h.update(weights_digest.encode())
    return h.hexdigest()


def _sealed(meta: dict[str, str], tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """`meta` as the current format writes it, checksums included."""
    meta = {**meta, "format": FORMAT, "format_version": str(FORMAT_VERSION), "weights_sha256": weights_sha256(tensors)}
    return {**meta, "package_sha256": package_sha256(meta, meta["weights_sha256"])}


def save_package(model, path: str | Path, info: dict | None = None, half: bool = False,
                 quantization: str | None = None) -> Path:
    """Write `model` (any toolkit model) with its config and metadata to one file, atomically.

    half: store the parameters in float16 (half the file; loading casts them back to float32).
    Buffers such as the CMVN statistics keep their precision.
    quantization: "int8-dynamic" records that loading builds the int8 model (asr.quantize) from
    the float weights stored; `model` itself must be the float one.
    """
    if quantization is not None:
        from .quantize import QUANTIZATIONS

        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization: {quantization!r} is not one of {list(QUANTIZATIONS)}")
        if getattr(model, "quantization", None):
            raise ValueError("save_package: pass the float model; the int8 one is rebuilt on load")
    params = {name for name, _ in model.named_parameters()} if half else set()
    tensors = {k: (v.half() if k in params and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "arch": model.arch,
        "config": json.dumps(model.cfg.to_dict(), ensure_ascii=False),
        "model_meta": json.dumps(model.package_meta(), ensure_ascii=False),
        "info": json.dumps({"date": date.today().isoformat(), **(info or {})}, ensure_ascii=False),
    }
    if quantization:
        meta["quantization"] = quantization
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(tensors, metadata=_sealed(meta, tensors)))
    return path


def _inside(relative: str) -> bool:
    """Whether `relative` (as a header spells it) names a path inside the folder it is relative to."""
    parts = Path(os.path.normpath(relative)).parts
    return not os.path.isabs(relative) and bool(parts) and parts[0] != ".."


def package_lm(lm: str | None, package_path: str | os.PathLike | None) -> str | None:
    """Where a package's decode.lm is: a file in the package's own folder, named relative to it.
    An absolute path or one climbing out with '..' is refused: a header from a stranger must not
    make us open any file of this machine."""
    if not lm or package_path is None:
        return lm
    if not _inside(lm):
        raise PackageError(f"{package_path}: decode.lm {lm!r} must name a file in the package's folder "
                           "(absolute paths and '..' are refused); pass --lm to decode with another LM")
    return os.path.join(os.path.dirname(package_path), lm)


def resolve_package_lm(lm: str | None, package_path: str | os.PathLike) -> "PackageLM | None":
    """A loaded package's decode.lm, resolved once (asr.models.checks.PackageLM)."""
    from .models.checks import PackageLM

    if not lm:
        return None
    try:
        return PackageLM(lm, package_lm(lm, package_path))
    except PackageError as e:
        return PackageLM(lm, refused=e)


def package_relative_lm(lm: str | os.PathLike | None, package_path: str | os.PathLike) -> str | None:
    """An LM as a package records it: a file in the package's folder, named relative to it (so both
    move together and package_lm accepts it). An LM elsewhere is linked (or copied) beside the
    package as `<package stem><suffix>`."""
    if lm is None:
        return None
    folder = Path(package_path).absolute().parent
    relative = os.path.relpath(os.path.abspath(lm), folder)
    if _inside(relative):
        return relative
    src = Path(lm)
    if not src.is_file():
        raise PackageError(f"{lm}: no such LM file")
    dest = folder / f"{Path(package_path).stem}{src.suffix or '.arpa'}"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    try:
        try:
            os.link(src, tmp)  # no second copy of a large LM on the same file system
        except OSError:
            atomic_write_bytes(tmp, src.read_bytes())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest.name


def read_header(path: str | Path) -> dict:
    """The package's metadata without loading the weights (for `asr models`)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > 100 * 2**20 or n > os.path.getsize(path) - 8:
                raise PackageError(f"{path}: not a model package (bad safetensors header length {n})")
            header = json.loads(f.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackageError(f"{path}: not a model package ({e})") from None
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise PackageError(f"{path}: not an asr model package (no '{FORMAT}' format marker)")
    return meta


@dataclass
class Package:
    path: Path
    arch: str
    cfg: ExperimentConfig
    model_meta: dict
    info: dict
    tensors: dict
    quantization: str | None = None  # "int8-dynamic": loading quantizes the float weights


def _verify(path: Path, meta: dict, tensors: dict, version: int, file_sha256: str | None,
            allow_unverified: bool) -> None:
    """Refuse a package whose checksum does not match, or that has none (unless allowed)."""
    if file_sha256 is not None:  # the registry's hash of the whole file: header and weights
        if sha256_file(path) != file_sha256:
            raise PackageError(f"{path}: checksum mismatch with the registry's sha256: the file was modified "
                               "or corrupted")
        return
    digest = weights_sha256(tensors)
    if version >= 2:
        want = meta.get("package_sha256")
        if want and package_sha256(meta, digest) != want:
            raise PackageError(f"{path}: checksum mismatch: the header or the weights were modified or corrupted")
    else:
        want = meta.get("weights_sha256")
        if want and digest != want:
            raise PackageError(f"{path}: weights checksum mismatch: the file was modified or corrupted")
        if want:
            log.warning("%s: package format %d: its checksum covers the weights, not the header; re-save it "
                        "(`asr package --model %s -o NEW`) to have both verified", path, version, path)
    if not want:
        if not allow_unverified:
            raise PackageError(f"{path}: package has no checksum, so neither its header nor its weights can be "
                               "verified; refusing it (load_model(..., allow_unverified=True) for a file you trust)")
        log.warning("%s: loading an unverified package (no checksum)", path)


def read_package(path: str | Path, *, file_sha256: str | None = None, allow_unverified: bool = False) -> Package:
    """The package at `path`, verified: `file_sha256` (a registry's) checks the whole file, else its
    own checksum; a package without one is refused unless `allow_unverified`."""
    path = Path(path)
    if not path.exists():
        raise PackageError(f"{path}: no such model package")
    meta = read_header(path)
    try:
        version = int(meta.get("format_version", "0"))
    except ValueError:
        raise PackageError(f"{path}: format_version {meta.get('format_version')!r} is not a number") from None
    if version > FORMAT_VERSION:
        raise PackageError(f"{path}: package format {version} is newer than this asr supports "
                           f"({FORMAT_VERSION}); upgrade asr")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise PackageError(f"{path}: truncated or corrupt package ({e})") from None
    _verify(path, meta, tensors, version, file_sha256, allow_unverified)
    try:
        cfg = load_config(data=json.loads(meta["config"]))
        # The CMVN statistics are weights of the package; the path they were read from at training
        # time means nothing on another machine.
        cfg.features.cmvn = None
        return Package(path, meta["arch"], cfg, json.loads(meta["model_meta"]), json.loads(meta.get("info", "{}")), tensors,
                       meta.get("quantization"))
    except (KeyError, json.JSONDecodeError, ValueError) as e:
        raise PackageError(f"{path}: incomplete package header ({e})") from None


def _check_declared_sizes(pkg: Package) -> None:
    """Refuse a header whose sizes no stored tensor could hold, before they are built: every layer
    stores at least one tensor, and each width (hidden, projection, embedding, mel bands, vocabulary)
    is a dimension of some stored tensor."""
    stored = [t.shape for t in pkg.tensors.values()]
    widest = max((max(s) for s in stored if len(s)), default=0)
    configs = [pkg.cfg.to_dict()] + [m.get("config", {}) for m in pkg.model_meta.get("members", [])
                                     if isinstance(m, dict)]
    declared = [("members", len(configs) - 1, len(stored))]
    for c in configs:
        m, f = c.get("model", {}), c.get("features", {})
        declared.append(("model.num_layers", m.get("num_layers"), len(stored)))
        used = ["hidden_size", "proj_size"]  # the others only where the arch builds them
        used += ["embedding_dim"] if m.get("arch") == "speaker" else []
        used += ["conv_channels"] if m.get("subsample") == "conv" else []
        declared += [(f"model.{k}", m.get(k), widest) for k in used]
        declared.append(("features.n_mels", f.get("n_mels"), widest))
    vocabs = [pkg.model_meta.get("vocab")] + [m.get("model_meta", {}).get("vocab")
                                              for m in pkg.model_meta.get("members", []) if isinstance(m, dict)]
    declared += [("vocab", len(v), widest) for v in vocabs if isinstance(v, list)]
    for name, value, limit in declared:
        if isinstance(value, int) and value > limit:
            raise PackageError(f"{pkg.path}: header declares {name} = {value}, more than its stored tensors can "
                               f"hold ({len(stored)} tensors, widest dimension {widest}): a forged or corrupt header")


def load_package(path: str | Path, device: str | torch.device = "cpu", *, file_sha256: str | None = None,
                 allow_unverified: bool = False, quantized: bool = True):
    """The model of a package, in eval mode; quantized=False: the float model even if the package
    records int8 (to re-package it)."""
    from .models import model_class

    pkg = read_package(path, file_sha256=file_sha256, allow_unverified=allow_unverified)
    _check_declared_sizes(pkg)
    try:
        model = model_class(pkg.arch).from_package_meta(pkg.cfg, pkg.model_meta)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:  # a forged or broken header
        raise PackageError(f"{path}: its header does not describe a {pkg.arch!r} model "
                           f"({type(e).__name__}: {e})") from None
    expected = model.state_dict()
    missing = [k for k in expected if k not in pkg.tensors]
    unexpected = [k for k in pkg.tensors if k not in expected]
    wrong = [f"{k} {tuple(pkg.tensors[k].shape)} (header says {tuple(expected[k].shape)})"
             for k in expected if k in pkg.tensors and pkg.tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise PackageError(f"{path}: weights do not fit the {pkg.arch} model its header declares "
                           f"(missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:3]})")
    model.load_state_dict(pkg.tensors, strict=False)
    model.info = pkg.info
    model.package_path = pkg.path
    model.package_lm = resolve_package_lm(pkg.cfg.decode.lm, pkg.path)
    model.package_half = any(t.dtype == torch.float16 for t in pkg.tensors.values())  # stored by --half
    model.package_quantization = pkg.quantization
    if pkg.quantization and quantized:
        from .quantize import QUANTIZATIONS, quantize_int8

        if pkg.quantization not in QUANTIZATIONS:
            raise PackageError(f"{path}: quantization {pkg.quantization!r} is unknown to this asr "
                               f"(known: {list(QUANTIZATIONS)}); upgrade asr")
        if torch.device(device).type != "cpu":
            raise PackageError(f"{path}: an int8 package runs on CPU only, not on {device}")
        return quantize_int8(model.eval())
    return model.to(device).eval()


# -- the registry: names -> packages ----------------------------------------------------------

REGISTRY_FILE = Path(__file__).parent / "pretrained" / "registry.json"


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
    from .models import check_arch

    path, file_sha256 = _resolve(name_or_path)
    if arch is not None:
        try:
            check_arch(read_header(path).get("arch", "?"), arch, str(name_or_path))
        except ValueError as e:
            raise PackageError(str(e)) from None
    return load_package(path, device, file_sha256=file_sha256, allow_unverified=allow_unverified,
                        quantized=quantized)


def ship(package: str | Path, name: str, data: str = "", result: str = "") -> Path:
    """Copy a package into the Python package as an embedded model and list it in the registry.

    A package that decodes with an LM (decode.lm, relative to it) takes the LM along, as
    `<name>.<suffix>` beside it, and its header is rewritten to point there; weights are untouched.
    """
    pkg = read_package(package)  # refuse to ship a broken file
    dest = EMBEDDED_DIR / f"{name}.safetensors"
    lm = pkg.cfg.decode.lm
    if lm:
        src = Path(package_lm(lm, package))
        if not src.is_file():
            raise PackageError(f"{package}: its decode.lm {lm!r} is not at {src}")
        lm_dest = EMBEDDED_DIR / f"{name}{src.suffix or '.arpa'}"
        atomic_write_bytes(lm_dest, src.read_bytes())
        meta = read_header(package)
        config = json.loads(meta["config"])
        config["decode"]["lm"] = lm_dest.name
        meta = _sealed({**meta, "config": json.dumps(config, ensure_ascii=False)}, pkg.tensors)
        atomic_write_bytes(dest, save(pkg.tensors, metadata=meta))
    else:
        atomic_write_bytes(dest, Path(package).read_bytes())
    reg = registry()
    reg[name] = {"file": dest.name, "arch": pkg.arch, "data": data, "result": result,
                 "sha256": sha256_file(dest), "size_mb": round(dest.stat().st_size / 2**20, 1)}
    atomic_write_bytes(REGISTRY_FILE, (json.dumps(reg, indent=2, sort_keys=True) + "\n").encode())
    return dest

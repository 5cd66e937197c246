"""The model package file: one safetensors file = weights + config + vocabulary + CMVN + metadata.

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
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .checkpoint import atomic_write_bytes, sha256_file
from .config import ExperimentConfig, load_config
from .models import model_class
from .models.checks import PackageLM
from .quantize import QUANTIZATIONS, quantize_int8

FORMAT = "asr-package"
FORMAT_VERSION = 2  # 2: package_sha256 covers the header too; 1: weights_sha256 only
PACKAGE_FILE = "model.safetensors"  # name of the package inside an experiment dir

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


def resolve_package_lm(lm: str | None, package_path: str | os.PathLike) -> PackageLM | None:
    """A loaded package's decode.lm, resolved once (asr.models.checks.PackageLM)."""
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
        if pkg.quantization not in QUANTIZATIONS:
            raise PackageError(f"{path}: quantization {pkg.quantization!r} is unknown to this asr "
                               f"(known: {list(QUANTIZATIONS)}); upgrade asr")
        if torch.device(device).type != "cpu":
            raise PackageError(f"{path}: an int8 package runs on CPU only, not on {device}")
        return quantize_int8(model.eval())
    return model.to(device).eval()

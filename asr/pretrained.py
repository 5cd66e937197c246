"""Model packages: one safetensors file = weights + config + vocabulary + CMVN + metadata.

Loading never unpickles anything (safetensors holds raw tensors and a string->string header), so a
package from a stranger cannot run code.  The header records the package-format version, so an
old package keeps loading after an upgrade, and a sha256 over the weights, so a tampered or
corrupt file is refused with a message naming it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .checkpoint import atomic_write_bytes, sha256_file
from .config import ExperimentConfig, load_config

FORMAT = "asr-package"
FORMAT_VERSION = 1
PACKAGE_FILE = "model.safetensors"  # name of the package inside an experiment dir
EMBEDDED_DIR = Path(__file__).parent / "pretrained"


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
        "weights_sha256": weights_sha256(tensors),
    }
    if quantization:
        meta["quantization"] = quantization
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return path


def package_lm(lm: str | None, package_path: str | os.PathLike | None) -> str | None:
    """Where a package's decode.lm is: a relative path is relative to the package itself."""
    if not lm or os.path.isabs(lm) or package_path is None:
        return lm
    return os.path.join(os.path.dirname(package_path), lm)


def package_relative_lm(lm: str | os.PathLike | None, package_path: str | os.PathLike) -> str | None:
    """An LM path as a package records it: relative to the package, so both can move together."""
    if lm is None:
        return None
    return os.path.relpath(os.path.abspath(lm), os.path.abspath(Path(package_path).parent))


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


def read_package(path: str | Path) -> Package:
    path = Path(path)
    if not path.exists():
        raise PackageError(f"{path}: no such model package")
    meta = read_header(path)
    version = int(meta.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise PackageError(f"{path}: package format {version} is newer than this asr supports "
                           f"({FORMAT_VERSION}); upgrade asr")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise PackageError(f"{path}: truncated or corrupt package ({e})") from None
    want = meta.get("weights_sha256")
    if want and weights_sha256(tensors) != want:
        raise PackageError(f"{path}: weights checksum mismatch: the file was modified or corrupted")
    try:
        cfg = load_config(data=json.loads(meta["config"]))
        # The CMVN statistics are weights of the package; the path they were read from at training
        # time means nothing on another machine.
        cfg.features.cmvn = None
        return Package(path, meta["arch"], cfg, json.loads(meta["model_meta"]), json.loads(meta.get("info", "{}")), tensors,
                       meta.get("quantization"))
    except (KeyError, json.JSONDecodeError, ValueError) as e:
        raise PackageError(f"{path}: incomplete package header ({e})") from None


def load_package(path: str | Path, device: str | torch.device = "cpu", quantized: bool = True):
    """The model of a package, in eval mode; quantized=False: the float model even if the package
    records int8 (to re-package it)."""
    from .models import model_class

    pkg = read_package(path)
    model = model_class(pkg.arch).from_package_meta(pkg.cfg, pkg.model_meta)
    missing, unexpected = model.load_state_dict(pkg.tensors, strict=False)
    if missing or unexpected:
        raise PackageError(f"{path}: weights do not fit the {pkg.arch} model "
                           f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.info = pkg.info
    model.package_path = pkg.path
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


def resolve(name_or_path: str | Path) -> Path:
    """A registry name, a local file, an experiment dir, a file:// URL or an http(s) URL -> local file."""
    s = str(name_or_path)
    reg = registry()
    if s in reg:
        entry = reg[s]
        if "file" in entry:
            return EMBEDDED_DIR / entry["file"]
        return _fetch(entry["url"], entry.get("sha256"), asr_home() / "models" / f"{s}.safetensors")
    if s.startswith("file://"):
        s = urllib.parse.unquote(urllib.parse.urlparse(s).path)
    elif s.startswith(("http://", "https://")):
        return _fetch(s, None, asr_home() / "models" / Path(urllib.parse.urlparse(s).path).name)
    p = Path(s)
    if p.is_dir():
        p = p / PACKAGE_FILE
    if not p.exists():
        known = ", ".join(sorted(reg)) or "none"
        raise PackageError(f"{s}: not a known model name (known: {known}) and no such file or directory")
    return p


def _fetch(url: str, sha256: str | None, dest: Path) -> Path:
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
    except OSError as e:
        raise PackageError(f"{url}: download failed ({e}); pass a local path or file:// URL instead") from None
    if sha256 and sha256_file(tmp) != sha256:
        tmp.unlink()
        raise PackageError(f"{url}: downloaded file does not match its sha256 {sha256}")
    os.replace(tmp, dest)
    return dest


DEFAULT_MODEL = "digits"


def load_model(name_or_path: str | Path = DEFAULT_MODEL, device: str | torch.device = "cpu", quantized: bool = True):
    """A ready model from a registry name, a package file, an experiment dir or a URL."""
    return load_package(resolve(name_or_path), device, quantized)


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
        atomic_write_bytes(dest, save(pkg.tensors, metadata={**meta, "config": json.dumps(config, ensure_ascii=False)}))
    else:
        atomic_write_bytes(dest, Path(package).read_bytes())
    reg = registry()
    reg[name] = {"file": dest.name, "arch": pkg.arch, "data": data, "result": result,
                 "sha256": sha256_file(dest), "size_mb": round(dest.stat().st_size / 2**20, 1)}
    atomic_write_bytes(REGISTRY_FILE, (json.dumps(reg, indent=2, sort_keys=True) + "\n").encode())
    return dest


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Ship a package as an embedded model (maintainers).")
    ap.add_argument("command", choices=["ship"])
    ap.add_argument("package")
    ap.add_argument("name")
    ap.add_argument("--data", default="")
    ap.add_argument("--result", default="")
    a = ap.parse_args()
    print(ship(a.package, a.name, a.data, a.result))

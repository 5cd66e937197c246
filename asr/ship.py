"""(maintainers) `asr ship`: embed a trained package in asr/pretrained/ and list it in the registry."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save

from .checkpoint import atomic_write_bytes, sha256_file
from .package import PackageError, _sealed, package_lm, read_header, read_package
from . import registry


def ship(package: str | Path, name: str, data: str = "", result: str = "") -> Path:
    """Copy a package into the Python package as an embedded model and list it in the registry
    (`registry.EMBEDDED_DIR` and `registry.REGISTRY_FILE`, read when it runs: a test points them elsewhere).

    A package that decodes with an LM (decode.lm, relative to it) takes the LM along, as
    `<name>.<suffix>` beside it, and its header is rewritten to point there; weights are untouched.
    """
    pkg = read_package(package)  # refuse to ship a broken file
    dest = registry.EMBEDDED_DIR / f"{name}.safetensors"
    lm = pkg.cfg.decode.lm
    if lm:
        src = Path(package_lm(lm, package))
        if not src.is_file():
            raise PackageError(f"{package}: its decode.lm {lm!r} is not at {src}")
        lm_dest = registry.EMBEDDED_DIR / f"{name}{src.suffix or '.arpa'}"
        atomic_write_bytes(lm_dest, src.read_bytes())
        meta = read_header(package)
        config = json.loads(meta["config"])
        config["decode"]["lm"] = lm_dest.name
        meta = _sealed({**meta, "config": json.dumps(config, ensure_ascii=False)}, pkg.tensors)
        atomic_write_bytes(dest, save(pkg.tensors, metadata=meta))
    else:
        atomic_write_bytes(dest, Path(package).read_bytes())
    reg = registry.registry()
    reg[name] = {"file": dest.name, "arch": pkg.arch, "data": data, "result": result,
                 "sha256": sha256_file(dest), "size_mb": round(dest.stat().st_size / 2**20, 1)}
    atomic_write_bytes(registry.REGISTRY_FILE, (json.dumps(reg, indent=2, sort_keys=True) + "\n").encode())
    return dest

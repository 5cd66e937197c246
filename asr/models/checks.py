"""What callers check about a model before using it: its kind (`check_arch`) and, for a loaded
package, the LM it decodes with (`PackageLM`, `decode_lm`). Imports nothing of the toolkit, so any
layer may use it (asr.transcribe does, and asr.models.base imports asr.transcribe for its
convenience method)."""
from __future__ import annotations

import os
from dataclasses import dataclass

# Archs that transcribe speech; what each arch is for, in the words an error uses.
RECOGNIZERS = ("ctc", "ctc-ensemble")
_PURPOSE = {"ctc": "speech recognition", "ctc-ensemble": "speech recognition", "speaker": "speaker", "tts": "tts"}


def check_arch(arch: str, wanted: str | tuple[str, ...], where: str) -> None:
    """Refuse a model of another kind than the caller needs, naming it (`where`: its file or name)
    and both kinds: a speaker model given to `asr transcribe` is a user's slip, not a crash."""
    wanted = (wanted,) if isinstance(wanted, str) else tuple(wanted)
    if arch not in wanted:
        purpose = " or ".join(dict.fromkeys(_PURPOSE.get(w, w) for w in wanted))
        raise ValueError(f"{where}: a {arch} model, not a {purpose} model ({', '.join(wanted)}); see `asr models`")


@dataclass(frozen=True)
class PackageLM:
    """A package's decode.lm, resolved once when the package loads (asr.package): the name its
    header records, relative to the package's folder so both can move together, and the file that
    name is here, or why the name is refused (a path outside that folder: a stranger's header must
    not make us open any file of this machine). The refusal waits until something needs the LM, so
    greedy decoding, or decoding with another --lm, still works with such a package."""
    name: str
    path: str | None = None
    refused: Exception | None = None

    def file(self) -> str:
        """The LM file, for a writer that places it beside another package (asr package, ensemble, export)."""
        if self.refused is not None:
            raise self.refused
        return self.path


def decode_lm(model) -> str | None:
    """The LM a beam decoder of `model` opens when the caller names none: its package's (which
    must be there), else the cfg.decode.lm of a model built in Python."""
    lm = model.package_lm
    if lm is None:
        return model.cfg.decode.lm
    path = lm.file()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model.package_path}: its decode.lm {lm.name!r} is not at {path}; "
                                "pass --lm to use another LM")
    return path

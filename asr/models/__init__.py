"""Every model of the toolkit; `model_class(arch)` maps a package's arch name to its class."""
from __future__ import annotations

from .acoustic import CTCModel
from .checks import RECOGNIZERS, check_arch
from .ensemble import CTCEnsemble
from .speaker import SpeakerModel
from .tts import TTSModel

__all__ = ["CTCModel", "CTCEnsemble", "SpeakerModel", "TTSModel", "RECOGNIZERS", "check_arch", "model_class"]

_ARCHS = {"ctc": CTCModel, "ctc-ensemble": CTCEnsemble, "speaker": SpeakerModel, "tts": TTSModel}


def model_class(arch: str):
    try:
        return _ARCHS[arch]
    except KeyError:
        raise ValueError(f"model.arch: unknown architecture {arch!r}; known: {sorted(_ARCHS)}") from None

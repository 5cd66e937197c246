"""Every model of the toolkit; `model_class(arch)` maps a package's arch name to its class."""
from __future__ import annotations

from .acoustic import CTCModel
from .ensemble import CTCEnsemble
from .speaker import SpeakerModel
from .tts import TTSModel

_ARCHS = {"ctc": CTCModel, "ctc-ensemble": CTCEnsemble, "speaker": SpeakerModel, "tts": TTSModel}


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


def model_class(arch: str):
    try:
        return _ARCHS[arch]
    except KeyError:
        raise ValueError(f"model.arch: unknown architecture {arch!r}; known: {sorted(_ARCHS)}") from None

"""What every model of the toolkit is, in one place: the contract the trainer, the package format
and the pipelines rely on (ARCHITECTURE.md), and the facts about a model that callers check.

    Model           arch, cfg, info and package facts; package_meta / from_package_meta
    TrainableModel  + from_training_data, check_utterance, compute_loss -> Loss, evaluate,
                    best_metric, after_training (CTC, speaker and TTS models)
    Recognizer      + vocab, ctc_members, ctc_posteriors, transcribe (a CTC model, an ensemble)

The pipelines (transcribe, streaming, speaker_*, package, registry...) import the models, never the other
way round, except for the convenience methods `Recognizer.transcribe` and `CTCModel.stream`; what
the pipelines check about a model (its kind, its LM) is in asr.models.checks, which imports nothing
of the toolkit, so that exception closes no circle.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ..config import ExperimentConfig
from ..text import Vocabulary
from .checks import PackageLM

@dataclass
class Loss:
    """What `compute_loss` gives the trainer for one batch."""
    loss: torch.Tensor | None  # what to step on; None: nothing in the batch could be learned from
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (utterance, why) left out of it
    utts: int = 0  # utterances the loss is over
    tokens: int = 0  # units it is averaged over (CTC labels, TTS frames, speaker utterances)


class Model(nn.Module, ABC):
    """A model as a package holds it (asr.package): its kind, its config, what rebuilds it.

    `info` (provenance: date, recipe, measured results) and the `package_*` facts are empty for a
    model built in Python and filled in by the loader, so callers read them without probing.
    """

    arch: ClassVar[str]  # the package header's name for this class (asr.models.model_class)

    def __init__(self, cfg: ExperimentConfig):
        super().__init__()
        self.cfg = cfg
        self.info: dict = {}
        self.package_path: Path | None = None  # the file it was loaded from
        self.package_lm: PackageLM | None = None  # its decode.lm, resolved against package_path
        self.package_half = False  # its weights were stored in float16 (`asr package --half`)
        self.package_quantization: str | None = None  # "int8-dynamic": built int8 on load

    @abstractmethod
    def package_meta(self) -> dict:
        """JSON-able facts that, with the config, rebuild the network (vocabulary, speakers...)."""

    @classmethod
    @abstractmethod
    def from_package_meta(cls, cfg: ExperimentConfig, meta: dict) -> "Model":
        """The network `package_meta` describes, with untrained weights (the loader fills them)."""


class TrainableModel(Model):
    """A model `asr train` trains (asr.train): what it learns from and how it is scored."""

    # The evaluate() number that picks the best model, and whether lower ("min") or higher is better.
    best_metric: ClassVar[tuple[str, str]] = ("loss", "min")

    @classmethod
    @abstractmethod
    def from_training_data(cls, cfg: ExperimentConfig, utterances) -> "TrainableModel":
        """A fresh model for these training utterances (labels, speakers taken from them)."""

    @abstractmethod
    def check_utterance(self, utt, max_speed: float = 1.0) -> str | None:
        """Why `utt` cannot be trained on (None if it can); `max_speed`: the fastest speed perturbation."""

    @abstractmethod
    def compute_loss(self, batch) -> Loss:
        """The training loss of a batch; utterances that cannot count are dropped and named, never inf."""

    @abstractmethod
    def evaluate(self, batches) -> dict[str, float]:
        """Dev scores, `best_metric` among them."""

    def after_training(self, batches) -> dict:
        """Run once training ends, on the weights that ship (the best package's), with the training
        data (unaugmented batches, read only if used). Returns entries for the package's info; the
        trainer saves the package again when there are any. Nothing by default."""
        return {}


class Recognizer(Model):
    """Speech in, CTC posteriors over `vocab` out: one CTC model, or several combined (an ensemble)."""

    vocab: Vocabulary

    @abstractmethod
    def ctc_members(self) -> list["Recognizer"]:
        """The CTC models whose posteriors are combined, each with its own frame_shift: [self] for one."""

    @abstractmethod
    def ctc_posteriors(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(B, S) waveforms -> (log-probabilities (B, T, V), lengths (B,)) of each of ctc_members(),
        in order (frame rates may differ between members), through the model's own forward()."""

    def transcribe(self, audio, sample_rate: int | None = None, **options):
        """Transcribe a path, a waveform with its sample rate, or a list of either (batched).

        Options are those of `asr.transcribe.Transcriber` (decoder, lm, beam_width, batch_size...).
        Returns a Transcript (or a list of them) with text, duration and timed words.
        """
        # A convenience over the pipeline, as whisper's model.transcribe is; imported here because
        # asr.transcribe imports this module (and never the model classes), so no circle forms.
        from ..audio import load_audio
        from ..transcribe import Transcriber, to_model_rate

        tr = Transcriber(self, **options)
        if not isinstance(audio, (list, tuple)):
            return tr.transcribe(audio, sample_rate)
        items = []
        for i, a in enumerate(audio):
            if isinstance(a, (str, bytes)) or hasattr(a, "__fspath__"):
                items.append((str(a), load_audio(a, tr.sr)[0]))
            else:
                items.append((f"<array {i}>", to_model_rate(a, sample_rate, tr.sr)))
        return tr.transcribe_arrays(items)

"""The acoustic model: log-mel -> (conv) -> stacked BiLSTM/GRU -> linear -> CTC over characters."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ExperimentConfig
from ..decode import greedy_decode
from ..features import lengths_to_mask
from ..metrics import corpus_cer, corpus_wer
from ..text import Vocabulary, ctc_min_frames
from .base import Loss, Recognizer, TrainableModel
from .rnn import RNNEncoder


class Lookahead(nn.Module):
    """deepspeech.pytorch's lookahead convolution (Wang et al. 2016, "Lookahead convolution layer
    for unidirectional recurrent neural networks"): feature by feature, a learned mix of the RNN
    output at each frame and the `context` frames after it, then deepspeech.pytorch's
    Hardtanh(0, 20). It gives a unidirectional model a little of the future at a fixed delay of
    `context` output frames (a streaming decoder holds those back).

    Frames past each utterance's end are zeroed before the convolution (the padded CPU RNN path
    leaves values there), so the last frames of an utterance see zeros whatever its batch.
    """

    def __init__(self, size: int, context: int):
        super().__init__()
        if context < 1:
            raise ValueError(f"model.lookahead: expected a number of frames >= 1, got {context}")
        self.context = context
        self.conv = nn.Conv1d(size, size, kernel_size=context + 1, groups=size, bias=False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = x * lengths_to_mask(lengths, x.size(1)).to(x.dtype).unsqueeze(-1)
        return self.forward_frames(nn.functional.pad(x, (0, 0, 0, self.context)))

    def forward_frames(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T + context, F) -> (B, T, F): the outputs whose future is all in `x`."""
        return nn.functional.hardtanh(self.conv(x.transpose(1, 2)).transpose(1, 2), 0.0, 20.0)


class CTCModel(RNNEncoder, TrainableModel, Recognizer):
    arch = "ctc"
    best_metric = ("wer", "min")

    def __init__(self, cfg: ExperimentConfig, vocab: Vocabulary):
        super().__init__(cfg)
        self.vocab = vocab
        m = cfg.model
        self.build_encoder(cfg)
        self.lookahead = None
        if m.lookahead:
            if m.bidirectional:
                raise ValueError("model.lookahead: a bidirectional RNN already sees the whole utterance; "
                                 "the lookahead is for model.bidirectional: false")
            self.lookahead = Lookahead(self.encoder.output_size, m.lookahead)
        self.dropout = nn.Dropout(m.dropout)
        self.output = nn.Linear(self.encoder.output_size, len(vocab))
        self.ctc = nn.CTCLoss(blank=vocab.blank_id, reduction="none", zero_infinity=True)

    # -- what a package needs to rebuild this model
    def package_meta(self) -> dict:
        return {"vocab": self.vocab.tokens, "unit": self.vocab.unit}

    @classmethod
    def from_package_meta(cls, cfg: ExperimentConfig, meta: dict) -> "CTCModel":
        return cls(cfg, Vocabulary(meta["vocab"], meta.get("unit", "char")))

    @classmethod
    def from_training_data(cls, cfg: ExperimentConfig, utterances) -> "CTCModel":
        """Labels are taken from the training text: any script, no hand-written token list."""
        return cls(cfg, Vocabulary.from_texts((u.text or "" for u in utterances), cfg.model.unit))

    def check_utterance(self, utt, max_speed: float = 1.0) -> str | None:
        """Why `utt` cannot be trained on (None if it can). Out-of-vocabulary text is an error."""
        if not (utt.text or "").strip():
            return "empty transcript"
        ids = self.vocab.encode(utt.text, utt.utt_id)  # raises, naming the utterance
        if utt.duration is not None:
            samples = int(utt.duration / max_speed * self.cfg.features.sample_rate)
            frames = int(self.output_frames(torch.tensor(samples)))
            if frames < ctc_min_frames(ids):
                return f"too short for CTC: {frames} output frames < {ctc_min_frames(ids)} needed for {len(ids)} labels"
        return None

    @property
    def frame_shift(self) -> float:
        """Seconds between two output frames."""
        f = self.cfg.features
        return f.hop_length * (self.conv.time_stride if self.conv is not None else 1) / f.sample_rate

    def output_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        n = self.frontend.logmel.num_frames(num_samples)
        return self.conv.output_lengths(n) if self.conv is not None else n

    def forward(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) waveforms at cfg.features.sample_rate -> (B, T, V) log-probabilities, (B,) lengths."""
        x, lens = self.encode(*self.frontend(wav, wav_lens))
        if self.lookahead is not None:
            x = self.lookahead(x, lens)
        logits = self.output(self.dropout(x))
        return logits.float().log_softmax(-1), lens

    def ctc_members(self) -> list["CTCModel"]:
        return [self]

    def ctc_posteriors(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self(wav, wav_lens)]

    def compute_loss(self, batch) -> Loss:
        """CTC loss over the batch; utterances CTC cannot align are dropped and named, never inf."""
        targets = [self.vocab.encode(t, u) for t, u in zip(batch.texts, batch.utt_ids)]
        out_frames = self.output_frames(batch.wav_lens)
        ok = [i for i, ids in enumerate(targets) if ids and ctc_min_frames(ids) <= int(out_frames[i])]
        dropped = [(batch.utt_ids[i], f"{int(out_frames[i])} output frames < {ctc_min_frames(targets[i])} "
                    f"needed for its {len(targets[i])} labels") for i in range(len(targets)) if i not in ok]
        if not ok:
            return Loss(None, dropped)
        if len(ok) < len(targets):
            idx = torch.tensor(ok)
            wav, wav_lens = batch.wav[idx], batch.wav_lens[idx]
            wav = wav[:, : int(wav_lens.max())]
        else:
            wav, wav_lens = batch.wav, batch.wav_lens
        targets = [targets[i] for i in ok]
        log_probs, lens = self(wav, wav_lens)
        flat = torch.tensor([t for ids in targets for t in ids], dtype=torch.long)
        tlens = torch.tensor([len(ids) for ids in targets], dtype=torch.long)
        losses = self.ctc(log_probs.transpose(0, 1), flat, lens.cpu(), tlens)
        bad = ~torch.isfinite(losses)
        if bad.any():  # a NaN from the network itself: report it rather than train on it
            dropped += [(batch.utt_ids[ok[i]], "non-finite CTC loss") for i in bad.nonzero().flatten().tolist()]
            losses = losses.masked_fill(bad, 0.0)
        tokens = int(tlens[~bad.cpu()].sum())
        # Sum over utterances / tokens: long and short utterances weigh by their label count.
        return Loss(losses.sum() / max(tokens, 1), dropped, len(ok) - int(bad.sum()), tokens)

    def stream(self, sample_rate: int | None = None, **options):
        """A stream for live audio: `s = model.stream(); s.feed(samples) ... s.finish()`.

        Needs a unidirectional model without utterance CMN (see asr.streaming.Stream, which
        takes the options: decoder, lm, beam_width, alpha, beta; sample_rate of the samples fed,
        the model's by default).
        """
        # the pipeline's Stream, imported here as Recognizer.transcribe imports the Transcriber
        from ..streaming import Stream

        return Stream(self, sample_rate=sample_rate, **options)

    @torch.no_grad()
    def evaluate(self, batches) -> dict:
        """Greedy WER/CER and CTC loss over dev batches (the trainer picks the best model by WER)."""
        refs, hyps, loss_sum, tokens = [], [], 0.0, 0
        for batch in batches:
            log_probs, lens = self(batch.wav, batch.wav_lens)
            targets = [self.vocab.encode(t, u) for t, u in zip(batch.texts, batch.utt_ids)]
            flat = torch.tensor([t for ids in targets for t in ids], dtype=torch.long)
            tlens = torch.tensor([len(ids) for ids in targets], dtype=torch.long)
            loss_sum += float(self.ctc(log_probs.transpose(0, 1), flat, lens.cpu(), tlens).sum())
            tokens += int(tlens.sum())
            hyps.extend(h.text for h in greedy_decode(log_probs, lens, self.vocab))
            refs.extend(batch.texts)
        return {"wer": corpus_wer(refs, hyps).rate, "cer": corpus_cer(refs, hyps).rate,
                "loss": loss_sum / max(tokens, 1)}

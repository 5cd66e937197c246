"""The speaker model: log-mel -> (frame stacking) -> stacked (Bi)LSTM/GRU -> attentive statistics
pooling -> embedding, trained with a speaker classifier that is thrown away at test time.

An utterance in, one L2-normalised embedding out; two utterances are compared by the cosine of
their embeddings, so speakers never heard in training can be enrolled and recognised.

Speaker-specific knobs live in `model.extra` (unknown keys are errors):
    head: amsoftmax | softmax   training classifier (default amsoftmax: additive-margin softmax,
                                 Wang et al. 2018, which trains for cosine scoring directly)
    margin: 0.2                  AM-softmax margin subtracted from the target cosine
    scale: 30.0                  AM-softmax logit scale
    attention_dim: 128           hidden size of the pooling attention
    speed_speakers: []           e.g. [0.9, 1.0, 1.1]: in training each utterance is played at a
                                 random one of these speeds and labelled as a new speaker per speed
                                 (Kaldi's trick): pitch and formants move, so the model learns what
                                 tells voices apart, not just which of few training speakers it hears.
    backend: fused               how embeddings are scored, fitted on the training data once training
                                 ends (`fit_backend`; the trainer calls it) and saved in the package:
                                 none   the network's embedding, L2-normalised;
                                 znorm  centred and scaled per dimension by the training embeddings'
                                        mean and std (Kaldi's mean subtraction, plus scaling);
                                 fused  znorm joined with the utterance's log-mel mean and std,
                                        whitened by their within-speaker covariance (WCCN).
                                 Why fused: trained on a handful of speakers the network learns what
                                 tells *those* apart and places a new voice near one of them; the
                                 spectral statistics know no speaker, and WCCN fitted on the training
                                 speakers removes what varies within a voice (which word is said).
                                 On FSDD leave-one-speaker-out (4 training speakers) it raised a new
                                 speaker's identification from 83 % to 95 % on average (RESULTS.md).
    stats_weight: 1.0            weight of the statistics part in the fused embedding
    wccn_reg: 0.1                shrinkage of the within-speaker covariance towards its mean variance
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..config import ExperimentConfig
from ..features import lengths_to_mask, speed_perturb
from ..metrics import eer, min_dcf
from .base import Loss, TrainableModel
from .rnn import RNNEncoder

EXTRA_DEFAULTS = {"head": "amsoftmax", "margin": 0.2, "scale": 30.0, "attention_dim": 128, "speed_speakers": [],
                  "backend": "fused", "stats_weight": 1.0, "wccn_reg": 0.1}
HEADS = {"amsoftmax", "softmax"}
# "stats" scores the log-mel mean/std alone (centred on the training data): the classic baseline,
# no network, for a side-by-side ratio
BACKENDS = {"none", "znorm", "fused", "stats"}
# Pairs scored on dev for the EER: all pairs of at most this many utterances (a seeded subset beyond).
MAX_EVAL_UTTS = 3000


def speaker_extra(cfg: ExperimentConfig) -> dict:
    """model.extra with defaults filled in; a typo in a key or a bad head is an error."""
    extra = dict(cfg.model.extra or {})
    unknown = sorted(set(extra) - set(EXTRA_DEFAULTS))
    if unknown:
        raise ValueError(f"model.extra: unknown key(s) {unknown} for the speaker model; "
                         f"known: {sorted(EXTRA_DEFAULTS)}")
    extra = {**EXTRA_DEFAULTS, **extra}
    if extra["head"] not in HEADS:
        raise ValueError(f"model.extra.head: {extra['head']!r} is not one of {sorted(HEADS)}")
    if extra["backend"] not in BACKENDS:
        raise ValueError(f"model.extra.backend: {extra['backend']!r} is not one of {sorted(BACKENDS)}")
    if not 0.0 <= float(extra["wccn_reg"]) <= 1.0:
        raise ValueError(f"model.extra.wccn_reg: {extra['wccn_reg']!r} must be in [0, 1]")
    speeds = extra["speed_speakers"]
    if speeds and (not isinstance(speeds, list) or 1.0 not in speeds
                   or any(not 0.5 <= float(f) <= 2.0 for f in speeds)):
        raise ValueError(f"model.extra.speed_speakers: {speeds!r} must be a list of speeds in [0.5, 2] "
                         "that includes 1.0")
    extra["speed_speakers"] = [float(f) for f in speeds or []]
    return extra


class AttentiveStatsPooling(nn.Module):
    """Attention-weighted mean and standard deviation over time (Okabe et al. 2018).

    Padding frames get zero weight, so an utterance's statistics do not depend on its batch.
    """

    def __init__(self, dim: int, attention_dim: int = 128):
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(dim, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1))
        self.output_size = 2 * dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = lengths_to_mask(lengths, x.size(1))
        w = self.attention(x).squeeze(-1).float().masked_fill(~mask, float("-inf")).softmax(-1)
        return weighted_mean_std(x, w, mask)


def weighted_mean_std(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) frames, (B, T) weights summing to 1 over each utterance's own frames -> (B, 2D)
    weighted mean and standard deviation; padding frames count for nothing."""
    x = x.float().masked_fill(~mask.unsqueeze(-1), 0.0)
    w = w.unsqueeze(-1)
    mean = (w * x).sum(1)
    var = (w * x.square()).sum(1) - mean.square()
    # The floor keeps sqrt's gradient finite on one-frame or constant inputs.
    return torch.cat([mean, var.clamp(min=1e-6).sqrt()], dim=-1)


class AMSoftmax(nn.Module):
    """Additive-margin softmax: logits s * (cos(theta) - m for the target class)."""

    def __init__(self, dim: int, num_classes: int, margin: float, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * dim**-0.5)
        self.margin, self.scale = margin, scale

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = F.linear(F.normalize(emb.float(), dim=-1), F.normalize(self.weight.float(), dim=-1))
        if labels is not None:
            cos = cos - self.margin * F.one_hot(labels, cos.size(-1)).to(cos.dtype)
        return self.scale * cos


class SoftmaxHead(nn.Linear):
    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(emb.float())


class SpeakerModel(RNNEncoder, TrainableModel):
    arch = "speaker"
    best_metric = ("eer", "min")

    def __init__(self, cfg: ExperimentConfig, speakers: list[str]):
        if len(speakers) < 2:
            raise ValueError(f"speaker model: needs at least 2 training speakers, got {speakers}")
        super().__init__(cfg)
        self.speakers = list(speakers)
        self.speaker_index = {s: i for i, s in enumerate(self.speakers)}
        m = cfg.model
        extra = speaker_extra(cfg)
        self.build_encoder(cfg)
        self.pooling = AttentiveStatsPooling(self.encoder.output_size, int(extra["attention_dim"]))
        self.dropout = nn.Dropout(m.dropout)
        self.embedding = nn.Linear(self.pooling.output_size, m.embedding_dim)
        # Classes are (speaker, speed) pairs, speaker-major: class = speaker * len(speeds) + speed.
        self.extra = extra
        self.backend: str | None = None  # set by fit_backend or a package that holds a fitted back-end
        self.speeds = extra["speed_speakers"] or [1.0]
        classes = len(speakers) * len(self.speeds)
        if extra["head"] == "amsoftmax":
            self.head = AMSoftmax(m.embedding_dim, classes, float(extra["margin"]), float(extra["scale"]))
        else:
            self.head = SoftmaxHead(m.embedding_dim, classes)

    # -- what a package needs to rebuild this model
    def package_meta(self) -> dict:
        return {"speakers": self.speakers, **({"backend": self.backend} if self.backend else {})}

    @classmethod
    def from_package_meta(cls, cfg: ExperimentConfig, meta: dict) -> "SpeakerModel":
        model = cls(cfg, meta["speakers"])
        if meta.get("backend"):  # packages from before back-ends had none: they score as "none"
            model._set_backend(meta["backend"], torch.zeros(cfg.model.embedding_dim), torch.ones(cfg.model.embedding_dim),
                               torch.zeros(2 * model.frontend.output_size),
                               torch.eye(2 * model.frontend.output_size))
        return model

    @classmethod
    def from_training_data(cls, cfg: ExperimentConfig, utterances) -> "SpeakerModel":
        utterances = list(utterances)
        speakers = sorted({u.speaker for u in utterances})
        if len(speakers) == len(utterances) and all(u.speaker == u.utt_id for u in utterances):
            raise ValueError("speaker model: every training utterance is its own speaker; "
                             "the data dirs need an utt2spk file")
        return cls(cfg, speakers)

    def check_utterance(self, utt, max_speed: float = 1.0) -> str | None:
        """Why `utt` cannot be trained on (None if it can)."""
        if utt.speaker not in self.speaker_index:
            return f"speaker {utt.speaker!r} is not one of the model's {len(self.speakers)} training speakers"
        if utt.duration is not None and utt.duration <= 0:
            return "no audio"
        return None

    def forward(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> torch.Tensor:
        """(B, S) waveforms at cfg.features.sample_rate -> (B, D) embeddings, not normalised."""
        return self._network(*self.frontend(wav, wav_lens))

    def _network(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        x, lens = self.encode(x, lens)
        return self.embedding(self.dropout(self.pooling(x, lens)))

    @staticmethod
    def _spectral_stats(x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Mean and standard deviation over each utterance's own frames of its log-mel features."""
        mask = lengths_to_mask(lens, x.size(1))
        return weighted_mean_std(x, mask.float() / lens.clamp(min=1).unsqueeze(-1).float(), mask)

    def embed(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> torch.Tensor:
        """(B, S) waveforms -> (B, D) L2-normalised embeddings as the back-end scores them; cosine
        similarity is their dot product."""
        x, lens = self.frontend(wav, wav_lens)
        if self.backend == "stats":
            return F.normalize(self._spectral_stats(x, lens).float() - self.backend_stats_mean, dim=-1)
        emb = self._network(x, lens).float()
        if self.backend is None or self.backend == "none":
            return F.normalize(emb, dim=-1)
        emb = F.normalize((emb - self.backend_emb_mean) / self.backend_emb_scale, dim=-1)
        if self.backend == "fused":
            stats = (self._spectral_stats(x, lens) - self.backend_stats_mean) @ self.backend_stats_transform
            emb = torch.cat([emb, float(self.extra["stats_weight"]) * F.normalize(stats, dim=-1)], dim=-1)
        return F.normalize(emb, dim=-1)

    def use_backend(self, kind: str) -> None:
        """Score with another back-end than the fitted one (`none`: the network alone), to compare."""
        if kind not in BACKENDS:
            raise ValueError(f"back-end {kind!r} is not one of {sorted(BACKENDS)}")
        if kind != "none" and self.backend is None:
            raise ValueError(f"back-end {kind!r}: this model has no fitted back-end (a package from before "
                             "back-ends); only 'none' is possible")
        self.backend = kind

    def _set_backend(self, kind: str, emb_mean, emb_scale, stats_mean, stats_transform) -> None:
        self.backend = kind
        for name, value in [("emb_mean", emb_mean), ("emb_scale", emb_scale), ("stats_mean", stats_mean),
                            ("stats_transform", stats_transform)]:
            self.register_buffer(f"backend_{name}", value.float().to(self.embedding.weight.device))

    @torch.no_grad()
    def fit_backend(self, batches) -> dict:
        """Fit extra.backend on training batches (no augmentation): the embeddings' mean and std, and
        the log-mel statistics' mean and within-speaker whitening. Returns what it fitted on."""
        kind = self.extra["backend"]
        was_training = self.training
        self.eval()
        embs, stats, spks = [], [], []
        for batch in batches:
            x, lens = self.frontend(batch.wav, batch.wav_lens)
            embs.append(self._network(x, lens).double().cpu())
            stats.append(self._spectral_stats(x, lens).double().cpu())
            spks.extend(batch.speakers)
        self.train(was_training)
        if not spks:
            raise ValueError("speaker back-end: no training utterances to fit it on")
        emb, st = torch.cat(embs), torch.cat(stats)
        labels = torch.as_tensor(np.unique(spks, return_inverse=True)[1])
        # Within-speaker covariance, pooled over speakers and shrunk so a dimension that barely
        # varies in training is not blown up in whitening.
        centred = st - torch.stack([st[labels == k].mean(0) for k in range(int(labels.max()) + 1)])[labels]
        w = centred.T @ centred / len(st)
        reg = float(self.extra["wccn_reg"])
        w = (1 - reg) * w + reg * w.diagonal().mean() * torch.eye(len(w), dtype=w.dtype)
        evals, evecs = torch.linalg.eigh(w)
        transform = evecs @ torch.diag(evals.clamp(min=1e-12).rsqrt()) @ evecs.T
        self._set_backend(kind, emb.mean(0), emb.std(0).clamp(min=1e-6), st.mean(0), transform)
        return {"utterances": len(spks), "speakers": int(labels.max()) + 1}

    def after_training(self, batches) -> dict:
        """The scoring back-end, fitted on the training data with the weights that ship."""
        return {"backend": self.fit_backend(batches)}

    def _labels(self, batch) -> tuple[list[int], list[tuple[str, str]]]:
        ok, dropped = [], []
        for i, (utt, spk) in enumerate(zip(batch.utt_ids, batch.speakers)):
            if spk in self.speaker_index:
                ok.append(i)
            else:
                dropped.append((utt, f"speaker {spk!r} is not a training speaker of this model"))
        return ok, dropped

    def compute_loss(self, batch) -> Loss:
        """Cross-entropy of the classifier head, averaged over the batch's utterances."""
        ok, dropped = self._labels(batch)
        if not ok:
            return Loss(None, dropped)
        wav, wav_lens = batch.wav, batch.wav_lens
        if len(ok) < len(batch):
            idx = torch.tensor(ok, device=wav.device)
            wav, wav_lens = wav[idx], wav_lens[idx]
            wav = wav[:, : int(wav_lens.max())]
        labels = torch.tensor([self.speaker_index[batch.speakers[i]] for i in ok], device=wav.device)
        labels = labels * len(self.speeds) + self.speeds.index(1.0)
        if len(self.speeds) > 1 and self.training:
            wav, wav_lens, labels = self._speed_speakers(wav, wav_lens, labels)
        logits = self.head(self(wav, wav_lens), labels)
        loss = F.cross_entropy(logits, labels)
        return Loss(loss, dropped, len(ok), len(ok))

    def _speed_speakers(self, wav, wav_lens, labels):
        """Each utterance at a random speed of extra.speed_speakers, relabelled as that speed's speaker."""
        k = torch.randint(len(self.speeds), (len(labels),))
        pieces = [torch.from_numpy(speed_perturb(w[: int(n)].float().cpu().numpy(), self.speeds[int(i)]))
                  for w, n, i in zip(wav, wav_lens, k)]
        lens = torch.tensor([len(p) for p in pieces])
        out = wav.new_zeros(len(pieces), int(lens.max()))
        for row, p in enumerate(pieces):
            out[row, : len(p)] = p.to(out)
        base = labels - self.speeds.index(1.0)
        return out, lens.to(wav_lens.device), base + k.to(labels.device)

    @torch.no_grad()
    def evaluate(self, batches) -> dict:
        """EER (%) and minDCF over all dev pairs by cosine; classifier accuracy (%) and loss on
        dev utterances of training speakers. The trainer keeps the model with the lowest EER."""
        embs, spks, loss_sum, correct, known = [], [], 0.0, 0, 0
        for batch in batches:
            emb = self(batch.wav, batch.wav_lens).float()
            # pairs are scored as a user's would be: through the back-end once one is fitted
            embs.append((self.embed(batch.wav, batch.wav_lens) if self.backend else F.normalize(emb, dim=-1)).cpu())
            spks.extend(batch.speakers)
            ok = [i for i, s in enumerate(batch.speakers) if s in self.speaker_index]
            if ok:
                labels = torch.tensor([self.speaker_index[batch.speakers[i]] for i in ok], device=emb.device)
                logits = self.head(emb[ok])  # no margin: the loss a user of the classifier would see
                nat = labels * len(self.speeds) + self.speeds.index(1.0)  # dev audio plays at speed 1
                loss_sum += float(F.cross_entropy(logits, nat, reduction="sum"))
                correct += int((logits.argmax(-1) // len(self.speeds) == labels).sum())
                known += len(ok)
        if not spks:
            raise ValueError("speaker model: no dev utterances to evaluate")
        emb = torch.cat(embs).numpy()
        labels = np.unique(spks, return_inverse=True)[1]
        if len(labels) > MAX_EVAL_UTTS:
            keep = np.random.default_rng(0).choice(len(labels), MAX_EVAL_UTTS, replace=False)
            emb, labels = emb[keep], labels[keep]
        i, j = np.triu_indices(len(labels), k=1)
        scores = np.einsum("nd,nd->n", emb[i], emb[j])
        target = labels[i] == labels[j]
        if target.all() or not target.any():
            raise ValueError("speaker model: the dev data gives no EER: it needs two or more speakers, one of "
                             "them with two or more utterances")
        res = {"eer": 100.0 * eer(scores, target), "min_dcf": min_dcf(scores, target)}
        if known:
            res.update(acc=100.0 * correct / known, loss=loss_sum / known)
        return res

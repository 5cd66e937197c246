"""Text-to-speech: a Tacotron 2-style model (Shen et al. 2018), small enough to train on a CPU.

characters -> embedding -> conv stack -> BiLSTM encoder -> location-sensitive attention ->
autoregressive LSTM decoder (prenet on the previous frame, r frames per step) -> log-mel frames
and a stop token -> conv postnet (residual). A vocoder (asr.vocoder) turns the mels into audio.

Targets are computed inside the model from the waveforms of a batch with the toolkit's LogMel
frontend (log of the mel power spectrum, which Griffin-Lim can invert), normalised per mel bin
with training-set statistics kept as buffers, so a package needs no feature files.

The alignment is pushed towards the diagonal with the guided-attention loss of Tachibana et al.
(2017): on a few thousand utterances plain Tacotron often never learns to attend at all.

TTS knobs live in `model.extra` (unknown keys are errors); model.hidden_size is the size of both
decoder RNNs, model.cell their kind (lstm | gru), model.dropout the encoder/postnet dropout:
    reduction: 3             frames predicted per decoder step (r)
    embed_dim: 128           character embedding
    encoder_dim: 128         conv channels and BiLSTM output size
    encoder_convs: 3         conv layers before the BiLSTM (kernel conv_kernel)
    conv_kernel: 5
    attention_dim: 128       location-sensitive attention
    location_filters: 32
    location_kernel: 31
    prenet_dim: 128          two layers, dropout prenet_dropout kept ON at inference (Tacotron 2):
    prenet_dropout: 0.5      it is the model's only source of variation, and without it the
                             decoder copies its own input instead of attending
    postnet_dim: 128         postnet_layers conv layers of postnet_kernel
    postnet_layers: 5
    postnet_kernel: 5
    guided_sigma: 0.2        width g of the guided-attention penalty 1 - exp(-(n/N - t/T)^2 / 2g^2)
    guided_weight: 1.0       its weight in the loss
    stop_weight: 1.0         weight of the stop-token BCE; stop_pos_weight weighs its one positive
    stop_pos_weight: 5.0     step against the many negatives
    max_decoder_steps: 300   inference limit (and utterances needing more are not trained on)
    stop_threshold: 0.5      stop when sigmoid(stop logit) exceeds this
    speaker_dim: 64          speaker-embedding size when there are 2+ training speakers
    cmvn_utts: 300           training utterances the mel statistics are estimated from
    text: digits             how input text is read (asr.tts_text.FRONTENDS): digits (digits
                             spelled, the rest as typed) or english (numbers, abbreviations and
                             symbols as words, lower case, unknown punctuation mapped to known)
"""
from __future__ import annotations

import random

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ExperimentConfig
from ..features import GlobalCMVN, LogMel, lengths_to_mask, pad_batch, utterance_cmvn
from ..text import DIGIT_WORDS, Vocabulary, unsayable
from ..tts_text import FRONTENDS, fallback_punctuation
from .base import Loss, TrainableModel
from .rnn import CELLS, RecurrentLayer

EXTRA_DEFAULTS = {
    "reduction": 3, "embed_dim": 128, "encoder_dim": 128, "encoder_convs": 3, "conv_kernel": 5,
    "attention_dim": 128, "location_filters": 32, "location_kernel": 31, "prenet_dim": 128,
    "prenet_dropout": 0.5, "postnet_dim": 128, "postnet_layers": 5, "postnet_kernel": 5,
    "guided_sigma": 0.2, "guided_weight": 1.0, "stop_weight": 1.0, "stop_pos_weight": 5.0,
    "max_decoder_steps": 300, "stop_threshold": 0.5, "speaker_dim": 64, "cmvn_utts": 300, "text": "digits",
}
# The alphabet of a model trained on digit words only (digits-tts): all it can say is numbers.
DIGIT_SYMBOLS = set(" ".join(DIGIT_WORDS))


def tts_extra(cfg: ExperimentConfig) -> dict:
    """model.extra with defaults filled in; a typo in a key or a nonsensical value is an error."""
    extra = dict(cfg.model.extra or {})
    unknown = sorted(set(extra) - set(EXTRA_DEFAULTS))
    if unknown:
        raise ValueError(f"model.extra: unknown key(s) {unknown} for the tts model; known: {sorted(EXTRA_DEFAULTS)}")
    extra = {**EXTRA_DEFAULTS, **extra}
    if extra["text"] not in FRONTENDS:
        raise ValueError(f"model.extra.text: {extra['text']!r} is not one of {sorted(FRONTENDS)}")
    for k, v in extra.items():
        if k != "text" and (not isinstance(v, (int, float)) or isinstance(v, bool)):
            raise ValueError(f"model.extra.{k}: expected a number, got {v!r}")
    for k in ("reduction", "embed_dim", "encoder_dim", "attention_dim", "prenet_dim", "max_decoder_steps"):
        if extra[k] < 1:
            raise ValueError(f"model.extra.{k}: must be >= 1, got {extra[k]}")
    if extra["encoder_dim"] % 2:
        raise ValueError(f"model.extra.encoder_dim: must be even (two BiLSTM directions), got {extra['encoder_dim']}")
    if not 0 <= extra["prenet_dropout"] < 1:
        raise ValueError(f"model.extra.prenet_dropout: must be in [0, 1), got {extra['prenet_dropout']}")
    return extra


def guided_attention_weights(text_lens: torch.Tensor, step_lens: torch.Tensor, max_n: int, max_t: int,
                             sigma: float) -> torch.Tensor:
    """(B, max_t, max_n) penalties 1 - exp(-(n/N - t/T)^2 / (2 sigma^2)), zero outside each
    utterance's own N text positions and T decoder steps."""
    n = torch.arange(max_n, device=text_lens.device).float()
    t = torch.arange(max_t, device=text_lens.device).float()
    N = text_lens.float().view(-1, 1, 1)
    T = step_lens.float().view(-1, 1, 1)
    w = 1.0 - torch.exp(-((n.view(1, 1, -1) / N - t.view(1, -1, 1) / T) ** 2) / (2 * sigma**2))
    mask = (n.view(1, 1, -1) < N) & (t.view(1, -1, 1) < T)
    return w * mask


def guided_attention_loss(align: torch.Tensor, text_lens: torch.Tensor, step_lens: torch.Tensor,
                          sigma: float) -> torch.Tensor:
    """Mean penalty-weighted attention over the valid (step, position) cells of the batch."""
    w = guided_attention_weights(text_lens, step_lens, align.size(2), align.size(1), sigma)
    cells = (text_lens.float() * step_lens.float()).sum().clamp(min=1)
    return (align * w).sum() / cells


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, act: nn.Module | None, dropout: float):
        layers = [nn.Conv1d(cin, cout, kernel, padding=(kernel - 1) // 2), nn.BatchNorm1d(cout)]
        if act is not None:
            layers.append(act)
        layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class Encoder(nn.Module):
    """Embedded characters -> conv stack -> BiLSTM; padding positions are zeroed after each conv
    so a sentence encodes the same whatever its batch."""

    def __init__(self, num_symbols: int, ex: dict, cell: str, dropout: float):
        super().__init__()
        d, k = int(ex["encoder_dim"]), int(ex["conv_kernel"])
        self.embedding = nn.Embedding(num_symbols, int(ex["embed_dim"]), padding_idx=0)
        dims = [int(ex["embed_dim"])] + [d] * int(ex["encoder_convs"])
        self.convs = nn.ModuleList(ConvBlock(a, b, k, nn.ReLU(), dropout) for a, b in zip(dims, dims[1:]))
        self.rnn = RecurrentLayer(dims[-1], d // 2, cell, bidirectional=True)
        self.output_size = self.rnn.output_size

    def forward(self, ids: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        mask = lengths_to_mask(lens, ids.size(1)).unsqueeze(1).float()
        x = self.embedding(ids).transpose(1, 2)
        for conv in self.convs:
            x = conv(x) * mask
        return self.rnn(x.transpose(1, 2), lens)


class LocationSensitiveAttention(nn.Module):
    """Additive attention that also sees the previous and the cumulative alignment (Chorowski et
    al. 2015), which makes it move forward monotonically through the text."""

    def __init__(self, query_dim: int, memory_dim: int, dim: int, filters: int, kernel: int):
        super().__init__()
        self.query = nn.Linear(query_dim, dim, bias=False)
        self.memory = nn.Linear(memory_dim, dim, bias=False)
        self.location_conv = nn.Conv1d(2, filters, kernel, padding=(kernel - 1) // 2, bias=False)
        self.location = nn.Linear(filters, dim, bias=False)
        self.v = nn.Linear(dim, 1)

    def forward(self, query, processed_memory, memory, prev_w, cum_w, mask):
        loc = self.location(self.location_conv(torch.stack([prev_w, cum_w], 1)).transpose(1, 2))
        e = self.v(torch.tanh(self.query(query).unsqueeze(1) + processed_memory + loc)).squeeze(-1)
        w = e.masked_fill(~mask, float("-inf")).softmax(-1)
        return w, torch.bmm(w.unsqueeze(1), memory).squeeze(1)


class Postnet(nn.Module):
    def __init__(self, n_mels: int, ex: dict, dropout: float):
        super().__init__()
        d, k, n = int(ex["postnet_dim"]), int(ex["postnet_kernel"]), int(ex["postnet_layers"])
        dims = [n_mels] + [d] * (n - 1) + [n_mels]
        self.layers = nn.ModuleList(ConvBlock(a, b, k, nn.Tanh() if i < n - 1 else None, dropout)
                                    for i, (a, b) in enumerate(zip(dims, dims[1:])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.transpose(1, 2)
        for layer in self.layers:
            y = layer(y)
        return x + y.transpose(1, 2)


class TTSModel(TrainableModel):
    arch = "tts"
    best_metric = ("loss", "min")

    def __init__(self, cfg: ExperimentConfig, vocab: Vocabulary, speakers: list[str],
                 steps_per_symbol: float | None = None):
        super().__init__(cfg)
        self.vocab = vocab
        self.speakers = list(speakers)
        self.speaker_index = {s: i for i, s in enumerate(self.speakers)}
        m = cfg.model
        if m.cell not in CELLS:
            raise ValueError(f"model.cell: {m.cell!r} is not one of {sorted(CELLS)}")
        if getattr(cfg.features, "utterance_cmn", False):
            raise ValueError("features.utterance_cmn: not for a tts model, whose mel targets must keep "
                             "the speaker's spectral envelope")
        ex = self.extra = tts_extra(cfg)
        self.read_text = FRONTENDS[ex["text"]]
        # Decoder steps one input symbol takes to say, measured on the training data (None in
        # packages made before it was): how long a piece of text the model can say in one go.
        self.steps_per_symbol = steps_per_symbol
        self.r = int(ex["reduction"])
        self.n_mels = cfg.features.n_mels
        self.eos_id = len(vocab)  # one past the characters: where the attention lands at the end
        self.logmel = LogMel(cfg.features)
        self.cmvn = GlobalCMVN(self.n_mels)
        self.encoder = Encoder(len(vocab) + 1, ex, m.cell, m.dropout)
        memory = self.encoder.output_size
        self.speaker_embedding = None
        if len(self.speakers) > 1 and int(ex["speaker_dim"]) > 0:
            self.speaker_embedding = nn.Embedding(len(self.speakers), int(ex["speaker_dim"]))
            memory += int(ex["speaker_dim"])
        self.memory_size = memory
        p = int(ex["prenet_dim"])
        self.prenet = nn.ModuleList([nn.Linear(self.n_mels, p), nn.Linear(p, p)])
        H = m.hidden_size
        cell = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}[m.cell]
        self.attention_rnn = cell(p + memory, H)
        self.attention = LocationSensitiveAttention(H, memory, int(ex["attention_dim"]),
                                                    int(ex["location_filters"]), int(ex["location_kernel"]))
        self.decoder_rnn = cell(H + memory, H)
        self.decoder_dropout = nn.Dropout(m.dropout)
        self.frame_proj = nn.Linear(H + memory, self.n_mels * self.r)
        self.stop_proj = nn.Linear(H + memory, 1)
        self.postnet = Postnet(self.n_mels, ex, m.dropout)

    # -- what a package needs to rebuild this model
    def package_meta(self) -> dict:
        meta = {"tokens": self.vocab.tokens, "speakers": self.speakers}
        if self.steps_per_symbol is not None:
            meta["steps_per_symbol"] = self.steps_per_symbol
        return meta

    @classmethod
    def from_package_meta(cls, cfg: ExperimentConfig, meta: dict) -> "TTSModel":
        return cls(cfg, Vocabulary(meta["tokens"]), meta["speakers"], meta.get("steps_per_symbol"))

    @classmethod
    def from_training_data(cls, cfg: ExperimentConfig, utterances) -> "TTSModel":
        utterances = list(utterances)
        read = FRONTENDS[tts_extra(cfg)["text"]]
        texts = [read(u.text or "") for u in utterances]
        vocab = Vocabulary.from_texts(t for t in texts if t)
        if len(vocab) < 2:
            raise ValueError("tts model: the training data has no transcripts")
        model = cls(cfg, vocab, sorted({u.speaker for u in utterances}))
        model.steps_per_symbol = model._measure_steps_per_symbol(utterances)
        if cfg.features.cmvn:  # statistics from `asr cmvn` (same LogMel), else estimated here
            model.cmvn.load(cfg.features.cmvn)
            return model
        n = int(model.extra["cmvn_utts"])
        sample = random.Random(cfg.train.seed).sample(utterances, min(n, len(utterances)))
        stats = utterance_cmvn(cfg.features, sample)
        model.cmvn.set_stats(stats["mean"], stats["std"])
        return model

    def _measure_steps_per_symbol(self, utterances) -> float | None:
        """The 90th percentile of decoder steps per input symbol over the training utterances with
        a duration: a text cut to fit max_decoder_steps at this rate fits for all but the slowest."""
        rates = []
        for u in utterances:
            if u.duration:
                try:
                    n = len(self.encode_text(u.text or ""))
                except ValueError:
                    continue
                rates.append(self.decoder_steps(int(u.duration * self.cfg.features.sample_rate)) / n)
        return round(float(torch.tensor(rates).quantile(0.9)), 3) if rates else None

    # -- text
    def prepare_text(self, text: str) -> str:
        """The text as the model reads it (model.extra.text: digits spelled out, or English
        normalised into words), spaces normalised, lower case when the model knows no capitals,
        punctuation it never saw replaced by the nearest it knows. Raises ValueError naming the
        characters it cannot say."""
        text = self.read_text(text or "")
        if not text:
            raise ValueError("empty text: nothing to say")
        symbols = set(self.vocab.tokens[1:])
        if not any(c.isupper() for c in symbols):
            text = text.lower()
        text = fallback_punctuation(text, symbols)
        bad = unsayable(text, symbols)
        if bad:
            hint = ("; a digits-only model: for other English text use one trained with model.extra.text: "
                    "english (recipes/tts_english)") if symbols <= DIGIT_SYMBOLS else ""
            raise ValueError(f"the model can't say {', '.join(repr(c) for c in bad)} in {text!r}; "
                             f"it knows only {''.join(sorted(symbols))!r}{hint}")
        return text

    def encode_text(self, text: str) -> list[int]:
        return self.vocab.encode(self.prepare_text(text)) + [self.eos_id]

    def speaker_id(self, speaker: str | None) -> int:
        """Index of a training speaker; None picks the first (the only one of a one-voice model)."""
        if speaker is None:
            return 0
        if speaker not in self.speaker_index:
            raise ValueError(f"unknown speaker {speaker!r}; this model knows: {', '.join(self.speakers)}")
        return self.speaker_index[speaker]

    def decoder_steps(self, num_samples: int) -> int:
        frames = num_samples // self.cfg.features.hop_length + 1
        return -(-frames // self.r)

    def check_utterance(self, utt, max_speed: float = 1.0) -> str | None:
        """Why `utt` cannot be trained on (None if it can)."""
        try:
            self.encode_text(utt.text or "")
        except ValueError as e:
            return str(e)
        if self.speaker_embedding is not None and utt.speaker not in self.speaker_index:
            return f"speaker {utt.speaker!r} is not one of the model's {len(self.speakers)} training speakers"
        if utt.duration is not None:
            steps = self.decoder_steps(int(utt.duration / min(max_speed, 1.0) * self.cfg.features.sample_rate))
            if steps > self.extra["max_decoder_steps"]:
                return f"needs {steps} decoder steps, more than model.extra.max_decoder_steps={self.extra['max_decoder_steps']}"
        return None

    # -- the network
    def _prenet(self, x: torch.Tensor) -> torch.Tensor:
        p = float(self.extra["prenet_dropout"])
        for layer in self.prenet:
            x = F.dropout(F.relu(layer(x)), p, training=True)  # on at inference too, see the docstring
        return x

    def _memory(self, ids, text_lens, speaker_ids):
        memory = self.encoder(ids, text_lens)
        if self.speaker_embedding is not None:
            spk = self.speaker_embedding(speaker_ids).unsqueeze(1).expand(-1, memory.size(1), -1)
            memory = torch.cat([memory, spk], -1)
        return memory

    def _init_state(self, memory):
        B, N = memory.shape[:2]
        H = self.cfg.model.hidden_size
        z = memory.new_zeros(B, H)
        lstm = self.cfg.model.cell == "lstm"
        return {"att": (z, z) if lstm else z, "dec": (z, z) if lstm else z, "ctx": memory.new_zeros(B, memory.size(2)),
                "w": memory.new_zeros(B, N), "cum": memory.new_zeros(B, N)}

    def _step(self, prenet_out, state, memory, processed, mask):
        att = self.attention_rnn(torch.cat([prenet_out, state["ctx"]], -1), state["att"])
        att_h = att[0] if isinstance(att, tuple) else att
        w, ctx = self.attention(att_h, processed, memory, state["w"], state["cum"], mask)
        dec = self.decoder_rnn(torch.cat([att_h, ctx], -1), state["dec"])
        dec_h = dec[0] if isinstance(dec, tuple) else dec
        out = torch.cat([self.decoder_dropout(dec_h), ctx], -1)
        return out, {"att": att, "dec": dec, "ctx": ctx, "w": w, "cum": state["cum"] + w}

    def forward(self, ids, text_lens, mels, speaker_ids=None):
        """Teacher-forced decoding. ids (B, N) with EOS, mels (B, T, n_mels) normalised with T a
        multiple of r -> (mel before postnet, mel after, stop logits (B, T/r), alignments (B, T/r, N))."""
        memory = self._memory(ids, text_lens, speaker_ids)
        processed = self.attention.memory(memory)
        mask = lengths_to_mask(text_lens, ids.size(1))
        B, T, _ = mels.shape
        steps = T // self.r
        # Step i sees the last frame of step i-1's group (a zero "go" frame first).
        prev = torch.cat([mels.new_zeros(B, 1, self.n_mels), mels[:, self.r - 1:: self.r][:, : steps - 1]], 1)
        pre = self._prenet(prev)
        state = self._init_state(memory)
        outs, aligns = [], []
        for i in range(steps):
            out, state = self._step(pre[:, i], state, memory, processed, mask)
            outs.append(out)
            aligns.append(state["w"])
        outs = torch.stack(outs, 1)
        before = self.frame_proj(outs).view(B, T, self.n_mels)
        stop = self.stop_proj(outs).squeeze(-1)
        after = self.postnet(before)
        return before, after, stop, torch.stack(aligns, 1)

    @torch.no_grad()
    def infer(self, ids, text_lens, speaker_ids=None, max_steps: int | None = None,
              stop_threshold: float | None = None) -> dict:
        """Free-running decoding until every utterance's stop token fires or `max_steps` steps.

        Returns log-mel frames (B, T, n_mels) in natural-log power units (not normalised), their
        lengths, alignments (B, steps, N) and per utterance whether its stop token fired."""
        max_steps = int(self.extra["max_decoder_steps"] if max_steps is None else max_steps)
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        thr = float(self.extra["stop_threshold"] if stop_threshold is None else stop_threshold)
        memory = self._memory(ids, text_lens, speaker_ids)
        processed = self.attention.memory(memory)
        mask = lengths_to_mask(text_lens, ids.size(1))
        B = ids.size(0)
        state = self._init_state(memory)
        frame = memory.new_zeros(B, self.n_mels)
        steps_done = torch.full((B,), max_steps, dtype=torch.long, device=ids.device)
        stopped = torch.zeros(B, dtype=torch.bool, device=ids.device)
        frames, aligns = [], []
        for i in range(max_steps):
            out, state = self._step(self._prenet(frame), state, memory, processed, mask)
            group = self.frame_proj(out).view(B, self.r, self.n_mels)
            frames.append(group)
            aligns.append(state["w"])
            frame = group[:, -1]
            fire = (torch.sigmoid(self.stop_proj(out).squeeze(-1)) > thr) & ~stopped
            steps_done[fire] = i + 1
            stopped |= fire
            if bool(stopped.all()):
                break
        before = torch.cat(frames, 1)
        after = self.postnet(before)
        lens = steps_done * self.r
        mel = self.denormalize(after) * lengths_to_mask(lens, after.size(1)).unsqueeze(-1)
        return {"mel": mel, "lengths": lens, "alignments": torch.stack(aligns, 1), "stopped": stopped}

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.cmvn.istd + self.cmvn.mean

    # -- training
    def _targets(self, batch):
        """Texts -> padded ids (with EOS) and waveforms -> normalised mel targets padded to a
        multiple of r; utterances whose text cannot be said are dropped and named."""
        ok, ids, dropped = [], [], []
        for i, (utt, text, spk) in enumerate(zip(batch.utt_ids, batch.texts, batch.speakers)):
            try:
                ids.append(self.encode_text(text))
            except ValueError as e:
                dropped.append((utt, str(e)))
                continue
            if self.speaker_embedding is not None and spk not in self.speaker_index:
                ids.pop()
                dropped.append((utt, f"speaker {spk!r} is not a training speaker of this model"))
                continue
            ok.append(i)
        if not ok:
            return None, dropped
        device = batch.wav.device
        idx = torch.tensor(ok, device=device)
        wav, wav_lens = batch.wav[idx], batch.wav_lens[idx]
        wav = wav[:, : int(wav_lens.max())]
        with torch.no_grad():
            self.logmel.eval()  # no dither: the target is the recording
            mel, mel_lens = self.logmel(wav, wav_lens)
            mel = self.cmvn(mel)
        T = -(-mel.size(1) // self.r) * self.r
        mel = F.pad(mel, (0, 0, 0, T - mel.size(1)))
        ids_t, text_lens = pad_ids(ids, device)
        spk = torch.tensor([self.speaker_index.get(batch.speakers[i], 0) for i in ok], device=device)
        return (ids_t, text_lens, mel, mel_lens, spk), dropped

    def _losses(self, ids, text_lens, mel, mel_lens, spk) -> dict:
        before, after, stop, align = self(ids, text_lens, mel, spk)
        fmask = lengths_to_mask(mel_lens, mel.size(1)).unsqueeze(-1).float()
        denom = fmask.sum() * self.n_mels
        mel_loss = sum(((p - mel).abs() + (p - mel).square()).mul(fmask).sum() for p in (before, after)) / denom
        step_lens = -(-mel_lens // self.r)
        smask = lengths_to_mask(step_lens, stop.size(1))
        target = (torch.arange(stop.size(1), device=stop.device).unsqueeze(0) >= (step_lens - 1).unsqueeze(1)).float()
        pos = torch.tensor(float(self.extra["stop_pos_weight"]), device=stop.device)
        stop_loss = F.binary_cross_entropy_with_logits(stop[smask], target[smask], pos_weight=pos)
        att_loss = guided_attention_loss(align, text_lens, step_lens, float(self.extra["guided_sigma"]))
        loss = mel_loss + float(self.extra["stop_weight"]) * stop_loss + float(self.extra["guided_weight"]) * att_loss
        return {"loss": loss, "mel": mel_loss, "stop": stop_loss, "attention": att_loss, "align": align,
                "frames": int(mel_lens.sum())}

    def compute_loss(self, batch) -> Loss:
        """L1 + L2 mel loss before and after the postnet, stop-token BCE and guided attention."""
        targets, dropped = self._targets(batch)
        if targets is None:
            return Loss(None, dropped)
        out = self._losses(*targets)
        return Loss(out["loss"], dropped, len(targets[0]), out["frames"])

    @torch.no_grad()
    def evaluate(self, batches) -> dict:
        """Teacher-forced losses on dev (the trainer keeps the lowest total loss), and how diagonal
        the alignments are: `focus`, the mean of each step's largest attention weight (1 = sharp)."""
        sums = {"loss": 0.0, "mel": 0.0, "stop": 0.0, "attention": 0.0, "focus": 0.0}
        n = 0
        for batch in batches:
            targets, _ = self._targets(batch)
            if targets is None:
                continue
            out = self._losses(*targets)
            B = len(targets[0])
            for k in ("loss", "mel", "stop", "attention"):
                sums[k] += float(out[k]) * B
            step_lens = -(-targets[3] // self.r)
            smask = lengths_to_mask(step_lens, out["align"].size(1)).float()
            sums["focus"] += float(((out["align"].max(-1).values * smask).sum(1) / step_lens).sum())
            n += B
        if not n:
            raise ValueError("tts model: no dev utterances to evaluate")
        return {k: v / n for k, v in sums.items()}


def text_batch(model: TTSModel, texts: list[str], speakers: list[str | None] | None = None,
               device: torch.device | str = "cpu"):
    """Texts (and speaker names) -> padded id tensor, lengths and speaker ids for `infer`.
    Raises ValueError naming the first text the model cannot say."""
    ids = []
    for i, t in enumerate(texts):
        try:
            ids.append(model.encode_text(t))
        except ValueError as e:
            raise ValueError(f"text {i + 1}: {e}" if len(texts) > 1 else str(e)) from None
    spk = [model.speaker_id(s) for s in (speakers or [None] * len(texts))]
    t, lens = pad_ids(ids, device)
    return t, lens, torch.tensor(spk, device=device)


def pad_ids(ids: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Id sequences -> (B, longest) tensor padded with 0 and their lengths, on `device`."""
    t, lens = pad_batch(ids, torch.long)
    return t.to(device), lens.to(device)


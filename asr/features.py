"""The frontend: waveform -> log-mel frames, as torch modules that run on the model's device.

Like ESPnet2's `log_mel.py`: a small nn.Module on torch.stft, so features are computed where the
model runs, and the frontend is saved with the model (no feature files on disk to go stale).
Global CMVN statistics are buffers of the model; SpecAugment is active in training only.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import librosa
import numpy as np
import torch
from torch import nn

from .audio import load_each
from .config import AugmentConfig, FeatureConfig


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool mask, True on valid frames."""
    # no int() on max_len: it is a traced size when asr.export traces the model, and int() would
    # bake the example's length into the graph
    T = max_len if max_len is not None else int(lengths.max())
    return torch.arange(T, device=lengths.device).unsqueeze(0) < lengths.to(torch.long).unsqueeze(1)


class LogMel(nn.Module):
    """Pre-emphasis, dither, STFT power spectrum, Slaney mel filterbank (librosa's), natural log."""

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.win_length > cfg.n_fft:
            raise ValueError(f"features.win_length ({cfg.win_length}) must not exceed features.n_fft ({cfg.n_fft})")
        fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.f_min,
                                 fmax=cfg.f_max)
        # Derived from the config, so not saved: a package stays loadable if librosa changes rounding.
        self.register_buffer("mel_fb", torch.from_numpy(fb).float(), persistent=False)
        window = {"hann": torch.hann_window, "hamming": torch.hamming_window}.get(cfg.window)
        if window is None:
            raise ValueError(f"features.window: {cfg.window!r} is not one of ['hamming', 'hann']")
        self.register_buffer("window", window(cfg.win_length), persistent=False)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        # torch.stft(center=True) yields 1 + floor(samples / hop) frames.
        return num_samples // self.cfg.hop_length + 1

    def forward(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) float waveforms padded with zeros -> (B, T, n_mels) log-mel and (B,) frame counts."""
        cfg = self.cfg
        wav = wav.float()
        if self.training and cfg.dither > 0:
            wav = wav + cfg.dither * torch.randn_like(wav)
        if cfg.preemphasis > 0:
            wav = torch.cat([wav[:, :1], wav[:, 1:] - cfg.preemphasis * wav[:, :-1]], dim=1)
        # Zero the padding again: dither and pre-emphasis leaked into it, and an utterance must not
        # see its batch neighbours' lengths.
        wav = wav * lengths_to_mask(wav_lens, wav.size(1)).to(wav.dtype)
        spec = torch.stft(wav, cfg.n_fft, cfg.hop_length, cfg.win_length, self.window, center=True,
                          pad_mode="constant", return_complex=True)
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(self.mel_fb, power).transpose(1, 2)
        return torch.log(mel + 1e-6), self.num_frames(wav_lens)


class GlobalCMVN(nn.Module):
    """Per-bin mean/variance normalisation with statistics of the training set (saved with the model)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("istd", torch.ones(dim))

    def set_stats(self, mean, std) -> None:
        mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        std = torch.as_tensor(np.asarray(std), dtype=torch.float32)
        if mean.shape != self.mean.shape or std.shape != self.istd.shape:
            raise ValueError(f"CMVN statistics have dimension {tuple(mean.shape)}, the frontend {tuple(self.mean.shape)}")
        self.mean.copy_(mean)
        self.istd.copy_(1.0 / std.clamp(min=1e-5))

    def load(self, path: str | Path) -> None:
        """Statistics from the JSON file `asr cmvn` writes."""
        try:
            stats = json.loads(Path(path).read_text())
            self.set_stats(stats["mean"], stats["std"])
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: CMVN statistics not found (run the recipe's cmvn stage)") from None
        except (KeyError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a CMVN statistics file ({e})") from None

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.mean) * self.istd


class SpecAugment(nn.Module):
    """Frequency and time masking (Park et al. 2019), per utterance, inside each one's own length."""

    def __init__(self, cfg: AugmentConfig):
        super().__init__()
        self.cfg = cfg

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if not self.training or (cfg.freq_masks == 0 and cfg.time_masks == 0):
            return feats
        B, T, F = feats.shape
        keep = torch.ones_like(feats, dtype=torch.bool)
        f_idx = torch.arange(F, device=feats.device)
        t_idx = torch.arange(T, device=feats.device)
        for b in range(B):
            for _ in range(cfg.freq_masks):
                w = int(torch.randint(0, cfg.freq_mask_width + 1, ()))
                f0 = int(torch.randint(0, max(1, F - w), ()))
                keep[b] &= ~((f_idx >= f0) & (f_idx < f0 + w)).unsqueeze(0)
            L = int(lengths[b])
            max_w = int(cfg.time_mask_ratio * L)
            for _ in range(cfg.time_masks):
                w = int(torch.randint(0, max_w + 1, ()))
                t0 = int(torch.randint(0, max(1, L - w), ()))
                keep[b] &= ~((t_idx >= t0) & (t_idx < t0 + w)).unsqueeze(1)
        # Masked cells get 0, the mean after CMVN.
        return feats * keep


class Frontend(nn.Module):
    """LogMel -> CMVN -> SpecAugment; shared by the acoustic, speaker and TTS models."""

    def __init__(self, feat_cfg: FeatureConfig, aug_cfg: AugmentConfig | None = None):
        super().__init__()
        self.logmel = LogMel(feat_cfg)
        self.cmvn = GlobalCMVN(feat_cfg.n_mels)
        self.specaug = SpecAugment(aug_cfg or AugmentConfig())
        self.output_size = feat_cfg.n_mels
        self.utterance_cmn = feat_cfg.utterance_cmn
        if feat_cfg.cmvn:
            self.load_cmvn(feat_cfg.cmvn)

    def load_cmvn(self, path: str | Path) -> None:
        self.cmvn.load(path)

    def forward(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, lens = self.logmel(wav, wav_lens)
        feats = self.cmvn(feats)
        mask = lengths_to_mask(lens, feats.size(1)).unsqueeze(-1).to(feats.dtype)
        feats = feats * mask
        if self.utterance_cmn:  # the mean over the utterance's own frames, never its padding
            feats = (feats - feats.sum(1, keepdim=True) / lens.clamp(min=1).view(-1, 1, 1).to(feats.dtype)) * mask
        return self.specaug(feats, lens), lens


def pad_batch(arrays: Sequence, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences of different lengths (waveforms, (T, V) log-probs, id lists) -> one zero-padded
    (B, longest, ...) tensor and the (B,) int64 lengths. Zeros past each length are what the
    frontend and the RNN paths expect (batch invariance rests on it)."""
    rows = [torch.as_tensor(np.asarray(a), dtype=dtype) for a in arrays]
    lens = torch.tensor([len(r) for r in rows], dtype=torch.long)
    trailing = rows[0].shape[1:] if rows else ()
    out = torch.zeros(len(rows), max((len(r) for r in rows), default=0), *trailing, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out, lens


def utterance_cmvn(cfg: FeatureConfig, utterances, on_error=None) -> dict:
    """compute_cmvn of data-dir utterances through the log-mel of `cfg`; an unreadable one goes to
    on_error(utterance, message) and is left out (without on_error: left out silently, as the
    trainer reports unreadable files when it meets them)."""
    waves = load_each(utterances, lambda u: u.load_audio(cfg.sample_rate)[0], on_error or (lambda u, m: None))
    return compute_cmvn(LogMel(cfg), (w for _, w in waves))


@torch.no_grad()
def compute_cmvn(logmel: LogMel, waveforms) -> dict:
    """Global mean/std of log-mel over an iterable of 1-D float waveforms (Chan's parallel update)."""
    logmel = logmel.eval()
    count, mean, m2 = 0, None, None
    for wav in waveforms:
        w = torch.as_tensor(wav, dtype=torch.float32).unsqueeze(0)
        feats, _ = logmel(w, torch.tensor([w.size(1)]))
        x = feats[0].double()
        n = x.size(0)
        bmean = x.mean(0)
        bm2 = ((x - bmean) ** 2).sum(0)
        if mean is None:
            count, mean, m2 = n, bmean, bm2
        else:
            delta = bmean - mean
            tot = count + n
            mean = mean + delta * n / tot
            m2 = m2 + bm2 + delta**2 * count * n / tot
            count = tot
    if not count:
        raise ValueError("CMVN: no audio to compute statistics from")
    std = torch.sqrt(m2 / count)
    return {"mean": mean.tolist(), "std": std.tolist(), "frames": count}


def speed_perturb(wav: np.ndarray, factor: float) -> np.ndarray:
    """Kaldi/sox `speed`: resample so the audio plays `factor` times faster (pitch shifts with it)."""
    if factor == 1.0:
        return wav
    from fractions import Fraction

    from scipy.signal import resample_poly

    r = Fraction(factor).limit_denominator(100)
    return resample_poly(wav, r.denominator, r.numerator).astype(np.float32)


def augment_waveform(wav: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator,
                     sample_rate: int = 16000) -> np.ndarray:
    """Waveform-level training augmentation: speed, telephone band, gain, white noise at a random SNR."""
    if cfg.speed_perturb:
        wav = speed_perturb(wav, float(rng.choice(cfg.speed_perturb)))
    if cfg.narrowband_prob and sample_rate > 8000 and rng.random() < cfg.narrowband_prob:
        from scipy.signal import resample_poly

        narrow = resample_poly(wav, 8000, sample_rate)
        wav = resample_poly(narrow, sample_rate, 8000)[: len(wav)].astype(np.float32)
    if cfg.gain_db:
        wav = wav * np.float32(10 ** (rng.uniform(*cfg.gain_db) / 20))
    if cfg.noise_snr_db:
        power = float(np.mean(wav**2)) + 1e-10
        snr = rng.uniform(*cfg.noise_snr_db)
        wav = wav + rng.standard_normal(len(wav)).astype(np.float32) * np.float32(math.sqrt(power / 10 ** (snr / 10)))
    return np.clip(wav, -1.0, 1.0).astype(np.float32)

"""Vocoders: log-mel frames -> waveform.

A TTS model predicts mel frames; a vocoder makes them audible. `get_vocoder(name, features)`
picks one by name, so a neural vocoder (HiFi-GAN, WaveRNN, ...) can be added later with
`register_vocoder` without touching the synthesis code. The default needs no training:

    griffinlim  the mel power spectrum is mapped back to a linear one by least squares through
                the mel filterbank (torchaudio's InverseMelScale idea, as one pseudo-inverse
                matrix product, which is what makes it fast enough), and a phase is found by
                Griffin-Lim with momentum ("fast Griffin-Lim", Perraudin et al. 2013).

Every vocoder takes what asr.features.LogMel produces: (T, n_mels) natural-log mel power.
"""
from __future__ import annotations

from typing import Callable

import librosa
import numpy as np
import torch

from .config import FeatureConfig

_MEL_FLOOR = 1e-6  # what LogMel adds before the log


class Vocoder:
    """Interface: `vocoder(log_mel) -> waveform` at `vocoder.sample_rate`."""

    name = "base"

    def __init__(self, features: FeatureConfig):
        self.features = features
        self.sample_rate = features.sample_rate

    def __call__(self, log_mel) -> np.ndarray:
        """(T, n_mels) log-mel (numpy or torch) -> (samples,) float32 waveform in [-1, 1]."""
        raise NotImplementedError


class GriffinLimVocoder(Vocoder):
    name = "griffinlim"

    def __init__(self, features: FeatureConfig, n_iter: int = 32, momentum: float = 0.99, sharpen: float = 1.0):
        super().__init__(features)
        import torchaudio

        f = features
        if n_iter < 1:
            raise ValueError(f"griffinlim: n_iter must be >= 1, got {n_iter}")
        fb = librosa.filters.mel(sr=f.sample_rate, n_fft=f.n_fft, n_mels=f.n_mels, fmin=f.f_min, fmax=f.f_max)
        self.inverse = torch.from_numpy(np.linalg.pinv(fb)).float()  # (n_fft/2+1, n_mels)
        self.sharpen = sharpen  # >1 deepens spectral valleys, as Tacotron 1 did (its 1.5 power)
        window = {"hann": torch.hann_window, "hamming": torch.hamming_window}[f.window]
        # rand_init=False: the same mels always give the same audio (no global RNG state read).
        self.gl = torchaudio.transforms.GriffinLim(n_fft=f.n_fft, n_iter=n_iter, win_length=f.win_length,
                                                   hop_length=f.hop_length, window_fn=window, power=1.0,
                                                   momentum=momentum, rand_init=False)

    @torch.no_grad()
    def __call__(self, log_mel) -> np.ndarray:
        mel = torch.as_tensor(np.asarray(log_mel) if not torch.is_tensor(log_mel) else log_mel).float().cpu()
        if mel.dim() != 2 or mel.size(1) != self.features.n_mels:
            raise ValueError(f"griffinlim: expected (frames, {self.features.n_mels}) log-mel, got {tuple(mel.shape)}")
        if mel.size(0) == 0:
            return np.zeros(0, dtype=np.float32)
        power = (mel.exp() - _MEL_FLOOR).clamp(min=0.0).T  # (n_mels, T)
        linear = (self.inverse @ power).clamp(min=0.0)
        magnitude = linear.sqrt() ** self.sharpen
        frames = magnitude.size(1)
        # The STFT's reflect padding needs more than n_fft/2 samples: pad very short outputs with
        # silent frames and cut them off again.
        short = max(0, self.features.n_fft // self.features.hop_length + 2 - frames)
        magnitude = torch.nn.functional.pad(magnitude, (0, short))
        wav = self.gl(magnitude).numpy()[: (frames - 1) * self.features.hop_length or None]
        if self.features.preemphasis > 0:
            from scipy.signal import lfilter

            wav = lfilter([1.0], [1.0, -self.features.preemphasis], wav)
        peak = float(np.abs(wav).max()) if len(wav) else 0.0
        if peak > 0.99:  # only ever turned down, so a quiet voice stays quiet
            wav = wav * (0.99 / peak)
        return wav.astype(np.float32)


_VOCODERS: dict[str, Callable[..., Vocoder]] = {"griffinlim": GriffinLimVocoder}


def register_vocoder(name: str, factory: Callable[..., Vocoder]) -> None:
    """Make `get_vocoder(name, features, **options)` build `factory(features, **options)`."""
    _VOCODERS[name] = factory


def vocoder_names() -> list[str]:
    return sorted(_VOCODERS)


def get_vocoder(name: str, features: FeatureConfig, **options) -> Vocoder:
    try:
        factory = _VOCODERS[name]
    except KeyError:
        raise ValueError(f"unknown vocoder {name!r}; known: {', '.join(vocoder_names())}") from None
    return factory(features, **options)

"""Audio I/O: every waveform enters the toolkit through `load_audio`.

soundfile (libsndfile bundled in its wheel) reads wav/flac/ogg/mp3; torchaudio's own loaders need
torchcodec + ffmpeg, which we do not depend on.
"""
from __future__ import annotations

import io
import os
import subprocess
from fractions import Fraction

import numpy as np
import soundfile as sf


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the problem."""


# A header can declare any length; refuse anything that would not fit in memory instead of trying.
MAX_SAMPLES = 2**31 // 4
# ... and any rate: telephone audio is 8 kHz, studio audio at most 384 kHz. A header claiming
# 100 MHz or 1 Hz is broken (and 1 Hz would make a 7 KB file hours long once resampled).
MIN_RATE, MAX_RATE = 1000, 384000


def _read(source, name: str) -> tuple[np.ndarray, int]:
    try:
        with sf.SoundFile(source) as f:
            if f.channels < 1:
                raise AudioError(f"{name}: file declares {f.channels} channels")
            if not MIN_RATE <= f.samplerate <= MAX_RATE:
                raise AudioError(f"{name}: file declares sample rate {f.samplerate} Hz, outside "
                                 f"{MIN_RATE}-{MAX_RATE} Hz")
            if f.frames * f.channels > MAX_SAMPLES:
                raise AudioError(f"{name}: file declares {f.frames} frames, more than this loader accepts")
            data = f.read(dtype="float32", always_2d=True)
            sr = f.samplerate
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as e:
        raise AudioError(f"{name}: not readable as audio ({e})") from None
    return data, sr


def load_each(items, load, on_error=None):
    """(item, waveform) for each item that `load(item)` reads. An item it cannot read (AudioError)
    goes to on_error(item, message) and is left out; without on_error the error is raised."""
    for item in items:
        try:
            wav = load(item)
        except AudioError as e:
            if on_error is None:
                raise
            on_error(item, str(e))
            continue
        yield item, wav


def read_pipe(command: str) -> bytes:
    """Run a Kaldi wav.scp pipe command (`sph2pipe -f wav x.sph |`) in a shell and return its stdout.

    Only `asr.datadir` calls this, for wav.scp entries whose data dir the user allowed to run
    commands (a data dir from elsewhere can run anything): no path given by a user is run.
    """
    cmd = command.rstrip()
    if cmd.endswith("|"):
        cmd = cmd[:-1]
    proc = subprocess.run(cmd, shell=True, capture_output=True)
    if proc.returncode != 0:
        raise AudioError(f"{command!r}: command exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-300:]}")
    return proc.stdout


def load_audio(path, sample_rate: int | None = None, *, mono: bool = True) -> tuple[np.ndarray, int]:
    """Read `path` (a file, or bytes) as float32 in [-1, 1].

    A path is only ever opened, never run: `x; rm -rf ~ |` is a (strange) file name here. Kaldi's
    `cmd |` entries are wav.scp's business (`asr.datadir`, opt-in).
    Returns (samples, sample_rate): mono 1-D when `mono` (channels averaged), else (frames, channels).
    With `sample_rate` the audio is resampled to it; audio is never silently re-interpreted at
    another rate. Raises AudioError naming the file for missing, empty, unreadable, zero-length
    or non-finite audio.
    """
    if isinstance(path, (bytes, bytearray)):
        return decode_audio(bytes(path), "<bytes>", sample_rate, mono=mono)
    name = os.fspath(path)
    if not isinstance(name, str):
        raise AudioError(f"{name!r}: expected a path or bytes")
    if not os.path.exists(name):
        raise AudioError(f"{name}: no such file")
    if os.path.isdir(name):
        raise AudioError(f"{name}: is a directory, not an audio file")
    if os.path.getsize(name) == 0:
        raise AudioError(f"{name}: empty file (0 bytes)")
    return _decoded(name, name, sample_rate, mono)


def decode_audio(data: bytes, name: str, sample_rate: int | None = None, *,
                 mono: bool = True) -> tuple[np.ndarray, int]:
    """`load_audio` for audio already in memory (a pipe's output, a shard member); `name` is what
    error messages call it."""
    return _decoded(io.BytesIO(data), name, sample_rate, mono)


def _decoded(source, name: str, sample_rate: int | None, mono: bool) -> tuple[np.ndarray, int]:
    data, sr = _read(source, name)
    if data.shape[0] == 0:
        raise AudioError(f"{name}: zero-length audio (no samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"{name}: audio contains NaN or Inf samples")
    if mono:
        data = data.mean(axis=1)
    if sample_rate is not None and sr != sample_rate:
        if data.shape[0] * sample_rate / sr > MAX_SAMPLES:
            raise AudioError(f"{name}: {data.shape[0]} samples at {sr} Hz are too many at {sample_rate} Hz")
        data = resample(data, sr, sample_rate)
        sr = sample_rate
    return np.ascontiguousarray(data, dtype=np.float32), sr


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited polyphase resampling along the first axis (scipy's resample_poly)."""
    if orig_sr == target_sr:
        return x
    from scipy.signal import resample_poly

    ratio = Fraction(target_sr, orig_sr).limit_denominator(1000)
    return resample_poly(x, ratio.numerator, ratio.denominator, axis=0).astype(np.float32)


def audio_duration(path) -> float:
    """Duration in seconds from the header alone (cheap for utt2dur)."""
    name = str(path)
    try:
        info = sf.info(name)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{name}: not readable as audio ({e})") from None
    if info.samplerate <= 0:
        raise AudioError(f"{name}: file declares sample rate {info.samplerate}")
    return info.frames / info.samplerate


def save_audio(path, samples: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM (wav/flac by extension), atomically so no half-written file is left behind."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    fmt = os.path.splitext(path)[1].lstrip(".").upper() or "WAV"
    try:
        sf.write(tmp, np.asarray(samples, dtype=np.float32), sample_rate, subtype="PCM_16", format=fmt)
        os.replace(tmp, path)
    except BaseException:  # e.g. `path` is a folder: no d.wav.tmpPID left behind
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


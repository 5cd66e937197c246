"""Bad input and failure injection: the audio loader under fuzzing, full disks, a long soak."""
import errno
import gc
import io
import os
import struct

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asr import checkpoint
from asr.audio import AudioError, load_audio

from .conftest import FSDD, needs_fsdd


def wav_bytes(samples: np.ndarray, sr=8000, subtype="PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_give_audio_error_or_audio(data):
    try:
        wav, sr = load_audio(data)
    except AudioError as e:
        assert "<bytes>" in str(e)
    else:
        assert wav.ndim == 1 and np.isfinite(wav).all() and sr > 0


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=2**32 - 1), st.data())
def test_truncated_and_lying_headers(cut, declared, data):
    good = bytearray(wav_bytes(np.zeros(800, np.float32)))
    # The RIFF/data chunk sizes claim absurd lengths, or the header is cut short.
    field = data.draw(st.sampled_from([4, 40]))
    good[field:field + 4] = struct.pack("<I", declared)
    for blob in (bytes(good), bytes(good[:cut])):
        try:
            wav, _ = load_audio(blob)
            assert len(wav) <= 800
        except AudioError:
            pass


def test_zero_channels_nan_inf_and_absurd_sizes(tmp_path):
    hdr = bytearray(wav_bytes(np.zeros(16, np.float32)))
    hdr[22:24] = struct.pack("<H", 0)  # channels = 0
    with pytest.raises(AudioError):
        load_audio(bytes(hdr))
    for bad in (np.nan, np.inf, -np.inf):
        x = np.zeros(100, np.float32)
        x[50] = bad
        p = tmp_path / "x.wav"
        sf.write(p, x, 8000, subtype="FLOAT")
        with pytest.raises(AudioError, match="x.wav.*NaN or Inf"):
            load_audio(p)
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)


def test_unicode_file_names(tmp_path):
    p = tmp_path / "sprecher_ü_日本語 .wav"
    sf.write(p, np.zeros(800, np.float32), 8000)
    wav, sr = load_audio(p, 16000)
    assert sr == 16000 and len(wav) == 1600


def test_full_disk_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    real_open = open

    class FullDisk(io.FileIO):
        def write(self, b):
            super().write(b[: len(b) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(path, mode="r", *a, **k):
        if "w" in mode and ".tmp" in os.fspath(path):
            return FullDisk(path, "w")
        return real_open(path, mode, *a, **k)

    checkpoint.save_checkpoint({"step": 1}, tmp_path / "ckpt_00000001.pt")
    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save_checkpoint({"step": 2, "w": np.zeros(1000)}, tmp_path / "ckpt_00000002.pt")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000001.pt", "ckpt_00000001.pt.sha256"]
    assert checkpoint.load_latest(tmp_path)["step"] == 1


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs (test_train.py sends a real one)."""


def test_kill_between_checkpoint_rename_and_sidecar_falls_back(tmp_path, monkeypatch):
    write = checkpoint.atomic_write_bytes

    def killed_before_sidecar(path, data):
        if str(path).endswith(".sha256"):
            raise Killed
        write(path, data)

    checkpoint.save_checkpoint({"step": 1}, tmp_path / "ckpt_00000001.pt")
    checkpoint.save_checkpoint({"step": 2}, tmp_path / "ckpt_00000002.pt")
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", killed_before_sidecar)
    for state in ({"step": 3}, {"step": 2, "rewritten": True}):  # a new step; a step written again (old sidecar)
        with pytest.raises(Killed):
            checkpoint.save_checkpoint(state, checkpoint.checkpoint_path(tmp_path, state["step"]))
    monkeypatch.undo()
    skipped = []
    assert checkpoint.load_latest(tmp_path, skipped.append) == {"step": 1}
    assert "ckpt_00000003.pt: no checksum file" in skipped[0] and "the write did not finish" in skipped[0]
    assert "ckpt_00000002.pt: checksum mismatch" in skipped[1]


def current_rss_mb() -> float:
    """Resident memory now (VmRSS), after a full collection: unlike ru_maxrss, a high-water mark
    that a leak only moves once it passes the peak, this falls when memory is freed."""
    gc.collect()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("/proc/self/status has no VmRSS line")


@needs_fsdd
@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc for VmRSS")
def test_soak_transcribe_1000_files_memory_stays_flat():
    import asr
    from asr.transcribe import Transcriber

    files = sorted(FSDD.glob("*.wav"))[:1000]
    tr = Transcriber(asr.load_model("digits"))
    rss = {}
    for i, path in enumerate(files, 1):  # one call per file, as a server would make them
        assert tr.transcribe(path).text
        if i in (200, 1000):
            rss[i] = current_rss_mb()
    growth = rss[1000] - rss[200]
    print(f"RSS after 200 files {rss[200]:.1f} MB, after 1000 files {rss[1000]:.1f} MB (+{growth:.1f} MB)")
    # Measured +1.9 MB. 10 MB over 800 files is 12.5 KB a file, less than one clip's samples
    # (0.44 s at 8 kHz in float32, 14 KB): keeping any per-file array alive fails this.
    assert growth < 10

"""The installed environment is the tested one, and every binary dependency loads.

A drifted package (torchaudio 2.11.1 beside torch 2.11.0 failed 8 TTS tests with an undefined
symbol, deep in the suite) fails here once, with the names, instead.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import platform
import re
import subprocess
import sys

import numpy as np
import pytest

from .conftest import ROOT, SHARED_DATA
from .helpers import write_arpa

LOCK = ROOT / "requirements" / "lock.txt"
# The lock is resolved for this interpreter and platform (Makefile, `make lock`).
LOCK_PYTHON, LOCK_MACHINE = (3, 11), "x86_64"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock=LOCK) -> dict[str, str]:
    pins = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        if m := PIN.match(line):
            pins[_normalize(m[1])] = m[2]
    return pins


def drift(lock=LOCK) -> list[str]:
    """One entry per locked package that is missing or at another version."""
    out = []
    for name, version in sorted(locked_versions(lock).items()):
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "missing"
        if installed != version:
            out.append(f"{name} {installed} (lock: {version})")
    return out


def test_lock_pins_every_package_with_hashes():
    text = LOCK.read_text(encoding="utf-8")
    pins = locked_versions()
    assert {"torch", "torchaudio", "flashlight-text", "kenlm", "soundfile", "pytest"} <= set(pins)
    assert pins["torch"] == pins["torchaudio"], "torch and torchaudio must be the pair built together"
    # every requirement line carries at least one hash, so pip runs in --require-hashes mode
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1])
    for block in blocks:
        if PIN.match(block):
            assert "--hash=sha256:" in block, f"{LOCK}: no hash for {block.splitlines()[0]}"


@pytest.mark.skipif(sys.version_info[:2] != LOCK_PYTHON or platform.machine() != LOCK_MACHINE,
                    reason=f"requirements/lock.txt is resolved for CPython {LOCK_PYTHON[0]}.{LOCK_PYTHON[1]} "
                           f"on {LOCK_MACHINE} Linux; this is {platform.python_version()} on {platform.machine()}")
def test_installed_packages_match_the_lock():
    drifted = drift()
    assert not drifted, (
        "the environment is not the locked one; run `make clean install` (or `pip install --require-hashes "
        f"--no-deps -r {LOCK.relative_to(ROOT)}`). Drifted: {'; '.join(drifted)}")


def test_drift_names_each_package_off_the_lock(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text(f"torch=={importlib.metadata.version('torch')} \\\n    --hash=sha256:00\n"
                    "torchaudio==2.11.1 \\\n    --hash=sha256:00\nno-such-package-here==1.0\n")
    assert drift(lock) == [f"no-such-package-here missing (lock: 1.0)",
                           f"torchaudio {importlib.metadata.version('torchaudio')} (lock: 2.11.1)"]


def test_pip_check_finds_no_broken_requirements():
    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert out.returncode == 0, f"pip check: {out.stdout}{out.stderr}"


def _modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    # __main__ runs the CLI when imported
    return [package] + [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=package + ".")
                        if not m.name.endswith(".__main__")]


@pytest.mark.parametrize("module", _modules("asr") + _modules("data_prep"))
def test_every_module_imports(module):
    importlib.import_module(module)


def test_torchaudio_griffin_lim_runs():
    import torch
    import torchaudio

    spec = torch.rand(1, 201, 20)
    wav = torchaudio.transforms.GriffinLim(n_fft=400, n_iter=2)(spec)
    assert wav.shape[-1] > 0 and torch.isfinite(wav).all()


def test_flashlight_text_decoder_builds_and_decodes():
    from flashlight.lib.text.decoder import (CriterionType, LexiconFreeDecoder, LexiconFreeDecoderOptions,
                                             ZeroLM)

    opts = LexiconFreeDecoderOptions(beam_size=4, beam_size_token=3, beam_threshold=50.0, lm_weight=0.0,
                                     sil_score=0.0, log_add=False, criterion_type=CriterionType.CTC)
    decoder = LexiconFreeDecoder(opts, ZeroLM(), 2, 0, [])  # silence 2, blank 0
    emissions = np.log(np.array([[0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32))
    best = decoder.decode(emissions.ctypes.data, 3, 3)[0]
    assert list(best.tokens)[1:-1] == [1, 0, 2]  # one token a frame, between silence at both ends


def test_kenlm_loads_an_arpa_lm(tmp_path):
    import kenlm

    lm = kenlm.Model(str(write_arpa(tmp_path / "lm.arpa", {"yes": -0.5, "no": -0.7})))
    assert lm.order == 2
    assert lm.score("yes", bos=True, eos=True) < 0


def test_librosa_mel_filters():
    import librosa

    fb = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40)
    assert fb.shape == (40, 257) and np.all(fb >= 0) and fb.sum() > 0


@pytest.mark.parametrize("fmt,subtype,ext", [("FLAC", "PCM_16", "flac"), ("OGG", "OPUS", "opus"),
                                             ("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3"),
                                             ("NIST", "PCM_16", "sph"), ("WAV", "PCM_16", "wav")])
def test_soundfile_reads_each_format(tmp_path, fmt, subtype, ext):
    import soundfile as sf

    rate = 16000 if fmt != "OGG" or subtype != "OPUS" else 48000
    t = np.arange(rate) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / f"tone.{ext}"
    sf.write(path, tone, rate, format=fmt, subtype=subtype)
    back, r = sf.read(path, dtype="float32")
    assert r == rate and abs(len(back) - rate) < rate // 10
    # the lossy codecs keep the tone's energy
    assert 0.5 < np.sqrt(np.mean(back**2)) / np.sqrt(np.mean(tone**2)) < 1.5


@pytest.mark.parametrize("corpus_file", ["an4/an4/wav/an4_clstk/fash/an251-fash-b.sph",
                                         "speechocean762/WAVE/SPEAKER0001/000010011.opus"])
def test_asr_reads_the_real_corpus_formats(corpus_file):
    from asr.audio import load_audio

    path = SHARED_DATA / corpus_file
    if not path.exists():
        pytest.skip(f"{path} is not here")
    wav, rate = load_audio(path)
    assert rate == 16000 and len(wav) > 8000 and np.abs(wav).max() > 0.01

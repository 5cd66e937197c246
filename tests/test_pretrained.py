"""Model packages: round trip, registry, tampering, planted pickle payloads, old formats."""
import io
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from asr.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from asr.config import ExperimentConfig, FeatureConfig, ModelConfig
from asr.models import CTCModel
from asr.package import PackageError, read_header, save_package
from asr.registry import load_model, registry, resolve
from asr.text import Vocabulary

from .conftest import ROOT


def tiny_model():
    cfg = ExperimentConfig()
    cfg.features = FeatureConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=20)
    cfg.model = ModelConfig(num_layers=1, hidden_size=8)
    torch.manual_seed(0)
    return CTCModel(cfg, Vocabulary.from_texts(["héllo wörld"])).eval()


def test_round_trip_keeps_outputs_vocab_and_info(tmp_path):
    m = tiny_model()
    p = save_package(m, tmp_path / "m.safetensors", {"result": "%WER 1.00"})
    m2 = load_model(p)
    assert m2.vocab.tokens == m.vocab.tokens
    assert m2.info["result"] == "%WER 1.00" and "date" in m2.info
    x = torch.randn(1, 4000)
    torch.testing.assert_close(m(x, torch.tensor([4000]))[0], m2(x, torch.tensor([4000]))[0])
    assert load_model(f"file://{p}").vocab.tokens == m.vocab.tokens


def test_experiment_dir_loads(tmp_path):
    save_package(tiny_model(), tmp_path / "model.safetensors")
    assert load_model(tmp_path).arch == "ctc"


def test_registry_default_is_embedded_and_small():
    reg = registry()
    assert "digits" in reg
    path = resolve("digits")
    assert path.exists() and path.stat().st_size < 20 * 2**20
    meta = read_header(path)
    assert json.loads(meta["info"])["result"]


def test_unknown_name_lists_known_ones():
    with pytest.raises(PackageError, match="digits"):
        resolve("no-such-model")


def test_tampered_header_and_future_format_are_refused(tmp_path):
    p = save_package(tiny_model(), tmp_path / "m.safetensors")
    tensors = load_file(p)
    meta = read_header(p)
    tensors[next(iter(tensors))] += 1
    save_file(tensors, tmp_path / "t.safetensors", metadata=meta)
    with pytest.raises(PackageError, match="checksum"):
        load_model(tmp_path / "t.safetensors")
    # the header alone edited: two vocabulary entries swapped, weights untouched
    model_meta = json.loads(meta["model_meta"])
    model_meta["vocab"][1], model_meta["vocab"][2] = model_meta["vocab"][2], model_meta["vocab"][1]
    save_file(load_file(p), tmp_path / "h.safetensors", metadata={**meta, "model_meta": json.dumps(model_meta)})
    with pytest.raises(PackageError, match=r"h\.safetensors: checksum mismatch"):
        load_model(tmp_path / "h.safetensors")
    save_file(load_file(p), tmp_path / "f.safetensors", metadata={**meta, "format_version": "99"})
    with pytest.raises(PackageError, match="newer"):
        load_model(tmp_path / "f.safetensors")
    (tmp_path / "x.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(PackageError, match="x.safetensors"):
        load_model(tmp_path / "x.safetensors")


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = "/tmp/asr_pickle_payload_ran"


def test_planted_pickle_payload_does_not_run(tmp_path):
    if os.path.exists(MARKER):
        os.remove(MARKER)
    # A checkpoint file whose checksum sidecar is correct but which carries code.
    evil = tmp_path / "ckpt_00000001.pt"
    buf = io.BytesIO()
    torch.save({"model": Payload()}, buf)
    evil.write_bytes(buf.getvalue())
    import hashlib

    (tmp_path / "ckpt_00000001.pt.sha256").write_text(hashlib.sha256(buf.getvalue()).hexdigest())
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(evil)
    # The same payload renamed as a model package.
    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(PackageError):
        load_model(tmp_path / "evil.safetensors")
    assert not os.path.exists(MARKER)


def test_checkpoint_round_trip_and_truncation(tmp_path):
    save_checkpoint({"step": 3, "w": torch.ones(3)}, tmp_path / "c.pt")
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 3
    raw = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(raw[:-10])
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(tmp_path / "c.pt")


def test_models_command_lists_digits():
    res = subprocess.run([sys.executable, "-m", "asr", "models"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0 and "digits" in res.stdout and "WER" in res.stdout


def test_load_model_refuses_another_kind_of_model_from_its_header(tmp_path, monkeypatch, capsys):
    from asr import cli
    from asr.models import RECOGNIZERS

    path = save_package(tiny_model(), tmp_path / "ctc.safetensors")
    assert load_model(path, arch=RECOGNIZERS).arch == "ctc"
    # the header alone decides: the weights of a model the caller cannot use are never read
    monkeypatch.setattr("asr.registry.load_package", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(PackageError, match=r"ctc.safetensors: a ctc model, not a speaker model"):
        load_model(path, arch="speaker")
    monkeypatch.undo()
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"")  # never opened: the model is refused first
    assert cli.main(["transcribe", "--model", "digits-speaker", str(wav)]) == 2
    assert ("asr transcribe: error: digits-speaker: a speaker model, not a speech recognition model"
            in capsys.readouterr().err)

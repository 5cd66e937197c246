import copy

import numpy as np
import pytest
import torch
from safetensors import safe_open

from asr.cli import main
from asr.config import ExperimentConfig, FeatureConfig, ModelConfig
from asr.metrics import corpus_wer
from asr.models import CTCModel
from asr.models.ensemble import CTCEnsemble
from asr.package import load_package, read_header, save_package
from asr.registry import load_model
from asr.quantize import INT8, Int8RecurrentLayer, quantize_int8
from asr.text import Vocabulary

from .conftest import FSDD, needs_fsdd
from .fsdd_parity import fsdd_test_set, greedy_texts


def small_model(cell="lstm", seed=0, **model) -> CTCModel:
    torch.manual_seed(seed)
    cfg = ExperimentConfig()
    cfg.features = FeatureConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=20)
    model.setdefault("subsample", "stack")
    cfg.model = ModelConfig(num_layers=2, hidden_size=32, dropout=0.0, cell=cell, **model)
    return CTCModel(cfg, Vocabulary.from_texts(["one two three"])).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_int8_keeps_each_utterance_independent_of_its_padding(cell):
    # The backward direction must start at each utterance's own end, as on the float padded path;
    # torch's quantized bidirectional module run over the padded batch starts at the padding's end.
    model = small_model(cell)
    q = quantize_int8(copy.deepcopy(model))
    assert all(isinstance(m, Int8RecurrentLayer) for m in q.encoder.layers)
    assert not any(isinstance(m, torch.nn.Linear) for m in q.modules())
    torch.manual_seed(1)
    wav = torch.randn(2, 16000) * 0.3
    lens = torch.tensor([16000, 4000])
    with torch.inference_mode():
        batched, n = q(wav, lens)
        alone, m = q(wav[1:, :4000], lens[1:])
        reference, _ = model(wav[1:, :4000], lens[1:])
        x, x_lens = model.conv(*model.frontend(wav, lens))
        ours = q.encoder.layers[0](x, x_lens)[1, : int(x_lens[1])]
        from torch.ao.quantization import quantize_dynamic

        naive = quantize_dynamic(torch.nn.Sequential(copy.deepcopy(model.encoder.layers[0].rnn)),
                                 {type(model.encoder.layers[0].rnn)}, dtype=torch.qint8)
        theirs = naive(x)[0][1, : int(x_lens[1])]
    assert int(n[1]) == int(m[0])
    # dynamic quantization scales activations per batch, so batch invariance holds to int8 rounding
    assert (batched[1, : int(n[1])] - alone[0]).abs().max() < 0.05
    assert (alone[0] - reference[0]).abs().max() < 0.05
    half = ours.size(-1) // 2  # forward halves agree; the naive backward half saw the padding
    assert (ours[:, :half] - theirs[:, :half]).abs().max() < 0.05
    assert (ours[:, half:] - theirs[:, half:]).abs().max() > 0.05


def test_int8_runs_the_float_convolutions_channels_last_with_the_same_output():
    model = small_model(subsample="conv", conv_channels=4)
    q = quantize_int8(copy.deepcopy(model))
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last)
               for c in q.modules() if isinstance(c, torch.nn.Conv2d))
    torch.manual_seed(1)
    wav, lens = torch.randn(2, 16000) * 0.3, torch.tensor([16000, 9000])
    with torch.inference_mode():
        feats = model.frontend(wav, lens)
        ref, ref_lens = model.conv(*feats)
        ours, our_lens = q.conv(*feats)
    assert torch.equal(ref_lens, our_lens) and (ours - ref).abs().max() < 1e-4
    assert not ours[1, int(our_lens[1]):].any()  # the padding is re-zeroed in either layout


def test_int8_package_records_it_and_loading_rebuilds_the_int8_model(tmp_path):
    model = small_model()
    path = save_package(model, tmp_path / "m.safetensors", quantization=INT8)
    assert read_header(path)["quantization"] == INT8
    with safe_open(str(path), "pt") as f:  # the float weights are stored; int8 is rebuilt from them
        assert f.get_tensor("encoder.layers.0.rnn.weight_ih_l0").dtype == torch.float32
    loaded = load_package(path)
    assert isinstance(loaded.encoder.layers[0], Int8RecurrentLayer) and loaded.quantization == INT8
    wav, lens = torch.randn(2, 8000) * 0.3, torch.tensor([8000, 6000])
    with torch.inference_mode():
        assert torch.equal(loaded(wav, lens)[0], quantize_int8(copy.deepcopy(model))(wav, lens)[0])
    assert not hasattr(load_package(path, quantized=False), "quantization")
    with pytest.raises(ValueError, match="float model"):
        save_package(loaded, tmp_path / "again.safetensors", quantization=INT8)
    with pytest.raises(ValueError, match="quantization"):
        save_package(model, tmp_path / "bad.safetensors", quantization="int4")
    plain = save_package(model, tmp_path / "plain.safetensors")
    assert "quantization" not in read_header(plain)


def test_int8_ensemble_quantizes_every_member():
    ens = CTCEnsemble([small_model(seed=0), small_model("gru", seed=1)])
    quantize_int8(ens)
    assert all(isinstance(layer, Int8RecurrentLayer) for m in ens.members for layer in m.encoder.layers)
    out = ens(torch.randn(1, 8000) * 0.3, torch.tensor([8000]))
    assert len(out) == 2 and all(torch.isfinite(lp).all() for lp, _ in out)


@needs_fsdd
def test_int8_cli_package_and_transcribe(tmp_path, capsys):
    out = tmp_path / "int8.safetensors"
    assert main(["package", "--model", "digits", "-o", str(out), "--int8"]) == 0
    assert read_header(out)["quantization"] == INT8
    clip = sorted(FSDD.glob("7_jackson_0.wav"))[0]
    capsys.readouterr()
    assert main(["transcribe", "--model", str(out), "--threads", "1", str(clip)]) == 0
    assert capsys.readouterr().out.split("\t")[1].strip() == "seven"
    assert main(["transcribe", "--int8", "--threads", "1", str(clip)]) == 0
    assert capsys.readouterr().out.split("\t")[1].strip() == "seven"


@needs_fsdd
def test_int8_parity_on_the_fsdd_test_set():
    # Each shipped member alone, greedy, on the 250 test takes: measured 99.2-99.6 % identical
    # transcripts and WER equal or 0.4 lower; the tolerance is 98 % and +0.3 WER.
    paths, refs = fsdd_test_set()
    member = load_model("digits").members[0]
    base = greedy_texts(member, paths)
    int8 = greedy_texts(quantize_int8(copy.deepcopy(member)), paths)
    assert np.mean([a == b for a, b in zip(base, int8)]) >= 0.98
    assert corpus_wer(refs, int8).rate <= corpus_wer(refs, base).rate + 0.3

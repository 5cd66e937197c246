"""Sequence-level CTC ensembles: the package, the combination rule, the CLI, and the LM terms."""
import copy
import math

import numpy as np
import pytest
import torch

from asr.beam_search import CTCBeamDecoder, ctc_forward_logprob, ctc_log_likelihoods
from asr.cli import main as cli_main
from asr.config import ExperimentConfig, FeatureConfig, ModelConfig
from asr.models import CTCEnsemble, CTCModel
from asr.package import read_package, save_package
from asr.registry import load_model
from asr.text import Vocabulary
from asr.transcribe import Transcriber
from asr.metrics import corpus_wer
from asr.tune import tune
from tests.helpers import write_arpa

pytest.importorskip("flashlight.lib.text.decoder")

LABELS = ["<blank>", " ", "a", "b", "c", "t"]


def tiny_model(seed: int, cell: str = "lstm", hidden: int = 8, stack: int = 2, labels=LABELS, rate: int = 8000):
    torch.manual_seed(seed)
    cfg = ExperimentConfig(features=FeatureConfig(sample_rate=rate, n_fft=256, win_length=200, hop_length=80, n_mels=16),
                           model=ModelConfig(num_layers=1, hidden_size=hidden, cell=cell, subsample="stack",
                                             stack_frames=stack))
    return CTCModel(cfg, Vocabulary(labels)).eval()


def noise(seed: int, n: int = 4000) -> np.ndarray:
    """Placeholder audio (the models here are random or fixed): noise in syllable-like bursts, so
    the Transcriber's speech gate (steady noise gives no words) lets it through."""
    envelope = 0.03 + (np.arange(n) // 480 % 2 == 0)  # 60 ms on, 60 ms off
    return (0.1 * envelope * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def fixed_output(model: CTCModel, frames: list[dict[str, float]]) -> None:
    """Make `model` return these posteriors (a label -> probability dict per frame) whatever it hears."""
    lp = np.zeros((len(frames), len(LABELS)))
    for t, frame in enumerate(frames):
        lp[t] = (1.0 - sum(frame.values())) / (len(LABELS) - len(frame))
        for lab, p in frame.items():
            lp[t, LABELS.index(lab)] = p
    out = torch.from_numpy(np.log(lp)).float()[None]
    model.forward = lambda wav, lens: (out.expand(len(lens), -1, -1), torch.full((len(lens),), len(frames)))


def test_package_round_trip_keeps_members_that_differ_in_cell_size_and_frame_rate(tmp_path):
    ensemble = CTCEnsemble([tiny_model(0), tiny_model(1, cell="gru", hidden=6, stack=3)])
    back = load_model(save_package(ensemble, tmp_path / "ens.safetensors"))
    assert isinstance(back, CTCEnsemble) and back.arch == "ctc-ensemble"
    assert [m.cfg.model.cell for m in back.members] == ["lstm", "gru"]
    wav = torch.from_numpy(noise(0))[None]
    lens = torch.tensor([wav.shape[1]])
    with torch.no_grad():
        for (a, na), (b, nb) in zip(ensemble(wav, lens), back(wav, lens)):
            assert torch.allclose(a, b) and torch.equal(na, nb)
    assert back(wav, lens)[0][0].shape[1] != back(wav, lens)[1][0].shape[1]  # 2 and 3 frames stacked


def test_members_must_share_vocabulary_and_sample_rate():
    with pytest.raises(ValueError, match=r"b\.safetensors: its labels .* differ from a\.safetensors"):
        CTCEnsemble([tiny_model(0), tiny_model(1, labels=LABELS[:-1])], names=["a.safetensors", "b.safetensors"])
    with pytest.raises(ValueError, match=r"member 1: sample rate 16000 differs"):
        CTCEnsemble([tiny_model(0), tiny_model(1, rate=16000)])


def test_the_transcript_the_members_find_most_likely_together_wins():
    # member a hears "cab" by a hair; member b, at another frame rate, is sure of "cat"
    a, b = tiny_model(0), tiny_model(1, stack=3)
    fixed_output(a, [{"c": 0.9}, {"<blank>": 0.9}, {"a": 0.9}, {"<blank>": 0.9}, {"b": 0.5, "t": 0.45},
                     {"<blank>": 0.9}])
    fixed_output(b, [{"c": 0.9}, {"a": 0.9}, {"t": 0.9}, {"<blank>": 0.9}])
    assert Transcriber(a)._decode_segments([noise(0, 800)])[0].text == "cab"
    hyp = Transcriber(CTCEnsemble([a, b]), "greedy", nbest=2)._decode_segments([noise(0, 800)])[0]
    assert hyp.text == "cat"
    # timed on member b's clock: its spikes are frames 0-2 (on a's clock its "t" would end at 5 x 0.02 s)
    assert [w.word for w in hyp.words] == ["cat"] and hyp.words[0].end == pytest.approx(3 * b.frame_shift)
    assert [h["text"] for h in hyp.nbest] == ["cat", "cab"]
    assert hyp.nbest[0]["score"] > hyp.nbest[1]["score"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_model_ensembled_with_itself_picks_its_own_most_likely_beam(seed):
    model = tiny_model(seed)
    ensemble = CTCEnsemble([model, copy.deepcopy(model)])
    wav = noise(seed)
    assert Transcriber(ensemble, "greedy").transcribe(wav, 8000).text == Transcriber(model, "greedy").transcribe(wav, 8000).text
    single = Transcriber(model, "beam", beam_width=6, nbest=6).transcribe(wav, 8000)
    both = Transcriber(ensemble, "beam", beam_width=6).transcribe(wav, 8000)
    with torch.no_grad():
        lp, n = model(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))
    texts = [h["text"] for h in single.nbest]
    exact = ctc_log_likelihoods(lp[0, :int(n[0])], [model.vocab.encode(t) for t in texts])
    assert both.text == texts[int(np.argmax(exact))]


def test_ctc_log_likelihoods_match_the_forward_algorithm():
    lp = np.log(np.random.default_rng(0).dirichlet(np.full(6, 0.5), size=12))
    candidates = [[2], [2, 2], [3, 4, 5], [], [2] * 7]  # the last needs 13 frames: impossible
    got = ctc_log_likelihoods(lp, candidates)
    want = [ctc_forward_logprob(lp, c) for c in candidates[:4]]
    assert np.allclose(got[:4], want) and got[4] == -math.inf


def test_lm_score_is_what_the_search_adds_to_a_beam(tmp_path):
    kenlm = pytest.importorskip("kenlm")
    arpa = write_arpa(tmp_path / "lm.arpa", {"cat": -0.1, "cab": -3.0, "tab": -1.0}, {("tab", "cat"): -0.2})
    vocab = Vocabulary(LABELS)
    decoder = CTCBeamDecoder(LABELS, arpa, alpha=0.7, beta=1.5, log_probs_input=True)
    want = 0.7 * math.log(10) * kenlm.Model(str(arpa)).score("tab cat", bos=True, eos=True) + 1.5 * 2
    assert decoder.lm_score(vocab.encode("tab cat")) == pytest.approx(want, abs=1e-4)
    lexicon_only = CTCBeamDecoder(LABELS, None, alpha=0.7, beta=2.0, lexicon=["cat", "tab"], log_probs_input=True)
    assert lexicon_only.lm_score(vocab.encode("tab cat cat")) == 6.0
    assert CTCBeamDecoder(LABELS, log_probs_input=True).lm_score(vocab.encode("tab")) == 0.0


def test_cli_writes_an_ensemble_that_decodes_with_its_lm_and_refuses_what_it_cannot_use(tmp_path, capsys):
    a = save_package(tiny_model(0), tmp_path / "a" / "model.safetensors")
    b = save_package(tiny_model(1, cell="gru"), tmp_path / "b" / "model.safetensors")
    (tmp_path / "lm").mkdir()
    arpa = write_arpa(tmp_path / "lm" / "lm.arpa", {"cat": -0.1, "cab": -3.0, "tab": -1.0})
    out = tmp_path / "ens" / "model.safetensors"
    assert cli_main(["ensemble", str(a), str(tmp_path / "b"), "-o", str(out), "--lm", str(arpa),
                     "--alpha", "0.5", "--beam-width", "4"]) == 0
    pkg = read_package(out)
    assert pkg.arch == "ctc-ensemble" and len(pkg.model_meta["members"]) == 2
    d = pkg.cfg.decode
    # an LM outside the package's folder is placed beside it (a package never names a path outside)
    assert (d.decoder, d.lm, d.alpha, d.beam_width) == ("beam", "model.arpa", 0.5, 4)
    assert (out.parent / "model.arpa").read_bytes() == arpa.read_bytes()
    assert [m["model"] for m in pkg.info["members"]] == [str(a), str(tmp_path / "b")]
    tr = Transcriber(load_model(out))  # no decoder asked for: the package's own
    assert tr.beam is not None
    assert set(tr.transcribe(noise(3), 8000).text.split()) <= {"cat", "cab", "tab"}  # the LM's words only
    c = save_package(tiny_model(2, labels=LABELS[:-1]), tmp_path / "c.safetensors")
    assert cli_main(["ensemble", str(a), str(c), "-o", str(tmp_path / "bad.safetensors")]) == 2
    assert "c.safetensors: its labels" in capsys.readouterr().err
    assert not (tmp_path / "bad.safetensors").exists()


def test_half_package_is_half_the_size_and_decodes_the_same(tmp_path):
    ensemble = CTCEnsemble([tiny_model(0, hidden=32), tiny_model(1, hidden=32)])
    full = save_package(ensemble, tmp_path / "full.safetensors")
    half = save_package(ensemble, tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    pkg = read_package(half)
    assert pkg.tensors["members.0.output.weight"].dtype == torch.float16
    assert all(t.dtype == torch.float32 for k, t in pkg.tensors.items() if "cmvn" in k)  # buffers kept
    a, b = load_model(full), load_model(half)
    assert next(b.parameters()).dtype == torch.float32
    wav = noise(5, 8000)
    assert Transcriber(a, "greedy").transcribe(wav, 8000).text == Transcriber(b, "greedy").transcribe(wav, 8000).text


def test_shipping_a_package_takes_its_lm_along(tmp_path, monkeypatch):
    from asr import registry
    from asr.ship import ship

    monkeypatch.setattr(registry, "EMBEDDED_DIR", tmp_path / "embedded")
    monkeypatch.setattr(registry, "REGISTRY_FILE", tmp_path / "embedded" / "registry.json")
    (tmp_path / "embedded").mkdir()
    (tmp_path / "lm").mkdir()
    arpa = write_arpa(tmp_path / "lm" / "3gram.arpa", {"cat": -0.1, "tab": -1.0})
    a = save_package(tiny_model(0), tmp_path / "a.safetensors")
    out = tmp_path / "exp" / "ens" / "model.safetensors"
    assert cli_main(["ensemble", str(a), str(a), "-o", str(out), "--lm", str(arpa), "--half"]) == 0
    assert read_package(out).cfg.decode.lm == "model.arpa"
    # a copy elsewhere (asr package) takes the LM along
    moved = tmp_path / "elsewhere" / "digits.safetensors"
    assert cli_main(["package", "--model", str(out), "-o", str(moved), "--half"]) == 0
    assert read_package(moved).cfg.decode.lm == "digits.arpa"
    shipped = ship(moved, "toy")
    assert shipped == tmp_path / "embedded" / "toy.safetensors"
    assert (tmp_path / "embedded" / "toy.arpa").read_bytes() == arpa.read_bytes()
    pkg = read_package(shipped)
    assert pkg.cfg.decode.lm == "toy.arpa" and pkg.tensors["members.0.output.weight"].dtype == torch.float16
    arpa.unlink()  # the shipped model decodes with its own copy
    tr = Transcriber(load_model("toy"))
    assert tr.beam is not None and set(tr.transcribe(noise(1), 8000).text.split()) <= {"cat", "tab"}


def test_tune_grid_searches_an_ensemble_as_it_decodes(tmp_path):
    import soundfile as sf

    dev = tmp_path / "dev"
    (dev / "wavs").mkdir(parents=True)
    refs = {"u1": "cat", "u2": "tab cat", "u3": "cab", "u4": "tab"}
    for i, utt in enumerate(refs):
        sf.write(dev / "wavs" / f"{utt}.wav", noise(10 + i, 3000 + 500 * i), 8000)
    (dev / "wav.scp").write_text("".join(f"{u} {dev / 'wavs' / u}.wav\n" for u in refs))
    (dev / "text").write_text("".join(f"{u} {t}\n" for u, t in refs.items()))
    arpa = write_arpa(tmp_path / "lm.arpa", {"cat": -0.1, "cab": -3.0, "tab": -1.0})
    package = save_package(CTCEnsemble([tiny_model(0), tiny_model(1, cell="gru", stack=3)]),
                           tmp_path / "ens.safetensors", half=True)
    best = tune(package, dev, arpa, tmp_path / "tune", [0.0, 2.0], [0.0, 1.0], [2, 4])
    assert (tmp_path / "tune" / "dev_logprobs.member1.npz").exists()
    assert len((tmp_path / "tune" / "results.tsv").read_text().splitlines()) == 9
    tuned = read_package(tmp_path / "tune" / "model.safetensors")
    assert tuned.arch == "ctc-ensemble" and tuned.tensors["members.1.output.weight"].dtype == torch.float16
    d = tuned.cfg.decode
    assert (d.decoder, d.alpha, d.beta, d.beam_width) == ("beam", best["alpha"], best["beta"], best["beam_width"])
    # what tune measured is what decoding the tuned package gives
    tr = Transcriber(load_model(tmp_path / "tune" / "model.safetensors"))
    hyps = [tr.transcribe(dev / "wavs" / f"{u}.wav").text for u in refs]
    assert round(corpus_wer(list(refs.values()), hyps).rate, 2) == best["wer"]

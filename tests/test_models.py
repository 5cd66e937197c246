import pytest
import torch

from asr.config import ExperimentConfig, FeatureConfig, ModelConfig
from asr.models import CTCModel
from asr.models.rnn import StackedRNN, reverse_within_lengths
from asr.text import Vocabulary, VocabularyError, ctc_min_frames


def small_cfg(**model) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.features = FeatureConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=20)
    cfg.model = ModelConfig(num_layers=2, hidden_size=16, dropout=0.0, **model)
    return cfg


def test_reverse_within_lengths_is_an_involution():
    x = torch.arange(12.0).view(2, 6, 1)
    lens = torch.tensor([6, 4])
    r = reverse_within_lengths(x, lens)
    assert r[1, :, 0].tolist() == [9, 8, 7, 6, 10, 11]
    assert torch.equal(reverse_within_lengths(r, lens), x)


@pytest.mark.parametrize("cell,bi,proj", [("lstm", True, 0), ("gru", True, 0), ("lstm", False, 0), ("lstm", True, 8)])
def test_exact_padded_path_equals_packed_path(cell, bi, proj):
    torch.manual_seed(0)
    rnn = StackedRNN(10, 16, 3, cell, bi, proj).eval()
    x = torch.randn(3, 25, 10)
    lens = torch.tensor([25, 17, 4])
    padded = rnn(x, lens)
    for layer in rnn.layers:
        layer.packed = True
    packed = rnn(x, lens)
    for b, n in enumerate(lens.tolist()):
        torch.testing.assert_close(padded[b, :n], packed[b, :n], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("subsample", ["none", "stack", "conv"])
def test_output_of_an_utterance_does_not_depend_on_its_batch(subsample):
    torch.manual_seed(0)
    model = CTCModel(small_cfg(subsample=subsample), Vocabulary.from_texts(["one two"])).eval()
    wav = torch.randn(3, 9000) * 0.1
    lens = torch.tensor([9000, 5000, 1234])
    lp, out_lens = model(wav, lens)
    assert lp.shape[:2] == (3, int(out_lens.max())) and lp.shape[2] == len(model.vocab)
    assert out_lens.tolist() == model.output_frames(lens).tolist()
    for b in range(3):
        n = int(lens[b])
        alone, al = model(wav[b:b + 1, :n], lens[b:b + 1])
        assert int(al[0]) == int(out_lens[b])
        torch.testing.assert_close(lp[b, : int(al[0])], alone[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(lp.shape[:2]), atol=1e-4, rtol=0)


def test_unknown_cell_and_subsample_are_named():
    with pytest.raises(ValueError, match="model.cell"):
        CTCModel(small_cfg(cell="rnn"), Vocabulary.from_texts(["a"]))
    with pytest.raises(ValueError, match="model.subsample"):
        CTCModel(small_cfg(subsample="pool"), Vocabulary.from_texts(["a"]))


def test_vocabulary_unicode_multichar_and_oov():
    v = Vocabulary.from_texts(["привет мир", "ünï"])
    assert v.tokens[0] == "<blank>" and " " in v.tokens
    assert v.decode(v.encode("мир ünï")) == "мир ünï"
    mc = Vocabulary(["<blank>", "th", "t", "h", "e", " "])
    assert mc.encode("the") == [1, 4]  # longest match first
    with pytest.raises(VocabularyError, match="utt7.*'x'"):
        v.encode("xyz", "utt7")
    words = Vocabulary.from_texts(["yes no", "no"], unit="word")
    assert words.tokens == ["<blank>", " ", "no", "yes"]
    ids = words.encode("yes no no")
    assert ids == [3, 1, 2, 1, 2] and words.decode(ids) == "yes no no"
    assert words.decode([3, 2]) == "yes no"  # different words split without a space
    assert words.decode([3, 3, 1, 3]) == "yes yes"  # a word stretched over a blank is one word
    with pytest.raises(VocabularyError, match="utt3.*maybe"):
        words.encode("yes maybe", "utt3")


def test_word_unit_timings_split_every_word():
    from asr.decode import greedy_decode

    v = Vocabulary.from_texts(["yes no"], unit="word")
    path = [0, 3, 3, 0, 3, 1, 3, 0, 2, 2]  # yes (stretched over a blank) <space> yes no
    lp = torch.full((1, len(path), 4), -10.0)
    for t, i in enumerate(path):
        lp[0, t, i] = 0.0
    h = greedy_decode(lp, torch.tensor([len(path)]), v, frame_shift=0.1)[0]
    assert h.text == "yes yes no"
    assert [(w.word, w.start, w.end) for w in h.words] == [("yes", 0.1, 0.5), ("yes", 0.6, 0.7), ("no", 0.8, 1.0)]


def test_ctc_min_frames_counts_repeats():
    assert ctc_min_frames([1, 2, 3]) == 3
    assert ctc_min_frames([1, 1, 2, 2, 2]) == 8


def test_every_arch_keeps_the_model_contract(tmp_path):
    """The package loader, the trainer and the pipelines read these from the class and the
    instance, never from tables or probes: a new model that forgets one fails here."""
    from asr.models import _ARCHS, CTCEnsemble, model_class
    from asr.models.base import Model, Recognizer, TrainableModel
    from asr.train import train

    for arch, cls in _ARCHS.items():
        assert issubclass(cls, Model) and cls.arch == arch and model_class(arch) is cls
        if issubclass(cls, TrainableModel):
            assert cls.best_metric[1] in ("min", "max")
    cfg = ExperimentConfig(features=FeatureConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80,
                                                  n_mels=16), model=ModelConfig(num_layers=1, hidden_size=8))
    one = CTCModel(cfg, Vocabulary.from_texts(["ab"])).eval()
    assert one.info == {} and one.package_path is None and one.package_lm is None
    ens = CTCEnsemble([one, CTCModel(cfg, one.vocab).eval()])
    wav, lens = torch.randn(2, 1600), torch.tensor([1600, 900])
    # one method, one shape: a list with one (log-probs, lengths) pair per member, for both
    for model in (one, ens):
        assert isinstance(model, Recognizer)
        out = model.ctc_posteriors(wav, lens)
        assert len(out) == len(model.ctc_members())
        for (lp, n), member in zip(out, model.ctc_members()):
            torch.testing.assert_close(lp, member(wav, lens)[0])
    cfg.model.arch = "ctc-ensemble"
    with pytest.raises(ValueError, match="model.arch: ctc-ensemble models are not trained"):
        train(cfg, tmp_path / "exp")

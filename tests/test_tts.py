"""Text-to-speech: the Tacotron-style model, guided attention, stop token, vocoder, packages,
the text normaliser, `asr synthesize`, MCD, and a tiny overfit run through the one trainer."""
import time

import numpy as np
import pytest
import torch

from asr import cli
from asr.audio import load_audio, save_audio
from asr.config import ExperimentConfig, FeatureConfig, ModelConfig, TrainConfig
from asr.data import Batch
from asr.datadir import Utterance, write_data_dir
from asr.features import LogMel
from asr.metrics import mel_cepstral_distortion
from asr.models import model_class
from asr.models.tts import TTSModel, guided_attention_loss, text_batch
from asr.package import load_package, save_package
from asr.synthesize import synthesize
from asr.text import Vocabulary, spell_digits
from asr.vocoder import GriffinLimVocoder, Vocoder, get_vocoder, register_vocoder

SR = 8000
TEXTS = ["one two", "three", "nine five"]


@pytest.fixture(autouse=True)
def _one_thread():
    # The decoder runs many tiny ops step by step: with 2 threads on 2 busy cores, OpenMP's
    # spin-waiting makes each 20x slower than on one thread.
    torch.set_num_threads(1)


def tiny_cfg(**extra) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.features = FeatureConfig(sample_rate=SR, n_fft=256, win_length=200, hop_length=80, n_mels=20,
                                 preemphasis=0.0, dither=0.0)
    ex = {"reduction": 2, "embed_dim": 16, "encoder_dim": 16, "encoder_convs": 1, "attention_dim": 16,
          "location_filters": 4, "location_kernel": 5, "prenet_dim": 16, "postnet_dim": 16, "postnet_layers": 2,
          "speaker_dim": 8, "max_decoder_steps": 40, **extra}
    cfg.model = ModelConfig(arch="tts", hidden_size=32, dropout=0.0, extra=ex)
    return cfg


def tiny_model(speakers=("a",), **extra) -> TTSModel:
    torch.manual_seed(0)
    vocab = Vocabulary.from_texts(TEXTS + ["zero four six seven eight"])
    return TTSModel(tiny_cfg(**extra), vocab, list(speakers)).eval()


def tone(freqs, seconds=0.4, seed=0) -> np.ndarray:
    """A stand-in recording: one tone per word, so each text has its own spectrum over time."""
    rng = np.random.default_rng(seed)
    parts = []
    for f in freqs:
        t = np.arange(int(seconds * SR)) / SR
        parts.append(0.3 * np.sin(2 * np.pi * f * t) + 0.003 * rng.standard_normal(len(t)))
    return np.concatenate(parts).astype(np.float32)


def batch_of(texts, speakers=None) -> Batch:
    wavs = [tone([300 + 150 * len(w) for w in t.split()], 0.15, seed=i) for i, t in enumerate(texts)]
    lens = torch.tensor([len(w) for w in wavs])
    wav = torch.zeros(len(wavs), int(lens.max()))
    for i, w in enumerate(wavs):
        wav[i, : len(w)] = torch.from_numpy(w)
    return Batch([f"u{i}" for i in range(len(texts))], wav, lens, list(texts), list(speakers or ["a"] * len(texts)))


# -- the model -----------------------------------------------------------------------------------

def test_teacher_forced_shapes_and_finite_loss():
    model = tiny_model().train()
    batch = batch_of(TEXTS)
    targets, dropped = model._targets(batch)
    ids, text_lens, mel, mel_lens, spk = targets
    assert not dropped and ids.shape == (3, int(text_lens.max())) and mel.size(1) % model.r == 0
    assert int(text_lens[1]) == len("three") + 1  # the end-of-text token
    before, after, stop, align = model(ids, text_lens, mel, spk)
    assert before.shape == after.shape == mel.shape == (3, mel.size(1), 20)
    assert stop.shape == (3, mel.size(1) // 2) and align.shape == (3, mel.size(1) // 2, ids.size(1))
    torch.testing.assert_close(align.sum(-1), torch.ones(3, mel.size(1) // 2))  # a distribution per step
    assert float(align.detach()[1, :, int(text_lens[1]):].abs().sum()) == 0.0  # no attention on padding
    out = model.compute_loss(batch)
    assert torch.isfinite(out.loss) and out.utts == 3 and out.tokens == int(mel_lens.sum())
    out.loss.backward()
    assert model.encoder.embedding.weight.grad is not None and model.speaker_embedding is None


def test_bad_training_utterances_are_dropped_and_named():
    model = tiny_model(speakers=("a", "b"))
    out = model.compute_loss(batch_of(["one two", "one ten!", "three"], ["a", "a", "zed"]))
    assert [u for u, _ in out.dropped] == ["u1", "u2"]
    assert "'!'" in out.dropped[0][1] and "zed" in out.dropped[1][1] and out.utts == 1
    assert "can't say" in model.check_utterance(Utterance("x", "x.wav", "hello", "a", 1.0))
    assert "max_decoder_steps" in model.check_utterance(Utterance("x", "x.wav", "one", "a", 30.0))
    assert model.check_utterance(Utterance("x", "x.wav", "one 2", "a", 0.5)) is None


def test_guided_attention_loss_on_known_alignments():
    sigma = 0.2
    w = 1 - np.exp(-(0.5**2) / (2 * sigma**2))  # penalty of a cell half the text away from the diagonal
    diag = torch.eye(2).unsqueeze(0)
    anti = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    lens = torch.tensor([2])
    assert float(guided_attention_loss(diag, lens, lens, sigma)) == pytest.approx(0.0, abs=1e-7)
    assert float(guided_attention_loss(anti, lens, lens, sigma)) == pytest.approx(w / 2, rel=1e-5)
    # Padding cells do not count: a shorter second utterance with garbage beyond its lengths.
    two = torch.zeros(2, 2, 2)
    two[0] = anti[0]
    two[1, 0, 0], two[1, 1] = 1.0, 1e3
    loss = guided_attention_loss(two, torch.tensor([2, 1]), torch.tensor([2, 1]), sigma)
    assert float(loss) == pytest.approx(2 * w / 5, rel=1e-5)


def test_stop_token_ends_decoding_and_max_steps_caps_it():
    model = tiny_model()
    ids, lens, spk = text_batch(model, ["one two", "three"])
    never = model.infer(ids, lens, spk, max_steps=7, stop_threshold=1.1)
    assert never["mel"].shape == (2, 14, 20) and never["lengths"].tolist() == [14, 14]
    assert not never["stopped"].any() and never["alignments"].shape == (2, 7, ids.size(1))
    with torch.no_grad():
        model.stop_proj.bias.fill_(20.0)  # the stop token fires at once
    now = model.infer(ids, lens, spk, max_steps=7)
    assert now["lengths"].tolist() == [2, 2] and now["stopped"].all() and now["mel"].size(1) == 2
    with pytest.raises(ValueError, match="max_steps"):
        model.infer(ids, lens, spk, max_steps=0)


def test_synthesis_is_deterministic_for_a_seed_and_leaves_global_rng_alone():
    model = tiny_model()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = synthesize(model, "one 2", seed=5, max_steps=10)
    assert torch.equal(torch.get_rng_state(), state)
    b = synthesize(model, "one two", seed=5, max_steps=10)
    c = synthesize(model, "one two", seed=6, max_steps=10)
    assert a.text == "one two" and a.sample_rate == SR and a.wav.dtype == np.float32
    np.testing.assert_array_equal(a.wav, b.wav)
    assert not np.array_equal(a.mel, c.mel)  # the prenet's dropout stays on at inference
    assert a.alignment.shape[1] == len("one two") + 1


def test_speaker_conditioning_and_unknown_speaker():
    model = tiny_model(speakers=("ann", "bob"))
    ids, lens, _ = text_batch(model, ["one", "one"])
    out = model.infer(ids, lens, torch.tensor([0, 1]), max_steps=5, stop_threshold=1.1)
    assert not torch.allclose(out["mel"][0], out["mel"][1])  # same dropout seed would not matter: the voice does
    with pytest.raises(ValueError, match="ann, bob"):
        synthesize(model, "one", speaker="carl")
    assert synthesize(model, "one", speaker="bob", max_steps=3).speaker == "bob"


def test_package_round_trip(tmp_path):
    model = tiny_model(speakers=("ann", "bob"))
    with torch.no_grad():
        model.cmvn.set_stats(np.linspace(-5, 0, 20), np.linspace(1, 2, 20))
    path = save_package(model, tmp_path / "tts.safetensors", {"result": "x"})
    loaded = load_package(path)
    assert loaded.arch == "tts" and loaded.speakers == ["ann", "bob"] and loaded.vocab.tokens == model.vocab.tokens
    a = synthesize(model, "nine five", speaker="bob", seed=1, max_steps=6)
    b = synthesize(loaded, "nine five", speaker="bob", seed=1, max_steps=6)
    np.testing.assert_allclose(a.mel, b.mel, atol=1e-5)


def test_config_errors_are_named():
    with pytest.raises(ValueError, match="unknown key.*reducton"):
        TTSModel(tiny_cfg(reducton=2), Vocabulary.from_texts(["a"]), ["a"])
    with pytest.raises(ValueError, match="encoder_dim"):
        TTSModel(tiny_cfg(encoder_dim=15), Vocabulary.from_texts(["a"]), ["a"])
    cmn = tiny_cfg()
    cmn.features.utterance_cmn = True
    with pytest.raises(ValueError, match="utterance_cmn"):
        TTSModel(cmn, Vocabulary.from_texts(["a"]), ["a"])
    with pytest.raises(ValueError, match="no transcripts"):
        model_class("tts").from_training_data(tiny_cfg(), [Utterance("u", "x.wav", "", "a")])


# -- text ----------------------------------------------------------------------------------------

def test_normaliser_reads_digits_and_names_unsayable_characters():
    assert spell_digits("314") == "three one four"
    assert spell_digits("call 9-1 now") == "call nine - one now"
    model = tiny_model()
    assert model.prepare_text("  ONE  2 ") == "one two"  # no capitals in its vocabulary: lower-cased
    with pytest.raises(ValueError, match=r"'!', 'q'") as e:
        model.prepare_text("one! q")
    assert "knows only" in str(e.value)
    with pytest.raises(ValueError, match="empty"):
        model.prepare_text("   ")


# -- vocoder -------------------------------------------------------------------------------------

def test_griffin_lim_shape_rate_and_pitch():
    f = FeatureConfig(sample_rate=SR, n_fft=256, win_length=200, hop_length=80, n_mels=40, preemphasis=0.0, dither=0.0)
    wav = tone([500], seconds=0.5)
    mel, _ = LogMel(f).eval()(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))
    voc = get_vocoder("griffinlim", f, n_iter=16)
    assert isinstance(voc, GriffinLimVocoder) and voc.sample_rate == SR
    out = voc(mel[0])
    assert out.dtype == np.float32 and abs(len(out) - len(wav)) <= f.hop_length and np.abs(out).max() <= 1.0
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * SR / len(out) - 500) < 20  # the pitch survives mel -> audio
    np.testing.assert_array_equal(out, voc(mel[0].numpy()))  # no random phase: same mels, same audio
    with pytest.raises(ValueError, match="frames, 40"):
        voc(np.zeros((5, 20)))
    with pytest.raises(ValueError, match="griffinlim"):
        get_vocoder("wavenet", f)


def test_a_new_vocoder_plugs_in_by_name():
    class Silence(Vocoder):
        name = "silence"

        def __call__(self, log_mel):
            return np.zeros(len(log_mel) * self.features.hop_length, dtype=np.float32)

    register_vocoder("silence", Silence)
    s = synthesize(tiny_model(), "one", max_steps=3, vocoder="silence")
    assert not s.wav.any() and len(s.wav) == len(s.mel) * 80


# -- MCD -----------------------------------------------------------------------------------------

def test_mel_cepstral_distortion():
    a = tone([400, 900], seed=1)
    assert mel_cepstral_distortion(a, a, SR)[0] == pytest.approx(0.0, abs=1e-6)
    slower = np.repeat(a, 2)[::2][: len(a)]
    near = mel_cepstral_distortion(a, np.concatenate([np.zeros(400, np.float32) + 1e-3, a]), SR)[0]
    far = mel_cepstral_distortion(a, tone([1500, 200], seed=2), SR)[0]
    assert 0 < near < far
    assert mel_cepstral_distortion(a, slower, SR)[0] < far


# -- the command line ----------------------------------------------------------------------------

@pytest.fixture
def package(tmp_path):
    model = tiny_model(speakers=("ann", "bob"))
    with torch.no_grad():
        model.stop_proj.bias.fill_(-20.0)  # never says stop: every output runs to --max-steps
    return save_package(model, tmp_path / "tts.safetensors")


def test_cli_writes_audio_for_text_and_text_file(tmp_path, package, capsys):
    out = tmp_path / "a" / "out.wav"
    assert cli.main(["synthesize", "--model", str(package), "--speaker", "ann", "--text", "314", "-o", str(out),
                     "--max-steps", "4", "--allow-cut"]) == 0
    wav, sr = load_audio(out)
    assert sr == SR and len(wav) > 0
    assert "three one four" in capsys.readouterr().out
    lines = tmp_path / "lines.txt"
    lines.write_text("one\n\n2 3\n")
    d = tmp_path / "batch"
    assert cli.main(["synthesize", "--model", str(package), "--text-file", str(lines), "-o", str(d),
                     "--max-steps", "4"]) == 1  # outputs cut at --max-steps fail without --allow-cut
    assert sorted(p.name for p in d.iterdir()) == ["0001.wav", "0003.wav"]


@pytest.mark.parametrize("args,message", [
    (["--text", "  "], "empty"),
    (["--text", "one & two?"], "'&', '?'"),
    (["--text-file", "/nonexistent/lines.txt"], "no such file"),
    (["--text", "one", "--speaker", "carl"], "knows: ann, bob"),
    (["--text", "one", "--text-file", "x"], "exactly one"),
])
def test_cli_bad_input_exits_nonzero_naming_the_problem(tmp_path, package, capsys, args, message):
    out = tmp_path / "o.wav"
    assert cli.main(["synthesize", "--model", str(package), "-o", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cli_text_file_with_a_bad_line_writes_nothing(tmp_path, package, capsys):
    lines = tmp_path / "lines.txt"
    lines.write_text("one\nfour $\n")
    assert cli.main(["synthesize", "--model", str(package), "--text-file", str(lines), "-o", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "'$'" in err and not (tmp_path / "d").exists()


def test_cli_refuses_a_non_tts_model(tmp_path, capsys):
    from asr.models.speaker import SpeakerModel

    cfg = ExperimentConfig()
    cfg.model = ModelConfig(arch="speaker", num_layers=1, hidden_size=8, embedding_dim=4)
    path = save_package(SpeakerModel(cfg, ["a", "b"]), tmp_path / "spk.safetensors")
    assert cli.main(["synthesize", "--model", str(path), "--text", "one", "-o", str(tmp_path / "o.wav")]) == 2
    assert "not a tts model" in capsys.readouterr().err


# -- training --------------------------------------------------------------------------------------

def test_tiny_model_overfits_a_few_utterances():
    from asr.features import compute_cmvn

    model = tiny_model().train()
    batch = batch_of(TEXTS)
    stats = compute_cmvn(LogMel(model.cfg.features), [w[: int(n)].numpy() for w, n in zip(batch.wav, batch.wav_lens)])
    model.cmvn.set_stats(stats["mean"], stats["std"])
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(60):
        out = model.compute_loss(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses
    res = model.eval().evaluate([batch])
    assert set(res) >= {"loss", "mel", "stop", "attention", "focus"} and res["loss"] < losses[0]


def test_the_generic_trainer_trains_and_packages_a_tts_model(tmp_path):
    from asr.train import train

    wavs = tmp_path / "wavs"
    wavs.mkdir()
    utts = []
    for i, t in enumerate(TEXTS * 2):
        p = wavs / f"u{i}.wav"
        save_audio(p, tone([300 + 150 * len(w) for w in t.split()], seed=i), SR)
        utts.append(Utterance(f"u{i}", str(p), t, "a"))
    write_data_dir(tmp_path / "data", utts)
    cfg = tiny_cfg()
    cfg.train = TrainConfig(train_data=[str(tmp_path / "data")], dev_data=[str(tmp_path / "data")], max_steps=6,
                            batch_seconds=4.0, max_batch_size=3, warmup_steps=2, num_workers=0, log_every=1,
                            checkpoint_every=3)
    best = train(cfg, tmp_path / "exp", device="cpu")
    assert best["step"] == 6 and np.isfinite(best["loss"])
    model = load_package(tmp_path / "exp" / "model.safetensors")
    assert model.arch == "tts" and float(model.cmvn.istd.mean()) != 1.0  # mel statistics were estimated
    assert synthesize(model, "nine", max_steps=3).wav.size > 0


def test_evaluate_reports_intelligibility_mcd_and_rtf(tmp_path):
    from asr.synthesize import evaluate

    utts = []
    for i, t in enumerate(["one two", "three"]):
        p = tmp_path / f"r{i}.wav"
        save_audio(p, tone([400, 700][: len(t.split())], 0.2, seed=i), SR)
        utts.append(Utterance(f"r{i}", str(p), t, "a"))
    started = time.perf_counter()
    res = evaluate(tiny_model(), utts, "digits", tmp_path / "eval", max_steps=5, plots=1, progress=False)
    wall = time.perf_counter() - started
    assert res["utterances"] == 2 and res["mcd_db"] > 0 and list(res["mcd_per_speaker"]) == ["a"]
    assert list(res["wer_synth_per_speaker"]) == ["a"]
    # RTF against references outside evaluate's own bookkeeping: the audio is what it wrote to disk,
    # and model + vocoder time is part of the wall clock of the whole call
    written = sum(len(load_audio(p)[0]) / SR for p in (tmp_path / "eval" / "wav").iterdir())
    assert res["synth_audio_s"] == pytest.approx(written, abs=1e-3) and written > 0
    assert res["rtf_model"] > 0 and res["rtf_vocoder"] > 0
    assert 0 < res["rtf"] * written <= wall
    assert (tmp_path / "eval" / "synth" / "wer").read_text().startswith("%WER")
    assert res["mcd_copy_db"] >= 0 and (tmp_path / "eval" / "copy" / "wer").exists()
    assert (tmp_path / "eval" / "real" / "wer").exists() and (tmp_path / "eval" / "plots" / "r0.png").exists()
    assert sorted(p.name for p in (tmp_path / "eval" / "wav").iterdir()) == ["r0.wav", "r1.wav"]
    no_asr = evaluate(tiny_model(), utts[:1], "none", tmp_path / "e2", max_steps=3, plots=0, progress=False)
    assert "wer_synth" not in no_asr and no_asr["mcd_db"] > 0


def test_ljspeech_data_prep_gives_what_tts_training_needs(tmp_path):
    """LJSpeech-style data (case, punctuation, 22.05 kHz) -> data dir -> a TTS model's batch."""
    from asr.data import AudioDataset, collate
    from asr.datadir import read_data_dir
    from data_prep import ljspeech

    from .test_corpora import make_ljspeech

    make_ljspeech(tmp_path)
    assert ljspeech.main(["--corpus-dir", str(tmp_path), "--num-dev", "2", "--num-test", "2", str(tmp_path / "d")]) == 0
    utts = read_data_dir(tmp_path / "d" / "train")
    assert utts and all(u.speaker == "lj" and u.text for u in utts)
    cfg = tiny_cfg()
    cfg.features = FeatureConfig(sample_rate=22050, n_fft=512, win_length=512, hop_length=256, n_mels=20,
                                 preemphasis=0.0, dither=0.0)
    model = TTSModel.from_training_data(cfg, utts)
    assert {"P", ",", '"'} <= set(model.vocab.tokens)  # case and punctuation are read, not dropped
    assert model.prepare_text("Printing, 1") == "Printing, one"  # capitals known: case kept
    assert all(model.check_utterance(u) is None for u in utts)
    batch = collate([AudioDataset(utts, 22050)[i] for i in range(3)])
    out = model.train().compute_loss(batch)
    assert out.utts == 3 and torch.isfinite(out.loss)


def test_fsdd_prep_keeps_only_the_chosen_speakers(tmp_path):
    from asr.datadir import read_data_dir
    from data_prep import fsdd

    rec = tmp_path / "corpus" / "recordings"
    rec.mkdir(parents=True)
    for spk in ("ann", "bob"):
        for d in range(3):
            for take in (0, 5, 10, 11):
                save_audio(rec / f"{d}_{spk}_{take}.wav", tone([300 + 100 * d], 0.2, seed=take), SR)
    out = tmp_path / "data"
    args = ["--corpus-dir", str(tmp_path / "corpus"), "--num-conn-dev", "0", "--num-conn-test", "0"]
    assert fsdd.main([*args, "--num-conn-train", "4", "--speakers", "bob", str(out)]) == 0
    assert {u.speaker for s in ("train", "train_conn", "test") for u in read_data_dir(out / s)} == {"bob"}
    assert fsdd.main([*args, "--speakers", "carl", str(tmp_path / "x")]) != 0


def test_shipped_digits_tts_is_understood_by_the_shipped_asr_model():
    from asr.registry import load_model, registry
    from asr.transcribe import Transcriber

    assert registry()["digits-tts"]["arch"] == "tts"
    s = synthesize("digits-tts", "4096", seed=0)
    assert s.stopped and s.sample_rate == 8000 and 0.8 < s.duration < 5.0
    assert Transcriber(load_model("digits")).transcribe(s.wav, s.sample_rate).text == "four zero nine six"


def test_gru_decoder_trains_and_decodes():
    cfg = tiny_cfg()
    cfg.model.cell = "gru"
    torch.manual_seed(0)
    model = TTSModel(cfg, Vocabulary.from_texts(TEXTS), ["a"]).train()
    out = model.compute_loss(batch_of(TEXTS))
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.decoder_rnn.weight_hh.grad is not None
    ids, lens, spk = text_batch(model.eval(), ["nine"])
    assert model.infer(ids, lens, spk, max_steps=4, stop_threshold=1.1)["mel"].shape == (1, 8, 20)

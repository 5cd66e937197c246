"""`asr tune` (LM weight / word bonus / beam grid on dev posteriors) and the espeak corpus prep."""
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.config import ExperimentConfig, FeatureConfig, ModelConfig
from asr.models import CTCModel
from asr.package import read_package, save_package
from asr.registry import load_model
from asr.text import Vocabulary
from asr.transcribe import Transcriber
from asr.decode import greedy_decode
from asr import cli
from asr.tune import DUMP_FILE, Posteriors, TuneError, compute_posteriors, greedy_texts, grid_search, tune
from data_prep import espeak
from tests.helpers import write_arpa

pytest.importorskip("flashlight.lib.text.decoder")

LABELS = ["<blank>", " ", "a", "b", "c", "t"]


def log_probs(frames: list[dict[str, float]]) -> np.ndarray:
    out = np.zeros((len(frames), len(LABELS)))
    for t, frame in enumerate(frames):
        out[t] = (1.0 - sum(frame.values())) / (len(LABELS) - len(frame))
        for lab, p in frame.items():
            out[t, LABELS.index(lab)] = p
    return np.log(out).astype(np.float32)


# the acoustics slightly prefer "cab", the reference and the LM say "cat"
CLOSE_CALL = log_probs([{"c": 0.9}, {"<blank>": 0.9}, {"a": 0.9}, {"<blank>": 0.9},
                        {"b": 0.45, "t": 0.4}, {"<blank>": 0.9}])
CLEAR = log_probs([{"t": 0.9}, {"a": 0.9}, {"b": 0.9}, {" ": 0.9}, {"c": 0.9}, {"a": 0.9}, {"t": 0.9}])


def posteriors() -> Posteriors:
    return Posteriors(["u1", "u2"], ["cat", "tab cat"], [CLOSE_CALL, CLEAR], LABELS, 0, "k")


def test_grid_prefers_the_lm_weight_that_fixes_the_close_call(tmp_path):
    arpa = write_arpa(tmp_path / "lm.arpa", {"cat": -0.1, "cab": -3.0, "tab": -1.0})
    rows = grid_search(posteriors(), arpa, alphas=[0.0, 1.0], betas=[0.0, 0.5], beams=[4, 8], progress=False)
    assert len(rows) == 8
    assert rows[0]["alpha"] == 1.0 and rows[0]["wer"] == 0.0 and rows[0]["beam_width"] == 4
    assert {r["wer"] for r in rows if r["alpha"] == 0.0} == {33.33}
    # without an LM only the beam width is searched
    assert [r["alpha"] for r in grid_search(posteriors(), None, [1.0], [2.0], [4], progress=False)] == [0.0]


def test_posteriors_round_trip_and_bad_dump_is_named(tmp_path):
    post = posteriors()
    post.save(tmp_path / "p.npz")
    back = Posteriors.load(tmp_path / "p.npz")
    assert back.utt_ids == post.utt_ids and back.refs == post.refs and back.labels == LABELS
    assert all(np.array_equal(a, b) for a, b in zip(back.log_probs, post.log_probs))
    np.savez(tmp_path / "bad.npz", utt_ids=np.array(["u"]))
    with pytest.raises(TuneError, match=r"bad.npz: not a log-probability dump \(no field 'refs'\)"):
        Posteriors.load(tmp_path / "bad.npz")


def test_tune_reads_a_word_unit_model_as_decode_does(tmp_path):
    """A word model that emits yes, <blank>, yes, space, no has said "yes no" (one yes stretched
    over a blank, see Vocabulary.word_starts): tune must score the transcript decode writes."""
    vocab = Vocabulary(["<blank>", " ", "no", "yes"], unit="word")
    cfg = ExperimentConfig(features=FeatureConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80,
                                                  n_mels=16),
                           model=ModelConfig(num_layers=1, hidden_size=8, unit="word"))
    model = CTCModel(cfg, vocab)
    path = [3, 0, 3, 1, 2]
    lp = torch.full((len(path), len(vocab)), -20.0)
    lp[range(len(path)), path] = 0.0
    lp = lp.log_softmax(-1)
    model.forward = lambda wav, lens: (lp.expand(len(wav), -1, -1), torch.full((len(wav),), len(path)))
    dev = tmp_path / "dev"
    dev.mkdir()
    sf.write(dev / "u.wav", np.zeros(4000, np.float32), 8000)
    (dev / "wav.scp").write_text(f"u {dev / 'u.wav'}\n")
    (dev / "text").write_text("u yes no\n")
    post = compute_posteriors(model, dev)
    decoded = greedy_decode(lp[None], torch.tensor([len(path)]), vocab)[0].text
    assert greedy_texts(post) == [decoded] == ["yes no"]
    post.save(tmp_path / "p.npz")  # the dump keeps the unit, so a reused dump decodes the same
    assert greedy_texts(Posteriors.load(tmp_path / "p.npz")) == ["yes no"]


def tune_main(argv: list[str]) -> int:
    return cli.main(["tune", *argv])


@pytest.fixture
def tiny_package(tmp_path):
    torch.manual_seed(0)
    cfg = ExperimentConfig(features=FeatureConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80,
                                                  n_mels=16),
                           model=ModelConfig(num_layers=1, hidden_size=8, subsample="stack", stack_frames=2))
    path = save_package(CTCModel(cfg, Vocabulary(LABELS)), tmp_path / "exp" / "model.safetensors")
    dev = tmp_path / "dev"
    (dev / "wavs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for utt in ("a1", "a2", "a3"):
        sf.write(dev / "wavs" / f"{utt}.wav", 0.1 * rng.standard_normal(4000).astype(np.float32), 8000)
    (dev / "wav.scp").write_text("".join(f"{u} {dev / 'wavs' / u}.wav\n" for u in ("a1", "a2", "a3")))
    (dev / "text").write_text("a1 cat\na2 tab cat\na3 cab\n")
    return path, dev


def test_tune_writes_results_and_a_package_with_the_best_defaults(tmp_path, tiny_package, monkeypatch):
    package, dev = tiny_package
    (tmp_path / "lm").mkdir()
    arpa = write_arpa(tmp_path / "lm" / "lm.arpa", {"cat": -0.1, "cab": -3.0, "tab": -1.0})
    out = tmp_path / "tune"
    assert tune_main(["--model", str(package), "--data", str(dev), "--lm", str(arpa), "--out-dir", str(out),
                      "--alphas", "0,2", "--betas", "0,1", "--beams", "2,4"]) == 0
    rows = (out / "results.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:4] == ["alpha", "beta", "beam_width", "wer"] and len(rows) == 9
    wers = [float(r.split("\t")[3]) for r in rows[1:]]
    assert wers == sorted(wers)
    assert "| greedy |" in (out / "results.md").read_text()
    best = json.loads((out / "best.json").read_text())
    assert best["wer"] == wers[0] and best["utterances"] == 3

    pkg = read_package(out / "model.safetensors")
    d = pkg.cfg.decode
    assert (d.decoder, d.alpha, d.beta, d.beam_width) == ("beam", best["alpha"], best["beta"], best["beam_width"])
    assert d.lm == "model.arpa" and pkg.info["tuned"]["wer"] == best["wer"]  # the LM placed beside it
    assert read_package(package).cfg.decode.lm is None  # the original is left alone

    # the package and its LM move together: the relative path is resolved against the package
    moved = tmp_path / "elsewhere"
    (moved / "tune").mkdir(parents=True)
    for name in ("model.safetensors", "model.arpa"):
        shutil.copy(out / name, moved / "tune" / name)
    model = load_model(moved / "tune" / "model.safetensors")
    tr = Transcriber(model, decoder="beam")
    assert tr.beam._beam_width == best["beam_width"] and tr.beam._alpha == best["alpha"]
    (moved / "tune" / "model.arpa").unlink()
    with pytest.raises(FileNotFoundError, match=r"decode.lm 'model.arpa' is not at"):
        Transcriber(model, decoder="beam")

    # the dev log-probs are computed once and reused while model and data are unchanged
    assert (out / DUMP_FILE).exists()
    monkeypatch.setattr("asr.tune.compute_posteriors", lambda *a, **k: pytest.fail("recomputed"))
    tune(package, dev, arpa, out, [0.0], [0.0], [2])


def test_tune_cli_errors_are_named(tmp_path, tiny_package, capsys):
    package, dev = tiny_package
    with pytest.raises(SystemExit):
        tune_main(["--model", str(package), "--data", str(dev), "--out-dir", str(tmp_path), "--beams", "0"])
    assert "beam widths >= 1" in capsys.readouterr().err
    assert tune_main(["--model", str(package), "--data", str(dev), "--lm", str(tmp_path / "no.arpa"),
                      "--out-dir", str(tmp_path / "t")]) == 2
    assert "asr tune: error: --lm" in capsys.readouterr().err



def test_beam_json_carries_nbest_and_word_confidences(tiny_package):
    from asr.transcribe import format_transcript

    package, dev = tiny_package
    model = load_model(package)
    # vad=False: the dev "speech" of this tiny model is white noise, which the speech gate drops
    t = Transcriber(model, decoder="beam", beam_width=8, nbest=3, vad=False).transcribe(dev / "wavs" / "a1.wav")
    out = json.loads(format_transcript(t, "json"))
    assert len(out["nbest"]) == 3 and len({h["text"] for h in out["nbest"]}) == 3
    assert out["nbest"][0]["text"] == out["text"]
    assert out["words"] and all(0 <= w["confidence"] <= 1 and w["start"] <= w["end"] for w in out["words"])

# -- data_prep.espeak -------------------------------------------------------------------------

WHO = ["king", "priest", "old man", "woman", "servant", "prophet", "child"]
WHERE = ["Dan", "Gath", "Beth-el", "the hills", "the sea"]
PASSAGES = [f"And the {WHO[i % 7]} said unto {WHO[i % 3]}, Go into {WHERE[i % 5]} with the {WHO[i % 4]}; "
            "and they went." for i in range(60)]


def test_text_split_keeps_dev_and_test_out_of_train_and_lm():
    assert espeak.normalize_words("Beth-el, LORD'S 'house'!") == ["beth", "el", "lord's", "house"]
    assert espeak.clauses("a b c d e, f g h i j k, l m; n", 6) == [list("abcde"), list("fghijk"), list("lm"), ["n"]]
    split = espeak.split_text(PASSAGES, 3, 10, {"dev": 5, "test": 5}, seed=0)
    held = set(split.sentences["dev"]) | set(split.sentences["test"])
    assert held and not held & set(split.sentences["train"]) and not held & set(split.lm_text)
    variants = espeak.split_variants()
    assert not set(variants["train"]) & (set(variants["dev"]) | set(variants["test"]))
    assert not set(variants["dev"]) & set(variants["test"])
    assert espeak.TEST_ACCENT not in espeak.accents("train") + espeak.accents("dev")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_prep_synthesises_unseen_voices(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(PASSAGES) + "\n")
    args = ["--text", str(text), "--num-train", "3", "--num-dev", "2", "--num-test", "2", "--jobs", "1",
            "--sample-rate", "8000", str(tmp_path / "data")]
    assert espeak.main(args) == 0
    from asr.datadir import read_data_dir, validate_data_dir

    sets = {s: read_data_dir(tmp_path / "data" / s) for s in ("train", "dev", "test")}
    assert [len(v) for v in sets.values()] == [3, 2, 2]
    assert validate_data_dir(tmp_path / "data" / "test") == []
    train_variants = {u.speaker.split("_", 1)[1] for u in sets["train"]}
    assert not train_variants & {u.speaker.split("_", 1)[1] for u in sets["test"] + sets["dev"]}
    wav, sr = sf.read(sets["test"][0].audio)
    assert sr == 8000 and 0.3 < len(wav) / sr < 10 and np.abs(wav).max() > 0.01
    lm_text = (tmp_path / "data" / "local" / "lm_train.txt").read_text().splitlines()
    assert lm_text and not {u.text for u in sets["test"]} & set(lm_text)
    first = (tmp_path / "data" / "test" / "wav.scp").stat().st_mtime_ns
    assert espeak.main(args) == 0  # a re-run with the same options keeps what is there
    assert (tmp_path / "data" / "test" / "wav.scp").stat().st_mtime_ns == first

"""Speaker model, enrollment database, identify/verify, EER/minDCF, `asr speaker`, VoxCeleb prep."""
import argparse
import json
import os

import numpy as np
import pytest
import torch

from asr.audio import AudioError, save_audio
from asr.config import ExperimentConfig, FeatureConfig, ModelConfig, TrainConfig
from asr.datadir import Utterance, read_data_dir, write_data_dir
from asr.models import model_class
from asr.models.speaker import AttentiveStatsPooling, SpeakerModel
from asr.package import load_package, save_package
from asr.registry import EMBEDDED_DIR
from asr.metrics import eer, eer_threshold, min_dcf
from asr import cli
from asr.cli import add_speaker_commands
from asr.speaker_db import SpeakerDB, SpeakerDBError, enroll, identify, verify
from asr.speaker_eval import evaluate

from .conftest import FSDD, YESNO

SR = 8000


def small_cfg(**model) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.features = FeatureConfig(sample_rate=SR, n_fft=256, win_length=200, hop_length=80, n_mels=20)
    model = {"arch": "speaker", "num_layers": 2, "hidden_size": 16, "dropout": 0.0, "embedding_dim": 8,
             "subsample": "stack", **model}
    cfg.model = ModelConfig(**model)
    return cfg


def voice(f0: float, seconds: float, seed: int) -> np.ndarray:
    """A buzzy tone with harmonics: a stand-in voice whose pitch is its identity."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    return (0.2 * x / np.abs(x).max() + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture
def tiny(tmp_path):
    torch.manual_seed(0)
    model = SpeakerModel(small_cfg(), ["lo", "hi"]).eval()
    path = save_package(model, tmp_path / "tiny.safetensors")
    return model, path


@pytest.fixture
def wavs(tmp_path):
    d = tmp_path / "wav"
    d.mkdir()
    files = {}
    for spk, f0 in (("lo", 110.0), ("hi", 330.0), ("new", 700.0)):
        for i in range(4):
            p = d / f"{spk}_{i}.wav"
            save_audio(p, voice(f0, 1.1 + 0.1 * i, hash((spk, i)) % 1000), SR)  # >= 1 s: an enrollment needs it
            files.setdefault(spk, []).append(str(p))
    return files


# -- the model -------------------------------------------------------------------------------

@pytest.mark.parametrize("cell,subsample,head", [("lstm", "stack", "amsoftmax"), ("gru", "none", "softmax"),
                                                 ("lstm", "conv", "amsoftmax")])
def test_embeddings_are_unit_vectors_independent_of_batch_padding(cell, subsample, head):
    torch.manual_seed(0)
    model = SpeakerModel(small_cfg(cell=cell, subsample=subsample, extra={"head": head}), ["a", "b", "c"]).eval()
    wav = torch.randn(3, 9000) * 0.1
    lens = torch.tensor([9000, 5000, 1234])
    emb = model.embed(wav, lens)
    assert emb.shape == (3, 8)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    for b in range(3):
        alone = model.embed(wav[b:b + 1, : int(lens[b])], lens[b:b + 1])
        torch.testing.assert_close(alone[0], emb[b], atol=1e-5, rtol=1e-5)


def test_pooling_gives_padding_no_weight():
    torch.manual_seed(0)
    pool = AttentiveStatsPooling(6, 4)
    x = torch.randn(2, 10, 6)
    lens = torch.tensor([10, 4])
    x[1, 4:] = 1e3  # garbage where the second utterance has ended
    out = pool(x, lens)
    assert out.shape == (2, 12)
    torch.testing.assert_close(out[1], pool(x[1:, :4], lens[1:])[0])
    assert torch.isfinite(pool(torch.zeros(1, 1, 6), torch.tensor([1]))).all()  # one frame: std floor, no NaN


def test_loss_drops_unknown_speakers_and_speed_speakers_get_their_own_class():
    from asr.data import Batch

    torch.manual_seed(0)
    model = SpeakerModel(small_cfg(extra={"speed_speakers": [0.9, 1.0, 1.1]}), ["a", "b"]).train()
    assert model.head.weight.shape[0] == 6
    batch = Batch(["u1", "u2", "u3"], torch.randn(3, 4000) * 0.1, torch.tensor([4000, 3000, 2500]),
                  ["", "", ""], ["a", "b", "stranger"])
    out = model.compute_loss(batch)
    assert [u for u, _ in out.dropped] == ["u3"] and "stranger" in out.dropped[0][1]
    assert out.utts == 2 and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.embedding.weight.grad is not None
    none = model.compute_loss(Batch(["x"], torch.randn(1, 100), torch.tensor([100]), [""], ["stranger"]))
    assert none.loss is None and none.utts == 0


def test_config_and_training_data_errors_are_named():
    with pytest.raises(ValueError, match="model.extra"):
        SpeakerModel(small_cfg(extra={"hed": "softmax"}), ["a", "b"])
    with pytest.raises(ValueError, match="model.extra.head"):
        SpeakerModel(small_cfg(extra={"head": "arcface"}), ["a", "b"])
    with pytest.raises(ValueError, match="speed_speakers"):
        SpeakerModel(small_cfg(extra={"speed_speakers": [0.9, 1.1]}), ["a", "b"])
    no_utt2spk = [Utterance(f"u{i}", "x.wav") for i in range(3)]
    with pytest.raises(ValueError, match="utt2spk"):
        SpeakerModel.from_training_data(small_cfg(), no_utt2spk)
    utts = [Utterance("b1", "x", "", "bob"), Utterance("a1", "x", "", "al")]
    m = model_class("speaker").from_training_data(small_cfg(), utts)
    assert m.speakers == ["al", "bob"]
    assert "not one of" in m.check_utterance(Utterance("c1", "x", "", "carol"))


def test_package_round_trip_without_the_cmvn_file(tmp_path, tiny):
    model, _ = tiny
    stats = tmp_path / "cmvn.json"
    stats.write_text(json.dumps({"mean": [0.5] * 20, "std": [2.0] * 20}))
    model.cfg.features.cmvn = str(stats)
    model.frontend.load_cmvn(stats)
    path = save_package(model, tmp_path / "m.safetensors")
    stats.unlink()  # the statistics travel inside the package
    loaded = load_package(path)
    wav, lens = torch.randn(2, 3000) * 0.1, torch.tensor([3000, 2000])
    torch.testing.assert_close(loaded.embed(wav, lens), model.embed(wav, lens))
    assert loaded.speakers == ["lo", "hi"]


def test_trainer_trains_and_packages_a_speaker_model(tmp_path):
    from asr.train import train

    d = tmp_path / "wav"
    d.mkdir()
    utts = []
    for spk, f0 in (("lo", 120.0), ("hi", 400.0)):
        for i in range(6):
            p = d / f"{spk}_{i}.wav"
            save_audio(p, voice(f0, 0.25, i), SR)
            utts.append(Utterance(f"{spk}_{i}", str(p), "", spk, 0.25))
    write_data_dir(tmp_path / "train", utts[2:6] + utts[8:])
    write_data_dir(tmp_path / "dev", utts[0:2] + utts[6:8])
    cfg = small_cfg()
    cfg.train = TrainConfig(train_data=[str(tmp_path / "train")], dev_data=[str(tmp_path / "dev")], max_steps=3,
                            batch_seconds=1.5, num_workers=0, warmup_steps=1, log_every=1)
    best = train(cfg, tmp_path / "exp", device="cpu")
    assert "eer" in best and 0 <= best["eer"] <= 100
    model = load_package(tmp_path / "exp" / "model.safetensors")
    assert model.arch == "speaker"
    # the trainer fitted the scoring back-end on the 8 training utterances of the best weights
    assert model.backend == "fused" and model.info["backend"] == {"utterances": 8, "speakers": 2}
    assert model.backend_stats_transform.shape == (40, 40)
    wav = torch.from_numpy(np.stack([voice(120.0, 0.25, 9), voice(400.0, 0.25, 9)]))
    emb = model.embed(wav, torch.tensor([wav.shape[1]] * 2))
    assert emb.shape == (2, 8 + 40)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))


def make_voices(n_per: int = 6):
    """Two training voices and utterances whose mean log-mel differs within each voice (loud and
    soft takes): what WCCN is there to discount."""
    from asr.data import Batch

    wavs, spks = [], []
    for spk, f0 in (("lo", 120.0), ("hi", 400.0)):
        for i in range(n_per):
            wavs.append(torch.from_numpy(voice(f0, 0.25, i)) * (3.0 if i % 2 else 0.3))
            spks.append(spk)
    wav = torch.stack(wavs)
    return Batch([f"u{i}" for i in range(len(wavs))], wav, torch.tensor([wav.shape[1]] * len(wavs)),
                 [""] * len(wavs), spks)


@pytest.mark.parametrize("kind", ["none", "znorm", "fused", "stats"])
def test_fitted_backend_round_trips_and_stays_batch_independent(tmp_path, kind):
    torch.manual_seed(0)
    model = SpeakerModel(small_cfg(extra={"backend": kind}), ["lo", "hi"]).eval()
    raw = model.embed(make_voices().wav, make_voices().wav_lens)
    fitted = model.fit_backend([make_voices()])
    assert fitted == {"utterances": 12, "speakers": 2} and model.backend == kind
    batch = make_voices()
    wav, lens = batch.wav, batch.wav_lens.clone()
    lens[1] = 1000
    emb = model.embed(wav, lens)
    assert emb.shape == (12, {"none": 8, "znorm": 8, "fused": 48, "stats": 40}[kind])
    if kind == "none":
        torch.testing.assert_close(model.embed(batch.wav, batch.wav_lens), raw)
    alone = model.embed(wav[1:2, :1000], lens[1:2])
    torch.testing.assert_close(alone[0], emb[1], atol=1e-5, rtol=1e-5)
    path = save_package(model, tmp_path / "m.safetensors")
    loaded = load_package(path)
    assert loaded.backend == kind
    torch.testing.assert_close(loaded.embed(wav, lens), emb)


def test_stats_backend_is_the_centred_log_mel_statistics_alone():
    torch.manual_seed(0)
    model = SpeakerModel(small_cfg(extra={"backend": "stats"}), ["lo", "hi"]).eval()
    batch = make_voices()
    model.fit_backend([batch])
    x, lens = model.frontend(batch.wav, batch.wav_lens)
    st = model._spectral_stats(x, lens)
    expected = torch.nn.functional.normalize(st - st.mean(0), dim=-1)
    torch.testing.assert_close(model.embed(batch.wav, batch.wav_lens), expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # no network weight enters it
        for p in model.encoder.parameters():
            p.add_(1.0)
    torch.testing.assert_close(model.embed(batch.wav, batch.wav_lens), expected, atol=1e-5, rtol=1e-5)


def test_wccn_whitens_within_speaker_covariance_to_identity():
    torch.manual_seed(0)
    model = SpeakerModel(small_cfg(extra={"wccn_reg": 0.0}), ["lo", "hi"]).eval()
    batch = make_voices(n_per=40)
    model.fit_backend([batch])
    x, lens = model.frontend(batch.wav, batch.wav_lens)
    st = model._spectral_stats(x, lens).double()
    labels = torch.tensor([0] * 40 + [1] * 40)
    centred = st - torch.stack([st[labels == k].mean(0) for k in (0, 1)])[labels]
    w = (centred @ model.backend_stats_transform.double()).T @ (centred @ model.backend_stats_transform.double()) / 80
    torch.testing.assert_close(w, torch.eye(40, dtype=torch.float64), atol=1e-4, rtol=0)


def test_packages_from_before_backends_still_load_and_score_raw(tiny):
    model, path = tiny
    assert "backend" not in model.package_meta()
    loaded = load_package(path)
    assert loaded.backend is None
    wav, lens = torch.randn(2, 3000) * 0.1, torch.tensor([3000, 2000])
    torch.testing.assert_close(loaded.embed(wav, lens), torch.nn.functional.normalize(model(wav, lens), dim=-1))
    with pytest.raises(ValueError, match="model.extra.backend"):
        SpeakerModel(small_cfg(extra={"backend": "plda"}), ["a", "b"])
    with pytest.raises(ValueError, match="no fitted back-end"):
        loaded.use_backend("fused")
    loaded.use_backend("none")


def test_use_backend_none_scores_with_the_network_alone():
    torch.manual_seed(0)
    model = SpeakerModel(small_cfg(), ["lo", "hi"]).eval()
    batch = make_voices()
    raw = model.embed(batch.wav, batch.wav_lens)
    model.fit_backend([batch])
    assert not torch.allclose(model.embed(batch.wav, batch.wav_lens)[:, :8], raw)
    model.use_backend("none")
    torch.testing.assert_close(model.embed(batch.wav, batch.wav_lens), raw)


# -- detection metrics -----------------------------------------------------------------------

def test_eer_and_min_dcf_known_cases():
    assert eer([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0
    assert min_dcf([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0
    assert eer([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 1.0
    assert min_dcf([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == pytest.approx(1.0)  # never worse than rejecting all
    # n t n t: at threshold 0.3 one target of two is missed and one non-target of two accepted.
    assert eer([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1]) == pytest.approx(0.5)
    # Best cost: threshold 0.4, P_miss 1/2, P_fa 0 -> 0.01 * 0.5 / 0.01.
    assert min_dcf([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1]) == pytest.approx(0.5)
    assert eer([0.5] * 4, [0, 1, 0, 1]) == pytest.approx(0.5)  # ties are one threshold, not four
    rng = np.random.default_rng(0)
    labels = rng.random(20000) < 0.5
    rate, t = eer_threshold(rng.normal(labels * 2.0, 1.0), labels)  # two unit Gaussians 2 apart: EER = Phi(-1)
    assert rate == pytest.approx(0.1587, abs=0.01) and t == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="target and non-target"):
        eer([0.1, 0.2], [1, 1])


# -- enrollment database, identify, verify ---------------------------------------------------

def test_db_round_trip_merge_and_replace(tmp_path, tiny, wavs):
    model, _ = tiny
    db_path = tmp_path / "db" / "speakers.json"
    enroll(model, "lo", wavs["lo"][:2], db_path)
    enroll(model, "lo", wavs["lo"][2:3], db_path)  # merged: three files weigh the same
    enroll(model, "hi", wavs["hi"][:2], db_path)
    db = SpeakerDB.load(db_path)
    assert sorted(db.speakers) == ["hi", "lo"] and db.speakers["lo"].count == 3
    from asr.speaker_embed import embed_files

    _, emb = embed_files(model, wavs["lo"][:3])
    np.testing.assert_allclose(db.speakers["lo"].mean, emb.mean(0), atol=1e-6)
    assert abs(np.linalg.norm(db.speakers["lo"].embedding) - 1) < 1e-6
    enroll(model, "lo", wavs["lo"][3:], db_path, replace=True)
    assert SpeakerDB.load(db_path).speakers["lo"].count == 1


def test_db_write_is_atomic_and_bad_files_are_named(tmp_path, tiny, wavs, monkeypatch):
    model, _ = tiny
    db_path = tmp_path / "speakers.json"
    enroll(model, "lo", wavs["lo"][:1], db_path)
    before = db_path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        enroll(model, "hi", wavs["hi"][:1], db_path)
    monkeypatch.undo()
    assert db_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["speakers.json", "tiny.safetensors"]

    db_path.write_text("{not json")
    with pytest.raises(SpeakerDBError, match="speakers.json"):
        SpeakerDB.load(db_path)
    bad_entry = {"x": {"mean": [1], "count": 1}}  # 1 number where the database says 8
    db_path.write_text(json.dumps({"format": "asr-speakers", "version": 1, "dim": 8, "speakers": bad_entry}))
    with pytest.raises(SpeakerDBError, match="'x'"):
        SpeakerDB.load(db_path)


def test_db_refuses_another_model(tmp_path, tiny, wavs):
    model, _ = tiny
    enroll(model, "lo", wavs["lo"][:1], tmp_path / "db.json")
    other = SpeakerModel(small_cfg(), ["lo", "hi"]).eval()
    with pytest.raises(SpeakerDBError, match="enrolled with model"):
        identify(other, tmp_path / "db.json", wavs["hi"][:1])


def test_identify_threshold_gives_unknown(tmp_path, tiny, wavs):
    model, _ = tiny
    db = tmp_path / "db.json"
    enroll(model, "lo", wavs["lo"][:2], db)
    enroll(model, "hi", wavs["hi"][:2], db)
    res = identify(model, db, wavs["lo"][2:], threshold=-1.0)
    assert [r["speaker"] in ("lo", "hi") for r in res] == [True, True]
    assert set(res[0]["scores"]) == {"lo", "hi"} and res[0]["score"] == max(res[0]["scores"].values())
    assert {r["speaker"] for r in identify(model, db, wavs["lo"][2:], threshold=1.01)} == {"unknown"}
    with pytest.raises(ValueError, match="reserved"):
        enroll(model, "unknown", wavs["lo"][:1], db)
    v = verify(model, wavs["lo"][0], wavs["lo"][0], threshold=0.99)
    assert v["same"] and v["score"] == pytest.approx(1.0, abs=1e-4)



def test_batched_identification_decides_and_scores_as_clip_by_clip(tmp_path, tiny, wavs):
    from asr.speaker_db import Identifier

    model, _ = tiny
    db = tmp_path / "db.json"
    for name in ("lo", "hi", "new"):
        enroll(model, name, wavs[name][:2], db)
    d = tmp_path / "probes"
    d.mkdir()
    probes = []
    for k, f0 in enumerate(np.linspace(100.0, 800.0, 23)):  # lengths 0.3-2.5 s: several batches, much padding
        probes.append(str(d / f"p{k}.wav"))
        save_audio(probes[-1], voice(float(f0), 0.3 + 0.1 * k, k), SR)
    probes.insert(7, str(tmp_path / "missing.wav"))
    one = {}
    for p in probes:
        try:
            one[p] = identify(model, db, [p])[0]
        except ValueError:
            assert p.endswith("missing.wav")
    # some clips "unknown": a threshold in the widest gap between middle scores, far from any of them
    s = np.sort([r["score"] for r in one.values()])
    k = max(range(len(s) // 4, 3 * len(s) // 4), key=lambda i: s[i] - s[i - 1])
    threshold = float(s[k - 1] + s[k]) / 2
    failed = []
    batched = list(Identifier(model, db, threshold).files(probes, lambda p, m: failed.append(p), chunk=8,
                                                          batch_size=5))
    assert failed == [str(tmp_path / "missing.wav")] and [r["path"] for r in batched] == list(one)
    decisions = set()
    for r in batched:
        want = one[r["path"]]
        assert set(r["scores"]) == {"lo", "hi", "new"}
        assert r["scores"] == pytest.approx(want["scores"], abs=2e-4) and r["score"] == max(r["scores"].values())
        assert r["speaker"] == (max(want["scores"], key=want["scores"].get) if want["score"] >= threshold
                                else "unknown")
        decisions.add(r["speaker"])
    assert "unknown" in decisions and len(decisions) >= 2


def bad_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    return [str(tmp_path / "missing.wav"), str(empty), str(text)]


def main(argv: list[str]) -> int:
    return cli.main(["speaker", *argv])


def test_cli_bad_input_is_named_and_the_rest_processed(tmp_path, tiny, wavs, capsys):
    _, pkg = tiny
    db = str(tmp_path / "db.json")
    bad = bad_files(tmp_path)
    assert main(["enroll", "--model", str(pkg), "--db", db, "--name", "lo", *wavs["lo"][:2], bad[0]]) == 1
    assert "missing.wav: no such file" in capsys.readouterr().err
    assert SpeakerDB.load(db).speakers["lo"].count == 2
    assert main(["enroll", "--model", str(pkg), "--db", db, "--name", "hi", *wavs["hi"][:2]]) == 0
    capsys.readouterr()

    assert main(["identify", "--model", str(pkg), "--db", db, wavs["lo"][3], *bad, wavs["hi"][3]]) == 1
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in lines] == [wavs["lo"][3], wavs["hi"][3]]
    assert all(set(r) == {"path", "speaker", "score", "scores"} for r in lines)
    for name, why in (("missing.wav", "no such file"), ("empty.wav", "empty file"),
                      ("notes.wav", "not readable as audio")):
        assert f"{name}: {why}" in err

    assert main(["verify", "--model", str(pkg), wavs["lo"][0], bad[1]]) == 2
    assert "empty.wav" in capsys.readouterr().err
    assert main(["verify", "--model", str(pkg), "--threshold", "-1", wavs["lo"][0], wavs["lo"][1]]) == 0
    assert capsys.readouterr().out.split()[1] == "same"
    # Nothing readable: an error, and the database keeps what it had.
    assert main(["enroll", "--model", str(pkg), "--db", db, "--name", "ghost", *bad]) == 2
    assert "ghost" not in SpeakerDB.load(db).speakers
    assert main(["identify", "--model", str(pkg), "--db", str(tmp_path / "none.json"), wavs["lo"][0]]) == 2
    assert "no speakers enrolled" in capsys.readouterr().err


def test_cli_hook_for_asr_cli(tmp_path, tiny, wavs, monkeypatch):
    _, pkg = tiny
    ap = argparse.ArgumentParser(prog="asr")
    add_speaker_commands(ap.add_subparsers(dest="command", required=True))
    monkeypatch.setenv("ASR_HOME", str(tmp_path / "home"))
    a = ap.parse_args(["speaker", "enroll", "--model", str(pkg), "--name", "lo", wavs["lo"][0]])
    assert a.func(a) == 0
    assert (tmp_path / "home" / "speakers.json").exists()  # the default database
    a = ap.parse_args(["speaker", "identify", wavs["lo"][1]])
    assert a.model == "speaker" and a.threshold is None


def test_evaluate_enrolls_new_speakers_from_test_and_writes_reports(tmp_path, tiny, wavs):
    model, _ = tiny
    enroll_utts = [Utterance(f"{s}_{i}", p, "", s, 0.5) for s in ("lo", "hi") for i, p in enumerate(wavs[s][:2])]
    test_utts = [Utterance(f"{s}_{i}", p, "", s, 0.5) for s in ("lo", "hi", "new")
                 for i, p in enumerate(wavs[s]) if s == "new" or i >= 2]
    write_data_dir(tmp_path / "enroll", enroll_utts)
    write_data_dir(tmp_path / "test", test_utts)
    res = evaluate(model, [str(tmp_path / "enroll")], [str(tmp_path / "test")], tmp_path / "out", new_speaker_utts=2)
    assert res["speakers"] == ["hi", "lo", "new"] and res["new_speakers"] == ["new"]
    assert res["identified"] == 4 + 2 and 0 <= res["acc"] <= 100 and "acc_new_speakers" in res
    assert res["eer"] is not None and res["min_dcf"] is not None
    for f in ("results.json", "identify.jsonl", "scores", "trials", "embeddings.png"):
        assert (tmp_path / "out" / f).exists(), f
    assert len((tmp_path / "out" / "trials").read_text().splitlines()) == 8 * 7 // 2


def test_trials_in_kaldi_and_voxceleb_formats(tmp_path):
    from asr.speaker_eval import read_trials

    (tmp_path / "kaldi").write_text("a b target\na c nontarget\n")
    (tmp_path / "vox").write_text("1 a b\n0 a c\n")
    assert read_trials(tmp_path / "kaldi") == read_trials(tmp_path / "vox") == [("a", "b", True), ("a", "c", False)]
    (tmp_path / "bad").write_text("1 a b\n2 a c\n")
    with pytest.raises(ValueError, match=r"bad:2: expected"):
        read_trials(tmp_path / "bad")


def test_evaluate_without_enrollment_data_enrolls_every_test_speaker(tmp_path, tiny, wavs):
    model, _ = tiny
    test_utts = [Utterance(f"{s}_{i}", p, "", s, 0.5) for s in ("lo", "hi", "new") for i, p in enumerate(wavs[s])]
    write_data_dir(tmp_path / "test", test_utts)
    (tmp_path / "trials").write_text("1 lo_0 lo_3\n0 lo_0 hi_3\n1 hi_0 hi_2\n0 new_1 hi_1\n")
    res = evaluate(model, [], [str(tmp_path / "test")], tmp_path / "out", trials_path=tmp_path / "trials",
                   new_speaker_utts=2)
    assert res["speakers"] == res["new_speakers"] == ["hi", "lo", "new"]
    assert res["identified"] == len(test_utts) - 3 * 2
    assert res["trials"] == {"file": str(tmp_path / "trials"), "target": 2, "nontarget": 2}


# -- the shipped model and speakers it never heard -------------------------------------------

SHIPPED = EMBEDDED_DIR / "digits-speaker.safetensors"


@pytest.mark.skipif(not (SHIPPED.exists() and FSDD.is_dir() and YESNO.is_dir()),
                    reason="needs the shipped digits-speaker model, FSDD and yesno")
def test_shipped_model_enrolls_a_speaker_absent_from_training(tmp_path):
    from asr.registry import load_model

    model = load_model("digits-speaker")
    db = tmp_path / "db.json"
    for spk in ("george", "jackson", "nicolas", "theo", "yweweler"):
        enroll(model, spk, [FSDD / f"{d}_{spk}_20.wav" for d in range(10)], db)
    yesno = sorted(YESNO.glob("*.wav"))  # the Kaldi yes/no speaker: not in FSDD
    enroll(model, "yesno", yesno[:5], db)
    res = identify(model, db, yesno[5:25] + [FSDD / f"{d}_theo_0.wav" for d in range(10)])
    got = [r["speaker"] for r in res]
    assert sum(s == "yesno" for s in got[:20]) >= 18, got[:20]
    assert sum(s == "theo" for s in got[20:]) >= 9, got[20:]


# -- VoxCeleb layout -> data dirs ------------------------------------------------------------

def make_voxceleb(root):
    files = []
    for spk in ("id10001", "id10002", "id10270", "id10271"):
        for vid in ("vidA-1", "vid_B"):
            for n in (1, 2):
                rel = f"{spk}/{vid}/{n:05d}.wav"
                (root / "wav" / spk / vid).mkdir(parents=True, exist_ok=True)
                save_audio(root / "wav" / rel, voice(150.0, 0.2, n), SR)
                files.append(rel)
    (root / "wav" / "id10001" / "vid_B" / "00003.wav").write_bytes(b"")  # broken: skipped, named
    (root / "veri_test2.txt").write_text(
        "1 id10270/vidA-1/00001.wav id10270/vid_B/00002.wav\n"
        "0 id10270/vidA-1/00001.wav id10271/vidA-1/00001.wav\n"
        "0 id10271/vid_B/00001.wav id10270/vid_B/00009.wav\n")  # names a missing file: left out
    (root / "iden_split.txt").write_text(  # vid_B -> dev, the rest: take 1 -> train, take 2 -> test
        "".join(f"{2 if 'vid_B' in r else 1 if r.endswith('1.wav') else 3} {r}\n" for r in files))
    return files


def test_voxceleb_prep_verification_and_identification_splits(tmp_path, capsys):
    from data_prep import voxceleb

    corpus = tmp_path / "vox"
    make_voxceleb(corpus)
    assert voxceleb.main([str(tmp_path / "veri"), "--corpus-dir", str(corpus)]) == 0
    assert "00003.wav" in capsys.readouterr().out  # the broken file is listed as skipped
    train, test = read_data_dir(tmp_path / "veri" / "train"), read_data_dir(tmp_path / "veri" / "test")
    assert {u.speaker for u in train} == {"id10001", "id10002"} and {u.speaker for u in test} == {"id10270", "id10271"}
    assert len(train) == 8 and len(test) == 8
    u = next(u for u in test if u.utt_id == "id10270-vidA-1-00001")
    assert u.text == "" and u.duration == pytest.approx(0.2) and u.audio.endswith("wav/id10270/vidA-1/00001.wav")
    assert (tmp_path / "veri" / "test" / "trials").read_text() == (
        "id10270-vidA-1-00001 id10270-vid_B-00002 target\nid10270-vidA-1-00001 id10271-vidA-1-00001 nontarget\n")

    assert voxceleb.main([str(tmp_path / "iden"), "--corpus-dir", str(corpus), "--split", "iden"]) == 0
    sizes = {s: len(read_data_dir(tmp_path / "iden" / s)) for s in ("train", "dev", "test")}
    assert sizes == {"train": 4, "dev": 8, "test": 4}
    assert voxceleb.main([str(tmp_path / "none"), "--corpus-dir", str(corpus), "--split", "none"]) == 0
    assert len(read_data_dir(tmp_path / "none" / "train")) == 16
    assert voxceleb.main([str(tmp_path / "x"), "--corpus-dir", str(tmp_path)]) == 1  # no wav/ folder
    assert "no wav/ folder" in capsys.readouterr().err

"""The kathleen TTS corpus: data prep on a fixture laid out like the real corpus (prompt list, Opus
takes with their .txt, retakes, broken and stray files), the English TTS config trained a few
steps on it, and the tts_english recipe end to end."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import soundfile as sf

from asr.datadir import read_data_dir, validate_data_dir
from data_prep import kathleen

from .test_recipes import copy_recipe, recipe_env

SR = 24000
# (prompt id, prompt text, takes as (unix time, what was read)): a0003 is read twice, the second
# take differing from the prompt as the real corpus's retakes do.
PROMPTS = [
    ("arctic_a0001", "Author of the danger trail, Philip Steels, etc.", [(1592748600, None)]),
    ("arctic_a0002", "The quick brown fox jumps over the lazy dog, Tom.", [(1592748610, None)]),
    ("arctic_a0003", "Hello, world; I need one now.",
     [(1592748620, None), (1592748900, "Hello, world; I needed one now.")]),
    ("arctic_a0004", "Lord, but I'm glad to see you again, Phil.", [(1592748630, None)]),
    ("arctic_a0005", "Will we ever forget it.", [(1592748640, None), (1592748641, None), (1592748999, None)]),
    ("arctic_a0006", "Mr Pike saw a wolf-dog at 6 o'clock.", [(1592748650, None)]),
    ("arctic_b0001", "Not at this particular case, apologized Whittemore.", [(1592748660, None)]),
    ("arctic_b0002", "Jinx quiz: vex the cozy bard.", [(1592748670, None)]),
    ("arctic_b0003", "Red-Eye screamed with sudden anguish.", [(1592748680, None), (1592748690, None)]),
    ("arctic_b0004", "A wildly exciting time was his.", [(1592748700, None)]),
]


def recording(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * (180 + 20 * seed) * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def make_kathleen(root, broken: bool = True):
    """The corpus as published here: README, cmuarctic.data, data/arctic_<id>_<take>.{opus,txt};
    with `broken`, one of each kind of bad input the preparation must name."""
    data = root / "data"
    data.mkdir(parents=True)
    lines = [f'( {pid} "{text}" )' for pid, text, _ in PROMPTS]
    if broken:
        lines.insert(3, "( arctic_a0099 unquoted text )")
    (root / "cmuarctic.data").write_text("\n".join(lines) + "\n")
    (root / "README.md").write_text("# Voice Dataset (Kathleen)\n")
    for i, (pid, text, takes) in enumerate(PROMPTS):
        for take, read in takes:
            stem = data / f"{pid}_{take}"
            sf.write(stem.with_suffix(".opus"), recording(0.5 + 0.05 * i, i), SR, format="OGG", subtype="OPUS")
            stem.with_suffix(".txt").write_text((read or text) + "\n")
    bad = {}
    if broken:
        bad["arctic_a0002_1592999999.txt"] = "no recording"
        (data / "arctic_a0002_1592999999.txt").write_text("Not at this particular case.\n")
        bad["arctic_a0004_1592999999.opus"] = "no transcript"
        sf.write(data / "arctic_a0004_1592999999.opus", recording(0.5, 1), SR, format="OGG", subtype="OPUS")
        bad["arctic_b0004_1592999999.txt"] = "empty transcript"
        (data / "arctic_b0004_1592999999.txt").write_text("  \n")
        (data / "arctic_b0004_1592999999.opus").write_bytes(data.joinpath("arctic_b0004_1592748700.opus").read_bytes())
        bad["arctic_b0002_1592999999.opus"] = "not readable as audio"
        (data / "arctic_b0002_1592999999.opus").write_bytes(b"OggS not really")
        (data / "arctic_b0002_1592999999.txt").write_text("Jinx quiz.\n")
        bad["arctic_b0003_1592999999.txt"] = "not UTF-8"
        (data / "arctic_b0003_1592999999.txt").write_bytes(b"Red-Eye \xff\xfe\n")
        (data / "arctic_b0003_1592999999.opus").write_bytes(data.joinpath("arctic_b0003_1592748680.opus").read_bytes())
        bad["arctic_c0001_1592999999.opus"] = "name is not"
        (data / "arctic_c0001_1592999999.opus").write_bytes(data.joinpath("arctic_b0003_1592748680.opus").read_bytes())
        bad["arctic_a0777_1592999999.opus"] = "not in cmuarctic.data"
        (data / "arctic_a0777_1592999999.opus").write_bytes(data.joinpath("arctic_b0003_1592748680.opus").read_bytes())
        (data / "arctic_a0777_1592999999.txt").write_text("A stray prompt.\n")
        bad["notes.doc"] = "not audio"
        (data / "notes.doc").write_text("x")
        bad["arctic_a0001_1592999999.wav"] = "shorter than"
        sf.write(data / "arctic_a0001_1592999999.wav", recording(0.05, 2), SR)
        (data / "arctic_a0001_1592999999.txt").write_text("Author.\n")
    return bad


def prompt_of(utt_id: str) -> str:
    return "arctic_" + utt_id.split("_")[1]


def prepare(corpus, out, *extra) -> int:
    return kathleen.main(["--corpus-dir", str(corpus), "--num-dev", "2", "--num-test", "3", *extra, str(out)])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("kathleen")
    bad = make_kathleen(root / "corpus")
    assert prepare(root / "corpus", root / "data") == 0
    return root, bad


def test_sets_hold_whole_prompts_and_one_take_of_each_held_out_one(prepared):
    root, _ = prepared
    sets = {s: read_data_dir(root / "data" / s) for s in ("train", "dev", "test")}
    prompts = {s: {prompt_of(u.utt_id) for u in utts} for s, utts in sets.items()}
    assert len(prompts["dev"]) == 2 and len(prompts["test"]) == 3
    assert not (prompts["train"] & prompts["dev"]) and not (prompts["train"] & prompts["test"])
    assert not (prompts["dev"] & prompts["test"])
    assert prompts["train"] | prompts["dev"] | prompts["test"] == {p for p, _, _ in PROMPTS}
    for s in ("dev", "test"):
        assert len(sets[s]) == len(prompts[s])  # one take per held-out prompt
    takes = {pid: [t for t, _ in tk] for pid, _, tk in PROMPTS}
    by_id = {u.utt_id: u for utts in sets.values() for u in utts}
    for u in sets["dev"] + sets["test"]:
        assert int(u.utt_id.rsplit("_", 1)[1]) == max(takes[prompt_of(u.utt_id)])  # the latest take
    # every good take of a training prompt trains, each transcript as read (case, punctuation)
    assert sum(len(takes[p]) for p in prompts["train"]) == len(sets["train"])
    if "arctic_a0003" in prompts["train"]:
        assert by_id["kathleen_a0003_1592748900"].text == "Hello, world; I needed one now."
    for u in by_id.values():
        assert u.speaker == "kathleen" and u.duration == pytest.approx(0.5, abs=0.5) and u.audio.endswith(".opus")
    for s in sets:
        assert validate_data_dir(root / "data" / s) == [], s


def test_bad_input_is_named_and_counted(prepared):
    root, bad = prepared
    log = (root / "data" / "prepare.log").read_text()
    skipped = [line for line in log.splitlines() if "WARNING skipping" in line]
    for name, why in bad.items():
        assert any(name in line and why in line for line in skipped), (name, why)
    assert any("cmuarctic.data:4" in line and "expected" in line for line in skipped)
    # the line count adds the two files of each stray pair whose both halves are unusable
    assert f"skipped {len(skipped)} broken or unexpected file(s)" in log
    assert len(skipped) == len(bad) + 1 + 1  # + the bad prompt line + the stray prompt's .txt


def test_the_split_is_of_the_prompt_list_not_of_the_files_on_disk(prepared, tmp_path):
    root, _ = prepared
    held = lambda d: {s: sorted(prompt_of(u.utt_id) for u in read_data_dir(d / s)) for s in ("dev", "test")}
    first = held(root / "data")
    corpus = tmp_path / "corpus"
    make_kathleen(corpus, broken=False)
    gone = next(p for p, _, _ in PROMPTS if p not in first["dev"] + first["test"])
    for p in (corpus / "data").glob(f"{gone}_*"):  # every take of a training prompt missing
        p.unlink()
    assert prepare(corpus, tmp_path / "d1") == 0
    assert held(tmp_path / "d1") == first
    assert prepare(corpus, tmp_path / "d2", "--seed", "7") == 0
    assert held(tmp_path / "d2") != first


def test_impossible_split_and_missing_prompt_list_fail_naming_them(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    make_kathleen(corpus, broken=False)
    assert kathleen.main(["--corpus-dir", str(corpus), "--num-dev", "5", "--num-test", "5", str(tmp_path / "a")]) == 1
    assert "10 prompts cannot give 5 dev + 5 test" in capsys.readouterr().err
    (corpus / "cmuarctic.data").unlink()
    assert prepare(corpus, tmp_path / "b") == 1
    assert "cmuarctic.data: missing" in capsys.readouterr().err


# -- the English TTS config on the fixture ---------------------------------------------------------

def test_english_tts_config_trains_a_few_steps_and_reads_english(prepared, tmp_path):
    """conf/tts_english/kathleen.yaml as shipped (only the data paths and the step count
    changed) through the one trainer; the model reads English text and says a paragraph."""
    from asr.config import load_config
    from asr.package import load_package
    from asr.synthesize import synthesize
    from asr.train import train

    from .conftest import ROOT

    root, _ = prepared
    cfg = load_config(ROOT / "conf" / "tts_english" / "kathleen.yaml",
                      [f"train.train_data=[{root / 'data' / 'train'}]", f"train.dev_data=[{root / 'data' / 'dev'}]",
                       "train.max_steps=3", "train.num_workers=0", "train.log_every=1"])
    best = train(cfg, tmp_path / "exp", device="cpu")
    assert best["step"] == 3 and np.isfinite(best["loss"])
    rows = (tmp_path / "exp" / "train_log.csv").read_text().splitlines()
    assert len([r for r in rows if ",train," in r]) == 3
    model = load_package(tmp_path / "exp" / "model.safetensors")
    assert model.extra["text"] == "english" and model.cfg.features.sample_rate == 16000
    assert not any(c.isupper() for c in model.vocab.tokens[1:])  # lower-cased
    assert 0 < model.steps_per_symbol < 10  # measured on the training takes, packaged
    assert model.prepare_text("Hello, world!") == "hello, world."  # "!" never trained: said as "."
    s = synthesize(model, "Hello, world. I need one now.", max_steps=4)
    assert s.text == "hello, world. i need one now." and s.sample_rate == 16000
    assert s.alignment.shape[1] == len("hello, world.") + 1 + len("i need one now.") + 1  # two sentences
    first = synthesize(model, "Hello, world.", max_steps=4)
    n, gap = len(first.wav), int(0.3 * 16000)
    np.testing.assert_array_equal(s.wav[:n], first.wav)  # said one by one, a pause between
    assert not s.wav[n:n + gap].any() and s.wav[n + gap:].any()


# -- the recipe ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_tts_english_recipe_on_the_fixture(tmp_path):
    corpus = tmp_path / "corpus"
    make_kathleen(corpus)
    d = copy_recipe(tmp_path, "tts_english")
    res = subprocess.run(
        ["bash", "run.sh", "--corpus-dir", str(corpus), "--num-dev", "2", "--num-test", "3", "--asr-model", "digits",
         "--train-args", "train.max_steps=2 train.num_workers=0 model.extra.max_decoder_steps=30"],
        cwd=d, env=recipe_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r = json.loads((d / "exp/kathleen/eval_test/results.json").read_text())
    assert r["utterances"] == len(read_data_dir(d / "data" / "test")) > 0
    results = (d / "RESULTS.md").read_text()
    assert "synthesized CER / real CER (target <= 1.5)" in results and "%CER" in results
    assert len(list((d / "exp/kathleen/eval_test/plots").glob("*.png"))) == r["utterances"]
    assert (d / "exp/kathleen/english-tts.safetensors").exists()
    assert {p.name for p in (d / "exp/kathleen/samples").iterdir()} == {"hello.wav", "numbers.wav", "paragraph.wav"}

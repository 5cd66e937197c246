"""The embedded models reproduce the figures they were shipped with, on the test sets their recipes
scored them on.

The expected figure is read from one place: the `result` the recipe recorded in the package's own
header (`info.result`, written by `asr package --info result=...` from the recipe's score files),
so a model shipped later is checked against its own numbers with no edit here. The README must
quote that same figure. Each margin is a few words of the test set: on the machine that measured
them the numbers reproduce exactly; another CPU's float rounding may flip a near-tie or two.
"""
import json
import re

import pytest

from asr import cli
from asr.datadir import read_data_dir
from asr.metrics import corpus_wer
from asr.package import read_header
from asr.registry import load_model, resolve
from asr.speaker_eval import evaluate as evaluate_speakers
from asr.synthesize import synthesize
from asr.transcribe import Transcriber
from data_prep import fsdd

from .conftest import FSDD, ROOT, needs_fsdd

pytestmark = needs_fsdd

README = (ROOT / "README.md").read_text(encoding="utf-8")


def shipped_figure(name: str, pattern: str) -> float:
    """A number out of the `result` recorded in the embedded package `name`."""
    result = json.loads(read_header(resolve(name))["info"]).get("result", "")
    m = re.search(pattern, result)
    assert m, f"{name}: its recorded result {result!r} has no figure matching {pattern!r}"
    return float(m[1])


def prepare_fsdd(out, *args) -> None:
    # the recipes' stage 0: same splits by take, same seeded connected-digit strings
    assert fsdd.main(["--corpus-dir", str(FSDD.parent), "--num-conn-train", "0", "--num-conn-dev", "0",
                      *args, str(out)]) == 0


@pytest.fixture(scope="module")
def fsdd_data(tmp_path_factory):
    """recipes/digits and recipes/speaker_digits data: test = takes 0-4 of all five speakers
    (250 files), test_conn = 500 strings spliced from them."""
    out = tmp_path_factory.mktemp("fsdd") / "data"
    prepare_fsdd(out, "--num-conn-test", "500")
    return out


def decoded_wer(data_dir, out_dir) -> tuple[float, int, int]:
    """`asr decode --model digits` as recipes/digits stage 3 runs it (the package's own decoder
    settings: tuned lexicon beam with its LM): (WER %, errors, words) from the Kaldi wer file."""
    assert cli.main(["decode", "--model", "digits", "--data", str(data_dir), "--out-dir", str(out_dir)]) == 0
    line = (out_dir / "wer").read_text().splitlines()[0]
    m = re.match(r"%WER ([\d.]+) \[ (\d+) / (\d+)", line)
    assert m, line
    return float(m[1]), int(m[2]), int(m[3])


def test_digits_on_the_250_isolated_test_takes(fsdd_data, tmp_path):
    expected = shipped_figure("digits", r"\btest %WER ([\d.]+)")
    assert len(read_data_dir(fsdd_data / "test")) == 250
    wer, errors, words = decoded_wer(fsdd_data / "test", tmp_path / "decode_test")
    assert words == 250
    assert abs(wer - expected) <= 0.4, f"{errors} errors: {wer:.2f} %, shipped as {expected:.2f} %"  # 1 word
    assert f"test {expected:.2f} %" in README


def test_digits_on_the_500_spliced_test_strings(fsdd_data, tmp_path):
    expected = shipped_figure("digits", r"\btest_conn %WER ([\d.]+)")
    assert len(read_data_dir(fsdd_data / "test_conn")) == 500
    wer, errors, words = decoded_wer(fsdd_data / "test_conn", tmp_path / "decode_test_conn")
    assert abs(wer - expected) <= 0.25, f"{errors}/{words} errors: {wer:.2f} %, shipped as {expected:.2f} %"  # ~5 words
    assert f"strings {expected:.2f} %" in README


def test_digits_speaker_accuracy_and_eer(fsdd_data, tmp_path):
    # recipes/speaker_digits stage 3: enrolled from the training takes, takes 0-4 identified and
    # all their 31,125 pairs scored
    acc = shipped_figure("digits-speaker", r"\bacc ([\d.]+) %")
    eer = shipped_figure("digits-speaker", r"\bEER ([\d.]+) %")
    res = evaluate_speakers(load_model("digits-speaker"), [str(fsdd_data / "train")], [str(fsdd_data / "test")],
                            tmp_path / "eval")
    assert res["identified"] == 250 and res["trials"]["target"] + res["trials"]["nontarget"] == 250 * 249 // 2
    assert abs(res["acc"] - acc) <= 0.4, res["acc"]  # one utterance of 250
    assert abs(res["eer"] - eer) <= 0.1, res["eer"]  # a few of 6,125 target trials
    assert f"EER {eer:.2f} %" in README


@pytest.mark.slow
def test_digits_tts_intelligibility(tmp_path):
    # recipes/tts_digits stage 2, the intelligibility part (MCD and copy synthesis left out: they
    # double the time): jackson's 200 test strings synthesized with seed 0, transcribed by `digits`.
    # The figure depends on the ASR model too: shipping a new `digits` can move it.
    expected = shipped_figure("digits-tts", r"\bASR WER ([\d.]+) %")
    prepare_fsdd(tmp_path / "data", "--speakers", "jackson", "--num-conn-test", "200")
    utts = read_data_dir(tmp_path / "data" / "test_conn")
    tts = load_model("digits-tts")
    synthesized = [(u.utt_id, synthesize(tts, u.text, seed=0).wav) for u in utts]
    hyps = [t.text for t in Transcriber(load_model("digits")).transcribe_arrays(synthesized, sample_rate=tts.cfg.features.sample_rate)]
    stats = corpus_wer([u.text for u in utts], hyps)
    assert len(utts) == 200
    assert abs(stats.rate - expected) <= 0.25, stats.kaldi_line()  # 2 words of 800
    assert f"{expected:.2f} % WER" in README

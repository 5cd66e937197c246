import random
import subprocess
import sys
from pathlib import Path

import pytest

from asr.metrics import ErrorStats, align, char_errors, corpus_cer, corpus_wer, score, word_errors

jiwer = pytest.importorskip("jiwer")

CASES = [
    ("the cat sat on the mat", "the cat sat on mat"),
    ("the cat sat on the mat", "a cat sat on the the mat"),
    ("hello world", "hello word"),
    ("a b c", "a c d"),
    ("one two three four", "four three two one"),
    ("the the the", "the"),
    ("i think therefore i am", "i think there for i am"),
    ("ça va très bien", "ca va très bien merci"),
    ("日本 語 の テスト", "日本 語 テスト です"),
]


def _jiwer_words(ref, hyp):
    o = jiwer.process_words(ref, hyp)
    return o.substitutions + o.deletions + o.insertions, o.insertions, o.deletions, o.substitutions


def _jiwer_chars(ref, hyp):
    o = jiwer.process_characters(ref, hyp)
    return o.substitutions + o.deletions + o.insertions, o.insertions, o.deletions, o.substitutions


def _counts(s: ErrorStats):
    return s.errors, s.ins, s.dels, s.subs


@pytest.mark.parametrize("ref,hyp", CASES)
def test_word_and_char_counts_match_jiwer(ref, hyp):
    w = word_errors(ref, hyp)
    assert _counts(w) == _jiwer_words(ref, hyp)
    assert w.rate == pytest.approx(100 * jiwer.wer(ref, hyp))
    c = char_errors(ref, hyp)
    assert _counts(c) == _jiwer_chars(ref, hyp)
    assert c.rate == pytest.approx(100 * jiwer.cer(ref, hyp))


def test_random_token_lists_match_jiwer_split():
    # the ins/del/sub split, not only the total, follows jiwer's tie-breaking
    rng = random.Random(0)
    for _ in range(500):
        ref = " ".join(rng.choice("abcd") for _ in range(rng.randint(1, 10)))
        hyp = " ".join(rng.choice("abcd") for _ in range(rng.randint(0, 10)))
        assert _counts(word_errors(ref, hyp)) == _jiwer_words(ref, hyp), (ref, hyp)


def test_corpus_rates_match_jiwer():
    refs, hyps = zip(*CASES)
    assert corpus_wer(refs, hyps).rate == pytest.approx(100 * jiwer.wer(list(refs), list(hyps)))
    assert corpus_cer(refs, hyps).rate == pytest.approx(100 * jiwer.cer(list(refs), list(hyps)))
    with pytest.raises(ValueError, match="refs has 2 sentences but hyps has 1"):
        corpus_wer(["a", "b"], ["a"])


def test_alignment_ops():
    assert align("a b c d".split(), "a x c d e".split()) == [
        ("ok", "a", "a"), ("sub", "b", "x"), ("ok", "c", "c"), ("ok", "d", "d"), ("ins", None, "e")]
    assert align([], ["x"]) == [("ins", None, "x")]
    assert align(["x"], []) == [("del", "x", None)]
    assert align([], []) == []


def test_empty_reference_and_hypothesis():
    assert word_errors("", "") == ErrorStats(0, 0, 0, 0, 0)
    assert word_errors("", "").rate == 0.0
    empty_ref = word_errors("", "a b")
    assert (empty_ref.errors, empty_ref.ins, empty_ref.total) == (2, 2, 0)
    assert empty_ref.rate == pytest.approx(100 * jiwer.wer("", "a b")) == 200.0
    assert word_errors("a b c", "   ") == ErrorStats(3, 3, 0, 3, 0)
    assert char_errors("  ab ", "ab") == ErrorStats(0, 2)


def test_kaldi_line_format():
    s = ErrorStats(errors=12, total=975, ins=3, dels=4, subs=5)
    assert s.kaldi_line() == "%WER 1.23 [ 12 / 975, 3 ins, 4 del, 5 sub ]"
    assert s.kaldi_line("CER").startswith("%CER 1.23 [")
    assert (s + ErrorStats(1, 25, 1, 0, 0)).kaldi_line() == "%WER 1.30 [ 13 / 1000, 4 ins, 4 del, 5 sub ]"


def test_score_files_and_missing_hyp(tmp_path):
    refs = {"u1": "hello world", "u2": "naïve café", "u3": "not decoded"}
    hyps = {"u1": "hello word", "u2": "naïve café", "extra": "x"}
    stats = score(refs, hyps, tmp_path)
    assert (stats.errors, stats.total, stats.dels, stats.subs) == (3, 6, 2, 1)
    wer = (tmp_path / "wer").read_text(encoding="utf-8").splitlines()
    assert wer[0] == "%WER 50.00 [ 3 / 6, 0 ins, 2 del, 1 sub ]"
    assert wer[1] == "%SER 66.67 [ 2 / 3 ]"
    assert wer[2].startswith("%CER ")
    assert any("u3" in line and "deletions" in line for line in wer)
    per_utt = (tmp_path / "per_utt").read_text(encoding="utf-8").splitlines()
    assert per_utt[:4] == ["u1 ref   hello world", "u1 hyp   hello word", "u1 op    C     S",
                           "u1 #csid 1 1 0 0"]
    assert "u3 hyp   *** ***" in per_utt
    assert "u3 #csid 0 0 0 2" in per_utt


def test_cli(tmp_path: Path):
    (tmp_path / "ref").write_text("u1 a b c\nu2 d e\n", encoding="utf-8")
    (tmp_path / "hyp").write_text("u1 a b\nu2 d e f\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "asr", "score", str(tmp_path / "ref"),
                          str(tmp_path / "hyp"), str(tmp_path / "dec")],
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "%WER 40.00 [ 2 / 5, 1 ins, 1 del, 0 sub ]"
    assert (tmp_path / "dec" / "per_utt").exists()

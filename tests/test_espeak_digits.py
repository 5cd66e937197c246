"""data_prep.espeak for digits: the ten digit words said by many voices (--repeat-sentences,
--all-voices), the synthetic training speakers of recipes/digits' leave-one-speaker-out option."""
import shutil

import pytest
import soundfile as sf

from asr.datadir import read_data_dir, validate_data_dir
from data_prep import espeak

DIGITS = "zero one two three four five six seven eight nine".split()


def test_all_voices_draws_from_every_accent_and_variant():
    accents, variants = espeak.voices("train", all_voices=True)
    assert set(accents) == set(espeak.TRAIN_ACCENTS) | {espeak.DEV_ACCENT, espeak.TEST_ACCENT}
    assert sorted(variants) == sorted(espeak.VARIANTS)
    assert espeak.voices("train") == (espeak.accents("train"), espeak.split_variants()["train"])


def test_digit_lines_are_sentences_as_they_are():
    split = espeak.split_text(["three one four", "nine"], 1, 7, {"dev": 0, "test": 0}, seed=0)
    assert split.sentences["train"] == ["three one four", "nine"]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_ten_digit_words_fill_a_larger_set_with_repeat_sentences(tmp_path):
    text = tmp_path / "digits.txt"
    text.write_text("\n".join(DIGITS) + "\n")
    common = ["--text", str(text), "--num-dev", "0", "--num-test", "0", "--min-words", "1",
              "--max-words", "1", "--sample-rate", "8000", "--jobs", "1", "--all-voices"]
    # without --repeat-sentences 12 utterances cannot come from 10 distinct lines
    assert espeak.main(common + ["--num-train", "12", str(tmp_path / "no")]) == 1
    assert espeak.main(common + ["--num-train", "12", "--repeat-sentences", str(tmp_path / "data")]) == 0
    utts = read_data_dir(tmp_path / "data" / "train")
    assert len(utts) == 12 and {u.text for u in utts} <= set(DIGITS)
    assert validate_data_dir(tmp_path / "data" / "train") == []
    wav, sr = sf.read(utts[0].audio)
    assert sr == 8000 and 0.1 < len(wav) / sr < 3
    # deterministic: the same seed gives the same words and voices
    assert espeak.main(common + ["--num-train", "12", "--repeat-sentences", str(tmp_path / "again")]) == 0
    again = read_data_dir(tmp_path / "again" / "train")
    assert [(u.text, u.speaker) for u in again] == [(u.text, u.speaker) for u in utts]

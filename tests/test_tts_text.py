"""English text normalisation for TTS (asr.tts_text), the frontend choice of a tts model, and
`asr synthesize` on English text: sentence by sentence, the refusal of a digits-only model."""
import numpy as np
import pytest
import torch

from asr import cli
from asr.models.tts import TTSModel
from asr.package import save_package
from asr.synthesize import synthesize, text_pieces
from asr.text import Vocabulary
from asr.tts_text import (cardinal, fallback_punctuation, normalize_english, ordinal, spoken_words, split_text,
                          year)

from .test_tts import tiny_cfg


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("n,words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (42, "forty two"), (100, "one hundred"),
    (101, "one hundred one"), (999, "nine hundred ninety nine"), (1000, "one thousand"),
    (1024, "one thousand twenty four"), (20_000, "twenty thousand"), (1_000_001, "one million one"),
    (3_400_000_000, "three billion four hundred million"),
    (999_999_999_999_999, "nine hundred ninety nine trillion nine hundred ninety nine billion nine hundred ninety "
                          "nine million nine hundred ninety nine thousand nine hundred ninety nine"),
])
def test_cardinal(n, words):
    assert cardinal(n) == words


def test_cardinal_range_is_checked():
    with pytest.raises(ValueError, match="negative"):
        cardinal(-1)
    with pytest.raises(ValueError, match="too large"):
        cardinal(10**15)


@pytest.mark.parametrize("n,words", [
    (1, "first"), (2, "second"), (3, "third"), (4, "fourth"), (5, "fifth"), (8, "eighth"), (9, "ninth"),
    (12, "twelfth"), (20, "twentieth"), (21, "twenty first"), (100, "one hundredth"), (1003, "one thousand third"),
])
def test_ordinal(n, words):
    assert ordinal(n) == words


@pytest.mark.parametrize("n,words", [
    (1984, "nineteen eighty four"), (1900, "nineteen hundred"), (1805, "eighteen oh five"),
    (2000, "two thousand"), (2005, "two thousand five"), (2010, "twenty ten"), (2024, "twenty twenty four"),
    (1100, "eleven hundred"),
])
def test_year(n, words):
    assert year(n) == words


CASES = [
    # titles, abbreviations and what their periods mean
    ("Dr. Smith met Mr. and Mrs. Jones.", "doctor smith met mister and missus jones."),
    ("Mr Pike nodded.", "mister pike nodded."),  # British: no period
    ("Author of the danger trail, Philip Steels, etc.", "author of the danger trail, philip steels, et cetera."),
    ("Apples, pears, etc., were sold.", "apples, pears, et cetera, were sold."),
    ("Bring food, water, etc. and a map.", "bring food, water, et cetera and a map."),
    ("We ran, etc. Then we slept.", "we ran, et cetera. then we slept."),
    ("St. John lives on Main St.", "saint john lives on main street."),
    ("Main St. is closed.", "main street is closed."),
    ("Bob Smith Jr. arrived.", "bob smith junior arrived."),
    ("Gen. Grant; Col. Mustard, Prof. Plum.", "general grant; colonel mustard, professor plum."),
    ("Cats vs. dogs, e.g. mine, i.e. yours.", "cats versus dogs, for example mine, that is yours."),
    ("On Dec. 3rd we met.", "on december third we met."),
    ("They mar the table and dec the halls.", "they mar the table and dec the halls."),  # words, not abbreviations
    ("The U.S.A. and the U.K.", "the u s a and the u k."),
    # numbers
    ("I have 3 cats and 1,024 fish.", "i have three cats and one thousand twenty four fish."),
    ("It is 3.14 or .5 of it.", "it is three point one four or point five of it."),
    ("He came 1st, she 22nd, they 103rd.", "he came first, she twenty second, they one hundred third."),
    ("In 1984 and 1,984 and 2005.",
     "in nineteen eighty four and one thousand nine hundred eighty four and two thousand five."),
    ("The 1990s and the '60s and 80s.", "the nineteen nineties and the sixties and eighties."),
    ("It was -5 degrees.", "it was minus five degrees."),
    ("Agent 007, code 0451.", "agent zero zero seven, code zero four five one."),
    ("Call 1234567890123456.", "call one two three four five six seven eight nine zero one two three four five six."),
    ("Up 50% or 2.5 %.", "up fifty percent or two point five percent."),
    ("It cost $3.50, $1, $0.99 and $2 million.",
     "it cost three dollars fifty cents, one dollar, ninety nine cents and two million dollars."),
    ("Only £5 or €1.01.", "only five pounds or one euro one cent."),
    ("$1,000,000 exactly.", "one million dollars exactly."),
    ("At 3:00, 3:05 and 10:30.", "at three o'clock, three oh five and ten thirty."),
    ("Meet at 6:30 p.m. on Monday.", "meet at six thirty p m on monday."),
    ("We left at 7:15 am.", "we left at seven fifteen a m."),
    ("We left at 9:00 P.M.", "we left at nine p m."),
    ("See No. 5 and #2.", "see number five and number two."),
    # symbols, punctuation for phrasing
    ("Salt & pepper @ home + more = fun", "salt and pepper at home plus more equals fun"),
    ("If you mean to insinuate -- Brentwood began hotly.", "if you mean to insinuate, brentwood began hotly."),
    ("Wait\u2014what? No\u2013never!", "wait, what? no, never!"),
    ("I was sick once (typhoid) then.", "i was sick once, typhoid, then."),
    ("He said (quietly).", "he said, quietly."),
    ("\u201cHello,\u201d she said, \u2018yes\u2019\u2026", "hello, she said, 'yes'..."),
    ("A wolf-dog and a re-entered room.", "a wolf-dog and a re-entered room."),
    ("Caf\u00e9 na\u00efve r\u00e9sum\u00e9.", "cafe naive resume."),
    ("  Lots   of\tspace  ", "lots of space"),
    ("Ready: set; go!", "ready: set; go!"),
    ("", ""),
]


@pytest.mark.parametrize("written,spoken", CASES)
def test_normalize_english(written, spoken):
    assert normalize_english(written) == spoken


@pytest.mark.parametrize("written,spoken", CASES)
def test_normalising_twice_changes_nothing(written, spoken):
    assert normalize_english(spoken) == spoken


def test_what_cannot_be_read_is_kept_to_be_named():
    # not silently dropped: the model names these as characters it cannot say
    assert normalize_english("I \u2665 \u00a7 5") == "i \u2665 \u00a7 five"
    assert normalize_english("\u041c\u0438\u0440") == "\u043c\u0438\u0440"


def test_fallback_punctuation_uses_the_nearest_known_mark():
    symbols = set("abc ,.")
    assert fallback_punctuation("a? b! c: a; b.", symbols) == "a. b. c, a, b."
    assert fallback_punctuation("a; b", symbols | {";"}) == "a; b"  # known: kept
    assert fallback_punctuation("a! b", set("ab ")) == "a! b"  # nothing near is known: left to be named


def test_spoken_words_are_what_an_asr_model_writes():
    assert spoken_words("o'brien, sir. 'tis the boys' toy-box!") == "o'brien sir tis the boys toy box"
    assert spoken_words("three one four") == "three one four"


def test_split_text_into_sentences_then_clauses():
    text = "one two. three, four, five six; seven eight nine ten. eleven?"
    assert split_text(text, 100) == ["one two.", "three, four, five six; seven eight nine ten.", "eleven?"]
    assert split_text(text, 20) == ["one two.", "three, four,", "five six;", "seven eight nine ten.", "eleven?"]
    # a clause with no break to cut at stays whole (and is then too long: the caller says so)
    assert split_text("a very long clause without any break", 10) == ["a very long clause without any break"]
    assert split_text("", 10) == []


# -- a tts model that reads English ----------------------------------------------------------------

ENGLISH = ["hello, world.", "the quick brown fox jumps over the lazy dog; i'm glad.", "o'brien - yes, sir."]


def english_model(**extra) -> TTSModel:
    torch.manual_seed(0)
    return TTSModel(tiny_cfg(text="english", **extra), Vocabulary.from_texts(ENGLISH), ["a"],
                    steps_per_symbol=1.0).eval()


def test_an_english_model_reads_written_english():
    model = english_model()
    assert model.prepare_text("Hello, Dr. Brown! It's 5:30?") == "hello, doctor brown. it's five thirty."
    with pytest.raises(ValueError, match=r"'\u2665'") as e:
        model.prepare_text("I \u2665 you")
    assert "digits-only" not in str(e.value)


def test_the_frontend_is_checked_and_old_packages_read_digits():
    with pytest.raises(ValueError, match="model.extra.text.*'klingon'.*digits.*english"):
        TTSModel(tiny_cfg(text="klingon"), Vocabulary.from_texts(ENGLISH), ["a"])
    old = TTSModel(tiny_cfg(), Vocabulary.from_texts(["one two"]), ["a"])  # no extra.text: as before
    assert old.extra["text"] == "digits" and old.prepare_text("12") == "one two" and old.steps_per_symbol is None


def test_a_digits_only_model_refuses_english_saying_so(tmp_path, capsys):
    digits = TTSModel(tiny_cfg(), Vocabulary.from_texts(["zero one two three four five six seven eight nine"]), ["a"])
    path = save_package(digits.eval(), tmp_path / "d.safetensors")
    assert cli.main(["synthesize", "--model", str(path), "--text", "Hello, world.", "-o", str(tmp_path / "o.wav")]) == 2
    err = capsys.readouterr().err
    assert "'l'" in err and "digits-only model" in err and "recipes/tts_english" in err
    assert not (tmp_path / "o.wav").exists()


def test_a_paragraph_is_said_sentence_by_sentence(tmp_path, capsys):
    model = english_model(max_decoder_steps=20)  # 20 symbols a piece at 1 step per symbol
    assert text_pieces(model, "Hello, world. I'm glad, sir; yes, the dog.") == [
        "hello, world.", "i'm glad, sir; yes,", "the dog."]
    s = synthesize(model, "Hello, world. Yes, sir.", seed=3)
    one = synthesize(model, "Hello, world.", seed=3)
    assert s.text == "hello, world. yes, sir." and s.alignment.shape[1] == len("hello, world.") + len("yes, sir.") + 2
    steps = one.alignment.shape[0]
    np.testing.assert_array_equal(s.alignment[:steps, : len("hello, world.") + 1], one.alignment)
    assert not s.alignment[:steps, len("hello, world.") + 1:].any()  # each piece attends to its own text only
    path = save_package(model, tmp_path / "en.safetensors")
    out = tmp_path / "p.wav"
    paragraph = "The quick brown fox. The lazy dog, the fox; the dog. Hello, world."  # 61 symbols, 20 a piece
    assert cli.main(["synthesize", "--model", str(path), "--text", paragraph, "-o", str(out), "--allow-cut"]) == 0
    assert out.exists() and "the quick brown fox. the lazy dog," in capsys.readouterr().out
    # a clause longer than the model can say, with nowhere to cut it: refused before any work
    assert cli.main(["synthesize", "--model", str(path), "--text", "The quick brown fox jumps over the lazy dog.",
                     "-o", str(tmp_path / "q.wav")]) == 2
    err = capsys.readouterr().err
    assert "44 characters without a sentence or clause break" in err and "--max-steps" in err
    assert not (tmp_path / "q.wav").exists()

"""Token vocabularies taken from the training text: any Unicode, multi-character tokens allowed."""
from __future__ import annotations

import unicodedata

BLANK = "<blank>"
SPACE = " "


class VocabularyError(ValueError):
    pass


class Vocabulary:
    """Blank at id 0 (CTC's convention here and in ctcdecode), then the tokens.

    Tokens are characters by default; a token list may also hold multi-character units (the
    encoder then matches the longest token first), so a new language needs no code change.
    With unit="word" every token is a whole word, and the space between words stays a token: a
    repeated word ("yes yes") then has a label between its copies to align to, which CTC learns
    more easily than a blank there. Decoding joins words with single spaces whether or not the
    model emitted the space.
    """

    def __init__(self, tokens: list[str], unit: str = "char"):
        if unit not in ("char", "word"):
            raise VocabularyError(f"model.unit: {unit!r} is not one of ['char', 'word']")
        self.unit = unit
        if not tokens or tokens[0] != BLANK:
            tokens = [BLANK] + [t for t in tokens if t != BLANK]
        if len(set(tokens)) != len(tokens):
            raise VocabularyError("vocabulary has duplicate tokens")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self._max_len = max(len(t) for t in self.tokens[1:]) if len(self.tokens) > 1 else 1

    @classmethod
    def from_texts(cls, texts, unit: str = "char") -> "Vocabulary":
        """unit "char": every character is a token; "word": every word is one, plus the space
        between words (a closed-vocabulary task such as yes/no needs nothing finer)."""
        units = set()
        for text in texts:
            text = normalize(text)
            units.update(text if unit == "char" else text.split() + ([SPACE] if SPACE in text else []))
        return cls([BLANK] + sorted(units), unit)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def space_id(self) -> int | None:
        return self.index.get(SPACE)

    def encode(self, text: str, utt_id: str = "") -> list[int]:
        text = normalize(text)
        where = f"utterance {utt_id}: " if utt_id else ""
        if self.unit == "word":
            unknown = [w for w in text.split() if w not in self.index]
            if unknown:
                raise VocabularyError(f"{where}word(s) {unknown[:5]} not in the model's vocabulary")
            ids = []
            for w in text.split():
                if ids and self.space_id is not None:
                    ids.append(self.space_id)
                ids.append(self.index[w])
            return ids
        ids, i = [], 0
        while i < len(text):
            for n in range(min(self._max_len, len(text) - i), 0, -1):
                tid = self.index.get(text[i:i + n])
                if tid is not None:
                    ids.append(tid)
                    i += n
                    break
            else:
                raise VocabularyError(f"{where}character {text[i]!r} (U+{ord(text[i]):04X}) is not in the "
                                      f"model's vocabulary {''.join(self.tokens[1:])!r}")
        return ids

    def decode(self, ids) -> str:
        if self.unit == "word":
            return " ".join(self.tokens[i] for i in self.word_starts(ids))
        return "".join(self.tokens[i] for i in ids if i != 0)

    def word_starts(self, ids) -> list[int]:
        """Word-unit tokens that begin a new word. Trained with a space between any two words, a
        model that emits the same word twice with no space between has stretched one long word
        over a blank: that is one word, not two."""
        out, boundary, prev = [], True, None
        for i in ids:
            if i == 0:
                continue
            if self.tokens[i] == SPACE:
                boundary = True
                continue
            if boundary or i != prev:
                out.append(i)
            boundary, prev = False, i
        return out


# Characters that print as nothing and only split or glue words invisibly: zero-width space, word
# joiner, BOM (zero-width no-break space), soft hyphen. ZWJ/ZWNJ (U+200D/U+200C) stay: they are
# spelling in Persian and Indic scripts and in emoji.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u2060\ufeff\u00ad"))


def canonical(text: str) -> str:
    """NFC with the invisible characters removed, spaces untouched: how every transcript is read for
    training and scoring, so `nö` typed as o + combining diaeresis, or a word with a zero-width space
    pasted from the web, is the same word as the plain one."""
    return unicodedata.normalize("NFC", text).translate(_INVISIBLE)


def normalize(text: str) -> str:
    """canonical(), single spaces, no edge spaces: the same text always maps to the same tokens."""
    return " ".join(canonical(text).split())


def case_variants(texts) -> dict[str, list[str]]:
    """Words spelled in more than one case across `texts` ({"yes": ["YES", "yes"]}): they become
    different tokens and words, which is rarely what a corpus meant."""
    spellings: dict[str, set[str]] = {}
    for text in texts:
        for word in normalize(text).split():
            spellings.setdefault(word.casefold(), set()).add(word)
    return {k: sorted(v) for k, v in sorted(spellings.items()) if len(v) > 1}


def ctc_min_frames(ids: list[int]) -> int:
    """Fewest output frames CTC needs for a label: one per token plus a blank between repeats."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


DIGIT_WORDS = "zero one two three four five six seven eight nine".split()


def spell_digits(text: str) -> str:
    """Read every digit as its English word, one word per digit: "314" -> "three one four".

    Digit by digit (not "three hundred fourteen"), as one reads out a number string; a TTS model
    trained on digit words can then say any number a user types.
    """
    out = []
    for ch in text:
        if "0" <= ch <= "9":
            out.append(f" {DIGIT_WORDS[ord(ch) - 48]} ")
        else:
            out.append(ch)
    return normalize("".join(out))


def unsayable(text: str, symbols) -> list[str]:
    """Characters of `text` not in `symbols`, in order of first appearance."""
    seen: dict[str, None] = {}
    for ch in text:
        if ch not in symbols:
            seen.setdefault(ch, None)
    return list(seen)

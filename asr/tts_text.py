"""What a TTS model reads: English text normalised into spoken words, and text cut into pieces a
model can say in one go.

`normalize_english` turns written English into the words a reader says, lower-cased, keeping the
punctuation that shapes phrasing (, . ; : ? ! and the apostrophe):

    "Dr. Smith paid $3.50 on May 1st, 1984 at 3:05 p.m., etc."
    -> "doctor smith paid three dollars fifty cents on may first, nineteen eighty four at three oh
        five p m, et cetera."

Numbers: cardinals ("1,024" -> "one thousand twenty four", US style without "and"), decimals
("3.14" -> "three point one four"), ordinals ("21st"), negatives, percentages, currency ($ £ €),
clock times ("3:00" -> "three o'clock"), decades ("1990s"), and a bare four-digit number from
1100 to 2099 read as a year ("1984" -> "nineteen eighty four", "2005" -> "two thousand five"):
the reading that is right for years and still a correct reading of a count ("1500 men" ->
"fifteen hundred men"); written with a comma ("1,500") it is a cardinal. A number with a leading
zero ("007") or of more than 15 digits is read digit by digit, as one reads a code.

Abbreviations: titles that stand before a name ("Mr.", "Dr.", "St.") lose their period, which is
not a sentence end; "etc.", "Jr." and the like keep it only where the sentence ends there.
Dashes become commas and brackets commas too: a phrase break, said the way the model says its
commas; double quotes and other marks that are not heard are dropped. What is left that is not a
letter or the punctuation above (an emoji, "§") stays, so that the model names it as a character
it cannot say rather than skipping it silently.

Lower case, because a character model trained on an hour of speech would otherwise learn each
letter twice, its capital from a few sentence starts and names only.
"""
from __future__ import annotations

import re
import unicodedata

from .text import DIGIT_WORDS, canonical, normalize, spell_digits

ONES = DIGIT_WORDS + ("ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen "
                      "nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
SCALES = ["", "thousand", "million", "billion", "trillion"]
# Irregular ordinals; every other word takes "th" ("twenty" -> "twentieth" via the y rule).
ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                 "nine": "ninth", "twelve": "twelfth"}
MAX_CARDINAL_DIGITS = 15  # up to the trillions; longer strings are codes, read digit by digit

# Titles before a name: always spoken in full, the period dropped (it does not end the sentence).
TITLES = {"mr": "mister", "mrs": "missus", "ms": "miz", "dr": "doctor", "prof": "professor",
          "rev": "reverend", "capt": "captain", "gen": "general", "lt": "lieutenant", "col": "colonel",
          "sgt": "sergeant", "gov": "governor", "sen": "senator", "rep": "representative", "hon": "honorable",
          "st": "saint", "mt": "mount", "ft": "fort"}
# Written without a period these are words of their own ("Gen", "Col" in a name) except the four
# that British English writes bare.
BARE_TITLES = {"mr", "mrs", "ms", "dr"}
# Abbreviations that can end a sentence: the period stays when it does.
ABBREVIATIONS = {"etc": "et cetera", "jr": "junior", "sr": "senior", "vs": "versus", "inc": "incorporated",
                 "ltd": "limited", "co": "company", "corp": "corporation", "dept": "department",
                 "approx": "approximately", "jan": "january", "feb": "february", "mar": "march",
                 "apr": "april", "jun": "june", "jul": "july", "aug": "august", "sep": "september",
                 "sept": "september", "oct": "october", "nov": "november", "dec": "december"}
LATIN = {"e.g.": "for example", "i.e.": "that is"}
CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
            "€": ("euro", "euros", "cent", "cents")}
SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "@": " at ", "=": " equals "}
# Punctuation the normaliser keeps; a model that never saw one of them says the closest it knows.
PHRASE_PUNCTUATION = ",.;:?!'"
FALLBACK = {"!": ".", "?": ".", ":": ",", ";": ","}
SENTENCE_END = ".?!"
CLAUSE_BREAK = ",;:"

_DASH = re.compile(r"\s*(?:--+|[\u2012\u2013\u2014\u2015])\s*|\s+-\s+")
_QUOTES = {"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u2032": "'", "`": "'", "\u00b4": "'"}
_DROP = dict.fromkeys(map(ord, '"\u201c\u201d\u201e\u00ab\u00bb*_~^|\\'))
_BRACKET = re.compile(r"\s*[()\[\]{}]\s*")
_NUM = r"\d{1,3}(?:,\d{3})+|\d+"  # with thousands separators, or plain


def cardinal(n: int) -> str:
    """0 <= n < 10**15 in words, US style: 1024 -> "one thousand twenty four"."""
    if n < 0:
        raise ValueError(f"cardinal: {n} is negative")
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        return ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + cardinal(n % 100))
    words, scale = [], 0
    while n:
        n, group = divmod(n, 1000)
        if group:
            words.insert(0, cardinal(group) + (" " + SCALES[scale] if scale else ""))
        scale += 1
        if scale >= len(SCALES) and n:
            raise ValueError(f"cardinal: {n} {'000' * scale} is too large")
    return " ".join(words)


def ordinal(n: int) -> str:
    """21 -> "twenty first", 100 -> "one hundredth", 12 -> "twelfth"."""
    *head, last = cardinal(n).split()
    if last in ORDINAL_WORDS:
        last = ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join(head + [last])


def year(n: int) -> str:
    """1984 -> "nineteen eighty four", 1900 -> "nineteen hundred", 1805 -> "eighteen oh five",
    2000-2009 -> "two thousand (five)", 2024 -> "twenty twenty four"."""
    if 2000 <= n < 2010:
        return cardinal(n)
    high, low = divmod(n, 100)
    if low == 0:
        return cardinal(high) + " hundred"
    return cardinal(high) + " " + (("oh " + ONES[low]) if low < 10 else cardinal(low))


def plural(words: str) -> str:
    """The spoken plural of a number's last word: "nineteen ninety" -> "nineteen nineties"."""
    *head, last = words.split()
    last = last[:-1] + "ies" if last.endswith("y") else last + ("es" if last.endswith("x") else "s")
    return " ".join(head + [last])


def number(digits: str) -> str:
    """A run of digits (thousands commas allowed) as words: cardinal, or digit by digit when it
    has a leading zero or more than MAX_CARDINAL_DIGITS digits."""
    plain = digits.replace(",", "")
    if (len(plain) > 1 and plain[0] == "0") or len(plain) > MAX_CARDINAL_DIGITS:
        return spell_digits(plain)
    return cardinal(int(plain))


def _money(m: re.Match) -> str:
    one, many, sub_one, sub_many = CURRENCY[m["cur"]]
    whole, frac, scale = m["whole"].replace(",", ""), m["frac"], m["scale"]
    if scale:  # "$2.5 million" -> "two point five million dollars"
        amount = number(whole) + (" point " + spell_digits(frac) if frac else "")
        return f" {amount} {scale.strip().lower()} {many} "
    n = int(whole)
    words = f"{number(whole)} {one if n == 1 else many}"
    if frac:
        cents = int((frac + "0")[:2])
        if len(frac) > 2:  # "$0.125": not a price in cents, read the decimal
            return f" {number(whole)} point {spell_digits(frac)} {many} "
        if cents:
            words = (words + " " if n else "") + f"{cardinal(cents)} {sub_one if cents == 1 else sub_many}"
    return f" {words} "


def _sentence_ends_after(m: re.Match) -> bool:
    """Whether the period an abbreviation swallowed also ended its sentence: nothing follows it,
    or the next word starts with a capital."""
    rest = m.string[m.end():].lstrip()
    return not rest or rest[0].isupper()


def _abbreviation(m: re.Match) -> str:
    word, dot = m["word"], m["dot"]
    key = word.lower()
    if key in TITLES:
        if not (dot or key in BARE_TITLES):
            return m[0]
        if key == "st":
            nxt = m.string[m.end():].lstrip()[:1]
            if not nxt.isupper():  # a name follows a saint's "St.": "Main St." and "Main St. is" are streets
                return "street" + ("." if dot and not nxt else "")
        return TITLES[key]
    if not dot and key not in ("etc", "vs"):
        return m[0]  # "mar", "co", "dec" without a period are words, not abbreviations
    return ABBREVIATIONS[key] + ("." if dot and _sentence_ends_after(m) else "")


def _initials(m: re.Match) -> str:
    # "U.S. Army": a capital follows initials more often than a new sentence does, so only the
    # end of the text keeps the period.
    return " ".join(m["letters"].replace(".", "")) + ("." if not m.string[m.end():].strip() else "")


def _time(m: re.Match) -> str:
    h, mins = int(m["h"]), int(m["m"])
    words = cardinal(h) + ("" if mins == 0 else " " + (f"oh {ONES[mins]}" if mins < 10 else cardinal(mins)))
    if not m["ampm"]:
        return f" {words} o'clock " if mins == 0 else f" {words} "
    tail = " ".join(c for c in m["ampm"].lower() if c.isalpha())
    return f" {words} {tail}" + ("." if m["ampm"].endswith(".") and _sentence_ends_after(m) else "") + " "


_MONEY = re.compile(r"(?P<cur>[$£€])\s?(?P<whole>" + _NUM + r")(?:\.(?P<frac>\d+))?"
                    r"(?P<scale>\s(?:thousand|million|billion|trillion)\b)?", re.IGNORECASE)
_PERCENT = re.compile(r"(?P<n>" + _NUM + r")(?:\.(?P<frac>\d+))?\s?%")
_TIME = re.compile(r"\b(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)\b(?:\s?(?P<ampm>[ap]\.?\s?m\b\.?))?", re.IGNORECASE)
_ORDINAL = re.compile(r"\b(?P<n>" + _NUM + r")(?P<suf>st|nd|rd|th)\b", re.IGNORECASE)
_DECADE = re.compile(r"(?<![\w'])(?:(?P<century>1[1-9]|20)(?P<d1>\d)|'?(?P<d2>[1-9]))0'?s\b")
_YEAR = re.compile(r"(?<![\d,.$£€])\b(?P<y>1[1-9]\d\d|20\d\d)\b(?![,.]?\d)")
_DECIMAL = re.compile(r"(?P<whole>" + _NUM + r")?\.(?P<frac>\d+)\b")
_NEGATIVE = re.compile(r"(?:(?<=\s)|^)-(?=\d)")
_NUMBER = re.compile(_NUM)
_NO = re.compile(r"\b(?:No|no|NO)\.\s?(?=\d)|#(?=\d)")
_INITIALS = re.compile(r"\b(?P<letters>(?:[A-Za-z]\.){2,})")
_ABBR_WORDS = "|".join(sorted(set(TITLES) | set(ABBREVIATIONS), key=len, reverse=True))
_ABBR = re.compile(r"\b(?P<word>" + _ABBR_WORDS + r")(?P<dot>\.)?(?=\s|$|[,;:!?])", re.IGNORECASE)


def _decade(m: re.Match) -> str:
    if m["century"]:
        return " " + plural(year(int(m["century"] + m["d1"] + "0"))) + " "
    return " " + ("tens" if m["d2"] == "1" else plural(TENS[int(m["d2"])])) + " "


def _numbers(text: str) -> str:
    text = _MONEY.sub(_money, text)
    text = _PERCENT.sub(lambda m: f" {number(m['n'])}" + (f" point {spell_digits(m['frac'])}" if m["frac"] else "")
                        + " percent ", text)
    text = _TIME.sub(_time, text)
    text = _ORDINAL.sub(lambda m: " " + ordinal(int(m["n"].replace(",", ""))) + " ", text)
    text = _DECADE.sub(_decade, text)
    text = _YEAR.sub(lambda m: " " + year(int(m["y"])) + " ", text)
    text = _NEGATIVE.sub("minus ", text)
    text = _DECIMAL.sub(lambda m: " " + (number(m["whole"]) if m["whole"] else "") + " point "
                        + spell_digits(m["frac"]) + " ", text)
    return _NUMBER.sub(lambda m: " " + number(m[0]) + " ", text)


def _ascii_letters(text: str) -> str:
    """Latin letters without their accents ("café" -> "cafe"): the model's alphabet is English.
    Letters of other scripts are kept, to be named as unsayable."""
    out = []
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(ch) and out and out[-1].isascii():
            continue
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


def normalize_english(text: str) -> str:
    """Written English -> the lower-case words a reader says, with phrasing punctuation kept.
    Idempotent: normalising a normalised text changes nothing."""
    text = canonical(text or "")
    text = "".join(_QUOTES.get(c, c) for c in text).translate(_DROP)
    text = _ascii_letters(text).replace("\u2026", "...")
    for written, spoken in LATIN.items():
        text = re.sub(re.escape(written), spoken, text, flags=re.IGNORECASE)
    text = _NO.sub("number ", text)
    text = _ABBR.sub(_abbreviation, text)
    text = _INITIALS.sub(_initials, text)
    text = _DASH.sub(", ", text)
    text = _BRACKET.sub(", ", text)
    text = _numbers(text)
    for sym, spoken in SYMBOLS.items():
        text = text.replace(sym, spoken)
    text = text.lower()
    # Tidy the punctuation the substitutions left: no space before a mark, one mark where a
    # comma met a sentence end ("etc., then" -> "et cetera, then"), none at the very start.
    text = re.sub(r"\s+([,.;:?!])", r"\1", " ".join(text.split()))
    text = re.sub(r"([,;:])(?:[,;:])+", r"\1", text)
    text = re.sub(r"[,;:]+([.?!])", r"\1", text)
    text = re.sub(r"([.?!])[,;:]+", r"\1", text)
    text = re.sub(r"([,;:?!.])(?=[^\s,;:?!.'])", r"\1 ", text)
    return normalize(text.lstrip(",;:. "))


def fallback_punctuation(text: str, symbols) -> str:
    """Each phrasing mark the model does not know replaced by its nearest one that it does
    ("?" -> "." for a model trained on statements only)."""
    out = []
    for ch in text:
        near = ch
        while near not in symbols and near in FALLBACK:
            near = FALLBACK[near]
        out.append(near if near in symbols else ch)  # none known: the original is named as unsayable
    return "".join(out)


def spoken_words(text: str) -> str:
    """A normalised text as the words an ASR model writes: punctuation except the apostrophe
    inside a word removed ("o'brien, sir." -> "o'brien sir")."""
    text = re.sub(r"[^\w\s']|(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def split_text(text: str, max_symbols: int) -> list[str]:
    """A normalised text cut into pieces to be said one by one: its sentences, and a sentence
    longer than `max_symbols` cut again at its clause breaks (, ; :), packing as many clauses as
    fit. A clause that alone is too long is returned whole: the caller says why it cannot be said,
    rather than cutting words at a guessed place."""
    sentences = [s for s in re.split(r"(?<=[" + SENTENCE_END + r"])\s+", text) if s]
    pieces = []
    for sentence in sentences:
        if len(sentence) <= max_symbols:
            pieces.append(sentence)
            continue
        current = ""
        for clause in (c for c in re.split(r"(?<=[" + CLAUSE_BREAK + r"])\s+", sentence) if c):
            if current and len(current) + 1 + len(clause) > max_symbols:
                pieces.append(current)
                current = clause
            else:
                current = f"{current} {clause}" if current else clause
        pieces.append(current)
    return pieces


# How a TTS model reads its input (model.extra.text): "digits" spells each digit and leaves the
# rest to the model's alphabet (digits-tts and every package made before this choice existed);
# "english" is normalize_english.
FRONTENDS = {"digits": spell_digits, "english": normalize_english}

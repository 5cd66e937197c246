"""N-gram language models with KenLM, and the lexicon files the beam search reads.

`lmplz` and `build_binary` are KenLM's command-line tools; `pip install kenlm` does not provide
them, so `tools/install_kenlm.sh` builds them into tools/bin/, where this module looks first.

Lexicon files use flashlight/wav2letter's format, one spelling per line:
`word<TAB>t o k e n s |`, tokens separated by spaces and `|` standing for the word boundary
(the model's space label, which cannot be written between spaces). A word may have several
lines (several spellings); a line with the word alone is spelled from the labels on reading.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

WORD_BOUNDARY = "|"  # how the space label is written in lexicons and token-level LM text
LM_SPECIAL_WORDS = ("<s>", "</s>", "<unk>")
_TOOLS_BIN = Path(__file__).resolve().parents[1] / "tools" / "bin"


class KenLMToolMissing(FileNotFoundError):
    pass


def find_tool(name: str, explicit: str | os.PathLike | None = None) -> str:
    """Path of a KenLM tool: `explicit`, else tools/bin/NAME, else NAME on PATH."""
    if explicit is not None:
        if not os.access(explicit, os.X_OK):
            raise KenLMToolMissing(f"{name}: {explicit} is not an executable file")
        return str(explicit)
    local = _TOOLS_BIN / name
    if os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise KenLMToolMissing(
            f"KenLM's `{name}` was not found in {_TOOLS_BIN} nor on PATH; run tools/install_kenlm.sh "
            "to build it (pip's `kenlm` package only provides the Python query module)")
    return found


def _run(cmd: list[str], what: str, stdin_lines: Iterable[str] | None = None) -> None:
    # stderr goes to a file, not a pipe: a pipe nobody reads while we feed stdin can fill up
    # and stall the tool
    with tempfile.TemporaryFile() as err:
        with subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin_lines is not None else None,
                              stdout=subprocess.DEVNULL, stderr=err) as proc:
            if stdin_lines is not None:
                try:
                    for line in stdin_lines:
                        proc.stdin.write((line.rstrip("\n") + "\n").encode("utf-8"))
                except BrokenPipeError:
                    pass  # the tool died early; its stderr says why
                proc.stdin.close()
        err.seek(0)
        tail = "\n".join(err.read().decode("utf-8", "replace").strip().splitlines()[-15:])
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def train_ngram(text_lines: Iterable[str], order: int, out_arpa: str | os.PathLike, *,
                lmplz: str | os.PathLike | None = None, discount_fallback: bool = True,
                memory: str = "1G") -> Path:
    """Estimate a modified Kneser-Ney `order`-gram ARPA model from sentences, one per line.

    `discount_fallback` lets lmplz estimate from corpora too small for its discount statistics
    (anything under a few thousand words), which would otherwise make it abort.
    `memory` caps lmplz's sort buffers; its own default is 80% of the machine's RAM.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    cmd = [find_tool("lmplz", lmplz), "-o", str(order), "-S", memory, "--arpa", str(out_arpa)]
    if discount_fallback:
        cmd.append("--discount_fallback")
    Path(out_arpa).parent.mkdir(parents=True, exist_ok=True)
    _run(cmd, f"lmplz (order {order}) writing {out_arpa}", stdin_lines=text_lines)
    return Path(out_arpa)


def build_binary(arpa: str | os.PathLike, out_bin: str | os.PathLike, *,
                 tool: str | os.PathLike | None = None) -> Path:
    """Convert an ARPA model to KenLM's binary format (loads much faster)."""
    if not os.path.isfile(arpa):
        raise FileNotFoundError(f"ARPA file {arpa} does not exist")
    _run([find_tool("build_binary", tool), str(arpa), str(out_bin)], f"build_binary on {arpa}")
    return Path(out_bin)


def arpa_unigrams(path: str | os.PathLike) -> list[str]:
    """The vocabulary of an ARPA file (its 1-gram section), in file order."""
    words: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip() == "\\1-grams:":
                break
        else:
            raise ValueError(f"{path}: no \\1-grams: section; is it an ARPA file?")
        for line in f:
            fields = line.split()
            if not fields or fields[0].startswith("\\"):
                break
            words.append(fields[1])
    return words


# --- spelling words with a model's labels -------------------------------------------------------

def spelling_labels(labels: Sequence[str], blank_id: int = 0, space_label: str = " ") -> dict[str, int]:
    """The labels a word can be spelled with (all but blank and space), label -> index."""
    if len(set(labels)) != len(labels):
        dup = next(lab for lab in labels if labels.count(lab) > 1)
        raise ValueError(f"labels must be unique; {dup!r} appears {labels.count(dup)} times")
    return {lab: i for i, lab in enumerate(labels) if i != blank_id and lab != space_label and lab}


def spell(word: str, tokens: dict[str, int]) -> list[int] | None:
    """Label indices spelling `word` with the fewest tokens, or None if it cannot be spelled.

    Fewest tokens rather than greedy longest-match: with labels `ab`, `a`, `bc`, greedy takes
    `ab` and is stuck on `c`, while `a`+`bc` spells "abc".
    """
    longest = max(map(len, tokens), default=0)
    best: list[list[int] | None] = [[]] + [None] * len(word)  # best[i]: spelling of word[:i]
    for end in range(1, len(word) + 1):
        for start in range(max(0, end - longest), end):
            prefix, idx = best[start], tokens.get(word[start:end])
            if prefix is not None and idx is not None and (
                    best[end] is None or len(prefix) + 1 < len(best[end])):
                best[end] = prefix + [idx]
    return best[-1]


def write_lexicon(words: Iterable[str], labels: Sequence[str], path: str | os.PathLike, *,
                  blank_id: int = 0, space_label: str = " ") -> list[str]:
    """Write `word<TAB>t o k |` lines for every word the labels can spell; return the others."""
    tokens = spelling_labels(labels, blank_id, space_label)
    bad = [lab for lab in tokens if any(c.isspace() for c in lab) or lab == WORD_BOUNDARY]
    if bad:
        raise ValueError(f"label {bad[0]!r} cannot be written in a lexicon file "
                         f"(whitespace, or the word-boundary mark {WORD_BOUNDARY!r})")
    skipped: list[str] = []
    with open(path, "w", encoding="utf-8") as f:
        for word in dict.fromkeys(words):
            spelled = spell(word, tokens)
            if spelled is None or word in LM_SPECIAL_WORDS:
                skipped.append(word)
                continue
            f.write(f"{word}\t{' '.join(labels[i] for i in spelled)} {WORD_BOUNDARY}\n")
    return skipped


def read_lexicon(path: str | os.PathLike, labels: Sequence[str], *, blank_id: int = 0,
                 space_label: str = " ") -> dict[str, list[list[int]]]:
    """{word: [spelling as label indices, without the word boundary]} from a lexicon file."""
    tokens = spelling_labels(labels, blank_id, space_label)
    lexicon: dict[str, list[list[int]]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            word, spelled = fields[0], fields[1:]
            if spelled and spelled[-1] == WORD_BOUNDARY:
                spelled = spelled[:-1]
            if spelled:
                unknown = [t for t in spelled if t not in tokens]
                if unknown:
                    raise ValueError(f"{path}:{lineno}: token {unknown[0]!r} in the spelling of "
                                     f"{word!r} is not one of the model's labels")
                indices = [tokens[t] for t in spelled]
            else:
                indices = spell(word, tokens)
                if indices is None:
                    raise ValueError(f"{path}:{lineno}: {word!r} cannot be spelled with the labels")
            lexicon.setdefault(word, []).append(indices)
    if not lexicon:
        raise ValueError(f"{path}: lexicon is empty")
    return lexicon

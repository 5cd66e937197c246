import subprocess
import sys

import pytest

from asr import lm
from asr.lm import (KenLMToolMissing, arpa_unigrams, build_binary, read_lexicon, spell,
                    spelling_labels, train_ngram, write_lexicon)

LABELS = ["_", "a", "b", "c", "t", "h", "e", "th", " "]
CORPUS = ["the cat", "the cat", "the cat", "the bat", "a bat", "a cat ate"]


def _have(tool: str) -> bool:
    try:
        lm.find_tool(tool)
        return True
    except KenLMToolMissing:
        return False


needs_kenlm = pytest.mark.skipif(not (_have("lmplz") and _have("build_binary")),
                                 reason="lmplz/build_binary missing: run tools/install_kenlm.sh")


def test_spell_prefers_fewest_tokens_and_reports_unspellable():
    tokens = spelling_labels(LABELS)
    assert [LABELS[i] for i in spell("the", tokens)] == ["th", "e"]
    assert spell("dog", tokens) is None
    assert spell("abc", {"ab": 1, "a": 2, "bc": 3}) == [2, 3]  # greedy "ab" would be stuck


def test_lexicon_round_trip(tmp_path):
    path = tmp_path / "lexicon.txt"
    skipped = write_lexicon(["the", "cat", "dog", "<unk>", "cat"], LABELS, path)
    assert skipped == ["dog", "<unk>"]
    assert path.read_text(encoding="utf-8") == "the\tth e |\ncat\tc a t |\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write("the\tt h e |\nbat\n")  # a second spelling, and a word left to spell
    assert read_lexicon(path, LABELS) == {"the": [[7, 6], [4, 5, 6]], "cat": [[3, 1, 4]],
                                          "bat": [[2, 1, 4]]}
    path.write_text("cat\tc a x |\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lexicon.txt:1: token 'x' in the spelling of 'cat'"):
        read_lexicon(path, LABELS)


def test_missing_lmplz_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(lm, "_TOOLS_BIN", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KenLMToolMissing, match="run tools/install_kenlm.sh"):
        train_ngram(CORPUS, 3, tmp_path / "lm.arpa")


@needs_kenlm
def test_train_binary_and_decode_with_it(tmp_path):
    import torch

    from asr.beam_search import CTCBeamDecoder

    arpa = train_ngram(CORPUS, 3, tmp_path / "lm.arpa")
    assert arpa.read_text(encoding="utf-8").startswith("\\data\\")
    assert set(arpa_unigrams(arpa)) == {"<unk>", "<s>", "</s>", "the", "cat", "bat", "a", "ate"}
    binary = build_binary(arpa, tmp_path / "lm.bin")
    write_lexicon(arpa_unigrams(arpa), LABELS, tmp_path / "lexicon.txt")

    # "the ?at": the acoustics slightly prefer b, the LM ("the cat" three times) prefers c
    frames = [{"th": 0.9}, {"e": 0.9}, {" ": 0.9}, {"b": 0.45, "c": 0.4}, {"a": 0.9}, {"t": 0.9}]
    probs = torch.full((1, len(frames), len(LABELS)), 0.0)
    for t, frame in enumerate(frames):
        probs[0, t] = (1 - sum(frame.values())) / (len(LABELS) - len(frame))
        for lab, p in frame.items():
            probs[0, t, LABELS.index(lab)] = p
    for model, lexicon in ((arpa, None), (binary, tmp_path / "lexicon.txt")):
        results, _, _, lens = CTCBeamDecoder(LABELS, str(model), alpha=2.0, lexicon=lexicon).decode(probs)
        assert "".join(LABELS[i] for i in results[0, 0, :lens[0, 0]]) == "the cat"
    with pytest.raises(ValueError, match="binary word-level LM needs lexicon="):
        CTCBeamDecoder(LABELS, str(binary), alpha=1.0)


@needs_kenlm
def test_cli_train(tmp_path):
    text = tmp_path / "text"
    text.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "asr", "lm", "train", "--order", "2", str(text),
                    str(tmp_path / "out.arpa")], check=True, capture_output=True)
    assert "ngram 2=" in (tmp_path / "out.arpa").read_text(encoding="utf-8")

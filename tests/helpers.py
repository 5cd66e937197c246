"""Small builders shared by several test modules."""
import numpy as np
import torch

from asr.audio import load_audio
from asr.config import ExperimentConfig, FeatureConfig, ModelConfig
from asr.models import CTCModel
from asr.text import Vocabulary

from .conftest import FSDD


def write_arpa(path, unigrams: dict[str, float], bigrams: dict[tuple[str, str], float] = {}):
    """A hand-written ARPA word LM: log10 unigram probabilities (backoff -0.3) and optional bigrams."""
    # KenLM loads nothing below order 2, so there is always a bigram section
    bigrams = {("<s>", "</s>"): -2.0, **bigrams}
    lines = ["\\data\\", f"ngram 1={len(unigrams) + 3}", f"ngram 2={len(bigrams)}", "",
             "\\1-grams:", "-99\t<s>\t-0.3", "-1.0\t</s>", "-5.0\t<unk>"]
    lines += [f"{p}\t{w}\t-0.3" for w, p in unigrams.items()]
    lines += ["", "\\2-grams:"] + [f"{p}\t{a} {b}" for (a, b), p in bigrams.items()]
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# -- streaming: real speech and a small random unidirectional model ------------------------------

def speech() -> np.ndarray:
    """About 3 s of real 8 kHz speech: five FSDD takes with short pauses."""
    parts = []
    for d in (3, 1, 4, 1, 5):
        parts += [load_audio(FSDD / f"{d}_jackson_{d % 5}.wav")[0], np.zeros(1200, np.float32)]
    return np.concatenate(parts)


def stream_model(sample_rate=8000, lookahead=2, subsample="stack", seed=0, **model) -> CTCModel:
    cfg = ExperimentConfig()
    cfg.features = FeatureConfig(sample_rate=sample_rate, n_fft=256 if sample_rate == 8000 else 512,
                                 win_length=200 if sample_rate == 8000 else 400,
                                 hop_length=80 if sample_rate == 8000 else 160, n_mels=20)
    cfg.model = ModelConfig(num_layers=2, hidden_size=24, dropout=0.0, bidirectional=False, lookahead=lookahead,
                            subsample=subsample, **model)
    torch.manual_seed(seed)
    model = CTCModel(cfg, Vocabulary.from_texts(["zero one two three four five six seven eight nine"])).eval()
    with torch.no_grad():  # sharper posteriors that follow the audio: a random model that babbles words
        model.output.weight.mul_(40.0)
        if model.lookahead is not None:
            model.lookahead.conv.weight.mul_(8.0)
        # and spaces on about a third of the frames of noise: several words
        space = model.vocab.tokens.index(" ")
        noise = torch.from_numpy(np.random.default_rng(0).standard_normal(sample_rate * 3).astype(np.float32) * 0.1)
        lp, _ = model(noise[None], torch.tensor([len(noise)]))
        others = torch.cat([lp[0, :, :space], lp[0, :, space + 1:]], -1).max(-1).values
        model.output.bias[space] += float(torch.quantile(others - lp[0, :, space], 0.65))
    return model


# -- strict parsers of the subtitle and CTM formats `asr transcribe` writes ---------------------

def _seconds(stamp: str, sep: str) -> float:
    import re

    m = re.fullmatch(rf"(\d\d):([0-5]\d):([0-5]\d){re.escape(sep)}(\d\d\d)", stamp)
    assert m, f"bad timestamp {stamp!r}"
    h, mi, s, ms = map(int, m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


def parse_subtitles(text: str, fmt: str) -> list[tuple[float, float, str]]:
    """(start, end, text) cues of one SRT or WebVTT file, asserting the format: one WEBVTT header
    (vtt), cues numbered 1..N (srt), start < end, cues in order and not overlapping."""
    sep = "," if fmt == "srt" else "."
    blocks = [b for b in text.split("\n\n") if b.strip()]
    if fmt == "vtt":
        assert blocks and blocks[0] == "WEBVTT", "a WebVTT file starts with one WEBVTT header"
        blocks = blocks[1:]
    assert "WEBVTT" not in "\n".join(blocks), "one WEBVTT header only"
    cues, previous_end = [], 0.0
    for n, block in enumerate(blocks, 1):
        lines = block.split("\n")
        if fmt == "srt":
            assert lines[0] == str(n), f"cue {n} numbered {lines[0]!r}"
            lines = lines[1:]
        start, arrow, end = lines[0].partition(" --> ")
        assert arrow, f"cue {n}: no timing line: {lines[0]!r}"
        start, end = _seconds(start, sep), _seconds(end, sep)
        assert previous_end <= start < end, f"cue {n}: {start}-{end} after a cue ending at {previous_end}"
        assert len(lines) > 1 and all(line.strip() for line in lines[1:]), f"cue {n}: no text"
        cues.append((start, end, " ".join(lines[1:])))
        previous_end = end
    return cues


def parse_ctm(text: str) -> dict[str, list[tuple[float, float, str, float]]]:
    """{utterance id: [(start, duration, word, confidence)]} of a CTM file, asserting six fields a
    line, channel 1, times in order and not overlapping within an utterance."""
    out: dict[str, list] = {}
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split(" ")
        assert len(fields) == 6, f"line {n}: {len(fields)} fields: {line!r}"
        utt, channel, start, duration, word, confidence = fields
        assert channel == "1" and float(duration) > 0 and 0 <= float(confidence) <= 1, line
        words = out.setdefault(utt, [])
        assert not words or words[-1][0] + words[-1][1] <= float(start) + 1e-9, f"line {n}: overlaps"
        words.append((float(start), float(duration), word, float(confidence)))
    return out

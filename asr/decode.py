"""Turning CTC posteriors into text: greedy (best path) decoding, word timings and confidences.

Beam search with an n-gram LM, behind ctcdecode's API, lives in `asr.beam_search`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .text import SPACE, Vocabulary


@dataclass
class Word:
    word: str
    start: float  # seconds
    end: float
    confidence: float


@dataclass
class Hypothesis:
    text: str
    tokens: list[int]
    frames: list[int]  # output frame at which each token was emitted
    score: float = 0.0  # log-probability of the best path
    words: list[Word] = field(default_factory=list)
    nbest: list[dict] = field(default_factory=list)  # beam search only: [{"text", "score"}]


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, vocab: Vocabulary,
                  frame_shift: float | None = None) -> list[Hypothesis]:
    """Best path: argmax per frame, merge repeats, drop blanks. With `frame_shift` also word timings."""
    best, best_ids = log_probs.max(-1)
    out = []
    for b in range(log_probs.size(0)):
        T = int(lengths[b])
        ids = best_ids[b, :T].tolist()
        tokens, frames, prev = [], [], vocab.blank_id
        for t, i in enumerate(ids):
            if i != prev and i != vocab.blank_id:
                tokens.append(i)
                frames.append(t)
            prev = i
        hyp = Hypothesis(vocab.decode(tokens).strip(), tokens, frames, float(best[b, :T].sum()))
        if frame_shift is not None:
            hyp.words = word_timings(ids, log_probs[b, :T], vocab, frame_shift)
        out.append(hyp)
    return out


def word_timings(path: list[int], log_probs: torch.Tensor, vocab: Vocabulary, frame_shift: float) -> list[Word]:
    """Words from a frame-level CTC path, with times in seconds and a confidence in [0, 1].

    A word spans the frames from its first token's first frame to its last token's last frame
    (repeats of a token are its own frames, blanks between words belong to neither), so times are
    monotonic and inside the audio. Confidence is the mean posterior of the word's frames.
    """
    words: list[Word] = []
    chars: list[int] = []
    span: list[int] = []  # frames of the current word's tokens
    probs = log_probs.exp()

    def flush():
        if chars:
            conf = float(probs[span, [path[t] for t in span]].mean())
            words.append(Word(vocab.decode(chars), round(span[0] * frame_shift, 3),
                              round((span[-1] + 1) * frame_shift, 3), round(conf, 4)))
        chars.clear()
        span.clear()

    prev = vocab.blank_id
    for t, i in enumerate(path):
        if i == vocab.blank_id:
            prev = i
            continue
        if vocab.tokens[i] == SPACE:
            flush()
        elif i != prev:
            if vocab.unit == "word":
                # A new whole-word token starts a word, unless it repeats the current word with
                # no space between (see Vocabulary.word_starts): then it extends that word.
                if chars and chars[-1] == i:
                    span.append(t)
                    prev = i
                    continue
                flush()
            chars.append(i)
            span.append(t)
        else:
            span.append(t)
        prev = i
    flush()
    return words


def words_from_labels(tokens: list[int], frames: list[int], probs: torch.Tensor, vocab: Vocabulary,
                      frame_shift: float, num_frames: int) -> list[Word]:
    """Words from a label sequence and the frame where each label starts (a beam's timesteps).

    A word ends where the label after its last one starts (at most the end of the audio), so
    times are monotonic; confidence is the mean posterior of the word's labels at their frames.
    """
    words, chars, starts = [], [], []
    bounds = frames[1:] + [num_frames]

    def flush(end_frame: int):
        if chars:
            conf = float(torch.stack([probs[t, i] for i, t in zip(chars, starts)]).mean())
            words.append(Word(vocab.decode(chars), round(starts[0] * frame_shift, 3),
                              round(min(end_frame, num_frames) * frame_shift, 3), round(conf, 4)))
        chars.clear()
        starts.clear()

    for k, (i, t) in enumerate(zip(tokens, frames)):
        if vocab.tokens[i] == SPACE:
            flush(t)
        else:
            if vocab.unit == "word":
                if chars and chars[-1] == i:
                    last_end = bounds[k]
                    continue
                flush(t)
            chars.append(i)
            starts.append(t)
            last_end = bounds[k]
    flush(last_end if chars else num_frames)
    return words


# -- combining the transcripts several models propose (asr.models.ensemble) ---------------------

Proposal = tuple[list[int], list[int]]  # labels, output frame where each starts


def proposals(log_probs: torch.Tensor, lengths: torch.Tensor, vocab: Vocabulary, decoder=None) -> list[list[Proposal]]:
    """Per utterance of a batch, what a model proposes: its greedy path (decoder None) or the
    n-best list of a `CTCBeamDecoder`."""
    if decoder is None:
        return [[(h.tokens, h.frames)] for h in greedy_decode(log_probs, lengths, vocab)]
    results, _, timesteps, out_lens = decoder.decode(log_probs, lengths)
    return [[(results[b, k, :int(out_lens[b, k])].tolist(), timesteps[b, k, :int(out_lens[b, k])].tolist())
             for k in range(results.size(1)) if k == 0 or int(out_lens[b, k]) > 0]
            for b in range(results.size(0))]


@dataclass
class Candidate:
    text: str
    score: float  # acoustic + LM terms: what the candidates are ranked by
    acoustic: float  # the members' mean ln P_CTC(text | audio)
    member: int  # the first member that proposed it: tokens and frames are on its clock
    tokens: list[int]
    frames: list[int]


def rank_proposals(proposals: Sequence[Sequence[Proposal]], log_probs: Sequence, vocab: Vocabulary,
                   lm_score: Callable[[list[int]], float] | None = None) -> list[Candidate]:
    """One utterance: every transcript the members propose (proposals[m]), best first by the
    members' mean exact CTC log-likelihood (log_probs[m]: member m's (T_m, V) output) plus
    lm_score(labels) (a beam decoder's alpha·ln P_LM + beta·words)."""
    from .beam_search import ctc_log_likelihoods

    found: dict[str, tuple[int, list[int], list[int]]] = {}
    for m, props in enumerate(proposals):
        for tokens, frames in props:
            # one candidate per transcript, however a member spaced it
            found.setdefault(" ".join(vocab.decode(tokens).split()), (m, tokens, frames))
    texts = list(found)
    labels = [vocab.encode(t) for t in texts]  # canonical: single spaces, none at the edges
    acoustic = np.mean([ctc_log_likelihoods(lp, labels, vocab.blank_id) for lp in log_probs], axis=0)
    total = acoustic + (np.array([lm_score(x) for x in labels]) if lm_score is not None else 0.0)
    return [Candidate(texts[i], float(total[i]), float(acoustic[i]), *found[texts[i]])
            for i in np.argsort(-total, kind="stable")]

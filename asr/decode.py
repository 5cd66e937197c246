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


def collapse(path: Sequence[int], blank_id: int) -> tuple[list[int], list[int]]:
    """CTC's many-to-one map of a frame-level path: repeats merged, blanks dropped; (labels, the
    frame where each starts). beam_kernels.collapse is the compiled batch form the beam search uses."""
    tokens, frames, prev = [], [], blank_id
    for t, i in enumerate(path):
        if i != prev and i != blank_id:
            tokens.append(i)
            frames.append(t)
        prev = i
    return tokens, frames


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, vocab: Vocabulary,
                  frame_shift: float | None = None, speech: Sequence[Sequence[bool]] | None = None) -> list[Hypothesis]:
    """Best path: argmax per frame, merge repeats, drop blanks. With `frame_shift` also word timings
    (checked against `speech[b]`, see word_timings)."""
    best, best_ids = log_probs.max(-1)
    out = []
    for b in range(log_probs.size(0)):
        T = int(lengths[b])
        ids = best_ids[b, :T].tolist()
        tokens, frames = collapse(ids, vocab.blank_id)
        hyp = Hypothesis(vocab.decode(tokens).strip(), tokens, frames, float(best[b, :T].sum()))
        if frame_shift is not None:
            hyp.words = word_timings(ids, log_probs[b, :T], vocab, frame_shift,
                                     None if speech is None else speech[b])
        out.append(hyp)
    return out


# A word's letters follow each other within ~0.1 s; the digits models also emit a word's first letter
# as soon as the previous word ends, up to a second before it is said. A first spike this far (s)
# ahead of the next one is that early emission, not where the word begins.
EARLY_SPIKE = 0.25


def word_timings(path: list[int], log_probs: torch.Tensor, vocab: Vocabulary, frame_shift: float,
                 speech: Sequence[bool] | None = None, max_extend: int = 10) -> list[Word]:
    """Words from a frame-level CTC path (a label per frame), with times in seconds and a
    confidence in [0, 1]; times are monotonic and inside the audio.

    A word spans its CTC spikes: the frames from its first token's first frame to its last token's
    last frame (repeats of a token are its own frames, blanks between words belong to neither).
    With `speech` (a bool per frame: is there speech energy there) spikes are checked against the
    sound: a spike in a pause is not part of its word (unless all of them are), nor is a first
    spike far ahead of the others (EARLY_SPIKE), and a span grows along the
    speech around it by up to `max_extend` frames each side (spikes mark where letters begin: the
    last one comes 0.1-0.3 s before a word's sound ends), never into a neighbour's spikes.

    Confidence is the geometric mean, over the word's frames (blanks inside it included), of the
    path label's posterior relative to the frame's most probable label, times the mean posterior
    of the word's own spikes: a word the acoustics only weakly support, or that a lexicon forced
    onto frames that say something else, scores low.
    """
    found: list[tuple[list[int], list[int]]] = []  # (tokens, spike frames) per word
    chars: list[int] = []
    span: list[int] = []  # frames of the current word's tokens
    lp = log_probs.float()
    best = lp.max(-1).values
    near_speech = None
    if speech is not None:
        s = np.asarray(speech, bool)
        near_speech = s | np.r_[False, s[:-1]] | np.r_[s[1:], False]  # a frame of slack either side

    def flush():
        frames = list(span)
        if chars and near_speech is not None:
            frames = [t for t in frames if t < len(near_speech) and near_speech[t]] or frames
            if len(frames) > 1 and (frames[1] - frames[0]) * frame_shift > EARLY_SPIKE:
                frames = frames[1:]
        if chars:
            found.append((list(chars), frames))
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

    words: list[Word] = []
    previous_end = 0
    for k, (tokens, spikes) in enumerate(found):
        first, last = spikes[0], spikes[-1] + 1  # [first, last) frames
        frames = torch.arange(first, last)
        labels = torch.tensor([path[t] for t in frames.tolist()])
        agreement = float((lp[frames, labels] - best[frames]).mean().exp())
        posterior = float(lp[spikes, [path[t] for t in spikes]].exp().mean())
        if speech is not None:
            next_start = found[k + 1][1][0] if k + 1 < len(found) else len(speech)
            lo_bound, hi_bound = max(previous_end, first - max_extend), min(next_start, last + max_extend)
            while first > lo_bound and speech[first - 1]:
                first -= 1
            while last < hi_bound and speech[last]:
                last += 1
        previous_end = last
        words.append(Word(vocab.decode(tokens), round(first * frame_shift, 3), round(last * frame_shift, 3),
                          round(agreement * posterior, 4)))
    return words


def ctc_align(log_probs: torch.Tensor, tokens: list[int], blank_id: int = 0) -> list[int] | None:
    """The most probable CTC path (a label per frame) that reads `tokens` (Viterbi forced
    alignment); None when the frames cannot hold them."""
    lp = log_probs.detach().to("cpu", torch.float64).numpy()
    ext = np.full(2 * len(tokens) + 1, blank_id, dtype=np.int64)  # blank, t1, blank, t2, ..., blank
    ext[1::2] = tokens
    states = len(ext)
    if lp.shape[0] == 0:
        return [] if not tokens else None
    # a label may be skipped to from two states back unless it repeats the label there
    can_skip = np.zeros(states, bool)
    can_skip[3::2] = ext[3::2] != ext[1:-2:2]
    emit = lp[:, ext]
    score = np.full(states, -np.inf)
    score[: min(2, states)] = emit[0, : min(2, states)]
    back = np.zeros((lp.shape[0], states), np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, lp.shape[0]):
        moves = np.full((3, states), -np.inf)
        moves[0] = score
        moves[1, 1:] = score[:-1]
        moves[2, 2:] = np.where(can_skip[2:], score[:-2], -np.inf)
        back[t] = moves.argmax(0)
        score = moves[back[t], np.arange(states)] + emit[t]
    s = states - 1 if states == 1 or score[-1] >= score[-2] else states - 2
    if not np.isfinite(score[s]):
        return None
    path = [0] * lp.shape[0]
    for t in range(lp.shape[0] - 1, -1, -1):
        path[t] = int(ext[s])
        s -= int(back[t, s])
    return path


def words_from_labels(tokens: list[int], frames: list[int], log_probs: torch.Tensor, vocab: Vocabulary,
                      frame_shift: float, speech: Sequence[bool] | None = None) -> list[Word]:
    """Words of a label sequence a search chose (a beam, an ensemble's pick), timed by their CTC
    spikes in the frames' most probable alignment of that sequence (`word_timings`).

    The search's own label frames (`frames`, where each label starts) are only where the search
    first emitted a label; a word would run from there to the next label, tiling the audio. They
    are used only if the alignment is impossible (more labels than frames)."""
    path = ctc_align(log_probs, tokens, vocab.blank_id)
    if path is None:
        path = [vocab.blank_id] * log_probs.size(0)
        for i, t in zip(tokens, frames):
            path[min(t, len(path) - 1)] = i
    return word_timings(path, log_probs, vocab, frame_shift, speech)


def widen(words: list[Word], margin: float, end: float) -> list[Word]:
    """Word spans widened by up to `margin` seconds on each side (a spike is narrower than the
    sound it stands for), never past the middle of the gap to a neighbour nor outside [0, end]."""
    out = []
    for k, w in enumerate(words):
        lo = max(0.0, w.start - margin, (words[k - 1].end + w.start) / 2 if k else 0.0)
        hi = min(end, w.end + margin, (w.end + words[k + 1].start) / 2 if k + 1 < len(words) else end)
        out.append(Word(w.word, round(min(lo, w.start), 3), round(max(hi, w.end), 3), w.confidence))
    return out


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

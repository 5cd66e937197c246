"""CTC beam search with ctcdecode's `CTCBeamDecoder` API, running on flashlight-text.

ctcdecode itself cannot be pip-installed (its sdist downloads Boost while building), so the same
constructor and `decode()` outputs are served by flashlight-text's decoders, which ship as wheels:

- no LM, no lexicon: flashlight's lexicon-free search merged with `prefix_beam_search` (below);
- a token-level KenLM model (its words are the labels, the space written `|`): lexicon-free
  search with that LM;
- a word-level KenLM model, or a lexicon: lexicon-constrained search over the words of the
  lexicon (a file or a list of words), or else of the ARPA file's unigrams. Output is then
  words separated by single spaces, with no space at either end.

Scores. `beam_scores[b, k]` is -ln P_CTC(beam k | utterance b) summed over the CTC paths the
search kept, LM and word bonus excluded: lower is better, and without a lexicon it is never below
the exact value (`ctc_forward_logprob`), which it approaches when the posteriors are peaked.
This is ctcdecode's quantity (`-approx_ctc`), computed the same way. With a lexicon a beam is a
transcript: its score also sums the label sequences that differ from it only in extra spaces
between or around words, which that search does not tell apart. Beams come in the search's
order: with an LM that is by acoustic + alpha·ln P_LM + beta·words, so the beam scores need not
increase down the list (as with ctcdecode); without an LM it is by beam score.

Why the no-LM search is merged with a prefix search: flashlight's lexicon-free search keeps a
prefix ending in blank and the same prefix ending in a label as two hypotheses, so its beam holds
fewer distinct prefixes and ranks them by part of their probability. On random posteriors
(beam 16, 50-150 frames, 28 labels) its top beam was less probable than a plain prefix search's
in 29 of 40 utterances and more probable in 2. Ranking the union of both n-best lists makes "the
best beam is never less probable than what a plain prefix search finds" hold by construction,
at the cost of running both: at beam 100, 300 frames, 28 labels, ~70-90 ms for the numpy prefix
search plus ~100-180 ms for flashlight per utterance.

Unlike ctcdecode, slots past the last beam found are zero-filled with `out_lens` 0 and score inf
(ctcdecode leaves them uninitialised).
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from asr.lm import LM_SPECIAL_WORDS, WORD_BOUNDARY, arpa_unigrams, read_lexicon, spell, spelling_labels

BACKENDS = ("auto", "flashlight", "ctcdecode", "prefix")
Beam = tuple[tuple[int, ...], tuple[int, ...], float]  # labels, frame each starts, ln P


def ctc_forward_logprob(log_probs: np.ndarray, tokens: Sequence[int], blank_id: int = 0) -> float:
    """Exact ln P_CTC(tokens | log_probs) by the forward algorithm; log_probs is (T, V)."""
    lp = torch.as_tensor(np.asarray(log_probs, dtype=np.float64))
    if lp.shape[0] == 0:
        return 0.0 if len(tokens) == 0 else -math.inf
    nll = torch.nn.functional.ctc_loss(
        lp[:, None, :], torch.tensor([list(tokens) or [0]]), torch.tensor([lp.shape[0]]),
        torch.tensor([len(tokens)]), blank=blank_id, reduction="sum", zero_infinity=False)
    return -float(nll)


def ctc_log_likelihoods(log_probs: np.ndarray | torch.Tensor, candidates: Sequence[Sequence[int]],
                        blank_id: int = 0) -> np.ndarray:
    """Exact ln P_CTC(candidate | log_probs) of each label sequence, in one batched forward pass.

    -inf where a candidate needs more frames than there are (CTC cannot emit it).
    """
    lp = torch.as_tensor(np.asarray(log_probs, dtype=np.float64) if isinstance(log_probs, np.ndarray)
                         else log_probs.detach().to("cpu", torch.float64))
    n = len(candidates)
    if n == 0:
        return np.zeros(0)
    frames = lp.shape[0]
    if frames == 0:
        return np.array([0.0 if len(c) == 0 else -math.inf for c in candidates])
    targets = torch.tensor([t for c in candidates for t in c], dtype=torch.long)
    nll = torch.nn.functional.ctc_loss(
        lp[:, None, :].expand(frames, n, lp.shape[1]), targets, torch.full((n,), frames, dtype=torch.long),
        torch.tensor([len(c) for c in candidates], dtype=torch.long), blank=blank_id, reduction="none",
        zero_infinity=False)
    return -nll.numpy()


def _prefix_search(log_probs: np.ndarray, beam_width: int, blank_id: int) -> list[Beam]:
    """Prefix beam search; (labels, start frames, ln prob over the kept paths), best first.

    Start frames follow one path per prefix, the one carrying the most probability at each
    merge, so they rise strictly (ctcdecode instead records, per prefix, the frame where its
    last label peaked, which can put a label before the one it follows).
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    frames, vocab = lp.shape
    # Prefixes are nodes of a trie that only grows (parent, last label); the paths behind the
    # start frames are a second such tree (parent, frame of its last label).
    parent, label = [-1], [-1]
    child: dict[tuple[int, int], int] = {}
    path_parent, path_start = [-1], [-1]
    ids, last = np.array([0]), np.array([-1])
    lb, lnb = np.array([0.0]), np.array([-np.inf])  # ln P(prefix, ending in blank / in a label)
    pb, pnb = np.array([0]), np.array([0])  # the dominant path of each of those two
    for t in range(frames):
        x = lp[t]
        total = np.logaddexp(lb, lnb)
        dominant = np.where(lb >= lnb, pb, pnb)
        stay_b = total + x[blank_id]
        stay_nb = np.where(last >= 0, lnb + x[np.maximum(last, 0)], -np.inf)
        stay_nb_path = pnb.copy()
        ext = total[:, None] + x[None, :]
        rows = np.flatnonzero(last >= 0)
        ext[rows, last[rows]] = lb[rows] + x[last[rows]]  # a repeat needs a blank in between
        ext[:, blank_id] = -np.inf

        def new_path(j: int, v: int) -> int:
            path_parent.append(int(pb[j] if v == last[j] else dominant[j]))
            path_start.append(t)
            return len(path_start) - 1

        # An extension that is itself in the beam is not a new prefix: fold it into that beam.
        where = {node: i for i, node in enumerate(ids.tolist())}
        for i, node in enumerate(ids.tolist()):
            j = where.get(parent[node])
            if j is not None:
                v = label[node]
                if ext[j, v] > stay_nb[i]:
                    stay_nb_path[i] = new_path(j, v)
                stay_nb[i] = np.logaddexp(stay_nb[i], ext[j, v])
                ext[j, v] = -np.inf
        cand = np.concatenate([np.logaddexp(stay_b, stay_nb), ext.ravel()])
        k = min(beam_width, cand.size)
        top = np.argpartition(-cand, k - 1)[:k]
        top = top[np.argsort(-cand[top], kind="stable")]
        top = top[cand[top] > -np.inf]
        if top.size == 0:
            return []
        new = []  # (node, lb, lnb, blank path, label path)
        for c in top.tolist():
            if c < len(ids):
                new.append((int(ids[c]), stay_b[c], stay_nb[c], dominant[c], stay_nb_path[c]))
                continue
            j, v = divmod(c - len(ids), vocab)
            node = child.get((int(ids[j]), v))
            if node is None:
                node = child[(int(ids[j]), v)] = len(parent)
                parent.append(int(ids[j]))
                label.append(v)
            new.append((node, -np.inf, ext[j, v], 0, new_path(j, v)))
        ids, lb, lnb, pb, pnb = (np.array(col) for col in zip(*new))
        last = np.array([label[i] for i in ids.tolist()])

    total = np.logaddexp(lb, lnb)
    results = []
    for i in np.argsort(-total, kind="stable").tolist():
        labels, starts = [], []
        node, path = int(ids[i]), int(pb[i] if lb[i] >= lnb[i] else pnb[i])
        while node > 0:
            labels.append(label[node])
            starts.append(path_start[path])
            node, path = parent[node], path_parent[path]
        results.append((tuple(labels[::-1]), tuple(starts[::-1]), float(total[i])))
    return results


def prefix_beam_search(log_probs: np.ndarray, beam_width: int = 100,
                       blank_id: int = 0) -> list[tuple[list[int], float]]:
    """Plain CTC prefix beam search over (T, V) log-probabilities, no LM, no label pruning.

    Returns up to `beam_width` (labels, ln prob) pairs, most probable first. Each prefix's
    probability sums every path through the kept prefixes, so it is exact up to the beam pruning
    (a lower bound of `ctc_forward_logprob`).
    """
    return [(list(labels), logp) for labels, _, logp in _prefix_search(log_probs, beam_width, blank_id)]


def _collapse(frame_labels: Sequence[int], blank_id: int) -> tuple[list[int], list[int]]:
    """CTC's many-to-one map on a frame labelling: (labels, frame where each starts)."""
    # vectorised: this ran once per beam per utterance, a Python loop over every frame
    v = np.asarray(frame_labels, dtype=np.int64)
    keep = v != blank_id
    keep[1:] &= v[1:] != v[:-1]
    starts = np.flatnonzero(keep)
    return v[starts].tolist(), starts.tolist()


def _single_spaces(labels: list[int], starts: list[int], space: int) -> tuple[list[int], list[int]]:
    keep = [i for i, v in enumerate(labels) if v != space or (0 < i and labels[i - 1] != space)]
    while keep and labels[keep[-1]] == space:
        keep.pop()
    if keep and labels[keep[0]] == space:
        keep.pop(0)
    return [labels[i] for i in keep], [starts[i] for i in keep]


def _merge(hyps: Iterable[Beam], combine: Callable[[float, float], float]) -> list[Beam]:
    """One entry per label sequence, at its first position, scores of repeats combined."""
    merged: dict[tuple[int, ...], Beam] = {}
    for labels, starts, logp in hyps:
        if labels in merged:
            logp = float(combine(merged[labels][2], logp))
            starts = merged[labels][1]
        merged[labels] = (labels, starts, logp)
    return list(merged.values())


class CTCBeamDecoder:
    """ctcdecode's CTCBeamDecoder: same arguments, same `decode()` outputs (see module doc).

    labels: one string per model output (characters or multi-character tokens, any Unicode);
        `space_label` among them separates words. model_path: KenLM model, ARPA or binary.
        alpha: LM weight on the natural-log LM probability (ctcdecode's meaning). beta: bonus
        per word, for a word-level LM or a lexicon (refused with a token-level LM). Without an
        LM, alpha is ignored, and beta too unless there is a lexicon, as in ctcdecode.
        cutoff_top_n: labels tried per frame. cutoff_prob: labels tried per frame cover this
        much probability mass.
    backend: "auto"/"flashlight" (flashlight-text), "ctcdecode" (the real package, which must be
        installed), "prefix" (`prefix_beam_search` alone, no LM).
    lexicon: lexicon file (see asr.lm) or iterable of words; the output uses only these words.
    beam_threshold: flashlight drops hypotheses scoring this much (nats) below the best.
    num_processes: accepted for ctcdecode compatibility and ignored: flashlight-text's Python
        bindings hold the GIL while decoding, so threads over the batch were measured to give
        no speed-up (and 35% slower on flat posteriors from contention); utterances are decoded
        one after another.
    """

    def __init__(self, labels: Sequence[str], model_path: str | os.PathLike | None = None,
                 alpha: float = 0, beta: float = 0, cutoff_top_n: int = 40,
                 cutoff_prob: float = 1.0, beam_width: int = 100, num_processes: int = 4,
                 blank_id: int = 0, log_probs_input: bool = False, *, backend: str = "auto",
                 lexicon: str | os.PathLike | Iterable[str] | None = None,
                 beam_threshold: float = 25.0, space_label: str = " "):
        self._labels = list(labels)
        if not 0 <= blank_id < len(self._labels):
            raise ValueError(f"blank_id {blank_id} is outside the {len(self._labels)} labels")
        if beam_width < 1 or cutoff_top_n < 1:
            raise ValueError(f"beam_width ({beam_width}) and cutoff_top_n ({cutoff_top_n}) must be >= 1")
        if not 0 < cutoff_prob <= 1:
            raise ValueError(f"cutoff_prob must be in (0, 1], got {cutoff_prob}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        spelling_labels(self._labels, blank_id, space_label)  # rejects duplicate labels
        self._blank, self._beam_width = blank_id, beam_width
        self._cutoff_top_n, self._cutoff_prob = cutoff_top_n, cutoff_prob
        self._log_probs_input, self._beam_threshold = log_probs_input, beam_threshold
        self._space = self._labels.index(space_label) if space_label in self._labels else None
        self._ctcdecode = None
        self._backend = "flashlight" if backend == "auto" else backend
        self._words: dict[str, list[list[int]]] | None = None  # lexicon mode when set
        self._has_lm = model_path is not None

        if backend == "ctcdecode":
            try:
                import ctcdecode
            except ImportError as e:
                raise ImportError("backend='ctcdecode' needs the ctcdecode package, which is not "
                                  "installed (it does not build from pip); use backend='flashlight'") from e
            if lexicon is not None:
                raise ValueError("backend='ctcdecode' takes no lexicon; use backend='flashlight'")
            self._ctcdecode = ctcdecode.CTCBeamDecoder(
                self._labels, None if model_path is None else str(model_path), alpha, beta,
                cutoff_top_n, cutoff_prob, beam_width, num_processes, blank_id, log_probs_input)
        elif backend == "prefix":
            if model_path is not None or lexicon is not None:
                raise ValueError("backend='prefix' is the plain search without LM or lexicon; "
                                 "use backend='flashlight' with model_path/lexicon")
        else:
            self._init_flashlight(model_path, lexicon, space_label)
        self.reset_params(alpha, beta)

    # --- flashlight set-up --------------------------------------------------------------------

    def _init_flashlight(self, model_path, lexicon, space_label: str) -> None:
        from flashlight.lib.text.decoder import SmearingMode, Trie, ZeroLM
        from flashlight.lib.text.dictionary import Dictionary

        written = [WORD_BOUNDARY if lab == space_label else lab for lab in self._labels]
        if len(set(written)) != len(written):
            raise ValueError(f"labels contain {WORD_BOUNDARY!r} besides the space label "
                             f"{space_label!r}; files write the space as {WORD_BOUNDARY!r}")
        if model_path is not None:
            model_path = str(model_path)
            if not os.path.isfile(model_path):
                raise FileNotFoundError(f"model_path {model_path} does not exist")
            if lexicon is None:
                lexicon = self._word_lm_vocabulary(model_path, written)

        if lexicon is not None:
            if self._space is None:
                raise ValueError(f"a word lexicon or word LM needs a word separator, but the space "
                                 f"label {space_label!r} is not among the labels")
            self._words = self._spell_lexicon(lexicon, space_label)
            lm_dict = Dictionary(list(self._words) + ["<unk>"] * ("<unk>" not in self._words))
        else:
            lm_dict = Dictionary(written)
        self._lm = _load_kenlm(model_path, lm_dict) if model_path is not None else ZeroLM()
        self._lm_dict = lm_dict

        if self._words is not None:
            self._trie = Trie(len(self._labels), self._space)
            self._unk = lm_dict.get_index("<unk>")
            start = self._lm.start(False)
            for word, spellings in self._words.items():
                index = lm_dict.get_index(word)
                _, score = self._lm.score(start, index)
                for spelled in spellings:
                    # every word ends in the space label, so words are separated by real spaces
                    self._trie.insert(spelled + [self._space], index, score)
            self._trie.smear(SmearingMode.MAX)

    def _word_lm_vocabulary(self, model_path: str, written: list[str]) -> list[str] | None:
        """The words of a word-level LM, or None for a token-level one (its words are labels)."""
        with open(model_path, "rb") as f:
            is_arpa = f.read(4096).lstrip().startswith(b"\\data\\")
        tokens = set(written) - {written[self._blank]}
        if is_arpa:
            vocab = [w for w in arpa_unigrams(model_path) if w not in LM_SPECIAL_WORDS]
            return None if set(vocab) <= tokens else vocab
        import kenlm  # the binary format does not list its words; probe them instead

        model = kenlm.Model(model_path)
        # A word LM knows a few single-letter words; a token LM knows (nearly) every label.
        if sum(tok in model for tok in tokens) >= 0.5 * len(tokens):
            return None
        raise ValueError(f"{model_path} is a binary KenLM model whose words are not the labels: "
                         "a binary word-level LM needs lexicon= (a lexicon file or the list of "
                         "words); for an ARPA file the words are read from it")

    def _spell_lexicon(self, lexicon, space_label: str) -> dict[str, list[list[int]]]:
        if isinstance(lexicon, (str, os.PathLike)):
            return read_lexicon(lexicon, self._labels, blank_id=self._blank, space_label=space_label)
        tokens = spelling_labels(self._labels, self._blank, space_label)
        words = {}
        for word in dict.fromkeys(lexicon):
            spelled = spell(word, tokens) if word not in LM_SPECIAL_WORDS else None
            if spelled is not None:
                words[word] = [spelled]
        if not words:
            raise ValueError("none of the lexicon's words can be spelled with the labels")
        return words

    # --- searches -------------------------------------------------------------------------------

    def _flashlight_search(self, log_probs: np.ndarray, prune: bool = True) -> list[Beam]:
        from flashlight.lib.text.decoder import (CriterionType, LexiconDecoder, LexiconDecoderOptions,
                                                 LexiconFreeDecoder, LexiconFreeDecoderOptions)

        frames, vocab = log_probs.shape
        emissions = log_probs.astype(np.float32)
        if prune and self._cutoff_prob < 1.0:
            # ctcdecode's cutoff_prob: per frame, keep the most probable labels covering that mass
            order = np.argsort(-emissions, axis=1)
            p = np.exp(np.take_along_axis(emissions, order, 1).astype(np.float64))
            drop = np.empty((frames, vocab), bool)
            np.put_along_axis(drop, order, np.cumsum(p, 1) - p >= self._cutoff_prob, 1)
            emissions[drop] = _PRUNED
        # flashlight's LM scores are log10; alpha weighs ln, as in ctcdecode
        lm_weight = self._alpha * math.log(10) if self._has_lm else 0.0
        options = dict(beam_size=self._beam_width, beam_size_token=min(self._cutoff_top_n, vocab),
                       beam_threshold=self._beam_threshold, lm_weight=lm_weight, sil_score=0.0,
                       log_add=True, criterion_type=CriterionType.CTC)
        if self._words is not None:
            # One more frame that can only be a space, so that the last word is closed and scored.
            closing = np.full((1, vocab), _PRUNED, np.float32)
            closing[0, self._space] = 0.0
            emissions = np.concatenate([emissions, closing])
            decoder = LexiconDecoder(
                LexiconDecoderOptions(**options, word_score=self._beta, unk_score=_PRUNED),
                self._trie, self._lm, self._space, self._blank, self._unk, [], False)
        else:
            # Blank as flashlight's silence: with the space there, a space in the first frame
            # would count as the silence it starts every hypothesis with, not as a label.
            decoder = LexiconFreeDecoder(LexiconFreeDecoderOptions(**options), self._lm,
                                         self._blank, self._blank, [])
        emissions = np.ascontiguousarray(emissions)
        hyps = []
        for r in decoder.decode(emissions.ctypes.data, len(emissions), vocab):
            # tokens[0] and tokens[-1] are the silences flashlight puts around the utterance
            labels, starts = _collapse(r.tokens[1:frames + 1], self._blank)
            n_words = 0
            if self._words is not None:
                labels, starts = _single_spaces(labels, starts, self._space)
                n_words = int(np.count_nonzero(np.asarray(r.words) >= 0))
            # hypotheses merged by log_add share their LM history, so this leaves the log-sum of
            # their acoustic scores
            acoustic = r.score - lm_weight * r.lmScore - self._beta * n_words
            if acoustic > _PRUNED / 2:  # a path through a pruned label is no hypothesis
                hyps.append((tuple(labels), tuple(starts), acoustic))
        # in lexicon mode, spellings that differ in extra spaces are one transcript: add them up
        return _merge(hyps, np.logaddexp)

    def _decode_one(self, log_probs: np.ndarray) -> list[Beam]:
        if len(log_probs) == 0:
            return [((), (), 0.0)]
        if self._backend == "prefix":
            return _prefix_search(log_probs, self._beam_width, self._blank)
        hyps = self._flashlight_search(log_probs)
        if not hyps and self._cutoff_prob < 1.0:
            # cutoff_prob pruned away every path the lexicon can spell: search again unpruned
            # rather than return nothing (or a NaN score) for the utterance
            hyps = self._flashlight_search(log_probs, prune=False)
        if self._words is None and not self._has_lm:
            # Both scores sum a subset of the paths of the same labels: the larger is the better
            # estimate, and the best of the union is at least the prefix search's best.
            hyps += _prefix_search(log_probs, self._beam_width, self._blank)
            hyps = sorted(_merge(hyps, max), key=lambda h: -h[2])
        return hyps[: self._beam_width]

    # --- ctcdecode's API ------------------------------------------------------------------------

    def decode(self, probs: torch.Tensor, seq_lens: torch.Tensor | None = None):
        """Beam search over a batch: probs (batch, T, len(labels)), probabilities (or log).

        Returns (beam_results int32 (batch, beam_width, T), beam_scores float32 (batch,
        beam_width), timesteps int32 (batch, beam_width, T), out_lens int32 (batch, beam_width)).
        """
        if self._ctcdecode is not None:
            return self._ctcdecode.decode(probs, seq_lens)
        probs = torch.as_tensor(probs)
        if probs.ndim != 3 or probs.shape[2] != len(self._labels):
            raise ValueError(f"probs must be (batch, time, {len(self._labels)} labels), "
                             f"got shape {tuple(probs.shape)}")
        batch, frames, _ = probs.shape
        lp = probs.detach().to("cpu", torch.float64).numpy()
        if not self._log_probs_input:
            with np.errstate(divide="ignore"):
                lp = np.log(lp)
        lens = [frames] * batch if seq_lens is None else torch.as_tensor(seq_lens).tolist()
        if len(lens) != batch or not all(0 <= n <= frames for n in lens):
            raise ValueError(f"seq_lens must hold {batch} lengths in [0, {frames}], got {lens}")

        decoded = [self._decode_one(lp[b, :n]) for b, n in enumerate(lens)]

        # filled as numpy arrays: a torch.tensor per beam cost more than flashlight's search
        beam_results = np.zeros((batch, self._beam_width, frames), dtype=np.int32)
        timesteps = np.zeros((batch, self._beam_width, frames), dtype=np.int32)
        beam_scores = np.full((batch, self._beam_width), math.inf, dtype=np.float32)
        out_lens = np.zeros((batch, self._beam_width), dtype=np.int32)
        for b, beams in enumerate(decoded):
            for k, (labels, starts, logp) in enumerate(beams):
                beam_results[b, k, :len(labels)] = labels
                timesteps[b, k, :len(labels)] = starts
                beam_scores[b, k] = -logp
                out_lens[b, k] = len(labels)
        return tuple(torch.from_numpy(x) for x in (beam_results, beam_scores, timesteps, out_lens))

    def lm_score(self, labels: Sequence[int]) -> float:
        """alpha·ln P_LM + beta·words of a label sequence: what the search adds to a beam's
        acoustic score when it ranks it (0 without LM and lexicon). Lets a caller rank
        transcripts that come from elsewhere (an ensemble's other members) on the same scale.
        """
        if self._ctcdecode is not None:
            raise ValueError("lm_score needs the flashlight backend (ctcdecode does not expose its scorer)")
        if self._backend == "prefix":
            return 0.0
        lm_weight = self._alpha * math.log(10) if self._has_lm else 0.0  # flashlight's LM is log10
        labels = [v for v in labels if v != self._blank]
        if self._words is not None:
            text = "".join(self._labels[v] for v in labels)
            units = [self._lm_dict.get_index(w) if w in self._words else self._unk
                     for w in text.split(self._labels[self._space]) if w]
            n_words = len(units)
        else:
            units, n_words = labels, 0
        if not lm_weight:
            return self._beta * n_words
        state, total = self._lm.start(False), 0.0
        for unit in units:
            state, s = self._lm.score(state, unit)
            total += s
        total += self._lm.finish(state)[1]
        return lm_weight * total + self._beta * n_words

    def reset_params(self, alpha: float, beta: float) -> None:
        """Change the LM weight and word bonus (ctcdecode's reset_params)."""
        if self._ctcdecode is not None:
            self._ctcdecode.reset_params(alpha, beta)
        elif beta and self._has_lm and self._words is None:
            # flashlight's lexicon-free search has no per-word score to put it in
            raise ValueError(f"beta={beta} (a per-word bonus) needs a word-level LM or a lexicon; "
                             "with a token-level LM use alpha alone")
        self._alpha, self._beta = alpha, beta


# The emission of a label flashlight must not take. Not -inf: flashlight's log-add of two -inf
# scores is NaN, and with -inf in the emissions its results changed from one call to the next.
_PRUNED = -1e10


def _load_kenlm(path: str, dictionary):
    try:
        from flashlight.lib.text.decoder.kenlm import KenLM
    except ImportError:
        from flashlight.lib.text.decoder import KenLM
    # KenLM writes a progress bar and "build a binary file" advice to fd 2 on every ARPA load,
    # which would land in every `asr transcribe`; it is shown only when loading fails.
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            return KenLM(path, dictionary)
        except Exception:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)

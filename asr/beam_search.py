"""CTC beam search with ctcdecode's `CTCBeamDecoder` API, running on flashlight-text.

ctcdecode itself cannot be pip-installed (its sdist downloads Boost while building), so the same
constructor and `decode()` outputs are served by flashlight-text's decoders, which ship as wheels:

- no LM, no lexicon: flashlight's lexicon-free search, merged with `prefix_search` (below);
- a token-level KenLM model (its words are the labels, the space written `|`): lexicon-free
  search with that LM;
- a word-level KenLM model: lexicon-constrained search, the lexicon given as a file or a list of
  words, or else taken from the ARPA file's unigrams.

Scores. `beam_scores[b, k]` is -ln P_CTC(beam k | utterance b): the exact negative natural-log
CTC likelihood of the returned label sequence, from the forward algorithm, LM excluded. Lower is
better. ctcdecode returns the same quantity (its `-approx_ctc`), only approximated: it sums the
paths that survived its pruning and subtracts the LM terms it added. Beams come in the search's
order: with an LM that is acoustic + alpha·LM + beta·words, so with an LM the beam scores need
not increase down the list (as with ctcdecode); without one they do.

Why the no-LM search is merged with a prefix search: flashlight's lexicon-free search keeps a
prefix ending in blank and the same prefix ending in a label as two hypotheses with separate
scores, so its beam holds fewer distinct prefixes and its order is by a part of their
probability; on random posteriors its top beam was less probable than a plain prefix search's
in about 1 of 3 cases. Taking the union of both n-best lists and ranking it by exact likelihood
makes "the best beam is never less probable than a plain prefix search's" hold by construction.

Unlike ctcdecode, slots past the last beam found are zero-filled with `out_lens` 0 and score inf
(ctcdecode leaves them uninitialised).
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

import numpy as np
import torch

from asr.lm import LM_SPECIAL_WORDS, WORD_BOUNDARY, arpa_unigrams, read_lexicon, spell, spelling_labels

BACKENDS = ("auto", "flashlight", "ctcdecode", "prefix")
Hypothesis = tuple[tuple[int, ...], tuple[int, ...]]  # (labels, frame where each label starts)


def ctc_forward_logprobs(log_probs: np.ndarray, sequences: Sequence[Sequence[int]],
                         blank_id: int = 0) -> np.ndarray:
    """Exact ln P_CTC(sequence | log_probs) for each label sequence; -inf where it cannot fit."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    n, frames = len(sequences), log_probs.shape[0]
    if n == 0:
        return np.zeros(0)
    if frames == 0:
        return np.array([0.0 if len(s) == 0 else -np.inf for s in sequences])
    lengths = torch.tensor([len(s) for s in sequences])
    targets = torch.zeros(n, max(1, int(lengths.max())), dtype=torch.long)
    for i, s in enumerate(sequences):
        targets[i, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    lp = torch.from_numpy(log_probs)[:, None, :].expand(-1, n, -1)
    nll = torch.nn.functional.ctc_loss(lp, targets, torch.full((n,), frames), lengths,
                                       blank=blank_id, reduction="none", zero_infinity=False)
    return -nll.numpy()


def ctc_forward_logprob(log_probs: np.ndarray, tokens: Sequence[int], blank_id: int = 0) -> float:
    """Exact ln P_CTC(tokens | log_probs), log_probs of shape (T, V)."""
    return float(ctc_forward_logprobs(log_probs, [tokens], blank_id)[0])


def _prefix_search(log_probs: np.ndarray, beam_width: int,
                   blank_id: int) -> list[tuple[list[int], list[int], float]]:
    """Prefix beam search; (labels, start frames, ln prob over the kept paths), best first."""
    lp = np.asarray(log_probs, dtype=np.float64)
    frames, vocab = lp.shape
    # Prefixes are nodes of a trie that only grows: parent, last label, frame it was first emitted.
    parent, label, start = [-1], [-1], [-1]
    child: dict[tuple[int, int], int] = {}
    ids, last = np.array([0]), np.array([-1])
    lb, lnb = np.array([0.0]), np.array([-np.inf])  # ln P(prefix, ending in blank / in a label)
    for t in range(frames):
        x = lp[t]
        total = np.logaddexp(lb, lnb)
        stay_b = total + x[blank_id]
        stay_nb = np.where(last >= 0, lnb + x[np.maximum(last, 0)], -np.inf)
        ext = total[:, None] + x[None, :]
        rows = np.flatnonzero(last >= 0)
        ext[rows, last[rows]] = lb[rows] + x[last[rows]]  # a repeat needs a blank in between
        ext[:, blank_id] = -np.inf
        # An extension that is itself in the beam is not a new prefix: fold it into that beam.
        where = {node: i for i, node in enumerate(ids.tolist())}
        for i, node in enumerate(ids.tolist()):
            j = where.get(parent[node])
            if j is not None:
                stay_nb[i] = np.logaddexp(stay_nb[i], ext[j, label[node]])
                ext[j, label[node]] = -np.inf
        cand = np.concatenate([np.logaddexp(stay_b, stay_nb), ext.ravel()])
        k = min(beam_width, cand.size)
        top = np.argpartition(-cand, k - 1)[:k]
        top = top[np.argsort(-cand[top], kind="stable")]
        top = top[cand[top] > -np.inf]
        if top.size == 0:
            return []
        new_ids, new_lb, new_lnb = [], [], []
        for c in top.tolist():
            if c < len(ids):
                new_ids.append(int(ids[c]))
                new_lb.append(stay_b[c])
                new_lnb.append(stay_nb[c])
                continue
            j, v = divmod(c - len(ids), vocab)
            node = child.get((int(ids[j]), v))
            if node is None:
                node = child[(int(ids[j]), v)] = len(parent)
                parent.append(int(ids[j]))
                label.append(v)
                start.append(t)
            new_ids.append(node)
            new_lb.append(-np.inf)
            new_lnb.append(ext[j, v])
        ids, lb, lnb = np.array(new_ids), np.array(new_lb), np.array(new_lnb)
        last = np.array([label[i] for i in new_ids])

    total = np.logaddexp(lb, lnb)
    results = []
    for i in np.argsort(-total, kind="stable").tolist():
        labels, frames_ = [], []
        node = int(ids[i])
        while node > 0:
            labels.append(label[node])
            frames_.append(start[node])
            node = parent[node]
        results.append((labels[::-1], frames_[::-1], float(total[i])))
    return results


def prefix_beam_search(log_probs: np.ndarray, beam_width: int = 100,
                       blank_id: int = 0) -> list[tuple[list[int], float]]:
    """Plain CTC prefix beam search over (T, V) log-probabilities, no LM, no label pruning.

    Returns up to `beam_width` (labels, ln prob) pairs, most probable first. Each prefix's
    probability sums every path through the kept prefixes, so it is exact up to the beam pruning
    (a lower bound of `ctc_forward_logprob`).
    """
    return [(labels, logp) for labels, _, logp in _prefix_search(log_probs, beam_width, blank_id)]


def _collapse(frame_labels: Sequence[int], blank_id: int, n_frames: int) -> Hypothesis:
    labels, starts = [], []
    prev = None
    for t, v in enumerate(frame_labels[:n_frames]):
        if v != blank_id and v != prev:
            labels.append(v)
            starts.append(t)
        prev = v
    return tuple(labels), tuple(starts)


class CTCBeamDecoder:
    """ctcdecode's CTCBeamDecoder: same arguments, same `decode()` outputs (see module doc).

    labels: one string per model output (characters or multi-character tokens, any Unicode);
        `space_label` among them separates words. alpha: LM weight on the natural-log LM
        probability (ctcdecode's meaning). beta: bonus per word. cutoff_top_n: labels tried per
        frame. cutoff_prob: labels tried per frame cover this much probability mass.
    backend: "auto"/"flashlight" (flashlight-text), "ctcdecode" (the real package, if
        installed), "prefix" (`prefix_beam_search` alone, no LM).
    lexicon: lexicon file or iterable of words; restricts the output to those words.
    beam_threshold: flashlight drops hypotheses this far (in score) below the best.
    num_processes: utterances of a batch decoded in that many threads.
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
        self._blank, self._beam_width, self._num_processes = blank_id, beam_width, num_processes
        self._cutoff_top_n, self._cutoff_prob = cutoff_top_n, cutoff_prob
        self._log_probs_input, self._beam_threshold = log_probs_input, beam_threshold
        self._space = self._labels.index(space_label) if space_label in self._labels else None
        self._alpha, self._beta = alpha, beta
        self._ctcdecode = None
        self._backend = backend

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
            self._backend = "flashlight"
            self._init_flashlight(model_path, lexicon, space_label)

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

        self._words: dict[str, list[list[int]]] | None = None
        if lexicon is not None:
            if self._space is None:
                raise ValueError(f"a word lexicon or word LM needs a word separator, but the space "
                                 f"label {space_label!r} is not among the labels")
            self._words = self._spell_lexicon(lexicon, space_label)
            lm_dict = Dictionary(list(self._words) + ["<unk>"] * ("<unk>" not in self._words))
        else:
            lm_dict = Dictionary(written)
        self._lm = _load_kenlm(model_path, lm_dict) if model_path is not None else ZeroLM()
        self._has_lm = model_path is not None
        self._exact = model_path is None and lexicon is None

        if self._words is not None:
            self._trie = Trie(len(self._labels), self._space)
            self._unk = lm_dict.get_index("<unk>")
            start = self._lm.start(False)
            for word, spellings in self._words.items():
                index = lm_dict.get_index(word)
                _, score = self._lm.score(start, index)
                for spelled in spellings:
                    # each word ends in the space label, so words are separated by real spaces
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
        known = sum(tok in model for tok in tokens)
        # A word LM knows a few single-letter words; a token LM knows (nearly) every label.
        if known >= 0.5 * len(tokens):
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

    def _new_flashlight_decoder(self):
        from flashlight.lib.text.decoder import (CriterionType, LexiconDecoder, LexiconDecoderOptions,
                                                 LexiconFreeDecoder, LexiconFreeDecoderOptions)

        common = dict(beam_size=self._beam_width,
                      beam_size_token=min(self._cutoff_top_n, len(self._labels)),
                      beam_threshold=self._beam_threshold,
                      # flashlight's LM scores are log10; alpha weighs ln, as in ctcdecode
                      lm_weight=self._alpha * math.log(10) if self._has_lm else 0.0,
                      log_add=True, criterion_type=CriterionType.CTC)
        if self._words is not None:
            options = LexiconDecoderOptions(**common, word_score=self._beta, unk_score=-math.inf,
                                            sil_score=0.0)
            return LexiconDecoder(options, self._trie, self._lm, self._space, self._blank,
                                  self._unk, [], False)
        # Without a lexicon every space ends a word, so beta is paid per space.
        options = LexiconFreeDecoderOptions(**common, sil_score=self._beta if self._has_lm else 0.0)
        sil = self._space if self._space is not None else self._blank
        return LexiconFreeDecoder(options, self._lm, sil, self._blank, [])

    def _flashlight_search(self, log_probs: np.ndarray) -> list[Hypothesis]:
        frames, vocab = log_probs.shape
        emissions = log_probs.astype(np.float32)
        if self._cutoff_prob < 1.0:
            # ctcdecode's cutoff_prob: per frame, keep the most probable labels covering that mass
            order = np.argsort(-emissions, axis=1)
            p = np.exp(np.take_along_axis(emissions, order, 1).astype(np.float64))
            drop = np.empty((frames, vocab), bool)
            np.put_along_axis(drop, order, np.cumsum(p, 1) - p >= self._cutoff_prob, 1)
            emissions[drop] = -np.inf
        if self._words is not None:
            # One extra frame that can only be a space, so the last word is closed and scored.
            closing = np.full((1, vocab), -np.inf, np.float32)
            closing[0, self._space] = 0.0
            emissions = np.concatenate([emissions, closing])
        emissions = np.ascontiguousarray(emissions)
        results = self._new_flashlight_decoder().decode(emissions.ctypes.data, len(emissions), vocab)
        # tokens[0] and tokens[-1] are the silence flashlight puts before and after the utterance
        return [_collapse(list(r.tokens)[1:-1], self._blank, frames) for r in results]

    # --- decoding ------------------------------------------------------------------------------

    def _decode_one(self, log_probs: np.ndarray) -> list[tuple[tuple[int, ...], tuple[int, ...], float]]:
        if len(log_probs) == 0:
            return [((), (), 0.0)]
        hyps: list[Hypothesis] = []
        if self._backend == "flashlight":
            hyps += self._flashlight_search(log_probs)
        if self._backend == "prefix" or self._exact:
            hyps += [(tuple(lab), tuple(fr)) for lab, fr, _ in
                     _prefix_search(log_probs, self._beam_width, self._blank)]
        unique = dict(hyps)  # first occurrence wins: the search's order and timesteps
        labels = list(unique)
        logp = ctc_forward_logprobs(log_probs, labels, self._blank)
        order = range(len(labels))
        if self._backend == "prefix" or self._exact:
            order = np.argsort(-logp, kind="stable")
        best = [i for i in order if logp[i] > -np.inf][: self._beam_width]
        return [(labels[i], unique[labels[i]], float(-logp[i])) for i in best]

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

        items = [lp[b, :n] for b, n in enumerate(lens)]
        if self._num_processes > 1 and batch > 1:
            with ThreadPoolExecutor(min(self._num_processes, batch)) as pool:
                decoded = list(pool.map(self._decode_one, items))
        else:
            decoded = [self._decode_one(x) for x in items]

        beam_results = torch.zeros(batch, self._beam_width, frames, dtype=torch.int32)
        timesteps = torch.zeros(batch, self._beam_width, frames, dtype=torch.int32)
        beam_scores = torch.full((batch, self._beam_width), math.inf, dtype=torch.float32)
        out_lens = torch.zeros(batch, self._beam_width, dtype=torch.int32)
        for b, beams in enumerate(decoded):
            for k, (labels, starts, score) in enumerate(beams):
                beam_results[b, k, :len(labels)] = torch.tensor(labels, dtype=torch.int32)
                timesteps[b, k, :len(labels)] = torch.tensor(starts, dtype=torch.int32)
                beam_scores[b, k] = score
                out_lens[b, k] = len(labels)
        return beam_results, beam_scores, timesteps, out_lens

    def reset_params(self, alpha: float, beta: float) -> None:
        """Change the LM weight and word bonus (ctcdecode's reset_params)."""
        self._alpha, self._beta = alpha, beta
        if self._ctcdecode is not None:
            self._ctcdecode.reset_params(alpha, beta)


def _load_kenlm(path: str, dictionary):
    try:
        from flashlight.lib.text.decoder.kenlm import KenLM
    except ImportError:
        from flashlight.lib.text.decoder import KenLM
    return KenLM(path, dictionary)

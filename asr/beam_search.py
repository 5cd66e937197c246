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
at the cost of running both. The prefix search is compiled (asr.beam_kernels, beams identical to
`_PrefixSearch`'s): at beam 32, ~60 frames, 28 labels ~2.5 ms an utterance where numpy took ~30,
against ~3 ms for flashlight's own search.

Unlike ctcdecode, slots past the last beam found are zero-filled with `out_lens` 0 and score inf
(ctcdecode leaves them uninitialised).
"""
from __future__ import annotations

import itertools
import math
import os
import sys
import tempfile
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from . import beam_kernels
from .lm import LM_SPECIAL_WORDS, WORD_BOUNDARY, arpa_unigrams, read_lexicon, spell, spelling_labels

BACKENDS = ("auto", "flashlight", "ctcdecode", "prefix")
Beam = tuple[tuple[int, ...], tuple[int, ...], float]  # labels, frame each starts, ln P


def ctc_forward_logprob(log_probs: np.ndarray, tokens: Sequence[int], blank_id: int = 0) -> float:
    """Exact ln P_CTC(tokens | log_probs) by the forward algorithm; log_probs is (T, V)."""
    return float(ctc_log_likelihoods(log_probs, [list(tokens)], blank_id)[0])


def ctc_log_likelihoods(log_probs: np.ndarray | torch.Tensor, candidates: Sequence[Sequence[int]],
                        blank_id: int = 0) -> np.ndarray:
    """Exact ln P_CTC(candidate | log_probs) of each label sequence, by the forward algorithm
    (compiled: torch's batched ctc_loss took ~2 ms for 20 short candidates, as long as the
    lexicon search that proposed them).

    -inf where a candidate needs more frames than there are (CTC cannot emit it).
    """
    lp = (np.asarray(log_probs, dtype=np.float64) if isinstance(log_probs, np.ndarray)
          else log_probs.detach().to("cpu", torch.float64).numpy())
    if len(candidates) == 0:
        return np.zeros(0)
    if lp.shape[0] == 0:
        return np.array([0.0 if len(c) == 0 else -math.inf for c in candidates])
    targets = np.array(list(itertools.chain.from_iterable(candidates)), dtype=np.int64)
    offsets = np.cumsum([0] + [len(c) for c in candidates], dtype=np.int64)
    return beam_kernels.ctc_log_likelihoods(np.ascontiguousarray(lp), targets, offsets, blank_id)


class _PrefixSearch:
    """Prefix beam search over frames fed in any number of pieces; (labels, start frames, ln prob).

    The search of one frame depends only on the beams before it, so feeding the frames in chunks
    gives exactly the beams of feeding them at once. Start frames follow one path per prefix, the
    one carrying the most probability at each merge, so they rise strictly (ctcdecode instead
    records, per prefix, the frame where its last label peaked, which can put a label before the
    one it follows).

    With `scorer` (a `_WordScorer` or `_TokenScorer`) every extension of a prefix also gets the
    scorer's LM term (-inf where its lexicon forbids the label), and prefixes are ranked by
    acoustic + LM; the probabilities kept stay acoustic. `allowed` (frame -> bool per label)
    is ctcdecode's cutoff_top_n/cutoff_prob: a pruned label starts no new label in that frame.

    Memory: every `_COMPACT_EVERY` frames the prefix trie and the tree of paths behind the start
    frames are cut down to what the beams still reach, and the words every beam shares (up to a
    space, with the same start frames on every path) move to `committed`, so an endless stream
    keeps a state bounded by the beam, not by its history. Compaction changes no beam.
    """

    def __init__(self, vocab: int, beam_width: int, blank_id: int, space_id: int | None = None,
                 scorer=None, allowed: Callable[[np.ndarray], np.ndarray] | None = None):
        self.vocab, self.beam_width, self.blank, self.space = vocab, beam_width, blank_id, space_id
        self.scorer, self.allowed = scorer, allowed
        self.frames = 0  # frames consumed
        # Prefixes are nodes of a trie (parent, last label); the paths behind the start frames
        # are a second such tree (parent, frame of its last label). Node 0 is the root of both.
        self.parent, self.label = [-1], [-1]
        self.child: dict[tuple[int, int], int] = {}
        self.path_parent, self.path_start = [-1], [-1]
        self.node_lm = [0.0]  # the LM terms of each prefix (0 without scorer)
        self.node_ctx = [scorer.start() if scorer is not None else None]  # the scorer's state
        self.rows: dict[int, tuple[np.ndarray, dict]] = {}  # node -> (LM term per label, ctx per label)
        self.ids, self.last = np.array([0]), np.array([-1])
        self.lb, self.lnb = np.array([0.0]), np.array([-np.inf])  # ln P(prefix, ending in blank / in a label)
        self.pb, self.pnb = np.array([0]), np.array([0])  # the dominant path of each of those two
        self.committed: tuple[list[int], list[int]] = ([], [])  # labels and starts every beam shares
        self.dead = False  # every prefix fell out (a lexicon that cannot continue)

    # -- the LM terms of extending a node by each label
    def _row(self, node: int) -> np.ndarray:
        if self.scorer is None:
            return _ZERO_ROWS.setdefault(self.vocab, np.zeros(self.vocab))
        row = self.rows.get(node)
        if row is None:
            row = self.rows[node] = self.scorer.extensions(self.node_ctx[node], self.vocab)
        return row[0]

    def advance(self, log_probs: np.ndarray) -> None:
        lp = np.asarray(log_probs, dtype=np.float64)
        for x in lp:
            if self.dead:
                break
            self._frame(x)
            self.frames += 1
            if self.frames % _COMPACT_EVERY == 0:
                self._compact()

    def _frame(self, x: np.ndarray) -> None:
        t, blank, vocab = self.frames, self.blank, self.vocab
        ids, last, lb, lnb, pb, pnb = self.ids, self.last, self.lb, self.lnb, self.pb, self.pnb
        parent, label, child = self.parent, self.label, self.child
        path_parent, path_start = self.path_parent, self.path_start
        lm = np.array([self.node_lm[i] for i in ids.tolist()])
        bonus = np.stack([self._row(i) for i in ids.tolist()])  # (beam, V)
        total = np.logaddexp(lb, lnb)
        dominant = np.where(lb >= lnb, pb, pnb)
        stay_b = total + x[blank]
        stay_nb = np.where(last >= 0, lnb + x[np.maximum(last, 0)], -np.inf)
        stay_nb_path = pnb.copy()
        ext = total[:, None] + x[None, :]
        rows = np.flatnonzero(last >= 0)
        ext[rows, last[rows]] = lb[rows] + x[last[rows]]  # a repeat needs a blank in between
        ext[:, blank] = -np.inf
        if self.allowed is not None:
            ext[:, ~self.allowed(x)] = -np.inf

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
        ranked = np.concatenate([np.logaddexp(stay_b, stay_nb) + lm, (ext + (lm[:, None] + bonus)).ravel()])
        top = _top(ranked, min(self.beam_width, ranked.size))
        top = top[ranked[top] > -np.inf]
        if top.size == 0:
            self.dead = True
            return
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
                self.node_lm.append(self.node_lm[int(ids[j])] + bonus[j, v])
                self.node_ctx.append(self.rows[int(ids[j])][1][v] if self.scorer is not None else None)
            new.append((node, -np.inf, ext[j, v], 0, new_path(j, v)))
        self.ids, self.lb, self.lnb, self.pb, self.pnb = (np.array(col) for col in zip(*new))
        self.last = np.array([label[i] for i in self.ids.tolist()])

    def _compact(self, settle: bool = True, forced: int = 0) -> None:
        """Keep only the nodes and paths the beams reach; commit the words all of them share."""
        parent, path_parent = self.parent, self.path_parent
        ids = self.ids.tolist()
        paths = [p for p, s in zip(self.pb.tolist(), self.lb.tolist()) if s > -np.inf]
        paths += [p for p, s in zip(self.pnb.tolist(), self.lnb.tolist()) if s > -np.inf]

        def chain(start: int, up: list[int]) -> list[int]:  # start, its parent, ..., root
            out = [start]
            while up[out[-1]] >= 0:
                out.append(up[out[-1]])
            return out

        node_chains = [chain(i, parent) for i in ids]
        if settle:
            dominant = [chain(int(p if b >= nb else q), path_parent)
                        for p, q, b, nb in zip(self.pb.tolist(), self.pnb.tolist(), self.lb.tolist(), self.lnb.tolist())]
            old = [sum(self.path_start[p] < self.frames - _MAX_OPEN_FRAMES for p in c[:-1]) for c in dominant]
            n = len(node_chains[0]) - 1
            forced = max(n - _MAX_OPEN_LABELS // 4 if n > _MAX_OPEN_LABELS else 0, old[0])
            anchor = node_chains[0][::-1][forced]
            keep = [i for i, c in enumerate(node_chains) if anchor in c and old[i] <= forced]
            if forced or len(keep) < len(ids):
                self._settle(node_chains, forced, keep)
                return self._compact(settle=False, forced=forced)
        path_chains = [chain(p, path_parent) for p in paths]
        # depth of the deepest node every beam passes through, and the same for the paths
        shared_nodes = set.intersection(*(set(c) for c in node_chains))
        shared_paths = set.intersection(*(set(c) for c in path_chains)) if path_chains else {0}
        top_chain = node_chains[0][::-1]  # root .. beam 0
        top_path = path_chains[0][::-1] if path_chains else [0]
        depth = 0
        while (depth + 1 < len(top_chain) and top_chain[depth + 1] in shared_nodes
               and depth + 1 < len(top_path) and top_path[depth + 1] in shared_paths):
            depth += 1
        if self.space is not None:  # commit whole words only (unless settled: see _settle)
            while depth > forced and self.label[top_chain[depth]] != self.space:
                depth -= 1
        root, path_root = top_chain[depth], top_path[depth]
        labels, starts = self.committed
        labels += [self.label[n] for n in top_chain[1:depth + 1]]
        starts += [self.path_start[p] for p in top_path[1:depth + 1]]

        keep_nodes = sorted({n for c in node_chains for n in c[:c.index(root) + 1]})
        keep_paths = sorted({p for c in path_chains for p in c[:c.index(path_root) + 1]} | {path_root})
        node_map = {n: i for i, n in enumerate([root] + [n for n in keep_nodes if n != root])}
        path_map = {p: i for i, p in enumerate([path_root] + [p for p in keep_paths if p != path_root])}
        old = list(node_map)
        self.parent = [node_map[parent[n]] if n != root else -1 for n in old]
        self.label = [self.label[n] for n in old]  # the root keeps its label: the repeat rule needs it
        self.node_lm = [self.node_lm[n] for n in old]
        self.node_ctx = [self.node_ctx[n] for n in old]
        self.child = {(self.parent[i], self.label[i]): i for i in range(1, len(old))}
        self.rows = {node_map[n]: r for n, r in self.rows.items() if n in node_map}
        old_paths = list(path_map)
        self.path_parent = [path_map[path_parent[p]] if p != path_root else -1 for p in old_paths]
        self.path_start = [self.path_start[p] for p in old_paths]
        self.ids = np.array([node_map[i] for i in ids])
        remap = np.vectorize(lambda p: path_map.get(p, 0), otypes=[np.int64])
        self.pb, self.pnb = remap(self.pb), remap(self.pnb)

    def _settle(self, node_chains: list[list[int]], depth: int, keep: list[int]) -> None:
        """Settle what the beams still disagree about long after: the best beam's labels more
        than _MAX_OPEN_LABELS / 4 behind its end (once it holds _MAX_OPEN_LABELS) and those
        started more than _MAX_OPEN_FRAMES ago (`depth` of them) are committed, even inside a
        word; beams that differ there, or hold other labels that old, are dropped (`keep` are
        the others), and the paths of the rest take the best one's start frames. The one place
        where the search changes (rarely: speech settles within words, and silence gives every
        beam the same future), so that posteriors that never agree keep the state bounded."""
        self.ids, self.last, self.lb, self.lnb, self.pb, self.pnb = (
            a[keep] for a in (self.ids, self.last, self.lb, self.lnb, self.pb, self.pnb))

        def at_depth(p: int) -> int:
            chain = [p]
            while self.path_parent[chain[-1]] >= 0:
                chain.append(self.path_parent[chain[-1]])
            return chain[::-1][depth]

        ref = at_depth(int(self.pb[0] if self.lb[0] >= self.lnb[0] else self.pnb[0]))
        for p, s in zip(np.concatenate([self.pb, self.pnb]).tolist(), np.concatenate([self.lb, self.lnb]).tolist()):
            if s > -np.inf:
                q = at_depth(p)
                self.path_parent[q], self.path_start[q] = self.path_parent[ref], self.path_start[ref]

    def size(self) -> int:
        """Nodes and paths held: what stays bounded on an endless stream."""
        return len(self.parent) + len(self.path_parent) + len(self.rows)

    def results(self, final: bool = False) -> list[Beam]:
        """The beams, best first: (labels, start frames, acoustic ln prob), the committed words
        included. `final` adds the scorer's end-of-utterance terms (the last word, </s>)."""
        total = np.logaddexp(self.lb, self.lnb)
        lm = np.array([self.node_lm[i] for i in self.ids.tolist()])
        if self.scorer is not None:
            lm = lm + np.array([self.scorer.finish(self.node_ctx[i], final) for i in self.ids.tolist()])
            if final and np.isfinite(lm).any():
                lm = np.where(np.isfinite(lm), lm, -np.inf)  # a prefix that ends mid-word is no transcript
            else:
                lm = np.where(np.isfinite(lm), lm, 0.0)
        done_labels, done_starts = self.committed
        results = []
        for i in np.argsort(-(total + lm), kind="stable").tolist():
            if not np.isfinite(total[i] + lm[i]):
                continue
            labels, starts = [], []
            node, path = int(self.ids[i]), int(self.pb[i] if self.lb[i] >= self.lnb[i] else self.pnb[i])
            while node > 0:
                labels.append(self.label[node])
                starts.append(self.path_start[path])
                node, path = self.parent[node], self.path_parent[path]
            results.append((tuple(done_labels) + tuple(labels[::-1]), tuple(done_starts) + tuple(starts[::-1]),
                            float(total[i])))
        return results


_COMPACT_EVERY = 32
_MAX_OPEN_FRAMES = 500  # output frames (15 s at 30 ms)
_MAX_OPEN_LABELS = 128  # labels (~25 words) the beams may disagree on before the best settles them
_ZERO_ROWS: dict[int, np.ndarray] = {}


def _top(ranked: np.ndarray, k: int) -> np.ndarray:
    """np.argsort(-ranked, kind="stable")[:k] without sorting all of it: ties keep index order,
    so the compiled search (beam_kernels.prefix_search), which sorts fully, keeps the same beams."""
    kth = -np.partition(-ranked, k - 1)[k - 1]
    above = np.flatnonzero(ranked > kth)
    top = np.concatenate([above, np.flatnonzero(ranked == kth)[:k - above.size]])
    return top[np.argsort(-ranked[top], kind="stable")]


def _prefix_search(log_probs: np.ndarray, beam_width: int, blank_id: int) -> list[Beam]:
    """Prefix beam search over a whole (T, V) array, no LM, no label pruning; best first."""
    lp = np.ascontiguousarray(log_probs, dtype=np.float64)
    if len(lp) <= _MAX_OPEN_FRAMES:  # longer ones may be settled, which only _PrefixSearch does
        labels, starts, lens, logp, exact = beam_kernels.prefix_search(
            lp, beam_width, blank_id, _COMPACT_EVERY, _MAX_OPEN_LABELS)
        if exact:
            return [(tuple(labels[k, :n].tolist()), tuple(starts[k, :n].tolist()), float(logp[k]))
                    for k, n in enumerate(lens.tolist())]
    search = _PrefixSearch(lp.shape[1], beam_width, blank_id)
    search.advance(lp)
    return [] if search.dead else search.results()


def prefix_beam_search(log_probs: np.ndarray, beam_width: int = 100,
                       blank_id: int = 0) -> list[tuple[list[int], float]]:
    """Plain CTC prefix beam search over (T, V) log-probabilities, no LM, no label pruning.

    Returns up to `beam_width` (labels, ln prob) pairs, most probable first. Each prefix's
    probability sums every path through the kept prefixes, so it is exact up to the beam pruning
    (a lower bound of `ctc_forward_logprob`).
    """
    return [(list(labels), logp) for labels, _, logp in _prefix_search(log_probs, beam_width, blank_id)]


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
    beam_threshold: flashlight drops hypotheses scoring this much (nats) below the best
        (pyctcdecode's beam_prune_logp is -10 by default).
    token_min_logp: labels less probable than this (ln) in a frame, except its most probable,
        start nothing in it (pyctcdecode's pruning, -5 there by default; None: none). Both
        bound flashlight's search only: without an LM the prefix search it is merged with
        stays unpruned, so the guarantee above holds whatever they are.
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
                 beam_threshold: float = 25.0, token_min_logp: float | None = None,
                 space_label: str = " "):
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
        self._token_min_logp = token_min_logp
        self._space = self._labels.index(space_label) if space_label in self._labels else None
        self._ctcdecode = None
        self._backend = "flashlight" if backend == "auto" else backend
        self._words: dict[str, list[list[int]]] | None = None  # lexicon mode when set
        self._word_index: dict[tuple[int, ...], int] = {}  # labels -> LM index of the word they spell
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
        if prune and self._token_min_logp is not None:
            best = emissions.argmax(1)
            keep = emissions >= self._token_min_logp
            keep[np.arange(frames), best] = True
            emissions[~keep] = _PRUNED
        # Flashlight tries the beam_size_token best labels of every frame; past the most any
        # frame kept, only pruned ones are left, whose hypotheses fall out anyway.
        tried = min(self._cutoff_top_n, vocab)
        if prune and frames and (self._cutoff_prob < 1.0 or self._token_min_logp is not None):
            tried = min(tried, int((emissions > _PRUNED).sum(1).max()))
        # flashlight's LM scores are log10; alpha weighs ln, as in ctcdecode
        lm_weight = self._alpha * math.log(10) if self._has_lm else 0.0
        options = dict(beam_size=self._beam_width, beam_size_token=tried,
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
        results = decoder.decode(emissions.ctypes.data, len(emissions), vocab)
        if not results:
            return []
        # tokens[0] and tokens[-1] are the silences flashlight puts around the utterance
        tokens = np.array([r.tokens for r in results], dtype=np.int64)[:, 1:frames + 1]
        lexicon = self._words is not None
        labels, starts, lens = beam_kernels.collapse(tokens, self._blank, self._space if lexicon else -1)
        n_words = (np.array([r.words for r in results]) >= 0).sum(1) if lexicon else np.zeros(len(results))
        # hypotheses merged by log_add share their LM history, so this leaves the log-sum of
        # their acoustic scores
        acoustic = (np.array([r.score for r in results]) - lm_weight * np.array([r.lmScore for r in results])
                    - self._beta * n_words)
        hyps = [(tuple(labels[k, :n].tolist()), tuple(starts[k, :n].tolist()), float(acoustic[k]))
                for k, n in enumerate(lens.tolist())
                if acoustic[k] > _PRUNED / 2]  # a path through a pruned label is no hypothesis
        # in lexicon mode, spellings that differ in extra spaces are one transcript: add them up
        return _merge(hyps, np.logaddexp)

    def _decode_one(self, log_probs: np.ndarray) -> list[Beam]:
        if len(log_probs) == 0:
            return [((), (), 0.0)]
        if self._backend == "prefix":
            return _prefix_search(log_probs, self._beam_width, self._blank)
        hyps = self._flashlight_search(log_probs)
        if not hyps and (self._cutoff_prob < 1.0 or self._token_min_logp is not None):
            # cutoff_prob or token_min_logp pruned away every path the lexicon can spell: search again unpruned
            # rather than return nothing (or a NaN score) for the utterance
            hyps = self._flashlight_search(log_probs, prune=False)
        if self._words is not None and hyps:
            # flashlight cannot tell apart spellings that differ in extra spaces and sums them;
            # ctcdecode's beams are exact label sequences. Re-score each transcript as its
            # single-spaced spelling, exactly, and re-rank: at alpha = beta = 0 a word LM then
            # picks, among the words it knows, what the acoustics say (ctcdecode's "a a").
            exact = ctc_log_likelihoods(log_probs, [labels for labels, _, _ in hyps], self._blank)
            lm = self._lm_scores(labels for labels, _, _ in hyps)
            order = sorted(range(len(hyps)), key=lambda i: -(float(exact[i]) + lm[i]))
            hyps = [(hyps[i][0], hyps[i][1], float(exact[i])) for i in order]
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
        return _pack_beams(decoded, self._beam_width, frames)

    def lm_score(self, labels: Sequence[int]) -> float:
        """alpha·ln P_LM + beta·words of a label sequence: what the search adds to a beam's
        acoustic score when it ranks it (0 without LM and lexicon). Lets a caller rank
        transcripts that come from elsewhere (an ensemble's other members) on the same scale.
        """
        if self._ctcdecode is not None:
            raise ValueError("lm_score needs the flashlight backend (ctcdecode does not expose its scorer)")
        if self._backend == "prefix":
            return 0.0
        return self._lm_scores([labels])[0]

    def _lm_scores(self, sequences: Iterable[Sequence[int]]) -> list[float]:
        """lm_score of each label sequence. The LM states of the word prefixes they share are
        scored once (an n-best list differs mostly in its last words), and the sums run in the
        same order as for one sequence alone, so each is the same float as lm_score's."""
        lm_weight = self._alpha * math.log(10) if self._has_lm else 0.0  # flashlight's LM is log10
        start = (self._lm.start(False), 0.0) if lm_weight else None
        prefixes: dict[tuple[int, ...], tuple] = {(): start}  # units -> (LM state, ln-sum so far)
        out = []
        for labels in sequences:
            labels = [v for v in labels if v != self._blank]
            units = tuple(self._word_units(labels)) if self._words is not None else tuple(labels)
            n_words = len(units) if self._words is not None else 0
            if not lm_weight:
                out.append(self._beta * n_words)
                continue
            known = len(units)
            while units[:known] not in prefixes:
                known -= 1
            state, total = prefixes[units[:known]]
            for k in range(known, len(units)):
                state, s = self._lm.score(state, units[k])
                total += s
                prefixes[units[:k + 1]] = (state, total)
            total += self._lm.finish(state)[1]
            out.append(lm_weight * total + self._beta * n_words)
        return out

    def _word_units(self, labels: list[int]) -> Iterable[int]:
        """The LM indices of the words a label sequence spells (<unk> for one not in the
        lexicon), words being what lies between space labels."""
        word: list[int] = []
        for v in labels + [self._space]:
            if v != self._space:
                word.append(v)
            elif word:
                key = tuple(word)
                index = self._word_index.get(key)
                if index is None:
                    text = "".join(self._labels[u] for u in word)
                    index = self._unk
                    if text in self._words:  # remembered: at most the lexicon's spellings
                        index = self._word_index[key] = self._lm_dict.get_index(text)
                yield index
                word = []

    def reset_params(self, alpha: float, beta: float) -> None:
        """Change the LM weight and word bonus (ctcdecode's reset_params)."""
        if self._ctcdecode is not None:
            self._ctcdecode.reset_params(alpha, beta)
        elif beta and self._has_lm and self._words is None:
            # flashlight's lexicon-free search has no per-word score to put it in
            raise ValueError(f"beta={beta} (a per-word bonus) needs a word-level LM or a lexicon; "
                             "with a token-level LM use alpha alone")
        self._alpha, self._beta = alpha, beta


def _pack_beams(decoded: list[list[Beam]], beam_width: int, width: int):
    """Beams per utterance -> ctcdecode's (beam_results, beam_scores, timesteps, out_lens)."""
    # filled as numpy arrays: a torch.tensor per beam cost more than flashlight's search
    batch = len(decoded)
    beam_results = np.zeros((batch, beam_width, width), dtype=np.int32)
    timesteps = np.zeros((batch, beam_width, width), dtype=np.int32)
    beam_scores = np.full((batch, beam_width), math.inf, dtype=np.float32)
    out_lens = np.zeros((batch, beam_width), dtype=np.int32)
    for b, beams in enumerate(decoded):
        for k, (labels, starts, logp) in enumerate(beams):
            beam_results[b, k, :len(labels)] = labels
            timesteps[b, k, :len(labels)] = starts
            beam_scores[b, k] = -logp
            out_lens[b, k] = len(labels)
    return tuple(torch.from_numpy(x) for x in (beam_results, beam_scores, timesteps, out_lens))


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


# --- ctcdecode's online API ---------------------------------------------------------------------

class _WordScorer:
    """A word LM over a lexicon, as ctcdecode's scorer with its dictionary: a label extends a
    prefix only along a word of the lexicon, a space only closes a whole word (scored
    alpha·ln P_LM(word | history) + beta), so even at alpha = beta = 0 every beam spells words
    the LM knows. Context: (lexicon trie node, LM state)."""

    def __init__(self, setup: "CTCBeamDecoder"):
        self.lm, self.space = setup._lm, setup._space
        self.weight, self.beta = setup._alpha * math.log(10), setup._beta  # the LM's scores are log10
        self.children: list[dict[int, int]] = [{}]
        self.word: list[int | None] = [None]  # LM index of the word ending at each trie node
        for word, spellings in setup._words.items():
            index = setup._lm_dict.get_index(word)
            for spelled in spellings:
                node = 0
                for v in spelled:
                    if v not in self.children[node]:
                        self.children[node][v] = len(self.children)
                        self.children.append({})
                        self.word.append(None)
                    node = self.children[node][v]
                if self.word[node] is None:
                    self.word[node] = index

    def start(self):
        return 0, self.lm.start(False)

    def extensions(self, ctx, vocab: int) -> tuple[np.ndarray, dict]:
        node, state = ctx
        row, nxt = np.full(vocab, -np.inf), {}
        for v, c in self.children[node].items():
            row[v], nxt[v] = 0.0, (c, state)
        if self.word[node] is not None:
            after, score = self.lm.score(state, self.word[node])
            row[self.space], nxt[self.space] = self.weight * score + self.beta, (0, after)
        return row, nxt

    def finish(self, ctx, final: bool) -> float:
        """The terms still due at the end: the last word if the prefix stops inside it (as
        ctcdecode scores it), </s> when final; -inf for a prefix that ends mid-word."""
        node, state = ctx
        total = 0.0
        if node != 0:
            if self.word[node] is None:
                return -math.inf
            state, score = self.lm.score(state, self.word[node])
            total += self.weight * score + self.beta
        if final and self.weight:
            total += self.weight * self.lm.finish(state)[1]
        return total


class _TokenScorer:
    """A token-level LM (its words are the labels, the space written `|`): every label scored."""

    def __init__(self, setup: "CTCBeamDecoder"):
        self.lm, self.blank = setup._lm, setup._blank
        self.weight = setup._alpha * math.log(10)

    def start(self):
        return self.lm.start(False)

    def extensions(self, state, vocab: int) -> tuple[np.ndarray, dict]:
        row, nxt = np.zeros(vocab), {}
        for v in range(vocab):
            if v != self.blank:
                nxt[v], score = self.lm.score(state, v)
                row[v] = self.weight * score
        return row, nxt

    def finish(self, state, final: bool) -> float:
        return self.weight * self.lm.finish(state)[1] if final and self.weight else 0.0


class OnlineCTCBeamDecoder:
    """ctcdecode's OnlineCTCBeamDecoder: same arguments; `decode(probs, states, is_eos_s)` feeds
    each utterance's next chunk into its `DecoderState` and returns CTCBeamDecoder.decode's
    4-tuple for the audio so far. Timesteps count frames from the start of each stream.

    The search is `_PrefixSearch` (a prefix beam search, ctcdecode's algorithm), so the result
    does not depend on how the frames are cut into chunks. With a word LM (or a lexicon) beams
    spell only its words, as ctcdecode's dictionary does; with a token LM every label is scored.
    A partial result (is_eos False) includes the LM score of a word the prefix ends in; the
    final one adds </s> and drops prefixes that end inside a word. cutoff_top_n/cutoff_prob:
    labels outside them start no new label in that frame. num_processes is ignored (see
    CTCBeamDecoder). Arguments after log_probs_input are this toolkit's: lexicon, space_label.
    """

    def __init__(self, labels: Sequence[str], model_path: str | os.PathLike | None = None,
                 alpha: float = 0, beta: float = 0, cutoff_top_n: int = 40, cutoff_prob: float = 1.0,
                 beam_width: int = 100, num_processes: int = 4, blank_id: int = 0,
                 log_probs_input: bool = False, *, lexicon: str | os.PathLike | Iterable[str] | None = None,
                 space_label: str = " "):
        # the offline decoder's set-up (labels checked, LM loaded, lexicon spelled) is shared
        self._setup = CTCBeamDecoder(labels, model_path, alpha, beta, cutoff_top_n, cutoff_prob, beam_width,
                                     num_processes, blank_id, log_probs_input, backend="flashlight",
                                     lexicon=lexicon, space_label=space_label)

    def reset_params(self, alpha: float, beta: float) -> None:
        """New LM weight and word bonus, for the DecoderStates made from now on."""
        self._setup.reset_params(alpha, beta)

    def _new_search(self) -> _PrefixSearch:
        s = self._setup
        scorer = None
        if s._words is not None:
            scorer = _WordScorer(s)
        elif s._has_lm:
            scorer = _TokenScorer(s)
        allowed = None
        if s._cutoff_top_n < len(s._labels) or s._cutoff_prob < 1.0:
            top_n, mass = s._cutoff_top_n, s._cutoff_prob

            def allowed(x: np.ndarray) -> np.ndarray:
                order = np.argsort(-x, kind="stable")
                p = np.exp(x[order])
                keep = np.zeros(len(x), bool)
                keep[order[:top_n][(np.cumsum(p) - p)[:top_n] < mass]] = True
                return keep
        return _PrefixSearch(len(s._labels), s._beam_width, s._blank, s._space, scorer, allowed)

    def decode(self, probs: torch.Tensor, states: Sequence["DecoderState"], is_eos_s: Sequence[bool],
               seq_lens: torch.Tensor | None = None):
        """probs (batch, T, len(labels)): the next chunk of each stream; states[b] its state;
        is_eos_s[b] True on its last chunk (its state is then finished). Returns (beam_results,
        beam_scores, timesteps, out_lens) over everything fed so far; the time axis is as long
        as the chunk or the longest beam, whichever is longer.
        """
        s = self._setup
        probs = torch.as_tensor(probs)
        if probs.ndim != 3 or probs.shape[2] != len(s._labels):
            raise ValueError(f"probs must be (batch, time, {len(s._labels)} labels), got shape {tuple(probs.shape)}")
        batch, frames, _ = probs.shape
        # ctcdecode's own test suite passes more is_eos_s than states; what matters is one per state
        if len(states) != batch or len(is_eos_s) < batch:
            raise ValueError(f"decode needs one DecoderState and one is_eos per utterance of the batch "
                             f"({batch}), got {len(states)} states and {len(is_eos_s)} is_eos")
        lens = [frames] * batch if seq_lens is None else torch.as_tensor(seq_lens).tolist()
        if len(lens) != batch or not all(0 <= n <= frames for n in lens):
            raise ValueError(f"seq_lens must hold {batch} lengths in [0, {frames}], got {lens}")
        lp = probs.detach().to("cpu", torch.float64).numpy()
        if not s._log_probs_input:
            with np.errstate(divide="ignore"):
                lp = np.log(lp)
        decoded = []
        for b, state in enumerate(states):
            if not isinstance(state, DecoderState) or state._decoder is not self:
                raise ValueError(f"states[{b}] is not a DecoderState of this decoder")
            if state.finished:
                raise ValueError(f"states[{b}] has seen its last chunk (is_eos True); start a new DecoderState")
            state._search.advance(lp[b, :lens[b]])
            state.finished = bool(is_eos_s[b])
            decoded.append(state._search.results(final=state.finished)[: s._beam_width])
        width = max([frames] + [len(labels) for beams in decoded for labels, _, _ in beams])
        return _pack_beams(decoded, s._beam_width, width)


class DecoderState:
    """One stream's search state for an OnlineCTCBeamDecoder (ctcdecode's DecoderState(decoder)):
    one per utterance, not reused after its last chunk. Its memory stays bounded on an endless
    stream (see `_PrefixSearch`); `pop_committed` hands over the words every beam agrees on."""

    def __init__(self, decoder: OnlineCTCBeamDecoder):
        if not isinstance(decoder, OnlineCTCBeamDecoder):
            raise TypeError(f"DecoderState needs an OnlineCTCBeamDecoder, got {type(decoder).__name__}")
        self._decoder = decoder
        self._search = decoder._new_search()
        self.finished = False

    @property
    def frames(self) -> int:
        return self._search.frames

    def pop_committed(self) -> tuple[list[int], list[int]]:
        """(labels, start frames) of the words all beams share, which no later frame can change;
        they are forgotten here, so later results start after them (this toolkit's addition,
        for a caller that prints final words and must not hold the whole stream)."""
        labels, starts = self._search.committed
        self._search.committed = ([], [])
        return labels, starts

    def size(self) -> int:
        return self._search.size() + len(self._search.committed[0])

"""The beam search's inner loops, compiled with numba: the same arithmetic as the numpy code they
replace in asr.beam_search, so a caller gets the same beams, only sooner.

Measured before compiling them (beam 32, 28 labels, ~60-frame utterances, one core): the numpy
prefix search cost ~30 ms an utterance (Python loops over the beam in every frame) and torch's
ctc_loss ~2 ms to rescore a lexicon search's ~20 transcripts, against ~3.5 ms for flashlight's
own search. `cache=True` keeps the machine code next to this file (or in numba's user cache
when that is read-only), so only the first process on a machine pays the compilation.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_LOGE2 = math.log(2.0)


@njit(cache=True, inline="always")
def _logaddexp(x: float, y: float) -> float:
    # numpy's npy_logaddexp, step for step, so that the sums are bit-identical to np.logaddexp
    if x == -np.inf:  # the common case in a forward pass; numpy's steps below give y too
        return y
    if y == -np.inf:
        return x
    if x == y:
        return x + _LOGE2  # also both +inf
    d = x - y
    if d > 0:
        return x + math.log1p(math.exp(-d))
    if d <= 0:
        return y + math.log1p(math.exp(d))
    return d  # NaN


@njit(cache=True)
def prefix_search(lp: np.ndarray, beam_width: int, blank: int, check_every: int, max_depth: int):
    """`_PrefixSearch(V, beam_width, blank).advance(lp)` with no scorer and no pruning, then its
    `results()`: (labels (K, T) int32, starts (K, T) int32, lengths (K,), ln P (K,), exact).

    K = 0 when every prefix fell out. `exact` is False when the numpy search would have settled
    disagreeing beams (the best beam longer than max_depth labels at a frame count divisible by
    check_every): the caller then runs that search instead, whose settling this does not copy.
    """
    frames, vocab = lp.shape
    neg = -np.inf
    # the prefix trie: node 0 is the empty prefix; at most beam_width new nodes a frame
    cap = 1 + frames * beam_width
    parent = np.full(cap, -1, np.int64)
    label = np.full(cap, -1, np.int64)
    depth = np.zeros(cap, np.int64)
    child = np.full(cap * vocab, -1, np.int64)
    # the tree of dominant paths: one new entry per extension and per fold
    pcap = 1 + 2 * frames * beam_width
    path_parent = np.full(pcap, -1, np.int64)
    path_start = np.full(pcap, -1, np.int64)
    n_nodes, n_paths = 1, 1
    pos = np.full(cap, -1, np.int64)  # node -> its index in the beam, during one frame

    ids = np.zeros(beam_width, np.int64)
    last = np.full(beam_width, -1, np.int64)
    lb = np.full(beam_width, neg)
    lnb = np.full(beam_width, neg)
    pb = np.zeros(beam_width, np.int64)
    pnb = np.zeros(beam_width, np.int64)
    lb[0] = 0.0
    n = 1
    exact = True
    dead = False

    total = np.empty(beam_width)
    dominant = np.empty(beam_width, np.int64)
    stay_b = np.empty(beam_width)
    stay_nb = np.empty(beam_width)
    stay_nb_path = np.empty(beam_width, np.int64)
    ext = np.empty((beam_width, vocab))
    ranked = np.empty(beam_width + beam_width * vocab)
    top = np.empty(beam_width, np.int64)
    new_ids = np.empty(beam_width, np.int64)
    new_lb = np.empty(beam_width)
    new_lnb = np.empty(beam_width)
    new_pb = np.empty(beam_width, np.int64)
    new_pnb = np.empty(beam_width, np.int64)

    for t in range(frames):
        x = lp[t]
        for i in range(n):
            total[i] = _logaddexp(lb[i], lnb[i])
            dominant[i] = pb[i] if lb[i] >= lnb[i] else pnb[i]
            stay_b[i] = total[i] + x[blank]
            stay_nb[i] = lnb[i] + x[last[i]] if last[i] >= 0 else neg
            stay_nb_path[i] = pnb[i]
            for v in range(vocab):
                ext[i, v] = total[i] + x[v]
            if last[i] >= 0:
                ext[i, last[i]] = lb[i] + x[last[i]]  # a repeat needs a blank in between
            ext[i, blank] = neg
            pos[ids[i]] = i
        # an extension that is itself in the beam is not a new prefix: fold it into that beam
        for i in range(n):
            p = parent[ids[i]]
            if p >= 0 and pos[p] >= 0:
                j, v = pos[p], label[ids[i]]
                if ext[j, v] > stay_nb[i]:
                    path_parent[n_paths] = pb[j] if v == last[j] else dominant[j]
                    path_start[n_paths] = t
                    stay_nb_path[i] = n_paths
                    n_paths += 1
                stay_nb[i] = _logaddexp(stay_nb[i], ext[j, v])
                ext[j, v] = neg
        for i in range(n):
            pos[ids[i]] = -1
        size = n + n * vocab
        for i in range(n):
            ranked[i] = _logaddexp(stay_b[i], stay_nb[i])
        for j in range(n):
            for v in range(vocab):
                ranked[n + j * vocab + v] = ext[j, v]
        k = _top(ranked, size, beam_width, top)
        m = 0
        for r in range(k):
            c = top[r]
            if c < n:
                new_ids[m], new_lb[m], new_lnb[m] = ids[c], stay_b[c], stay_nb[c]
                new_pb[m], new_pnb[m] = dominant[c], stay_nb_path[c]
            else:
                j, v = (c - n) // vocab, (c - n) % vocab
                node = child[ids[j] * vocab + v]
                if node < 0:
                    node = n_nodes
                    n_nodes += 1
                    child[ids[j] * vocab + v] = node
                    parent[node], label[node], depth[node] = ids[j], v, depth[ids[j]] + 1
                path_parent[n_paths] = pb[j] if v == last[j] else dominant[j]
                path_start[n_paths] = t
                new_ids[m], new_lb[m], new_lnb[m] = node, neg, ext[j, v]
                new_pb[m], new_pnb[m] = 0, n_paths
                n_paths += 1
            m += 1
        if m == 0:
            dead = True
            break
        n = m
        for i in range(n):
            ids[i], lb[i], lnb[i], pb[i], pnb[i] = new_ids[i], new_lb[i], new_lnb[i], new_pb[i], new_pnb[i]
            last[i] = label[ids[i]]
        if (t + 1) % check_every == 0 and depth[ids[0]] > max_depth:
            exact = False

    if dead:
        n = 0
    out_labels = np.zeros((n, max(frames, 1)), np.int32)
    out_starts = np.zeros((n, max(frames, 1)), np.int32)
    out_lens = np.zeros(n, np.int64)
    scores = np.empty(n)
    for i in range(n):
        total[i] = _logaddexp(lb[i], lnb[i])
    order = np.argsort(-total[:n], kind="mergesort")
    k = 0
    for r in range(n):
        i = order[r]
        if not np.isfinite(total[i]):
            continue
        node = ids[i]
        path = pb[i] if lb[i] >= lnb[i] else pnb[i]
        d = depth[node]
        out_lens[k], scores[k] = d, total[i]
        while node > 0:
            d -= 1
            out_labels[k, d], out_starts[k, d] = label[node], path_start[path]
            node, path = parent[node], path_parent[path]
        k += 1
    return out_labels[:k], out_starts[:k], out_lens[:k], scores[:k], exact


@njit(cache=True)
def _top(ranked: np.ndarray, size: int, k: int, out: np.ndarray) -> int:
    """The indices of the k largest finite values of ranked[:size], largest first, ties in index
    order (np.argsort(-ranked, kind="stable")[:k] less the -inf ones) into out; how many."""
    m = 0
    for c in range(size):
        r = ranked[c]
        if not r > -np.inf or (m == k and r <= ranked[out[m - 1]]):
            continue  # a tie with the last kept loses: it comes later
        i = m if m < k else k - 1
        while i > 0 and ranked[out[i - 1]] < r:
            out[i] = out[i - 1]
            i -= 1
        out[i] = c
        m = min(m + 1, k)
    return m


@njit(cache=True)
def ctc_log_likelihoods(lp: np.ndarray, targets: np.ndarray, offsets: np.ndarray, blank: int) -> np.ndarray:
    """Exact ln P_CTC of each label sequence targets[offsets[i]:offsets[i + 1]] given (T, V)
    log-probabilities, by the forward algorithm; -inf where a sequence needs more frames.

    The forward variables are filled one CTC state at a time over all frames: a state's column
    depends only on the labels up to it, so a sequence reuses the columns of the prefix it shares
    with the one before it. Sequences in sorted order share the most (an n-best list differs
    mostly in its last words), which is why they are visited that way.
    """
    frames = lp.shape[0]
    n = len(offsets) - 1
    out = np.empty(n)
    longest = 0
    for i in range(n):
        longest = max(longest, offsets[i + 1] - offsets[i])
    # alpha[s, t]: ln P of the frames up to t ending in state s (blank, l1, blank, l2, ..., blank)
    alpha = np.full((2 * longest + 1, frames), -np.inf)
    # Frames after which a state can no longer reach the end of even the shortest sequence
    # are left out; a longer sequence's end cannot be reached from them either.
    shortest = longest
    for i in range(n):
        shortest = min(shortest, offsets[i + 1] - offsets[i])
    order = _lexicographic(targets, offsets)
    prev = targets[0:0]
    for i in order:
        seq = targets[offsets[i]:offsets[i + 1]]
        shared = 0
        while shared < len(seq) and shared < len(prev) and seq[shared] == prev[shared]:
            shared += 1
        first = 0 if len(prev) == 0 and i == order[0] else 2 * shared + 1
        for s in range(first, 2 * len(seq) + 1):
            v = blank if s % 2 == 0 else seq[s // 2]
            skip = s % 2 == 1 and s >= 3 and seq[s // 2] != seq[s // 2 - 1]
            col = alpha[s]
            t0 = s // 2  # the first frame that can be in state s
            for t in range(min(t0, frames)):
                col[t] = -np.inf
            if t0 == 0:
                col[0] = lp[0, v]
                t0 = 1
            # the last frame from which state s can still reach state 2 * shortest - 1
            t1 = frames if s >= 2 * shortest - 1 else min(frames, frames - (2 * shortest - 1 - s) // 2)
            for t in range(t1, frames):
                col[t] = -np.inf
            for t in range(t0, t1):
                a = _logaddexp(col[t - 1], alpha[s - 1, t - 1]) if s >= 1 else col[t - 1]
                if skip:
                    a = _logaddexp(a, alpha[s - 2, t - 1])
                col[t] = a + lp[t, v]
        end = 2 * len(seq)
        out[i] = _logaddexp(alpha[end, frames - 1], alpha[end - 1, frames - 1]) if end else alpha[0, frames - 1]
        prev = seq
    return out


@njit(cache=True)
def _lexicographic(targets: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Indices of the sequences targets[offsets[i]:offsets[i + 1]] in lexicographic order."""
    n = len(offsets) - 1
    order = np.arange(n)
    for a in range(1, n):  # insertion sort: a few dozen sequences
        k = order[a]
        b = a - 1
        while b >= 0 and _less(targets, offsets, k, order[b]):
            order[b + 1] = order[b]
            b -= 1
        order[b + 1] = k
    return order


@njit(cache=True, inline="always")
def _less(targets: np.ndarray, offsets: np.ndarray, i: int, j: int) -> bool:
    a, b = targets[offsets[i]:offsets[i + 1]], targets[offsets[j]:offsets[j + 1]]
    for k in range(min(len(a), len(b))):
        if a[k] != b[k]:
            return a[k] < b[k]
    return len(a) < len(b)


@njit(cache=True)
def collapse(frame_labels: np.ndarray, blank: int, space: int):
    """CTC's many-to-one map on each row of a (n, T) frame labelling: (labels (n, T), the frame
    where each starts (n, T), lengths (n,)). With space >= 0, runs of spaces are cut to one and
    spaces at either end dropped (a lexicon search's words, single-spaced)."""
    n, frames = frame_labels.shape
    labels = np.zeros((n, frames), np.int64)
    starts = np.zeros((n, frames), np.int64)
    lens = np.zeros(n, np.int64)
    for k in range(n):
        m = 0
        before = -1  # the label collapsed before this one, kept or not
        for t in range(frames):
            v = frame_labels[k, t]
            if v == blank or (t > 0 and v == frame_labels[k, t - 1]):
                continue
            if space < 0 or v != space or (before >= 0 and before != space):
                labels[k, m], starts[k, m] = v, t
                m += 1
            before = v
        while space >= 0 and m > 0 and labels[k, m - 1] == space:
            m -= 1
        lens[k] = m
    return labels, starts, lens

import importlib.util
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from asr.beam_search import CTCBeamDecoder, ctc_forward_logprob, prefix_beam_search
from tests.helpers import write_arpa

pytest.importorskip("flashlight.lib.text.decoder")

LABELS = ["_", "a", "b", "c", "t", " "]  # blank first, as in ctcdecode's default blank_id=0


def peaked(frames: list[dict[str, float]], labels=LABELS) -> torch.Tensor:
    """(1, T, V) probabilities: each frame puts the given mass on the given labels, the rest
    spread evenly over the other labels."""
    probs = np.zeros((len(frames), len(labels)))
    for t, frame in enumerate(frames):
        rest = (1.0 - sum(frame.values())) / (len(labels) - len(frame))
        probs[t] = rest
        for lab, p in frame.items():
            probs[t, labels.index(lab)] = p
    return torch.from_numpy(probs)[None].float()


def text(labels, beam_results, out_lens, b=0, k=0) -> str:
    return "".join(labels[i] for i in beam_results[b, k, :out_lens[b, k]].tolist())


def random_log_probs(seed: int, frames: int, vocab: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.log(rng.dirichlet(np.full(vocab, 0.5), size=frames))


def test_forward_logprob_matches_brute_force():
    lp = random_log_probs(0, frames=4, vocab=3)
    totals: dict[tuple, float] = {}
    for path in itertools.product(range(3), repeat=4):
        labels = tuple(v for i, v in enumerate(path) if v != 0 and (i == 0 or v != path[i - 1]))
        totals[labels] = totals.get(labels, 0.0) + math.exp(sum(lp[t, v] for t, v in enumerate(path)))
    for labels, p in totals.items():
        assert ctc_forward_logprob(lp, labels) == pytest.approx(math.log(p), abs=1e-9)
    assert ctc_forward_logprob(lp, [1, 1, 1]) == -math.inf  # needs 5 frames
    # a beam as wide as the number of label sequences loses nothing: every score is exact
    results = prefix_beam_search(lp, beam_width=1000)
    assert len(results) == len(totals)
    for labels, logp in results:
        assert logp == pytest.approx(math.log(totals[tuple(labels)]), abs=1e-9)


def test_output_shapes_dtypes_and_seq_lens():
    probs = torch.softmax(torch.randn(3, 12, len(LABELS), generator=torch.Generator().manual_seed(0)), -1)
    decoder = CTCBeamDecoder(LABELS, beam_width=7)
    beam_results, beam_scores, timesteps, out_lens = decoder.decode(probs, torch.tensor([12, 5, 0]))
    assert beam_results.shape == (3, 7, 12) and beam_results.dtype == torch.int32
    assert beam_scores.shape == (3, 7) and beam_scores.dtype == torch.float32
    assert timesteps.shape == (3, 7, 12) and timesteps.dtype == torch.int32
    assert out_lens.shape == (3, 7) and out_lens.dtype == torch.int32
    assert (out_lens[1] <= 5).all() and (timesteps[1] < 5).all()
    # an empty utterance has one beam, the empty transcript, with probability 1
    assert out_lens[2, 0] == 0 and beam_scores[2, 0] == 0 and torch.isinf(beam_scores[2, 1:]).all()
    # lower is better, and a beam's timesteps rise
    assert (beam_scores[0, 1:] >= beam_scores[0, :-1]).all()
    for k in range(7):
        n = int(out_lens[0, k])
        assert (timesteps[0, k, 1:n] > timesteps[0, k, :n - 1]).all()
    with pytest.raises(ValueError, match=r"probs must be \(batch, time, 6 labels\)"):
        decoder.decode(probs[:, :, :4])


@pytest.mark.parametrize("backend", ["auto", "prefix"])
def test_peaked_posteriors_give_the_greedy_path(backend):
    rng = np.random.default_rng(1)
    frames = 40
    best = rng.integers(0, len(LABELS), frames)
    probs = np.full((frames, len(LABELS)), 0.001)
    probs[np.arange(frames), best] = 1 - 0.001 * (len(LABELS) - 1)
    beam_results, beam_scores, timesteps, out_lens = CTCBeamDecoder(
        LABELS, beam_width=10, backend=backend).decode(torch.from_numpy(probs)[None])
    greedy = [v for i, v in enumerate(best) if v != 0 and (i == 0 or v != best[i - 1])]
    assert beam_results[0, 0, :out_lens[0, 0]].tolist() == greedy
    starts = [i for i, v in enumerate(best) if v != 0 and (i == 0 or v != best[i - 1])]
    assert timesteps[0, 0, :out_lens[0, 0]].tolist() == starts
    exact = ctc_forward_logprob(np.log(probs), greedy)
    assert -beam_scores[0, 0].item() <= exact + 1e-4  # a sum over some of the paths
    assert -beam_scores[0, 0].item() == pytest.approx(exact, abs=1e-2)


def exact_label_sequence_probs(lp: np.ndarray) -> dict[tuple[int, ...], float]:
    """P(labels | utterance) for every label sequence, by summing over all V**T frame paths: an
    independent reference (no dynamic programming, no search) for short inputs."""
    frames, vocab = lp.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(vocab), repeat=frames):
        labels = tuple(v for i, v in enumerate(path) if v != 0 and (i == 0 or v != path[i - 1]))
        totals[labels] = totals.get(labels, 0.0) + math.exp(sum(lp[t, v] for t, v in enumerate(path)))
    return totals


@pytest.mark.parametrize("backend", ["auto", "prefix"])
def test_top_beam_is_the_exact_most_probable_label_sequence(backend):
    # 120 random short utterances (T <= 6, 3-4 labels): the beam (wider than the number of label
    # sequences) must return the exact argmax of P(labels | x), and score it exactly.
    rng = np.random.default_rng(0)
    for case in range(120):
        frames, vocab = int(rng.integers(1, 7)), int(rng.integers(3, 5))
        lp = np.log(rng.dirichlet(np.full(vocab, 0.5), size=frames))
        totals = exact_label_sequence_probs(lp)
        ranked = sorted(totals.items(), key=lambda kv: -kv[1])
        if len(ranked) > 1 and ranked[0][1] - ranked[1][1] < 1e-6 * ranked[0][1]:
            continue  # a tie has no single right answer
        labels = ["_", "a", "b", " "][:vocab]
        beam_results, beam_scores, _, out_lens = CTCBeamDecoder(
            labels, beam_width=len(totals) + 10, backend=backend, log_probs_input=True).decode(
            torch.from_numpy(lp)[None])
        got = tuple(beam_results[0, 0, :out_lens[0, 0]].tolist())
        assert got == ranked[0][0], (case, frames, vocab, got, ranked[:2])
        assert -beam_scores[0, 0].item() == pytest.approx(math.log(ranked[0][1]), abs=1e-4), case


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), frames=st.integers(20, 50), vocab=st.integers(5, 8),
       beam_width=st.sampled_from([1, 2, 4, 8, 16, 100]))
def test_beam_scores_never_exceed_the_exact_probability(seed, frames, vocab, beam_width):
    # Too long to enumerate: checked against the forward algorithm. (The best beam is never below
    # prefix_beam_search's by construction, as that search is merged into the results.)
    lp = random_log_probs(seed, frames, vocab)
    labels = ["_"] + [chr(ord("a") + i) for i in range(vocab - 2)] + [" "]
    beam_results, beam_scores, timesteps, out_lens = CTCBeamDecoder(
        labels, beam_width=beam_width, log_probs_input=True).decode(torch.from_numpy(lp)[None])
    # the exact probability of what we return is at least the score we claim for it
    for k in range(beam_width):
        if int(out_lens[0, k]) == 0 and not torch.isfinite(beam_scores[0, k]):
            continue  # an empty slot past the last beam found
        claimed = -beam_scores[0, k].item()
        assert ctc_forward_logprob(lp, beam_results[0, k, :out_lens[0, k]].tolist()) >= claimed - 1e-4, k
        starts = timesteps[0, k, :out_lens[0, k]]
        assert (starts[1:] > starts[:-1]).all() and (starts < frames).all()


# "ca?": the last letter is acoustically a close call, b (0.45) slightly ahead of t (0.4)
CLOSE_CALL = [{"c": 0.9}, {"_": 0.9}, {"a": 0.9}, {"_": 0.9}, {"b": 0.45, "t": 0.4}, {"_": 0.9}]


def test_word_lm_flips_a_close_call(tmp_path):
    arpa = write_arpa(tmp_path / "words.arpa", {"cat": -0.1, "cab": -3.0})
    probs = peaked(CLOSE_CALL)
    no_lm = CTCBeamDecoder(LABELS, beam_width=10).decode(probs)
    assert text(LABELS, no_lm[0], no_lm[3]) == "cab"
    # the lexicon is read from the ARPA unigrams
    decoder = CTCBeamDecoder(LABELS, str(arpa), alpha=1.0, beta=0.0, beam_width=10)
    beam_results, beam_scores, _, out_lens = decoder.decode(probs)
    assert text(LABELS, beam_results, out_lens) == "cat"
    assert text(LABELS, beam_results, out_lens, k=1) == "cab"
    # scores stay acoustic: "cat" is less probable to the acoustic model than "cab"
    assert beam_scores[0, 0] > beam_scores[0, 1]
    # ctcdecode's reset_params: without LM weight the acoustics win again
    decoder.reset_params(0.0, 0.0)
    beam_results, _, _, out_lens = decoder.decode(probs)
    assert text(LABELS, beam_results, out_lens) == "cab"


def test_lexicon_restricts_words_and_separates_them(tmp_path):
    # "cab tab" said clearly; the lexicon only knows "cat" and "tab"
    frames = [{"c": 0.9}, {"a": 0.9}, {"b": 0.9}, {" ": 0.9}, {"t": 0.9}, {"a": 0.9}, {"b": 0.9}]
    beam_results, _, timesteps, out_lens = CTCBeamDecoder(
        LABELS, lexicon=["cat", "tab"], beam_width=20).decode(peaked(frames))
    assert text(LABELS, beam_results, out_lens) in ("cat tab", "tab tab")
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("cab\tc a b |\ntab\n", encoding="utf-8")
    beam_results, _, timesteps, out_lens = CTCBeamDecoder(
        LABELS, lexicon=lexicon, beam_width=20).decode(peaked(frames))
    assert text(LABELS, beam_results, out_lens) == "cab tab"
    assert timesteps[0, 0, :7].tolist() == [0, 1, 2, 3, 4, 5, 6]


def test_cutoff_prob_that_prunes_every_lexicon_path_still_gives_finite_scores():
    # "ccb" said clearly; the lexicon has no word of those letters and cutoff_prob 0.9 leaves only
    # c and b each frame: every path the lexicon allows goes through a pruned label.
    # Jittered: with exactly tied scores flashlight's beam order (and so its n-best) varies run to run.
    probs = peaked([{"c": 0.97}, {"c": 0.97}, {"b": 0.97}]).double()
    probs *= torch.from_numpy(np.random.default_rng(0).uniform(0.8, 1.2, probs.shape))
    probs /= probs.sum(-1, keepdim=True)
    pruned = CTCBeamDecoder(LABELS, lexicon=["tab", "at"], beam_width=5, cutoff_prob=0.9).decode(probs)
    unpruned = CTCBeamDecoder(LABELS, lexicon=["tab", "at"], beam_width=5).decode(probs)
    beam_results, scores, _, out_lens = pruned
    assert torch.isfinite(scores[0, 0]) and not torch.isnan(scores).any()
    assert text(LABELS, beam_results, out_lens) == text(LABELS, unpruned[0], unpruned[3])
    torch.testing.assert_close(scores[0, 0], unpruned[1][0, 0])


def test_token_lm_flips_a_close_call(tmp_path):
    arpa = write_arpa(tmp_path / "tokens.arpa", {"a": -1.0, "b": -4.0, "c": -1.0, "t": -0.5, "|": -1.0})
    beam_results, _, _, out_lens = CTCBeamDecoder(LABELS, arpa, alpha=1.0, beam_width=10).decode(
        peaked(CLOSE_CALL))
    assert text(LABELS, beam_results, out_lens) == "cat"
    with pytest.raises(ValueError, match="beta=1.0 .* needs a word-level LM"):
        CTCBeamDecoder(LABELS, arpa, alpha=1.0, beta=1.0)


def test_unicode_and_multicharacter_labels(tmp_path):
    labels = ["<b>", "жи", "ё", "日本", "語", "|x", " "]
    frames = [{"жи": 0.9}, {"<b>": 0.9}, {"ё": 0.9}, {" ": 0.9}, {"日本": 0.9}, {"語": 0.9}]
    probs = peaked(frames, labels)
    for backend in ("auto", "prefix"):
        beam_results, _, _, out_lens = CTCBeamDecoder(labels, backend=backend).decode(probs)
        assert text(labels, beam_results, out_lens) == "жиё 日本語"
    # a word LM over these words, lexicon from the ARPA file, words spelled with the long tokens
    arpa = write_arpa(tmp_path / "u.arpa", {"жиё": -0.5, "日本語": -0.5, "жи": -3.0},
                       {("жиё", "日本語"): -0.1})
    beam_results, _, _, out_lens = CTCBeamDecoder(labels, arpa, alpha=0.5, beta=1.0).decode(probs)
    assert text(labels, beam_results, out_lens) == "жиё 日本語"


def test_prefix_backend_n_best_is_exact_and_ordered():
    # every beam of a wide prefix search, not only the top one, against the enumeration
    lp = random_log_probs(7, frames=6, vocab=4)
    totals = exact_label_sequence_probs(lp)
    width = len(totals)
    beam_results, beam_scores, _, out_lens = CTCBeamDecoder(
        ["_", "a", "b", " "], beam_width=width, backend="prefix", log_probs_input=True).decode(
        torch.from_numpy(lp)[None])
    got = {tuple(beam_results[0, k, :out_lens[0, k]].tolist()): -beam_scores[0, k].item() for k in range(width)}
    assert set(got) == set(totals)
    for labels, logp in got.items():
        assert logp == pytest.approx(math.log(totals[labels]), abs=1e-4), labels
    assert (beam_scores[0, 1:] >= beam_scores[0, :-1] - 1e-6).all()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="labels must be unique; 'a' appears 2 times"):
        CTCBeamDecoder(["_", "a", "a"])
    with pytest.raises(ValueError, match="blank_id 5 is outside the 3 labels"):
        CTCBeamDecoder(["_", "a", "b"], blank_id=5)
    with pytest.raises(FileNotFoundError, match="model_path nowhere.arpa does not exist"):
        CTCBeamDecoder(LABELS, "nowhere.arpa")
    with pytest.raises(ValueError, match="backend must be one of"):
        CTCBeamDecoder(LABELS, backend="kaldi")


@pytest.mark.skipif(importlib.util.find_spec("ctcdecode") is not None, reason="ctcdecode is installed")
def test_ctcdecode_backend_says_it_is_missing():
    with pytest.raises(ImportError, match="needs the ctcdecode package"):
        CTCBeamDecoder(LABELS, backend="ctcdecode")


def test_loading_an_arpa_lm_is_quiet_unless_it_fails(tmp_path, capfd):
    arpa = write_arpa(tmp_path / "words.arpa", {"cat": -0.1, "cab": -3.0})
    CTCBeamDecoder(LABELS, str(arpa), alpha=0.5, beta=0.0)
    assert capfd.readouterr().err == ""  # no KenLM progress bar in every `asr transcribe`
    (tmp_path / "bad.arpa").write_text("not an ARPA file\n")
    with pytest.raises(Exception, match="not an ARPA file"):  # KenLM's own explanation
        CTCBeamDecoder(LABELS, str(tmp_path / "bad.arpa"), lexicon=["cat"])
    assert "bad.arpa" in capfd.readouterr().err  # and what it wrote while failing


def _numpy_prefix_search(lp: np.ndarray, beam_width: int, blank: int):
    from asr.beam_search import _PrefixSearch

    search = _PrefixSearch(lp.shape[1], beam_width, blank)
    search.advance(lp)
    return [] if search.dead else search.results()


@pytest.mark.parametrize("kind", ["dirichlet", "ties", "zeros"])
def test_compiled_prefix_search_gives_the_numpy_search_beams(kind):
    # the compiled search must reproduce the numpy one exactly: labels, start frames and the
    # bits of every score, also when scores tie (a peaked label, all others equal) or are -inf
    from asr import beam_kernels
    from asr.beam_search import _COMPACT_EVERY, _MAX_OPEN_LABELS

    rng = np.random.default_rng(["dirichlet", "ties", "zeros"].index(kind))
    compared = 0
    for _ in range(25):
        frames, vocab = int(rng.choice([1, 3, 40, 130])), int(rng.integers(3, 9))
        beam_width, blank = int(rng.choice([1, 4, 16])), int(rng.integers(0, vocab))
        if kind == "dirichlet":
            p = rng.dirichlet(np.full(vocab, 0.3), size=frames)
        else:
            p = np.full((frames, vocab), 0.1 / (vocab - 1))
            p[np.arange(frames), rng.integers(0, vocab, frames)] = 0.9
            if kind == "zeros":
                p[rng.random((frames, vocab)) < 0.3] = 0.0
        with np.errstate(divide="ignore"):
            lp = np.log(p)
        labels, starts, lens, logp, exact = beam_kernels.prefix_search(
            lp, beam_width, blank, _COMPACT_EVERY, _MAX_OPEN_LABELS)
        if not exact:
            continue
        compiled = [(tuple(labels[k, :n].tolist()), tuple(starts[k, :n].tolist()), float(logp[k]))
                    for k, n in enumerate(lens.tolist())]
        assert compiled == _numpy_prefix_search(lp, beam_width, blank)
        compared += 1
    assert compared >= 20


def test_batched_likelihoods_match_the_forward_algorithm():
    from asr.beam_search import ctc_log_likelihoods

    rng = np.random.default_rng(0)
    lp = random_log_probs(1, frames=30, vocab=6)
    base = list(rng.integers(1, 6, size=12))
    # shared prefixes (the reuse of columns), repeats (no blank skip), the empty sequence, and
    # one too long for the frames
    candidates = [base, base[:8], base[:8] + [3, 3], [], base + [2] * 10, [4] * 16, base[:1]]
    got = ctc_log_likelihoods(lp, candidates)
    for c, g in zip(candidates, got):
        assert g == pytest.approx(ctc_forward_logprob(lp, c), rel=1e-12, abs=1e-12)
    assert got[5] == -math.inf


def test_token_min_logp_prunes_labels_and_keeps_the_guarantee():
    # "b" (0.25) is below the threshold where it would start, so "bat" leaves the n-best list
    probs = peaked([{"c": 0.7, "b": 0.25}, {"a": 0.95}, {"t": 0.95}])
    n_best = {}
    for min_logp in (None, math.log(0.3)):
        decoder = CTCBeamDecoder(LABELS, beam_width=4, lexicon=["cat", "bat"], token_min_logp=min_logp)
        results, _, _, lens = decoder.decode(probs)
        n_best[min_logp] = {text(LABELS, results, lens, 0, k) for k in range(4) if lens[0, k] > 0}
    assert n_best[None] == {"cat", "bat"} and n_best[math.log(0.3)] == {"cat"}
    # without LM the unpruned prefix search is merged in: its best beam is never lost
    for seed in range(5):
        lp = random_log_probs(seed, frames=25, vocab=len(LABELS))
        decoder = CTCBeamDecoder(LABELS, beam_width=8, log_probs_input=True, token_min_logp=-1.0,
                                 beam_threshold=2.0)
        _, scores, _, _ = decoder.decode(torch.from_numpy(lp)[None])
        assert -float(scores[0, 0]) >= prefix_beam_search(lp, 8)[0][1] - 1e-5

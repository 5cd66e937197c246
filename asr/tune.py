"""Tuning the beam search on a dev set: LM weight (alpha), word bonus (beta) and beam width.

    asr tune --model PKG --data DEV_DIR --lm LM --out-dir DIR [--alphas 0,0.5,1] [--betas 0,1,2] [--beams 8,32]

The acoustic model runs once over the dev set and its log-probabilities are kept in
DIR/dev_logprobs.npz (reused while the model's weights and the data dir are the same); each grid
point only re-runs the search. Writes DIR/results.tsv and DIR/results.md (sorted by WER, greedy
decoding as the baseline), DIR/best.json, and DIR/model.safetensors: the model package with the
best values as its decoding defaults (cfg.decode), its LM path written relative to that file so
the two can move together. An ensemble (`asr ensemble`) is tuned as it decodes: every member's
log-probabilities are dumped, and each grid point ranks the members' n-best lists.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .audio import load_each
from .features import pad_batch
from .metrics import ErrorStats, corpus_cer, corpus_wer
from .text import Vocabulary

DUMP_FILE = "dev_logprobs.npz"
_DUMP_FIELDS = ("utt_ids", "refs", "lengths", "log_probs", "labels", "blank_id", "key")
# required; "unit" is not: dumps written before it was recorded are of character models


class TuneError(ValueError):
    pass


@dataclass
class Posteriors:
    """CTC log-probabilities of a data set, one (T, V) array per utterance, with the references."""
    utt_ids: list[str]
    refs: list[str]
    log_probs: list[np.ndarray]
    labels: list[str]
    blank_id: int = 0
    key: str = ""  # what they were computed from (model weights + data dir), to know a stale file
    unit: str = "char"  # the vocabulary's (Vocabulary.unit): a word model's labels join differently

    @property
    def vocab(self) -> Vocabulary:
        return Vocabulary(self.labels, self.unit)

    def save(self, path: str | os.PathLike) -> None:
        # plain arrays only (no object dtype), so loading needs no pickle
        np.savez(path, utt_ids=np.array(self.utt_ids, dtype=str), refs=np.array(self.refs, dtype=str),
                 lengths=np.array([len(x) for x in self.log_probs], dtype=np.int64),
                 log_probs=np.concatenate(self.log_probs).astype(np.float32) if self.log_probs
                 else np.zeros((0, len(self.labels)), np.float32),
                 labels=np.array(self.labels, dtype=str), blank_id=np.array(self.blank_id), key=np.array(self.key),
                 unit=np.array(self.unit))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Posteriors":
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {f: z[f] for f in _DUMP_FIELDS + ("unit",) if f in z.files}
        except (OSError, ValueError) as e:
            raise TuneError(f"{path}: cannot read the log-probability dump ({e})") from None
        missing = [f for f in _DUMP_FIELDS if f not in d]
        if missing:
            raise TuneError(f"{path}: not a log-probability dump (no field {missing[0]!r})")
        lengths, flat = d["lengths"], d["log_probs"]
        if flat.ndim != 2 or flat.shape[0] != lengths.sum() or flat.shape[1] != len(d["labels"]) \
                or not len(lengths) == len(d["utt_ids"]) == len(d["refs"]):
            raise TuneError(f"{path}: field 'log_probs' {flat.shape} does not match 'lengths' "
                            f"(sum {int(lengths.sum())}), 'labels' ({len(d['labels'])}) and 'utt_ids'")
        return cls(d["utt_ids"].tolist(), d["refs"].tolist(), np.split(flat, np.cumsum(lengths)[:-1]),
                   d["labels"].tolist(), int(d["blank_id"]), str(d["key"]), str(d.get("unit", "char")))


def dump_key(model, data_dir: str | os.PathLike) -> str:
    """Model weights + data dir contents: a dump is reused only while both are unchanged."""
    from .package import weights_sha256

    h = hashlib.sha256(weights_sha256(model.state_dict()).encode())
    for name in ("wav.scp", "text", "manifest.jsonl"):
        path = Path(data_dir) / name
        h.update(path.read_bytes() if path.exists() else b"-")
    return h.hexdigest()


@torch.inference_mode()
def compute_posteriors(model, data_dir: str | os.PathLike, batch_size: int = 16) -> Posteriors:
    """Run the model over every utterance of a data dir (references required)."""
    from .datadir import read_data_dir

    utts = read_data_dir(data_dir)
    no_text = [u.utt_id for u in utts if u.text is None]
    if not utts or no_text:
        raise TuneError(f"{data_dir}: tuning needs references, but "
                        + (f"{len(no_text)} utterances have no line in text (first: {no_text[0]})"
                           if no_text else "the data dir is empty"))
    sr = model.cfg.features.sample_rate
    device = next(model.parameters()).device
    waves = {u.utt_id: wav for u, wav in load_each(utts, lambda u: u.load_audio(sr)[0],
                                                   lambda u, e: print(f"asr tune: skipped {u.utt_id}: {e}",
                                                                      file=sys.stderr))}
    order = sorted(waves, key=lambda k: len(waves[k]))  # similar lengths share a batch: less padding
    log_probs: dict[str, np.ndarray] = {}
    model.eval()
    for s in tqdm(range(0, len(order), batch_size), desc="dev log-probs", unit="batch",
                  file=sys.stderr, disable=None, leave=False):
        ids = order[s:s + batch_size]
        wav, lens = pad_batch([waves[k] for k in ids])
        out, out_lens = model(wav.to(device), lens.to(device))
        for i, k in enumerate(ids):
            log_probs[k] = out[i, :int(out_lens[i])].float().cpu().numpy()
    kept = [u for u in utts if u.utt_id in log_probs]
    return Posteriors([u.utt_id for u in kept], [u.text for u in kept], [log_probs[u.utt_id] for u in kept],
                      list(model.vocab.tokens), model.vocab.blank_id, dump_key(model, data_dir), model.vocab.unit)


def proposals(post: Posteriors, decoder=None, batch: int = 32) -> list[list[tuple[list[int], list[int]]]]:
    """Per utterance: the greedy path (decoder None) or the beam decoder's n-best list."""
    from .decode import proposals as batch_proposals

    vocab, out = post.vocab, []
    for s in range(0, len(post.log_probs), batch):
        out += batch_proposals(*pad_batch(post.log_probs[s:s + batch]), vocab, decoder)
    return out


def _text(vocab: Vocabulary, labels: list[int]) -> str:
    """The transcript `asr decode` writes for these labels: single spaces, no edge spaces."""
    return " ".join(vocab.decode(labels).split())


def greedy_texts(post: Posteriors) -> list[str]:
    vocab = post.vocab
    return [_text(vocab, p[0][0]) for p in proposals(post)]


def beam_texts(decoder, post: Posteriors, batch: int = 32) -> list[str]:
    """Best beam of each utterance as text."""
    vocab = post.vocab
    return [_text(vocab, p[0][0]) for p in proposals(post, decoder, batch)]


def ensemble_texts(posts: list[Posteriors], vocab, decoder=None) -> list[str]:
    """An ensemble's transcripts (asr.models.ensemble): members' proposals ranked by their mean
    CTC log-likelihood plus the decoder's LM terms."""
    from .decode import rank_proposals

    props = [proposals(p, decoder) for p in posts]
    lm_score = decoder.lm_score if decoder is not None else None
    return [rank_proposals([pr[i] for pr in props], [p.log_probs[i] for p in posts], vocab, lm_score)[0].text
            for i in range(len(posts[0].log_probs))]


def _row(stats: ErrorStats, cer: ErrorStats, seconds: float, n: int, **params) -> dict:
    return {**params, "wer": round(stats.rate, 2), "errors": stats.errors, "words": stats.total,
            "cer": round(cer.rate, 2), "utt_per_s": round(n / max(seconds, 1e-9), 1)}


def grid_search(post: Posteriors | list[Posteriors], lm: str | os.PathLike | None, alphas: Sequence[float] = (0.5,),
                betas: Sequence[float] = (1.0,), beams: Sequence[int] = (16,), *,
                lexicon: str | os.PathLike | None = None, progress: bool = True, vocab=None) -> list[dict]:
    """WER of every (beam width, alpha, beta) on the posteriors, best first.

    A list of posteriors is an ensemble's members (with their `vocab`), decoded as the ensemble is.
    One decoder per beam width (loading the LM and building the lexicon trie is the slow part);
    alpha and beta change through reset_params. Ties go to the smaller beam, then smaller weights.
    """
    from .beam_search import CTCBeamDecoder

    posts = post if isinstance(post, list) else [post]
    post = posts[0]

    if lm is None:  # alpha and beta mean nothing without an LM: only the beam width is tuned
        alphas, betas = [0.0], [0.0]
    points = list(product(beams, alphas, betas))
    bar = tqdm(total=len(points), desc="tune", unit="point", file=sys.stderr, disable=None if progress else True,
               leave=False)
    rows = []
    for beam in beams:
        decoder = CTCBeamDecoder(post.labels, None if lm is None else str(lm), alphas[0], betas[0],
                                 beam_width=beam, blank_id=post.blank_id, log_probs_input=True, lexicon=lexicon)
        for alpha, beta in product(alphas, betas):
            decoder.reset_params(alpha, beta)
            t0 = time.perf_counter()
            hyps = beam_texts(decoder, post) if len(posts) == 1 else ensemble_texts(posts, vocab, decoder)
            rows.append(_row(corpus_wer(post.refs, hyps), corpus_cer(post.refs, hyps), time.perf_counter() - t0,
                             len(hyps), alpha=alpha, beta=beta, beam_width=beam))
            bar.update(1)
    bar.close()
    return sorted(rows, key=lambda r: (r["wer"], r["cer"], r["beam_width"], r["alpha"], r["beta"]))


COLUMNS = ("alpha", "beta", "beam_width", "wer", "errors", "words", "cer", "utt_per_s")


def write_results(rows: list[dict], out_dir: str | os.PathLike, greedy: dict | None = None) -> None:
    out = Path(out_dir)
    with open(out / "results.tsv", "w", encoding="utf-8") as f:
        f.write("\t".join(COLUMNS) + "\n")
        f.writelines("\t".join(str(r[c]) for c in COLUMNS) + "\n" for r in rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    if greedy is not None:
        lines.append("| greedy | | | " + " | ".join(str(greedy[c]) for c in COLUMNS[3:]) + " |")
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def tuned_package(model_path: str | os.PathLike, best: dict, lm: str | os.PathLike | None,
                  out_path: str | os.PathLike) -> Path:
    """A copy of the package whose cfg.decode holds the tuned values; LM path relative to it."""
    from .package import package_relative_lm, save_package
    from .registry import load_model

    model = load_model(model_path)
    d = model.cfg.decode
    d.decoder, d.beam_width = "beam", int(best["beam_width"])
    d.alpha, d.beta = float(best["alpha"]), float(best["beta"])
    d.lm = package_relative_lm(lm, out_path)
    info = dict(model.info)
    info["tuned"] = {k: best[k] for k in ("alpha", "beta", "beam_width", "wer", "data", "lm", "greedy_wer")}
    return save_package(model, out_path, info, half=model.package_half)


def tune(model: str | os.PathLike, data_dir: str | os.PathLike, lm: str | os.PathLike | None,
         out_dir: str | os.PathLike, alphas: Sequence[float], betas: Sequence[float], beams: Sequence[int], *,
         lexicon: str | os.PathLike | None = None, batch_size: int = 16, device: str = "cpu") -> dict:
    """The whole `asr tune`: dump (or reuse) dev log-probs, grid search, write results and package."""
    from .models import RECOGNIZERS
    from .registry import load_model, resolve

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if lm is not None and not os.path.isfile(lm):
        raise FileNotFoundError(f"--lm {lm}: no such file")
    package = resolve(model)
    acoustic = load_model(package, device, arch=RECOGNIZERS)
    members = acoustic.ctc_members()  # an ensemble: each member's own posteriors
    posts = []
    for i, member in enumerate(members):
        dump = out / (DUMP_FILE if len(members) == 1 else DUMP_FILE.replace(".npz", f".member{i}.npz"))
        key = dump_key(member, data_dir)
        post = Posteriors.load(dump) if dump.exists() else None
        if post is None or post.key != key or post.unit != member.vocab.unit:
            post = compute_posteriors(member, data_dir, batch_size)
            post.save(dump)
        posts.append(post)
    post = posts[0]
    t0 = time.perf_counter()
    greedy = greedy_texts(post) if len(posts) == 1 else ensemble_texts(posts, acoustic.vocab)
    base = _row(corpus_wer(post.refs, greedy), corpus_cer(post.refs, greedy), time.perf_counter() - t0, len(greedy))
    rows = grid_search(posts, lm, alphas, betas, beams, lexicon=lexicon, vocab=acoustic.vocab)
    write_results(rows, out, base)
    best = {**rows[0], "greedy_wer": base["wer"], "data": str(data_dir), "lm": None if lm is None else str(lm),
            "model": str(package), "utterances": len(post.utt_ids)}
    (out / "best.json").write_text(json.dumps(best, indent=2) + "\n", encoding="utf-8")
    if lexicon is not None:
        print("asr tune: warning: cfg.decode has no lexicon field, so the tuned package decodes with the "
              "LM's own words (an ARPA LM); a binary LM needs its lexicon passed again", file=sys.stderr)
    tuned_package(package, best, lm, out / "model.safetensors")
    return best

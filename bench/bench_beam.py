"""Beam search speed and accuracy: our CTCBeamDecoder (flashlight-text) against pyctcdecode, on the
same log-probabilities, the same KenLM model, the same alpha/beta and beam width, one process each.

    python bench/bench_beam.py --model recipes/espeak/exp/train --data recipes/espeak/data/test \
        --lm recipes/espeak/exp/lm/3gram.arpa [--alpha A --beta B | --tuned BEST_JSON] [--beam-width N]
        [--synthetic]

--synthetic replaces the model's posteriors by ones made from the references (peaked, with
confusions between letters), for a run without a trained model; with --text FILE (one sentence a
line, e.g. an LM's training text) neither --model nor --data is needed: the labels are the text's
characters and the first --utts lines are the references.

pyctcdecode pins numpy<2, which this project's environment does not satisfy, so it runs in a venv
of its own (created on first use at --bench-venv, `pip install pyctcdecode kenlm`), in one worker
process that gets the log-probabilities through an .npz file and is told over a pipe when to
decode. Both decoders load the LM before any clock starts.

Timing: --rounds rounds, each decoding every utterance once with every decoder, the decoders'
order turning from round to round, so that a neighbour's load falls on all of them alike. The
clock is each process's CPU time (time.process_time; both decode on one thread), which another
job on the machine does not inflate the way it does wall time; the ratio is the median over the
rounds of pyctcdecode's seconds / ours in the same round. Our decoder runs twice: with its
defaults (ctcdecode's: every label tried, beam_threshold 25) and with pyctcdecode's default
pruning (token_min_logp=-5, beam_threshold=10, which is its beam_prune_logp).
Also counted: without an LM, on how many utterances our best beam is at least as probable as
the best of a plain prefix beam search (asr.beam_search.prefix_beam_search) at the same width.
Prints a markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.beam_search import CTCBeamDecoder, prefix_beam_search  # noqa: E402
from asr.metrics import corpus_cer, corpus_wer  # noqa: E402
from asr.tune import Posteriors, beam_texts, compute_posteriors, greedy_texts  # noqa: E402

PYCTCDECODE = "pyctcdecode==0.5.0"

# Runs inside the pyctcdecode venv: argv = npz, lm ("" for none), alpha, beta, beam width. Each
# line "none" or "lm" on stdin decodes every utterance once with that decoder and answers one JSON
# line (CPU and wall seconds, the transcripts).
_WORKER = r"""
import json, sys, time
import numpy as np
from pyctcdecode import build_ctcdecoder
npz, lm, alpha, beta, beam = sys.argv[1:]
z = np.load(npz, allow_pickle=False)
labels = ["" if i == int(z["blank_id"]) else l for i, l in enumerate(z["labels"].tolist())]
log_probs = np.split(z["log_probs"], np.cumsum(z["lengths"])[:-1])
decoders = {"none": build_ctcdecoder(labels, alpha=float(alpha), beta=float(beta)),
            "lm": build_ctcdecoder(labels, kenlm_model_path=lm, alpha=float(alpha), beta=float(beta))}
for d in decoders.values():
    d.decode(log_probs[0], beam_width=int(beam))  # warm-up: lazy set-up is not decoding
print("ready", flush=True)
for line in sys.stdin:
    decoder = decoders[line.strip()]
    c0, t0 = time.process_time(), time.perf_counter()
    hyps = [decoder.decode(lp, beam_width=int(beam)) for lp in log_probs]
    print(json.dumps({"cpu": time.process_time() - c0, "wall": time.perf_counter() - t0, "hyps": hyps}), flush=True)
"""
PYCTC_PRUNING = dict(token_min_logp=-5.0, beam_threshold=10.0)  # pyctcdecode 0.5.0's defaults


def ensure_venv(path: Path) -> Path:
    python = path / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import pyctcdecode, kenlm"],
                                          capture_output=True).returncode == 0:
        return python
    print(f"creating {path} with {PYCTCDECODE} (it needs numpy<2, so not in the project's env)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", PYCTCDECODE, "kenlm"], check=True)
    return python


def synthetic_posteriors(refs: list[str], labels: list[str], seed: int = 0, frames_per_label: int = 3,
                         confusion: float = 0.35) -> Posteriors:
    """Posteriors a CTC model might give: each label peaks for a frame or two among blanks, and
    with probability `confusion` part of its mass goes to another letter."""
    rng = np.random.default_rng(seed)
    index = {lab: i for i, lab in enumerate(labels)}
    letters = [i for i, lab in enumerate(labels) if i != 0 and lab != " "]
    out = []
    for ref in refs:
        rows = []
        for ch in ref:
            for f in range(rng.integers(1, frames_per_label + 1)):
                p = rng.dirichlet(np.full(len(labels), 0.1)) * 0.1
                target = index[ch] if f == 0 else 0
                p[target] += 0.9
                if f == 0 and rng.random() < confusion:
                    other = rng.choice(letters)
                    moved = p[target] * rng.uniform(0.3, 0.6)
                    p[target] -= moved
                    p[other] += moved
                rows.append(p / p.sum())
            blank = rng.dirichlet(np.full(len(labels), 0.1)) * 0.1
            blank[0] += 0.9
            rows.append(blank / blank.sum())
        out.append(np.log(np.maximum(np.array(rows, dtype=np.float32), 1e-12)))
    return Posteriors([f"s{i}" for i in range(len(refs))], refs, out, labels)


class PyctcWorker:
    """pyctcdecode in its own venv and process, both decoders loaded; run("none" | "lm")."""

    def __init__(self, python: Path, post: Posteriors, lm: str, alpha: float, beta: float, beam: int,
                 tmp: Path):
        npz = tmp / "post.npz"
        post.save(npz)
        self.proc = subprocess.Popen([python, "-c", _WORKER, npz, lm, str(alpha), str(beta), str(beam)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"pyctcdecode worker failed (exit {self.proc.wait()}); its stderr is above")

    def run(self, which: str) -> tuple[float, float, list[str]]:
        self.proc.stdin.write(which + "\n")
        self.proc.stdin.flush()
        res = json.loads(self.proc.stdout.readline())
        return res["cpu"], res["wall"], [" ".join(h.split()) for h in res["hyps"]]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def timed(decoder, post: Posteriors) -> tuple[float, float, list[str]]:
    """(CPU s, wall s, best transcripts): one utterance a call, as pyctcdecode's decode()."""
    c0, t0 = time.process_time(), time.perf_counter()
    hyps = beam_texts(decoder, post, batch=1)
    return time.process_time() - c0, time.perf_counter() - t0, hyps


def prefix_check(post: Posteriors, beam: int, **pruning) -> tuple[int, int, int]:
    """(utterances, ours >= prefix search, ours > prefix search) for the best beam's ln P, no LM."""
    decoder = CTCBeamDecoder(post.labels, beam_width=beam, blank_id=post.blank_id, log_probs_input=True,
                             **pruning)
    at_least, better = 0, 0
    for lp in post.log_probs:
        _, scores, _, _ = decoder.decode(torch.from_numpy(lp)[None])
        mine, plain = -float(scores[0, 0]), prefix_beam_search(lp, beam, post.blank_id)[0][1]
        at_least += mine >= plain - 1e-4 * max(1.0, abs(plain))  # float32 scores
        better += mine > plain + 1e-4 * max(1.0, abs(plain))
    return len(post.log_probs), at_least, better


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model package or exp dir (posteriors of --data)")
    ap.add_argument("--data", help="data dir with references")
    ap.add_argument("--synthetic", action="store_true", help="posteriors made from the references instead")
    ap.add_argument("--text", help="with --synthetic: references from this text file, labels from its characters")
    ap.add_argument("--utts", type=int, default=200, help="with --text: how many lines")
    ap.add_argument("--lm", required=True, help="word-level KenLM ARPA file")
    ap.add_argument("--tuned", help="best.json from asr tune: alpha, beta and beam width from there "
                    "(default: MODEL/tune/best.json when it exists)")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--beam-width", type=int, default=None, help="default: the tuned one, else 32")
    ap.add_argument("--rounds", type=int, default=5, help="timed passes over the utterances per decoder")
    ap.add_argument("--bench-venv", type=Path, default=Path(tempfile.gettempdir()) / "bench-venv")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.text:
        a.synthetic = True
    elif not a.data or not a.model:
        ap.error("--model and --data are needed (with --synthetic, the model gives only the labels)")
    if a.tuned is None and a.model and (Path(a.model) / "tune" / "best.json").exists():
        a.tuned = Path(a.model) / "tune" / "best.json"
    if a.tuned:
        best = json.loads(Path(a.tuned).read_text())
        a.alpha, a.beta = best["alpha"], best["beta"]
        a.beam_width = a.beam_width or best["beam_width"]
    a.beam_width = a.beam_width or 32
    from asr.registry import load_model

    if a.text:
        from asr.text import Vocabulary

        refs = [" ".join(line.split()) for line in open(a.text, encoding="utf-8") if line.strip()][: a.utts]
        post = synthetic_posteriors(refs, list(Vocabulary.from_texts(refs).tokens))
        source = f"synthetic posteriors from the first {len(refs)} lines of {a.text}"
    elif a.synthetic:
        model = load_model(a.model)
        from asr.datadir import read_data_dir

        post = synthetic_posteriors([u.text for u in read_data_dir(a.data)], list(model.vocab.tokens))
        source = f"synthetic posteriors from {a.data} references"
    else:
        model = load_model(a.model)
        post = compute_posteriors(model, a.data)
        source = f"{a.model} on {a.data}"
    python = ensure_venv(a.bench_venv)
    n, frames = len(post.log_probs), sum(len(x) for x in post.log_probs)

    def ours(lm, **pruning):
        decoder = CTCBeamDecoder(post.labels, lm, a.alpha, a.beta, beam_width=a.beam_width,
                                 blank_id=post.blank_id, log_probs_input=True, **pruning)
        beam_texts(decoder, Posteriors(post.utt_ids[:1], post.refs[:1], post.log_probs[:1], post.labels))  # warm-up
        return lambda: timed(decoder, post)

    lm_name = Path(a.lm).name
    with tempfile.TemporaryDirectory() as tmp:
        worker = PyctcWorker(python, post, a.lm, a.alpha, a.beta, a.beam_width, Path(tmp))
        runs = {}  # (decoder, LM) -> callable giving (cpu, wall, hyps)
        for key, lm in (("none", None), (lm_name, a.lm)):
            runs[("pyctcdecode 0.5.0", key)] = lambda key=key: worker.run("none" if key == "none" else "lm")
            runs[("asr CTCBeamDecoder", key)] = ours(lm)
            runs[("asr CTCBeamDecoder, pyctcdecode's pruning", key)] = ours(lm, **PYCTC_PRUNING)
        cpu, wall, hyps = {k: [] for k in runs}, {k: [] for k in runs}, {}
        order = list(runs)
        for r in range(a.rounds):
            for k in order[r % len(order):] + order[:r % len(order)]:
                c, w, h = runs[k]()
                cpu[k].append(c)
                wall[k].append(w)
                hyps.setdefault(k, h)
        worker.close()
    checks = [(what, *prefix_check(post, a.beam_width, **pruning))
              for what, pruning in (("defaults", {}), ("pyctcdecode's pruning", PYCTC_PRUNING))]

    print(f"### Beam search: asr vs pyctcdecode ({date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, 1 thread each, {a.rounds} rounds)\n")
    print(f"{n} utterances ({frames} frames, {len(post.labels)} labels) from {source}; beam {a.beam_width}, "
          f"alpha={a.alpha}, beta={a.beta} for both (ln-LM weight and per-word bonus in both). "
          f"Speed = median over rounds of pyctcdecode's CPU seconds / ours in the same round "
          f"(wall-clock ratio in brackets).\n")
    print("| decoder | LM | utt/s (CPU) | speed vs pyctcdecode | WER % | CER % |")
    print("|---|---|---|---|---|---|")
    greedy = greedy_texts(post)
    print(f"| greedy | - | | | {corpus_wer(post.refs, greedy).rate:.2f} | {corpus_cer(post.refs, greedy).rate:.2f} |")
    for (name, lm), h in hyps.items():
        theirs = ("pyctcdecode 0.5.0", lm)
        ratio = ""
        if name.startswith("asr"):
            by_cpu = np.median([p / o for p, o in zip(cpu[theirs], cpu[(name, lm)])])
            by_wall = np.median([p / o for p, o in zip(wall[theirs], wall[(name, lm)])])
            ratio = f"**{by_cpu:.2f}x** ({by_wall:.2f}x)"
        print(f"| {name} | {lm} | {n / np.median(cpu[(name, lm)]):.1f} | {ratio} | "
              f"{corpus_wer(post.refs, h).rate:.2f} | {corpus_cer(post.refs, h).rate:.2f} |")
    for what, checked, at_least, better in checks:
        print(f"\nWithout LM ({what}), best beam ln P >= plain prefix beam search's (beam {a.beam_width}): "
              f"{at_least}/{checked} utterances ({better} strictly higher).")
    return 0


if __name__ == "__main__":
    sys.exit(main())

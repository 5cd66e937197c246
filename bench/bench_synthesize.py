"""Synthesis speed of a TTS model: real-time factor on one thread, split into the model
(encoder + autoregressive decoder + postnet) and the Griffin-Lim vocoder, for a few Griffin-Lim
iteration counts.

    python bench/bench_synthesize.py [--model digits-tts] [--utts 50] [--threads 1]

Texts: seeded random digit strings of 1-7 digits (what the digits-tts model was trained on), one
utterance at a time, as `asr synthesize` runs them.
"""
import argparse
import time

import numpy as np
import torch

from asr.synthesize import load_tts, synthesize
from asr.text import DIGIT_WORDS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="digits-tts")
    ap.add_argument("--utts", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", default="16,32,60", help="Griffin-Lim iteration counts")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = load_tts(a.model)
    rng = np.random.default_rng(0)
    texts = [" ".join(DIGIT_WORDS[d] for d in rng.integers(0, 10, rng.integers(1, 8))) for _ in range(a.utts)]
    synthesize(model, texts[0])  # warm-up: first-call allocations are not synthesis time
    print(f"{a.model}, {a.utts} digit strings, {a.threads} thread(s), one utterance at a time\n")
    print("| Griffin-Lim iterations | audio s | RTF total | RTF model | RTF vocoder | cut at max steps |")
    print("|---|---|---|---|---|---|")
    for n_iter in [int(x) for x in a.iters.split(",")]:
        m = v = audio = 0.0
        cut = 0
        t0 = time.perf_counter()
        for t in texts:
            s = synthesize(model, t, vocoder_options={"n_iter": n_iter})
            m, v, audio, cut = m + s.model_seconds, v + s.vocoder_seconds, audio + s.duration, cut + (not s.stopped)
        wall = time.perf_counter() - t0
        print(f"| {n_iter} | {audio:.1f} | {wall / audio:.3f} | {m / audio:.3f} | {v / audio:.3f} | {cut} |")


if __name__ == "__main__":
    main()

"""The two RNN paths of asr.models.rnn on this CPU, in one run: exact padded (oneDNN) against
packed sequences, forward + backward, for a 3x256 BiLSTM on a batch of 32 utterances of 200-300
frames. The ratio is what justifies running padded on CPU.

    python bench/bench_rnn_paths.py
"""
import time

import torch

from asr.models.rnn import StackedRNN


def run(rnn, x, lens, packed: bool, repeats: int = 3) -> float:
    for layer in rnn.layers:
        layer.packed = packed
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        rnn(x, lens).sum().backward()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    torch.manual_seed(0)
    rnn = StackedRNN(40, 256, 3).train()
    x = torch.randn(32, 300, 40)
    lens = torch.randint(200, 301, (32,))
    lens[0] = 300
    padded = run(rnn, x, lens, packed=False)
    packed = run(rnn, x, lens, packed=True, repeats=1)
    audio_s = float(lens.sum()) * 0.01  # 10 ms frames
    print("| path | s per batch (fwd+bwd) | audio s per s |")
    print("|---|---|---|")
    print(f"| exact padded (oneDNN) | {padded:.2f} | {audio_s / padded:.0f} |")
    print(f"| packed | {packed:.2f} | {audio_s / packed:.0f} |")
    print(f"\npacked / padded time: {packed / padded:.1f}x")


if __name__ == "__main__":
    main()

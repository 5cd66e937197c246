"""`make bench`: every benchmark whose inputs exist here, one after another (they share 2 cores).

Each prints a markdown table; copy the tables into BENCHMARKS.md with the date and machine.
The beam-search benchmark needs the espeak recipe's model and LM (recipes/espeak, stages 0-6).
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ESPEAK = ROOT / "recipes" / "espeak"

runs = [["bench/bench_rnn_paths.py"], ["bench/bench_transcribe.py"], ["bench/bench_train_throughput.py"],
        ["bench/bench_synthesize.py"]]
lm = ESPEAK / "exp" / "lm" / "3gram.arpa"
if lm.exists():
    runs.append(["bench/bench_beam.py", "--model", str(ESPEAK / "exp" / "train"), "--data",
                 str(ESPEAK / "data" / "test"), "--lm", str(lm)])
else:
    print(f"bench_beam: skipped, {lm} not found (run recipes/espeak/run.sh first)")
failed = 0
for args in runs:
    print(f"\n## {' '.join(args)}\n", flush=True)
    failed += subprocess.run([sys.executable, *args], cwd=ROOT).returncode != 0
sys.exit(1 if failed else 0)

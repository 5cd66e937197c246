#!/usr/bin/env bash
# tts_english: English text-to-speech on one real voice, kathleen (rhasspy's voice dataset, CC0:
# the 1,132 CMU ARCTIC prompts read by a US English speaker, 1,620 takes, 1.37 h, 24 kHz), with
# the Tacotron-style model of asr.models.tts reading characters of normalised English
# (asr.tts_text: numbers, abbreviations and symbols as words), Griffin-Lim vocoder. Evaluated on
# held-out prompts by how well an English ASR model understands it, beside the same model on the
# real recordings (the ceiling) and on copy synthesis (real mels -> Griffin-Lim), by mel cepstral
# distortion against the recordings, and by synthesis speed on one thread.
#   ./run.sh [--stage N] [--stop-stage N] [--config conf/kathleen.yaml] [--exp exp/kathleen]
#            [--asr-model english] [--corpus-dir DIR] [--num-dev 50] [--num-test 100]
#            [--force true] [--ship true]
# --asr-model: the ASR model that scores intelligibility, a registry name or a package / exp dir
#   (until `english` ships: ../english/exp/train). It must not have been trained on the
#   dev/test prompts' recordings (data/dev, data/test here), or the score flatters.
# Stages: 0 prepare (data_prep.kathleen: --num-dev + --num-test prompts held out whole, seeded),
#         1 train, 2 synthesize + evaluate on the test prompts (ASR CER/WER, MCD, RTF on one
#         thread, an alignment plot per utterance), 3 plots of free text (numbers,
#         abbreviations, a paragraph), 4 package, 5 RESULTS.md,
#         6 ship (with --ship true only: copy the package into asr/pretrained as `english-tts`)
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=5
config=conf/kathleen.yaml
exp=exp/kathleen
asr_model=english
corpus_dir=
num_dev=50
num_test=100
train_args=
ship=false
force=false
. ../lib.sh

# One thread each: sized for a shared 2-core machine, and RTF is reported per thread.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

if stage 0 prepare; then
  python -m data_prep.kathleen ${corpus_dir:+--corpus-dir "$corpus_dir"} --num-dev "$num_dev" --num-test "$num_test" data
  for s in train dev test; do asr datadir validate data/$s; done
  done_stage 0 prepare
fi

if stage 1 train; then
  start=$SECONDS
  asr train --config "$config" --exp-dir "$exp" --resume --threads 1 --recipe recipes/tts_english $train_args
  echo $((SECONDS - start)) > "$exp/train_seconds"
  done_stage 1 train
fi

if stage 2 evaluate; then
  # the test prompts, one take each, never heard in training in any take
  asr tts evaluate --model "$exp" --data data/test --asr-model "$asr_model" \
    --out-dir "$exp/eval_test" --seed 0 --plots 100 --threads 1
  done_stage 2 evaluate
fi

if stage 3 plots; then
  while IFS='|' read -r name text; do
    asr tts plot --model "$exp" --text "$text" -o "$exp/plots/$name.png"
    asr synthesize --model "$exp" --text "$text" -o "$exp/samples/$name.wav" --allow-cut
  done <<'TEXTS'
hello|Hello, world.
numbers|Dr. Smith paid $3.50 on May 1st, 1984 at 3:05 p.m.
paragraph|The boat left at dawn. By noon, the wind had turned, and the men were tired; nobody spoke. We reached the harbor at 6:30.
TEXTS
  mkdir -p results/kathleen
  cp "$exp"/plots/*.png "$exp/train_curve.png" results/kathleen/
  done_stage 3 plots
fi

# the CER in a Kaldi-style wer file written by evaluate
cer() { grep '^%CER' "$1" | awk '{print $2}'; }
result() { echo "ASR CER $(cer "$exp/eval_test/synth/wer") % on $(python -c "import json;r=json.load(open('$exp/eval_test/results.json'));print(f\"{r['utterances']} synthesized held-out prompts (real recordings $(cer "$exp/eval_test/real/wer") %), MCD {r['mcd_db']:.2f} dB\")")"; }
data_info() { echo "kathleen (CMU ARCTIC prompts, CC0), $(cut -d_ -f2 data/train/utt2spk | sort -u | wc -l) training prompts"; }

if stage 4 package; then
  asr package --model "$exp" -o "$exp/english-tts.safetensors" \
    --info "data=$(data_info)" --info recipe=recipes/tts_english \
    --info "result=$(result)"
  done_stage 4 package
fi

if stage 5 results; then
  python - "$exp" "$config" "$(machine)" "$(date +%F)" "$asr_model" <<'PY' > RESULTS.md
import csv, json, re, sys

import yaml
from pathlib import Path
exp, config, machine, day, asr_model = sys.argv[1:]
ev = Path(exp, "eval_test")
r = json.loads((ev / "results.json").read_text())
lines = {k: (ev / k / "wer").read_text() for k in ("synth", "real", "copy")}
cer = {k: float(re.search(r"^%CER ([\d.]+)", v, re.M)[1]) for k, v in lines.items()}
kaldi = {k: {m: re.search(rf"^%{m} .*$", v, re.M)[0] for m in ("CER", "WER")} for k, v in lines.items()}
c = yaml.safe_load(open(f"{exp}/config.yaml"))
rows = list(csv.DictReader(open(f"{exp}/train_log.csv")))
dev = [x for x in rows if x["split"] == "dev"]
best = min(dev, key=lambda x: float(x["loss"]))
secs = Path(f"{exp}/train_seconds")
m, ex, f = c["model"], c["model"]["extra"], c["features"]
ratio = cer["synth"] / cer["real"] if cer["real"] else float("inf")
print("# tts_english results (kathleen voice dataset, CC0; CMU ARCTIC prompts)\n")
print(f"## kathleen ({day}, {machine})\n")
print(f"Config `{config}`: {ex.get('text')} characters, r={ex.get('reduction')}, {m['cell'].upper()} decoder "
      f"{m['hidden_size']}, encoder {ex.get('encoder_dim')}, {f['n_mels']} mels at {f['sample_rate']} Hz, hop "
      f"{f['hop_length']}. Trained {rows[-1]['step']} steps ({int(rows[-1]['epoch']) + 1} epochs"
      + (f", {int(secs.read_text()) / 60:.0f} min wall clock on one thread" if secs.exists() else "")
      + f"); best dev loss {float(best['loss']):.3f} at step {best['step']} (attention focus {float(best['focus']):.2f}).\n")
print(f"Intelligibility is scored by `{asr_model}` on the {r['utterances']} test prompts (one take each; no take of "
      "them was trained on). Target: synthesized CER at most 1.5x the real recordings' CER.\n")
print("| metric | value |\n|---|---|")
print(f"| ASR on the synthesized test prompts | {kaldi['synth']['CER']}; {kaldi['synth']['WER']} |")
print(f"| same ASR on the real recordings of those prompts (ceiling) | {kaldi['real']['CER']}; {kaldi['real']['WER']} |")
print(f"| same ASR on copy synthesis (real mels -> Griffin-Lim: the vocoder's ceiling) | {kaldi['copy']['CER']}; {kaldi['copy']['WER']} |")
print(f"| synthesized CER / real CER (target <= 1.5) | {ratio:.2f}: {'met' if ratio <= 1.5 else 'not met'} |")
print(f"| mel cepstral distortion vs the real recordings | {r['mcd_db']:.2f} dB (std {r['mcd_db_std']:.2f}; copy synthesis {r['mcd_copy_db']:.2f} dB) |")
print(f"| synthesis real-time factor ({r['threads']} thread) | {r['rtf']:.3f} (model {r['rtf_model']:.3f} + Griffin-Lim {r['rtf_vocoder']:.3f}) |")
print(f"| test prompts whose stop token never fired | {len(r['not_stopped'])} |")
print(f"\nMCD: {r['mcd_desc']}. Alignment plots of every test prompt: `{exp}/eval_test/plots/`; "
      "free-text plots and the training curve: `results/kathleen/`.")
PY
  cat RESULTS.md
  done_stage 5 results
fi

if [ "$ship" = true ] && [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  echo "== stage 6 (ship): $exp/english-tts.safetensors -> asr/pretrained/english-tts.safetensors"
  asr ship "$exp/english-tts.safetensors" english-tts \
    --data "$(data_info)" --result "$(result)"
fi

#!/usr/bin/env bash
# tts_digits: text-to-speech on the Free Spoken Digit Dataset (Zohar Jackson et al., CC BY-SA 4.0):
# a Tacotron-style model (asr.models.tts) trained on digit strings spliced from one speaker's
# recordings, Griffin-Lim vocoder, evaluated by how well the shipped `digits` ASR model
# understands it, by mel cepstral distortion against real recordings of the same strings, and by
# synthesis speed.
#   ./run.sh [--stage N] [--stop-stage N] [--variant jackson|multi] [--force true] [--ship true]
# Variants: jackson  one voice (FSDD speaker jackson; shipped as `digits-tts`), conf/jackson.yaml
#           multi    all five speakers with a learned speaker-embedding table, conf/multi.yaml
# Numbers: results/<variant>.md (written by stage 5) and RESULTS.md (all variants + results/notes.md).
# Stages: 0 prepare (data_prep.fsdd --speakers ...), 1 train, 2 synthesize + evaluate on the
#         speaker's test_conn strings (ASR WER with `digits`, MCD, RTF on one thread),
#         3 plots (attention alignments and mel spectrograms, PNG), 4 package, 5 RESULTS.md,
#         6 ship (with --ship true only: copy the package into asr/pretrained as `digits-tts`)
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=5
variant=jackson
corpus_dir=
train_args=
ship=false
force=false
. ../lib.sh

config=conf/$variant.yaml
exp=exp/$variant
case "$variant" in
  jackson) speakers=jackson; conn="--num-conn-train 2500 --num-conn-dev 100 --num-conn-test 200" ;;
  multi) speakers=george,jackson,nicolas,theo,yweweler; conn="--num-conn-train 4000 --num-conn-dev 100 --num-conn-test 200" ;;
  *) echo "$0: unknown --variant $variant (jackson | multi)" >&2; exit 2 ;;
esac
data=data/$variant
# One thread each: this recipe was sized for a shared 2-core machine (and RTF is reported per thread).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

if stage 0 prepare; then
  python -m data_prep.fsdd ${corpus_dir:+--corpus-dir "$corpus_dir"} --speakers "$speakers" $conn "$data"
  for s in train dev_conn test_conn train_conn; do asr datadir validate "$data/$s"; done
  done_stage 0 prepare
fi

if stage 1 train; then
  start=$SECONDS
  asr train --config "$config" --exp-dir "$exp" --resume --recipe recipes/tts_digits $train_args
  echo $((SECONDS - start)) > "$exp/train_seconds"
  done_stage 1 train
fi

if stage 2 evaluate; then
  # test_conn: 200 random 1-7 digit strings (seeded) with real recordings spliced from takes 0-4,
  # which the TTS model never heard.
  asr tts evaluate --model "$exp" --data "$data/test_conn" --asr-model digits \
    --out-dir "$exp/eval_test_conn" --seed 0 --plots 4 --threads 1
  done_stage 2 evaluate
fi

if stage 3 plots; then
  for t in 314 "9876543" "0 0 7"; do
    asr tts plot --model "$exp" --text "$t" -o "$exp/plots/$(echo "$t" | tr -d ' ').png"
  done
  mkdir -p "results/$variant"
  cp "$exp"/plots/*.png "$exp/train_curve.png" "results/$variant/"
  done_stage 3 plots
fi

result() { python -c "import json;r=json.load(open('$exp/eval_test_conn/results.json'));print(f\"ASR WER {r['wer_synth']:.2f} % on {r['utterances']} synthesized strings, MCD {r['mcd_db']:.2f} dB, RTF {r['rtf']:.3f}\")"; }

if stage 4 package; then
  asr package --model "$exp" -o "$exp/digits-tts.safetensors" \
    --info data="FSDD $speakers, takes 10-49, spliced strings" --info recipe=recipes/tts_digits \
    --info "result=$(result)"
  done_stage 4 package
fi

if stage 5 results; then
  python - "$exp" "$config" "$(machine)" "$(date +%F)" "$variant" <<'PY' > "results/$variant.md"
import csv, json, sys, yaml
from pathlib import Path
exp, config, machine, day, variant = sys.argv[1:]
r = json.load(open(f"{exp}/eval_test_conn/results.json"))
c = yaml.safe_load(open(f"{exp}/config.yaml"))
rows = list(csv.DictReader(open(f"{exp}/train_log.csv")))
dev = [x for x in rows if x["split"] == "dev"]
best = min(dev, key=lambda x: float(x["loss"]))
secs = Path(f"{exp}/train_seconds")
m, ex = c["model"], c["model"]["extra"]
print(f"## {variant} ({day}, {machine})\n")
print(f"Config `{config}`: r={ex.get('reduction')}, {m['cell'].upper()} decoder {m['hidden_size']}, encoder "
      f"{ex.get('encoder_dim')}, {c['features']['n_mels']} mels at {c['features']['sample_rate']} Hz, hop "
      f"{c['features']['hop_length']}. Trained {rows[-1]['step']} steps ({int(rows[-1]['epoch']) + 1} epochs"
      + (f", {int(secs.read_text()) / 60:.0f} min wall clock on one thread, sharing the 2 cores with other trainings" if secs.exists() else "") + f"); "
      f"best dev loss {float(best['loss']):.3f} at step {best['step']} (attention focus {float(best['focus']):.2f}).\n")
print("| metric | value |\n|---|---|")
print(f"| intelligibility: `digits` ASR on {r['utterances']} synthesized strings | {r['wer_synth_line']} |")
print(f"| same ASR on the real recordings of those strings | {r['wer_real_line']} |")
print(f"| same ASR on copy synthesis (real recordings' mels -> Griffin-Lim: the vocoder's ceiling) | {r['wer_copy_line']} |")
print(f"| mel cepstral distortion vs the real recordings | {r['mcd_db']:.2f} dB (std {r['mcd_db_std']:.2f}; copy synthesis {r['mcd_copy_db']:.2f} dB) |")
print(f"| synthesis real-time factor ({r['threads']} thread) | {r['rtf']:.3f} (model {r['rtf_model']:.3f} + Griffin-Lim {r['rtf_vocoder']:.3f}) |")
print(f"| strings whose stop token never fired | {len(r['not_stopped'])} |")
if len(r.get("wer_synth_per_speaker", {})) > 1:
    print("| ASR WER per speaker (synthesized) | " + ", ".join(f"{k} {v:.2f} %" for k, v in r["wer_synth_per_speaker"].items()) + " |")
if len(r.get("mcd_per_speaker", {})) > 1:
    print("| MCD per speaker | " + ", ".join(f"{k} {v:.2f} dB" for k, v in r["mcd_per_speaker"].items()) + " |")
print("\n" + (f"Voices: {r['voices']}. " if "voices" in r else "") + f"MCD: {r['mcd_desc']}. Plots: `results/{variant}/`.")
PY
  # RESULTS.md: every variant's measured section, then the notes written by hand (results/notes.md).
  { echo "# tts_digits results (FSDD, Zohar Jackson et al., CC BY-SA 4.0)"; echo
    for f in results/jackson.md results/multi.md results/notes.md; do [ -f "$f" ] && { cat "$f"; echo; }; done
  } > RESULTS.md
  cat "results/$variant.md"
  done_stage 5 results
fi

if [ "$ship" = true ] && [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  echo "== stage 6 (ship): $exp/digits-tts.safetensors -> asr/pretrained/digits-tts.safetensors"
  asr ship "$exp/digits-tts.safetensors" digits-tts \
    --data "FSDD speaker $speakers, takes 10-49 + spliced strings" --result "$(result)"
fi

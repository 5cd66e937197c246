"""`asr` command line: train | cmvn | decode | tune | score | package | ensemble | transcribe | models |
speaker | synthesize.

Every recipe stage is one of these commands, so a user can run any stage alone.
`python -m asr ...` is the same CLI, which is what lets `torchrun -m asr train ...` run DDP.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import threads

# Before anything imports torch: OpenMP reads its wait policy when it loads (asr/threads.py).
threads.set_wait_policy()


def _add_decode_args(p, decoder_help: str, lm_help: str):
    p.add_argument("--decoder", choices=["greedy", "beam"], default=None, help=decoder_help)
    p.add_argument("--lm", default=None, help=lm_help)
    p.add_argument("--beam-width", type=int, default=None)
    p.add_argument("--alpha", type=float, default=None, help="LM weight (natural log)")
    p.add_argument("--beta", type=float, default=None, help="word insertion bonus")


def _add_model_args(p):
    p.add_argument("--model", default=None, help="model name (see `asr models`), package file, exp dir or URL")
    _add_decode_args(p, "default: the package's own (decode.decoder: beam for a tuned package or ensemble)",
                     "KenLM ARPA/binary for --decoder beam")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--int8", action="store_true", help="int8 recurrent and linear layers (CPU; asr/quantize.py)")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="onnxruntime: run the model exported to ONNX (a .onnx file from `asr export`, "
                        "or a package exported on the fly)")
    _add_threads_arg(p)


def _add_threads_arg(p):
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (default: the usable cores the load average says are free, "
                        "or OMP_NUM_THREADS; see README 'Threads')")


def _inference_model(a):
    """The model behind transcribe/decode: torch (float or --int8) or ONNX Runtime."""
    n = threads.apply(a.threads)
    if a.backend == "onnxruntime":
        from .export import onnx_model

        if a.device != "cpu":
            raise ValueError("--backend onnxruntime runs on the CPU here; drop --device")
        return onnx_model(a.model or "digits", int8=a.int8, threads=n)
    from .pretrained import load_model

    model = load_model(a.model or "digits", a.device)
    if a.int8 and not getattr(model, "quantization", None):
        from .quantize import quantize_int8

        if a.device != "cpu":
            raise ValueError("--int8 runs on the CPU only; drop --device")
        model = quantize_int8(model)
    return model


def cmd_train(a) -> int:
    from .config import load_config
    from .train import train

    cfg = load_config(a.config, a.overrides)
    threads.apply(a.threads)
    best = train(cfg, a.exp_dir, resume=a.resume, max_steps=a.max_steps, device=a.device,
                 info={"recipe": a.recipe} if a.recipe else None)
    print(json.dumps(best))
    return 0


def cmd_cmvn(a) -> int:
    from tqdm import tqdm

    from .audio import AudioError, load_audio
    from .config import load_config
    from .datadir import read_data_dir
    from .features import LogMel, compute_cmvn

    cfg = load_config(a.config, a.overrides)
    utts = [u for d in a.data for u in read_data_dir(d)]
    if a.max_utts and len(utts) > a.max_utts:  # a random subset estimates mean/std as well, faster
        import random

        utts = random.Random(0).sample(utts, a.max_utts)

    def waves():
        for u in tqdm(utts, desc="cmvn", file=sys.stderr, leave=False, disable=None):
            try:
                yield load_audio(u.audio, cfg.features.sample_rate)[0]
            except AudioError as e:
                print(f"cmvn: skipped {u.utt_id}: {e}", file=sys.stderr)

    stats = compute_cmvn(LogMel(cfg.features), waves())
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(stats))
    print(f"cmvn: {stats['frames']} frames from {len(utts)} utterances -> {a.output}", file=sys.stderr)
    return 0


def cmd_decode(a) -> int:
    from .datadir import read_data_dir
    from .metrics import score
    from .transcribe import Transcriber

    model = _inference_model(a)
    tr = Transcriber(model, a.decoder, a.lm, a.beam_width, a.alpha, a.beta, a.batch_size)
    utts = read_data_dir(a.data)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    errors = []
    by_path = {}
    t0 = time.time()
    for t in tr.transcribe_files([u.audio for u in utts], on_error=lambda p, m: errors.append((p, m))):
        by_path[t.path] = t
    elapsed = time.time() - t0
    hyps = {u.utt_id: by_path[u.audio].text for u in utts if u.audio in by_path}
    with open(out / "hyp.txt", "w") as f:
        f.writelines(f"{k} {v}\n" for k, v in sorted(hyps.items()))
    with open(out / "hyp.jsonl", "w") as f:
        for u in utts:
            if u.audio in by_path:
                f.write(json.dumps({"utt_id": u.utt_id, **by_path[u.audio].to_dict()}, ensure_ascii=False) + "\n")
    for p, m in errors:
        print(f"decode: failed {p}: {m}", file=sys.stderr)
    refs = {u.utt_id: u.text or "" for u in utts}
    stats = score(refs, hyps, out)
    audio_s = sum(t.duration for t in by_path.values())
    (out / "rtf").write_text(f"{elapsed / max(audio_s, 1e-9):.4f}\n")
    print(f"{stats.kaldi_line()}  {a.data} -> {out}/wer  (RTF {elapsed / max(audio_s, 1e-9):.3f})")
    return 1 if errors else 0


def cmd_tune(a) -> int:
    from .tune import run

    return run(a)


def cmd_score(a) -> int:
    from .datadir import read_text_file
    from .metrics import score

    stats = score(read_text_file(a.ref), read_text_file(a.hyp), a.out_dir)
    print(stats.kaldi_line())
    return 0


def cmd_package(a) -> int:
    from .pretrained import load_model, package_lm, package_relative_lm, save_package

    model = load_model(a.model, quantized=False)
    d = model.cfg.decode
    if d.lm and not os.path.isabs(d.lm):  # it names its LM relative to itself: keep it found
        d.lm = package_relative_lm(package_lm(d.lm, model.package_path), a.output)
    info = dict(getattr(model, "info", {}) or {})
    for item in a.info:
        k, _, v = item.partition("=")
        try:
            info[k] = json.loads(v)
        except json.JSONDecodeError:
            info[k] = v
    quantization = "int8-dynamic" if a.int8 else model.package_quantization
    save_package(model, a.output, info, half=a.half, quantization=quantization)
    print(f"package: {a.output}" + (f" ({quantization}: loading builds the int8 model)" if quantization else ""))
    return 0


def cmd_ensemble(a) -> int:
    import copy

    from .models.ensemble import CTCEnsemble
    from .pretrained import load_model, package_lm, package_relative_lm, save_package

    members = [load_model(m) for m in a.models]
    ensemble = CTCEnsemble(members, copy.deepcopy(members[0].cfg), names=a.models)
    d = ensemble.cfg.decode
    if a.lm is None and d.lm:  # the first member's (tuned) LM, wherever the ensemble is written
        a.lm = package_lm(d.lm, members[0].package_path)
    d.lm = package_relative_lm(a.lm, a.output)
    d.decoder = a.decoder or ("beam" if a.lm else d.decoder)
    d.beam_width = a.beam_width or d.beam_width
    d.alpha = d.alpha if a.alpha is None else a.alpha
    d.beta = d.beta if a.beta is None else a.beta
    info = {"members": [{"model": m, **{k: v for k, v in (getattr(x, "info", {}) or {}).items()
                                        if k in ("date", "recipe", "result", "best")}}
                        for m, x in zip(a.models, members)]}
    save_package(ensemble, a.output, info, half=a.half)
    print(f"ensemble: {len(members)} members, decoder {d.decoder}"
          + (f" (beam {d.beam_width}, LM {d.lm}, alpha {d.alpha}, beta {d.beta})" if d.decoder == "beam" else "")
          + f" -> {a.output}")
    return 0


def cmd_export(a) -> int:
    from .export import export_onnx
    from .pretrained import load_model

    model = load_model(a.model, quantized=False)
    export_onnx(model, a.output, int8=a.int8)
    members = f", {len(model.members)} members in one graph" if model.arch == "ctc-ensemble" else ""
    print(f"export: {a.model} ({model.arch}{members}{', int8' if a.int8 else ''}) -> {a.output}")
    return 0


def cmd_models(a) -> int:
    from .pretrained import read_header, registry, resolve

    reg = registry()
    print(f"{'name':<16} {'size':>8}  {'arch':<12} {'trained on':<32} result")
    for name, entry in sorted(reg.items()):
        try:
            path = resolve(name) if "file" in entry else None
            size = f"{path.stat().st_size / 2**20:.1f}MB" if path else "remote"
            meta = read_header(path) if path else {}
            info = json.loads(meta.get("info", "{}"))
        except Exception as e:  # a broken entry must not hide the others
            size, info = "?", {"error": str(e)}
        arch = entry.get("arch", "")
        print(f"{name:<16} {size:>8}  {arch:<12} {entry.get('data') or info.get('data', ''):<32} "
              f"{entry.get('result') or info.get('result', info.get('error', ''))}")
    return 0


def cmd_transcribe(a) -> int:
    from tqdm import tqdm

    from .transcribe import Transcriber, expand_inputs, format_transcript

    paths, errors = expand_inputs(a.inputs)
    for item, msg in errors:
        print(f"asr transcribe: {item}: {msg}", file=sys.stderr)
    model = _inference_model(a)
    tr = Transcriber(model, a.decoder, a.lm, a.beam_width, a.alpha, a.beta, a.batch_size, nbest=a.nbest)
    out = open(a.output, "w", encoding="utf-8") if a.output else sys.stdout
    failed = list(errors)

    def on_error(path, msg):
        failed.append((path, msg))
        print(f"asr transcribe: {msg}", file=sys.stderr)

    with tqdm(total=len(paths), desc="transcribe", unit="file", file=sys.stderr, disable=True if a.quiet or len(paths) < 2 else None) as bar:
        for t in tr.transcribe_files(paths, on_error=on_error, progress=bar):
            out.write(format_transcript(t, a.format))
            out.flush()
    if a.output:
        out.close()
    if failed:
        print(f"asr transcribe: {len(failed)} of {len(paths) + len(errors)} input(s) failed", file=sys.stderr)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    from .transcribe import FORMATS

    ap = argparse.ArgumentParser(prog="asr", description="Speech recognition toolkit: stacked BiLSTM-CTC.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("--config", required=True)
    p.add_argument("--exp-dir", required=True)
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--recipe", default=None, help="recorded in the model package")
    _add_threads_arg(p)
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. train.lr=3e-4")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("cmvn", help="global CMVN statistics of data dirs")
    p.add_argument("--config", required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("data", nargs="+")
    p.add_argument("--max-utts", type=int, default=1000, help="estimate from a random subset of this size (0 = all)")
    p.add_argument("--override", dest="overrides", action="append", default=[])
    p.set_defaults(func=cmd_cmvn)

    p = sub.add_parser("decode", help="decode a data dir and score it (Kaldi-style wer file)")
    _add_model_args(p)
    p.add_argument("--data", required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_decode)

    from .tune import add_arguments as add_tune_arguments

    p = sub.add_parser("tune", help="grid-search LM weight, word bonus and beam width on a dev set")
    add_tune_arguments(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("score", help="WER of a hypothesis text file against a reference text file")
    p.add_argument("ref")
    p.add_argument("hyp")
    p.add_argument("out_dir")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("package", help="write a model package with metadata (measured WER, recipe)")
    p.add_argument("--model", required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--info", action="append", default=[], help="key=value (value may be JSON)")
    p.add_argument("--half", action="store_true", help="store the weights in float16 (half the size)")
    p.add_argument("--int8", action="store_true", help="record int8 dynamic quantization: loading builds the "
                   "int8 model (CPU) from the stored float weights")
    p.set_defaults(func=cmd_package)

    p = sub.add_parser("ensemble", help="combine CTC models with one vocabulary into one package "
                       "(transcripts chosen by the members' mean CTC likelihood)")
    p.add_argument("models", nargs="+", help="member models: names, package files or exp dirs")
    p.add_argument("-o", "--output", required=True)
    _add_decode_args(p, "default: beam when there is an LM, else the first member's",
                     "KenLM ARPA/binary (default: the first member's tuned LM)")
    p.add_argument("--half", action="store_true", help="store the weights in float16 (half the size)")
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("export", help="export a CTC model or ensemble to ONNX (frontend included)")
    p.add_argument("--model", required=True, help="model name, package file, exp dir or URL")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--int8", action="store_true", help="quantize with ONNX Runtime's dynamic quantizer")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", help="list known pretrained models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("transcribe", help="transcribe audio files")
    _add_model_args(p)
    p.add_argument("--format", choices=FORMATS, default="text")
    p.add_argument("--nbest", type=int, default=1, help="n-best list size in json output (beam decoder)")
    p.add_argument("-o", "--output", default=None)
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("inputs", nargs="+", help="files, folders, globs, a manifest (.jsonl) or - (paths on stdin)")
    p.set_defaults(func=cmd_transcribe)

    from .speaker import add_speaker_commands

    add_speaker_commands(sub)

    from .synthesize import add_synthesize_command

    add_synthesize_command(sub)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        if "--debug" in sys.argv:
            raise
        print(f"asr {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

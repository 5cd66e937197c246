"""`asr` command line: train | cmvn | decode | tune | score | package | ensemble | export | models |
transcribe | speaker | synthesize | tts | serve | datadir | lm | shards | ship.

The one front door: every recipe stage is one of these commands, so a user can run any stage
alone, and no library module has a command line of its own.
`python -m asr ...` is the same CLI, which is what lets `torchrun -m asr train ...` run DDP.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from . import threads

# Before anything imports torch: OpenMP reads its wait policy when it loads (asr/threads.py).
threads.set_wait_policy()


def finite_float(text: str) -> float:
    """argparse type: a number, not nan or inf (an LM weight of nan silently empties transcripts)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a batch size or beam width of 0 or -1 means nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_decode_args(p, decoder_help: str, lm_help: str):
    p.add_argument("--decoder", choices=["greedy", "beam"], default=None, help=decoder_help)
    p.add_argument("--lm", default=None, help=lm_help)
    p.add_argument("--beam-width", type=positive_int, default=None)
    p.add_argument("--alpha", type=finite_float, default=None, help="LM weight (natural log)")
    p.add_argument("--beta", type=finite_float, default=None, help="word insertion bonus")


def _add_model_args(p):
    p.add_argument("--model", default=None, help="model name (see `asr models`), package file, exp dir or URL")
    _add_decode_args(p, "default: the package's own (decode.decoder: beam for a tuned package or ensemble)",
                     "KenLM ARPA/binary for --decoder beam")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--int8", action="store_true", help="int8 recurrent and linear layers (CPU; asr/quantize.py)")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="onnxruntime: run the model exported to ONNX (a .onnx file from `asr export`, "
                        "or a package exported on the fly)")
    _add_threads_arg(p)


def _add_threads_arg(p):
    p.add_argument("--threads", type=positive_int, default=None,
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
    from .models import RECOGNIZERS
    from .registry import load_model

    model = load_model(a.model or "digits", a.device, arch=RECOGNIZERS)
    if a.int8 and not getattr(model, "quantization", None):
        from .quantize import quantize_int8

        if a.device != "cpu":
            raise ValueError("--int8 runs on the CPU only; drop --device")
        model = quantize_int8(model)
    return model


def cmd_train(a) -> int:
    from .config import load_config
    from .train import train

    if os.path.exists(a.exp_dir) and not os.path.isdir(a.exp_dir):
        raise ValueError(f"--exp-dir {a.exp_dir}: is a file, not a folder")
    cfg = load_config(a.config, a.overrides)
    threads.apply(a.threads)
    best = train(cfg, a.exp_dir, resume=a.resume, max_steps=a.max_steps, device=a.device,
                 info={"recipe": a.recipe} if a.recipe else None)
    print(json.dumps(best))
    return 0


def cmd_cmvn(a) -> int:
    from tqdm import tqdm

    from .config import load_config
    from .datadir import read_data_dir
    from .features import utterance_cmvn

    cfg = load_config(a.config, a.overrides)
    utts = [u for d in a.data for u in read_data_dir(d)]
    if a.max_utts and len(utts) > a.max_utts:  # a random subset estimates mean/std as well, faster
        import random

        utts = random.Random(0).sample(utts, a.max_utts)

    stats = utterance_cmvn(cfg.features, tqdm(utts, desc="cmvn", file=sys.stderr, leave=False, disable=None),
                           lambda u, e: print(f"cmvn: skipped {u.utt_id}: {e}", file=sys.stderr))
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(stats))
    print(f"cmvn: {stats['frames']} frames from {len(utts)} utterances -> {a.output}", file=sys.stderr)
    return 0


def cmd_decode(a) -> int:
    from .transcribe import Transcriber, decode_and_score

    tr = Transcriber(_inference_model(a), a.decoder, a.lm, a.beam_width, a.alpha, a.beta, a.batch_size)
    res = decode_and_score(tr, a.data, a.out_dir,
                           on_error=lambda p, m: print(f"decode: failed {p}: {m}", file=sys.stderr))
    print(f"{res.stats.kaldi_line()}  {a.data} -> {a.out_dir}/wer  (RTF {res.rtf:.3f})")
    return 1 if res.failed else 0


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _beam_widths(text: str) -> list[int]:
    values = _float_list(text)
    if not values or any(v != int(v) or v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated beam widths >= 1, got {text!r}")
    return [int(v) for v in values]


def cmd_tune(a) -> int:
    from .tune import tune

    best = tune(a.model, a.data, a.lm, a.out_dir, a.alphas, a.betas, a.beams, lexicon=a.lexicon,
                batch_size=a.batch_size, device=a.device)
    print(Path(a.out_dir, "results.md").read_text(encoding="utf-8"), end="")
    print(f"best: alpha={best['alpha']} beta={best['beta']} beam_width={best['beam_width']} "
          f"WER {best['wer']:.2f} (greedy {best['greedy_wer']:.2f}) -> {Path(a.out_dir, 'model.safetensors')}")
    return 0


def cmd_score(a) -> int:
    import tempfile

    from .datadir import read_text_file
    from .metrics import score

    with tempfile.TemporaryDirectory() as tmp:
        stats = score(read_text_file(a.ref), read_text_file(a.hyp), a.out_dir or tmp)
    print(stats.kaldi_line())
    return 0


def cmd_package(a) -> int:
    from .package import package_relative_lm, save_package
    from .registry import load_model

    model = load_model(a.model, quantized=False)
    d = model.cfg.decode
    if model.package_lm:  # keep its LM found from where the new package is (a refused one stays refused)
        d.lm = package_relative_lm(model.package_lm.file(), a.output)
    info = dict(model.info)
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
    from .package import package_relative_lm, save_package
    from .registry import load_model

    members = [load_model(m, arch="ctc") for m in a.models]
    ensemble = CTCEnsemble(members, copy.deepcopy(members[0].cfg), names=a.models)
    d = ensemble.cfg.decode
    if a.lm is None and members[0].package_lm:  # the first member's (tuned) LM, wherever the ensemble is written
        a.lm = members[0].package_lm.file()
    d.lm = package_relative_lm(a.lm, a.output)
    d.decoder = a.decoder or ("beam" if a.lm else d.decoder)
    d.beam_width = a.beam_width or d.beam_width
    d.alpha = d.alpha if a.alpha is None else a.alpha
    d.beta = d.beta if a.beta is None else a.beta
    info = {"members": [{"model": m, **{k: v for k, v in x.info.items()
                                        if k in ("date", "recipe", "result", "best")}}
                        for m, x in zip(a.models, members)]}
    save_package(ensemble, a.output, info, half=a.half)
    print(f"ensemble: {len(members)} members, decoder {d.decoder}"
          + (f" (beam {d.beam_width}, LM {d.lm}, alpha {d.alpha}, beta {d.beta})" if d.decoder == "beam" else "")
          + f" -> {a.output}")
    return 0


def cmd_export(a) -> int:
    from .export import EXPORTABLE_ARCHS, export_onnx
    from .registry import load_model

    model = load_model(a.model, quantized=False, arch=EXPORTABLE_ARCHS)
    export_onnx(model, a.output, int8=a.int8)
    members = f", {len(model.members)} members in one graph" if model.arch == "ctc-ensemble" else ""
    print(f"export: {a.model} ({model.arch}{members}{', int8' if a.int8 else ''}) -> {a.output}")
    return 0


def cmd_datadir(a) -> int:
    import logging

    from .datadir import read_data_dir, validate_data_dir

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    problems = validate_data_dir(a.dir, check_audio=not a.no_audio, allow_pipes=a.allow_pipes)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{a.dir}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{a.dir}: valid ({len(read_data_dir(a.dir, a.allow_pipes))} utterances)")
    return 0


def cmd_lm(a) -> int:
    from .lm import build_binary, train_ngram

    if a.lm_command == "train":
        with open(a.text, encoding="utf-8") as f:
            train_ngram(f, a.order, a.out_arpa, memory=a.memory, discount_fallback=not a.no_discount_fallback)
        print(f"wrote {a.out_arpa}")
    else:
        build_binary(a.arpa, a.out_bin)
        print(f"wrote {a.out_bin}")
    return 0


def cmd_shards(a) -> int:
    import logging

    from .datadir import DataDirError, read_data_dir
    from .shards import ShardError, verify_shards, write_shards

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if a.shards_command == "verify":
        try:
            problems = verify_shards(a.index)
        except ShardError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        for problem in problems:
            print(problem)
        print(f"{a.index}: {'%d problem(s)' % len(problems) if problems else 'all shards match the index'}")
        return 1 if problems else 0
    try:
        utts = [u for d in a.data_dirs for u in read_data_dir(d)]
        index = write_shards(utts, a.out_dir, int(a.max_shard_mb * 1e6), a.store, a.seed)
    except (DataDirError, ShardError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{a.out_dir}: {len(index['shards'])} shard(s), {index['utterances']} utterances, "
          f"{index['duration'] / 3600:.2f} h, {sum(s['bytes'] for s in index['shards']) / 1e6:.1f} MB; "
          f"skipped {len(index['skipped'])}" + "".join(f"\n  {u}: {why}" for u, why in index["skipped"]))
    return 0


def cmd_ship(a) -> int:
    from .ship import ship

    print(ship(a.package, a.name, a.data, a.result))
    return 0


def cmd_tts(a) -> int:
    from .synthesize import evaluate, load_tts, plot_synthesis, synthesize

    if a.tts_command == "plot":
        s = synthesize(load_tts(a.model, a.device), a.text, a.speaker, seed=a.seed)
        plot_synthesis(s, a.output)
        print(a.output)
        return 0
    from .datadir import read_data_dir

    utts = read_data_dir(a.data)
    if a.max_utts:
        utts = utts[: a.max_utts]
    import torch

    torch.set_num_threads(a.threads)
    res = evaluate(a.model, utts, a.asr_model, a.out_dir, a.seed, a.max_steps, a.plots)
    asr = f"ASR {res['wer_synth_line']} (real recordings: {res['wer_real_line']}), " if "wer_synth" in res else ""
    print(f"synthesized {res['utterances']}: {asr}"
          f"MCD {res['mcd_db']:.2f} dB (copy synthesis {res['mcd_copy_db']:.2f}), RTF {res['rtf']:.3f} (model "
          f"{res['rtf_model']:.3f}, vocoder {res['rtf_vocoder']:.3f}) -> {a.out_dir}/results.json")
    return 0


def cmd_models(a) -> int:
    from .package import read_header
    from .registry import registry, resolve

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


def _output_file(option: str, path: str, inputs: list[str] = ()) -> None:
    """Refuse, before any work, an output that cannot be written or that is one of the inputs
    (opening it for writing would wipe an input before it is read)."""
    if os.path.isdir(path):
        raise ValueError(f"{option} {path}: is a folder, not a file")
    parent = os.path.dirname(path) or "."
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise ValueError(f"{option} {path}: {parent} is a file, not a folder")
    if os.path.isdir(parent) and not os.access(parent, os.W_OK):
        raise ValueError(f"{option} {path}: folder {parent} is not writable")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise ValueError(f"{option} {path}: not writable")
        out = os.stat(path)
        for p in inputs:
            try:
                same = os.path.samefile(p, path) or (os.stat(p).st_dev, os.stat(p).st_ino) == (out.st_dev, out.st_ino)
            except OSError:
                continue
            if same:
                raise ValueError(f"{option} {path}: is the input {p}; writing it would destroy it")


def cmd_transcribe(a) -> int:
    from tqdm import tqdm

    from .checkpoint import atomic_write_bytes
    from .transcribe import Transcriber, expand_inputs, format_transcript, relative_names

    if a.stream:
        from .streaming import run_transcribe_stream

        out = open(a.output, "w", encoding="utf-8") if a.output else sys.stdout
        return run_transcribe_stream(a, _inference_model(a), out)
    paths, errors = expand_inputs(a.inputs)
    for item, msg in errors:
        print(f"asr transcribe: {item}: {msg}", file=sys.stderr)
    # Subtitles are one file per recording (their cue numbers and times start at each file's
    # start): several inputs go into an output folder, DIR/<name>.srt, never into one stream.
    to_folder = a.output is not None and (a.output.endswith(("/", os.sep)) or os.path.isdir(a.output))
    subtitles = a.format in ("srt", "vtt")
    if to_folder and not subtitles:
        raise ValueError(f"-o {a.output}: is a folder; --format {a.format} writes one file, give its name")
    if subtitles and len(set(paths)) > 1 and not to_folder:
        raise ValueError(f"--format {a.format}: {len(set(paths))} inputs make one subtitle file each; "
                         f"give an output folder, -o DIR/")
    names = relative_names(paths)
    targets = {p: os.path.join(a.output, f"{names[p]}.{a.format}") for p in paths} if to_folder else {}
    for target in targets.values():
        _output_file("-o", target, paths)
    if a.output and not to_folder:
        _output_file("-o", a.output, paths)
    model = _inference_model(a)
    tr = Transcriber(model, a.decoder, a.lm, a.beam_width, a.alpha, a.beta, a.batch_size, nbest=a.nbest)
    failed = list(errors)

    def on_error(path, msg):
        failed.append((path, msg))
        print(f"asr transcribe: {msg}", file=sys.stderr)

    written = []  # a single output file is written once, at the end: no half file, no input wiped
    with tqdm(total=len(paths), desc="transcribe", unit="file", file=sys.stderr, disable=True if a.quiet or len(paths) < 2 else None) as bar:
        for t in tr.transcribe_files(paths, on_error=on_error, progress=bar):
            text = format_transcript(t, a.format, names.get(t.path))
            if to_folder:
                os.makedirs(os.path.dirname(targets[t.path]), exist_ok=True)
                atomic_write_bytes(targets[t.path], text.encode("utf-8"))
            elif a.output:
                written.append(text)
            else:
                sys.stdout.write(text)
                sys.stdout.flush()
    if a.output and not to_folder:
        try:
            atomic_write_bytes(a.output, "".join(written).encode("utf-8"))
        except OSError as e:
            raise ValueError(f"-o {a.output}: {e.strerror}") from None
    if failed:
        print(f"asr transcribe: {len(failed)} of {len(paths) + len(errors)} input(s) failed", file=sys.stderr)
    return 1 if failed else 0


def _text_file_lines(path: str) -> list[tuple[int, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"--text-file {path}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise ValueError(f"--text-file {path}: not a UTF-8 text file ({e})") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise ValueError(f"--text-file {path}: no text in it (blank lines are skipped)")
    return lines


def cmd_synthesize(a) -> int:
    from .audio import save_audio
    from .synthesize import load_tts, steps_per_symbol, synthesize, text_pieces

    if (a.text is None) == (a.text_file is None):
        raise ValueError("give exactly one of --text or --text-file")
    if a.text is not None:
        if not a.text.strip():
            raise ValueError("--text is empty: nothing to say")
        jobs = [(None, a.text)]
    else:
        jobs = _text_file_lines(a.text_file)
    model = load_tts(a.model, a.device)
    model.speaker_id(a.speaker)  # an unknown speaker fails before any work, listing the known ones
    max_steps = int(model.extra["max_decoder_steps"] if a.max_steps is None else a.max_steps)
    rate = steps_per_symbol(model)
    for n, line in jobs:  # so does any unsayable or too long line: no half-written output directory
        where = f"{a.text_file} line {n}" if n else "--text"
        try:
            pieces = text_pieces(model, line, max_steps)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        # the model's own limit (an explicit --max-steps is a cap the user chose: cut, reported after)
        long = [p for p in pieces if len(p) * rate > max_steps]
        if a.max_steps is None and not a.allow_cut and long:
            raise ValueError(f"{where}: {len(long[0])} characters without a sentence or clause break need about "
                             f"{int(len(long[0]) * rate)} decoder steps, more than the model's {max_steps} "
                             f"(--max-steps): it would be cut off. Say it in pieces of at most {int(max_steps / rate)} "
                             "characters (sentences are said one by one), or raise --max-steps (--allow-cut: cut it)")
    out = Path(a.output)
    if a.text_file is not None:
        if out.exists() and not out.is_dir():
            raise ValueError(f"-o {a.output}: is a file; with --text-file -o is the folder for NNNN.wav")
        out.mkdir(parents=True, exist_ok=True)
    elif out.is_dir():
        raise ValueError(f"-o {a.output}: is a folder; with --text give a .wav or .flac file name")
    elif out.suffix.lower() not in (".wav", ".flac"):
        raise ValueError(f"-o {a.output}: give a .wav or .flac file name for --text")
    failed = 0
    for n, line in jobs:
        s = synthesize(model, line, a.speaker, seed=a.seed, max_steps=a.max_steps)
        path = out / f"{n:04d}.wav" if n else out
        path.parent.mkdir(parents=True, exist_ok=True)
        save_audio(path, s.wav, s.sample_rate)
        note = "" if s.stopped else "  (no stop token: cut at --max-steps)"
        failed += 0 if s.stopped else 1
        print(f"{path}\t{s.duration:.2f} s\t{s.text}{note}")
    return 0 if not failed or a.allow_cut else 1


def _speaker_model(a):
    from .registry import load_model

    return load_model(a.model, a.device, arch="speaker")


def _speaker_inputs(files: list[str], failed: list, cmd: str) -> list[str]:
    from .transcribe import expand_inputs

    paths, errors = expand_inputs(files)
    for item, msg in errors:
        failed.append(item)
        print(f"asr speaker {cmd}: {item}: {msg}", file=sys.stderr)
    return paths


def _speaker_errors(failed: list, cmd: str):
    def report(path: str, msg: str) -> None:
        failed.append(path)
        print(f"asr speaker {cmd}: {msg}", file=sys.stderr)
    return report


def cmd_speaker_enroll(a) -> int:
    from .speaker_db import enroll_and_count

    failed: list[str] = []
    paths = _speaker_inputs(a.files, failed, "enroll")
    model = _speaker_model(a)
    db, added = enroll_and_count(model, a.name, paths, a.db, a.replace, _speaker_errors(failed, "enroll"), save=True)
    print(f"enrolled {a.name!r} from {added} file(s) ({db.speakers[a.name].count} in all) into {db.path}")
    return 1 if failed else 0


def cmd_speaker_identify(a) -> int:
    from .speaker_db import Identifier, SpeakerDB

    failed: list[str] = []
    paths = _speaker_inputs(a.files, failed, "identify")
    model = _speaker_model(a)
    db = SpeakerDB.load(a.db)
    for r in Identifier(model, db, a.threshold).files(paths, _speaker_errors(failed, "identify")) if paths else []:
        print(json.dumps(r, ensure_ascii=False), flush=True)  # streamed: a chunk at a time
    if failed:
        print(f"asr speaker identify: {len(failed)} input(s) failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_speaker_verify(a) -> int:
    from .speaker_db import verify

    model = _speaker_model(a)
    r = verify(model, a.file1, a.file2, a.threshold)
    print(f"{r['score']:.4f} {'same' if r['same'] else 'different'} (threshold {r['threshold']:.4f})")
    return 0


def cmd_speaker_list(a) -> int:
    from .speaker_db import SpeakerDB

    db = SpeakerDB.load(a.db)
    print(f"{db.path}: {len(db.speakers)} speaker(s)" + (f", model {db.model.get('name')}" if db.model else ""))
    for name, e in sorted(db.speakers.items()):
        print(f"  {name}\t{e.count} file(s)")
    return 0


def cmd_speaker_evaluate(a) -> int:
    from .speaker_eval import evaluate

    model = _speaker_model(a)
    if a.backend:
        model.use_backend(a.backend)
    res = evaluate(model, a.enroll, a.test, a.out_dir, a.trials, a.new_speaker_utts, a.seed, a.threshold)
    eer_s = "n/a" if res["eer"] is None else f"{res['eer']:.2f}%"
    print(f"identification acc {res['acc']:.2f}% ({res['identified']} utts, {len(res['speakers'])} speakers"
          + (f"; new speakers {res['acc_new_speakers']:.2f}%" if "acc_new_speakers" in res else "")
          + f")  EER {eer_s}  minDCF {res['min_dcf']}  -> {a.out_dir}/results.json")
    return 0


def add_speaker_commands(subparsers) -> None:
    """`asr speaker enroll|identify|verify|list|evaluate` (a function of its own: tests build it alone)."""
    from .speaker_db import DEFAULT_MODEL, DEFAULT_THRESHOLD

    p = subparsers.add_parser("speaker", help="speaker enrollment, identification and verification")
    sub = p.add_subparsers(dest="speaker_command", required=True)

    def common(p, threshold=True, db=True):
        p.add_argument("--model", default=DEFAULT_MODEL, help="speaker model name, package file or exp dir "
                       f"(default {DEFAULT_MODEL})")
        p.add_argument("--device", default="cpu")
        if db:
            p.add_argument("--db", default=None, help="enrollment database (default $ASR_HOME/speakers.json)")
        if threshold:
            p.add_argument("--threshold", type=float, default=None,
                           help="cosine score below which a speaker is not accepted "
                                f"(default: the model's, else {DEFAULT_THRESHOLD})")

    p = sub.add_parser("enroll", help="add a speaker to the enrollment database")
    common(p, threshold=False)
    p.add_argument("--name", required=True)
    p.add_argument("--replace", action="store_true", help="forget earlier enrollment files of this name")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files, folders or globs")
    p.set_defaults(func=cmd_speaker_enroll)

    p = sub.add_parser("identify", help="who speaks in each file (one JSON line per file)")
    common(p)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_speaker_identify)

    p = sub.add_parser("verify", help="do two files have the same speaker")
    common(p, db=False)
    p.add_argument("file1", metavar="FILE1")
    p.add_argument("file2", metavar="FILE2")
    p.set_defaults(func=cmd_speaker_verify)

    p = sub.add_parser("list", help="speakers in the enrollment database")
    p.add_argument("--db", default=None)
    p.set_defaults(func=cmd_speaker_list)

    p = sub.add_parser("evaluate", help="identification accuracy, EER and minDCF on data dirs")
    common(p, db=False)
    p.add_argument("--enroll", nargs="*", default=[], metavar="DIR",
                   help="data dirs to enroll speakers from (none: every test speaker is enrolled from "
                        "--new-speaker-utts of its own utterances)")
    p.add_argument("--test", nargs="+", required=True, metavar="DIR",
                   help="data dirs to identify and to pair into trials")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--trials", default=None, help="trial list (utt1 utt2 target|nontarget); written when missing")
    p.add_argument("--new-speaker-utts", type=int, default=10,
                   help="test utterances to enroll a speaker absent from --enroll")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["none", "znorm", "fused", "stats"], default=None,
                   help="score with this back-end instead of the model's fitted one (none: the network's "
                        "embedding alone)")
    p.set_defaults(func=cmd_speaker_evaluate)


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

    p = sub.add_parser("tune", help="grid-search LM weight, word bonus and beam width on a dev set")
    p.add_argument("--model", required=True, help="model name, package file, exp dir or URL")
    p.add_argument("--data", required=True, help="dev data dir (with references)")
    p.add_argument("--lm", default=None, help="KenLM ARPA file (or binary with --lexicon); none: tune the beam alone")
    p.add_argument("--lexicon", default=None, help="lexicon file (see asr.lm), needed for a binary word LM")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--alphas", type=_float_list, default=[0.0, 0.5, 1.0, 1.5], help="LM weights (default 0,0.5,1,1.5)")
    p.add_argument("--betas", type=_float_list, default=[0.0, 1.0, 2.0], help="word bonuses (default 0,1,2)")
    p.add_argument("--beams", type=_beam_widths, default=[8, 32], help="beam widths (default 8,32)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("score", help="WER of a hypothesis text file against a reference text file")
    p.add_argument("ref", help="reference `text` file (utt-id word word ...) or data dir")
    p.add_argument("hyp", help="hypothesis `text` file in the same format")
    p.add_argument("out_dir", nargs="?", default=None, help="where to write `wer` and `per_utt` (default: nowhere)")
    p.set_defaults(func=cmd_score)

    from .datadir import ALLOW_PIPES_ENV

    p = sub.add_parser("datadir", help="data dir tools: validate")
    dsub = p.add_subparsers(dest="datadir_command", required=True)
    p = dsub.add_parser("validate", help="check a data dir like Kaldi's validate_data_dir.sh")
    p.add_argument("dir")
    p.add_argument("--no-audio", action="store_true", help="skip reading every audio file")
    p.add_argument("--allow-pipes", action="store_true", default=None,
                   help=f"accept (and, with audio, run) wav.scp `cmd |` entries; same as {ALLOW_PIPES_ENV}=1")
    p.set_defaults(func=cmd_datadir)

    p = sub.add_parser("lm", help="n-gram LM tools (KenLM): train | binary")
    lsub = p.add_subparsers(dest="lm_command", required=True)
    p = lsub.add_parser("train", help="estimate an ARPA n-gram model from a text file")
    p.add_argument("--order", type=positive_int, default=3)
    p.add_argument("--no-discount-fallback", action="store_true",
                   help="let lmplz abort on corpora too small for Kneser-Ney statistics")
    p.add_argument("--memory", default="1G", help="lmplz sort memory (-S), e.g. 1G or 20%%")
    p.add_argument("text", help="training text, one sentence per line")
    p.add_argument("out_arpa")
    p.set_defaults(func=cmd_lm)
    p = lsub.add_parser("binary", help="convert an ARPA model to KenLM binary")
    p.add_argument("arpa")
    p.add_argument("out_bin")
    p.set_defaults(func=cmd_lm)

    p = sub.add_parser("shards", help="tar shards for streamed training: write | verify")
    ssub = p.add_subparsers(dest="shards_command", required=True)
    p = ssub.add_parser("write", help="data dir(s) -> tar shards + shards.json")
    p.add_argument("data_dirs", nargs="+", metavar="DATA_DIR", help="Kaldi data dir(s) or manifest dir(s)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="shards and shards.json go here")
    p.add_argument("--max-shard-mb", type=float, default=300.0, help="shard size (default 300)")
    p.add_argument("--store", choices=["audio", "flac"], default="audio",
                   help="audio: wav/flac bytes as they are; flac: re-encode wavs too (about half the size)")
    p.add_argument("--seed", type=int, default=0, help="utterance order shuffle before writing")
    p.set_defaults(func=cmd_shards)
    p = ssub.add_parser("verify", help="check local shards against the sha256 and sizes in their index")
    p.add_argument("index", metavar="OUT_DIR|shards.json")
    p.set_defaults(func=cmd_shards)

    p = sub.add_parser("ship", help="(maintainers) embed a package in asr/pretrained/ and list it in the registry")
    p.add_argument("package")
    p.add_argument("name")
    p.add_argument("--data", default="", help="what it was trained on, for `asr models`")
    p.add_argument("--result", default="", help="its measured result, for `asr models`")
    p.set_defaults(func=cmd_ship)

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
    p.add_argument("--nbest", type=positive_int, default=1,
                   help="n-best list size in json output: whole-file alternatives, best first (beam decoder)")
    p.add_argument("-o", "--output", default=None,
                   help="output file (default stdout); for srt/vtt of several inputs a folder, DIR/, one file each")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--stream", action="store_true", help="transcribe one input as it arrives (a unidirectional "
                   "model): partial and final lines; - reads raw PCM from stdin (with --raw-rate)")
    p.add_argument("--raw-rate", type=int, default=None, help="with --stream -: stdin is raw 16-bit little-endian "
                   "mono PCM at this rate (arecord -f S16_LE -r 16000 -c 1)")
    p.add_argument("--realtime", action="store_true", help="with --stream FILE: feed it at the speed it plays")
    p.add_argument("--chunk", type=float, default=0.1, help="with --stream: seconds of audio per step")
    p.add_argument("inputs", nargs="+", help="files, folders, globs, a manifest (.jsonl) or - (paths on stdin)")
    p.set_defaults(func=cmd_transcribe)

    add_speaker_commands(sub)

    from .synthesize import DEFAULT_TTS_MODEL

    p = sub.add_parser("synthesize", help="text to speech with a tts model")
    p.add_argument("--model", default=DEFAULT_TTS_MODEL, help=f"tts model name, package or exp dir (default {DEFAULT_TTS_MODEL})")
    p.add_argument("--speaker", default=None, help="voice of a multi-speaker model (default: its first)")
    p.add_argument("--text", default=None, help='what to say, e.g. "three one four" or "314"')
    p.add_argument("--text-file", default=None, help="one text per line; -o is then a directory of NNNN.wav "
                   "(NNNN = line number)")
    p.add_argument("-o", "--output", required=True, help="output .wav (with --text) or directory (--text-file)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same audio")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-steps", type=int, default=None, help="decoder steps before giving up on the stop token")
    p.add_argument("--allow-cut", action="store_true", help="exit 0 even if an output hit --max-steps")
    p.set_defaults(func=cmd_synthesize)

    p = sub.add_parser("tts", help="tts model tools: evaluate (ASR WER, MCD, RTF) | plot")
    tsub = p.add_subparsers(dest="tts_command", required=True)
    p = tsub.add_parser("evaluate", help="synthesize a data dir's texts; ASR WER, MCD, RTF")
    p.add_argument("--model", default=DEFAULT_TTS_MODEL)
    p.add_argument("--data", required=True, help="data dir whose texts are said and whose audio is the reference")
    p.add_argument("--asr-model", default="digits", help="ASR model that scores intelligibility (none: skip)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-utts", type=int, default=0)
    p.add_argument("--plots", type=int, default=4, help="alignment/mel PNGs of the first N utterances")
    p.add_argument("--threads", type=int, default=1, help="torch threads (RTF is reported for this many)")
    p.set_defaults(func=cmd_tts)
    p = tsub.add_parser("plot", help="attention alignment and mel spectrogram of one text, as PNG")
    p.add_argument("--model", default=DEFAULT_TTS_MODEL)
    p.add_argument("--speaker", default=None)
    p.add_argument("--text", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=cmd_tts)

    from .serve import add_serve_command  # the command's arguments only: the web stack loads when it runs

    add_serve_command(sub)
    return ap


def main(argv=None) -> int:
    """Run one command. The toolkit's own errors (all ValueError: AudioError, PackageError,
    ConfigError, DataDirError, ...) and the OS's (a path that cannot be read or written) end in one
    line naming the file or option; anything else is a bug and keeps its traceback. ASR_DEBUG=1
    shows the traceback of every error."""
    args = build_parser().parse_args(argv)
    debug = os.environ.get("ASR_DEBUG") == "1"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `asr transcribe ... | head -1`: the reader has gone, which is not an error of ours. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a program killed by it
    except (ValueError, RuntimeError, OSError) as e:
        if debug:
            raise
        print(f"asr {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"  # not "[Errno 21] Is a directory: 'x'"
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())

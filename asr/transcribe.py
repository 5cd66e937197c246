"""Audio files in, transcripts out: the pipeline behind `asr transcribe`, `model.transcribe()` and
the recipes' decode stage (so a recipe measures exactly what a user gets).

Long recordings are cut at low-energy points into segments of at most `max_segment` seconds, so
memory stays bounded whatever the length, and word times are shifted back to the recording's
clock.  Segments of several files share batches.
"""
from __future__ import annotations

import glob
import itertools
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import load_audio, load_each
from .datadir import read_data_dir
from .decode import Hypothesis, Word, greedy_decode, proposals, rank_proposals, widen, words_from_labels
from .features import pad_batch
from .metrics import ErrorStats, score
from .models.checks import RECOGNIZERS, check_arch, decode_lm

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au", ".sph"}


@dataclass
class Transcript:
    path: str
    text: str
    duration: float
    words: list[Word] = field(default_factory=list)
    nbest: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.nbest:
            d.pop("nbest")
        return d


def split_on_pauses(wav: np.ndarray, sr: int, max_segment: float = 20.0, frame: float = 0.03) -> list[tuple[int, int]]:
    """(start, end) sample spans of at most `max_segment` s, cut at the quietest frame of the last
    third of each span, so cuts fall in pauses rather than inside words."""
    n = len(wav)
    max_len = int(max_segment * sr)
    if n <= max_len:
        return [(0, n)]
    hop = max(1, int(frame * sr))
    energy = np.convolve(wav.astype(np.float64) ** 2, np.ones(hop), mode="same")
    spans, start = [], 0
    while n - start > max_len:
        lo, hi = start + int(max_len * 2 / 3), start + max_len
        cut = lo + int(np.argmin(energy[lo:hi:hop])) * hop
        spans.append((start, cut))
        start = cut
    spans.append((start, n))
    return spans


# A CTC spike marks a word's tokens, not the whole sound: a word's span is widened by this much on
# each side (at most, see decode.widen). On spliced FSDD strings (5 speakers, 50 words) a word's
# span was within 0.15 s of its clip at 0.06, not at 0.03 (weak fricative onsets: "s", "z").
WORD_MARGIN = 0.06


def check_lm_file(path: str) -> None:
    """Refuse, naming it, an --lm that is no LM (KenLM reads an audio file as a broken ARPA file and
    says so only after a progress bar). Compressed ARPA files are left to KenLM."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise ValueError(f"--lm {path}: {e.strerror}") from None
    if path.endswith((".gz", ".bz2", ".xz")) or head.startswith(b"mmap lm ") or b"\\data\\" in head:
        return
    raise ValueError(f"--lm {path}: not an ARPA (\\data\\) or KenLM binary language model")


def speech_frames(wav: np.ndarray, sr: int, frame_shift: float, num_frames: int) -> np.ndarray:
    """Per output frame of `frame_shift` s: does it hold speech energy? An energy detector relative
    to the segment's own noise floor: a frame is speech when it is above -70 dBFS, within 40 dB of
    the segment's loudest frame and 4 dB above its quietest tenth. Steady sounds (white noise, hum,
    a DC offset, which is removed first) stay within 2 dB of that tenth (white noise over 20 s of
    30 ms frames at 8 kHz: 1.8 dB) and so never pass; speech swings 20-40 dB between syllables and
    pauses, and a tightly trimmed FSDD clip by 8-16 dB (at 10 dB, 6 of 40 such clips lost their
    word; at 6 dB, 1 of the 250 test takes)."""
    hop = max(1, int(round(frame_shift * sr)))
    x = wav.astype(np.float64) - float(np.mean(wav)) if len(wav) else wav.astype(np.float64)
    x = np.pad(x, (0, max(0, num_frames * hop - len(x))))[: num_frames * hop]
    if num_frames == 0:
        return np.zeros(0, bool)
    power = (x.reshape(num_frames, hop) ** 2).mean(axis=1)
    db = 10 * np.log10(power + 1e-12)
    # the floor ignores the padded tail past the audio (frame stacking can add an output frame)
    real = db[: max(1, min(num_frames, len(wav) // hop))]
    threshold = max(-70.0, float(real.max()) - 40.0, float(np.percentile(real, 10)) + 4.0)
    return db > threshold


class Transcriber:
    """Batched transcription with a loaded CTC model and a greedy or beam decoder."""

    def __init__(self, model, decoder: str | None = None, lm: str | None = None, beam_width: int | None = None,
                 alpha: float | None = None, beta: float | None = None, batch_size: int = 8,
                 max_segment: float = 20.0, nbest: int = 1, vad: bool = True):
        check_arch(getattr(model, "arch", type(model).__name__), RECOGNIZERS,
                   str(getattr(model, "package_path", None) or "model"))
        for name, value in (("alpha", alpha), ("beta", beta)):
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name}: {value} is not a finite number")
        for name, value in (("beam_width", beam_width), ("batch_size", batch_size), ("nbest", nbest)):
            if value is not None and value < 1:
                raise ValueError(f"{name}: must be >= 1, got {value}")
        if not max_segment > 0:
            raise ValueError(f"max_segment: must be > 0 seconds, got {max_segment}")
        self.model = model.eval()
        # an int8 model (asr.quantize) or an ONNX Runtime one (asr.export) may have buffers only
        self.device = next(itertools.chain(model.parameters(), model.buffers())).device
        self.sr = model.cfg.features.sample_rate
        self.batch_size = batch_size
        self.max_segment = max_segment
        self.nbest = nbest
        self.word_margin = WORD_MARGIN
        self.vad = vad  # words only where there is speech energy (speech_frames)
        self.beam = None
        if lm is not None:
            check_lm_file(lm)
        decoder = decoder or model.cfg.decode.decoder  # a package says how it decodes best (asr tune)
        if decoder == "beam":
            from .beam_search import CTCBeamDecoder

            d = model.cfg.decode
            if lm is None:
                lm = decode_lm(model)
            self.beam = CTCBeamDecoder(model.vocab.tokens, model_path=lm,
                                       alpha=d.alpha if alpha is None else alpha, beta=d.beta if beta is None else beta,
                                       beam_width=beam_width or d.beam_width, blank_id=model.vocab.blank_id,
                                       log_probs_input=True)
        elif decoder != "greedy":
            raise ValueError(f"decoder: {decoder!r} is not one of ['beam', 'greedy']")

    @torch.inference_mode()
    def _decode_segments(self, segments: list[np.ndarray]) -> list[Hypothesis]:
        wav, lens = pad_batch(segments)
        out = [(lp.cpu(), n.cpu()) for lp, n in self.model.ctc_posteriors(wav.to(self.device), lens.to(self.device))]
        if len(out) > 1:  # an ensemble's members (asr.models.ensemble): their proposals are ranked
            hyps = self._ensemble_hypotheses(out, segments)
        else:
            hyps = self._hypotheses(*out[0], segments)
        # Silence, steady noise, hum or a DC offset: whatever the model makes of it, no words
        # (a digits model heard digits in white noise with confidence 0.77).
        return [h if not self.vad or self._has_speech(s) else Hypothesis("", [], [], h.score)
                for s, h in zip(segments, hyps)]

    def _has_speech(self, segment: np.ndarray) -> bool:
        hop = max(1, round(self.model.frame_shift * self.sr))
        return bool(speech_frames(segment, self.sr, self.model.frame_shift, -(-len(segment) // hop)).any())

    def _hypotheses(self, log_probs: torch.Tensor, out_lens: torch.Tensor, segments) -> list[Hypothesis]:
        speech = [self._speech(s, self.model.frame_shift, int(n)) for s, n in zip(segments, out_lens)]
        if self.beam is None:
            return greedy_decode(log_probs, out_lens, self.model.vocab, self.model.frame_shift, speech)
        return self._beam_hypotheses(log_probs, out_lens, speech)

    def _speech(self, segment: np.ndarray, frame_shift: float, num_frames: int) -> np.ndarray | None:
        return speech_frames(segment, self.sr, frame_shift, num_frames) if self.vad else None

    def _beam_hypotheses(self, log_probs: torch.Tensor, out_lens: torch.Tensor, speech) -> list[Hypothesis]:
        """ctcdecode-style outputs -> Hypothesis, words timed by their spikes (words_from_labels)."""
        vocab, shift = self.model.vocab, self.model.frame_shift
        results, scores, timesteps, lens = self.beam.decode(log_probs, out_lens)
        hyps = []
        for b in range(log_probs.size(0)):
            n = int(lens[b, 0])
            tokens, frames = results[b, 0, :n].tolist(), timesteps[b, 0, :n].tolist()
            h = Hypothesis(vocab.decode(tokens).strip(), tokens, frames, -float(scores[b, 0]))
            h.words = words_from_labels(tokens, frames, log_probs[b, :int(out_lens[b])], vocab, shift, speech[b])
            # a lexicon search whose every beam dies mid-word scores them -inf or NaN, which JSON
            # cannot hold: write null
            h.nbest = []
            for k in range(min(self.nbest, results.size(1))):
                labels = results[b, k, : int(lens[b, k])].tolist()
                if labels:  # ranked as the search ranks: acoustic + LM terms, like an ensemble's
                    total = -float(scores[b, k]) + self._lm_score(labels)
                    h.nbest.append({"text": vocab.decode(labels).strip(),
                                    "score": round(total, 4) if np.isfinite(total) else None})
            hyps.append(h)
        return hyps

    def _lm_score(self, labels: list[int]) -> float:
        try:
            return self.beam.lm_score(labels)
        except ValueError:  # the ctcdecode backend does not expose its scorer: acoustic only
            return 0.0

    def _ensemble_hypotheses(self, outputs: list[tuple[torch.Tensor, torch.Tensor]],
                             segments: list[np.ndarray]) -> list[Hypothesis]:
        """Every member's proposals, ranked by the members' mean exact CTC log-likelihood + LM terms."""
        vocab, members = self.model.vocab, self.model.ctc_members()
        proposed = [proposals(lp, n, vocab, self.beam) for lp, n in outputs]
        lm_score = self.beam.lm_score if self.beam is not None else None
        hyps = []
        for b in range(outputs[0][0].size(0)):
            ranked = rank_proposals([p[b] for p in proposed], [lp[b, :int(n[b])] for lp, n in outputs], vocab,
                                    lm_score)
            best = ranked[0]
            h = Hypothesis(best.text, best.tokens, best.frames, best.acoustic)
            lp, n = outputs[best.member]
            shift = members[best.member].frame_shift  # members' frame rates may differ
            h.words = words_from_labels(best.tokens, best.frames, lp[b, :int(n[b])], vocab, shift,
                                        self._speech(segments[b], shift, int(n[b])))
            h.nbest = [{"text": c.text, "score": round(c.score, 4) if np.isfinite(c.score) else None}
                       for c in ranked[:self.nbest]]
            hyps.append(h)
        return hyps

    def transcribe_arrays(self, items: list[tuple[str, np.ndarray]], between_batches=None,
                          sample_rate: int | None = None) -> list[Transcript]:
        """(name, waveform) pairs -> transcripts, segments batched by length. Without `sample_rate`
        the waveforms are mono at the model's rate; with it they go through `to_model_rate` as any
        array input does (checked, downmixed, resampled: a TTS voice at 8 kHz heard by a 16 kHz
        model must not be read at twice its speed).
        `between_batches()`, when given, runs before each batch: a caller that gives up on a long
        recording raises there (asr serve, when the request has timed out)."""
        if sample_rate is not None:
            items = [(name, to_model_rate(wav, sample_rate, self.sr)) for name, wav in items]
        pieces = []  # (item index, offset seconds, samples)
        for k, (_, wav) in enumerate(items):
            for a, b in split_on_pauses(wav, self.sr, self.max_segment):
                pieces.append((k, a / self.sr, wav[a:b]))
        order = sorted(range(len(pieces)), key=lambda i: len(pieces[i][2]))
        hyps: list[Hypothesis | None] = [None] * len(pieces)
        for s in range(0, len(order), self.batch_size):
            if between_batches is not None:
                between_batches()
            idx = order[s:s + self.batch_size]
            for i, h in zip(idx, self._decode_segments([pieces[i][2] for i in idx])):
                hyps[i] = h
        out = [Transcript(name, "", round(len(wav) / self.sr, 3)) for name, wav in items]
        texts: list[list[str]] = [[] for _ in items]
        alternatives: list[list[list[tuple[str, float]]]] = [[] for _ in items]  # per file, per segment
        for (k, offset, seg), h in zip(pieces, hyps):
            if h.text:
                texts[k].append(h.text)
            # Output frames can reach past the last sample (frame stacking pads): clamp to the audio.
            seg_len = len(seg) / self.sr
            clamped = [Word(w.word, min(w.start, seg_len), min(w.end, seg_len), w.confidence) for w in h.words]
            out[k].words += [Word(w.word, round(w.start + offset, 3), round(w.end + offset, 3), w.confidence)
                             for w in widen(clamped, self.word_margin, seg_len)]
            alternatives[k].append([(a["text"], -np.inf if a["score"] is None else a["score"]) for a in h.nbest]
                                   or [(h.text, h.score)])
        for k, t in enumerate(out):
            t.text = " ".join(texts[k])
            if self.nbest > 1:
                t.nbest = whole_file_nbest(alternatives[k], self.nbest)
        return out

    def transcribe(self, audio, sample_rate: int | None = None, name: str = "<array>") -> Transcript:
        """One file path, or a waveform (numpy/tensor, mono or (frames, channels)) with its rate."""
        if isinstance(audio, (str, os.PathLike)):
            wav, _ = load_audio(audio, self.sr)
            return self.transcribe_arrays([(str(audio), wav)])[0]
        return self.transcribe_arrays([(name, to_model_rate(audio, sample_rate, self.sr))])[0]

    def transcribe_files(self, paths, on_error=None, progress=None, load=load_audio):
        """Yield a Transcript per readable path, in order; unreadable ones go to on_error(path, msg).
        `load(path, rate)` reads one (a data dir's reader passes its utterances' own loader)."""
        def failed(p, msg):
            on_error(str(p), msg)
            if progress:
                progress.update(1)

        batch: list[tuple[str, np.ndarray]] = []
        for p, wav in load_each(paths, lambda p: load(p, self.sr)[0], failed if on_error is not None else None):
            batch.append((str(p), wav))
            if progress:
                progress.update(1)
            if sum(len(w) for _, w in batch) > self.batch_size * self.max_segment * self.sr:
                yield from self.transcribe_arrays(batch)
                batch = []
        if batch:
            yield from self.transcribe_arrays(batch)


@dataclass
class DecodeResult:
    stats: ErrorStats  # corpus WER, as `wer` says it
    rtf: float  # decoding seconds per second of audio
    failed: list[tuple[str, str]]  # (audio, why) of the utterances that could not be read


def decode_and_score(transcriber: "Transcriber", data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                     on_error=None) -> DecodeResult:
    """`asr decode`: transcribe every utterance of a data dir (references required) and score it;
    writes hyp.txt, hyp.jsonl, wer, per_utt and rtf to out_dir. An unreadable utterance goes to
    on_error(audio, message) as it is met, and is scored as an empty hypothesis."""
    utts = read_data_dir(data_dir)
    if unscored := [u.utt_id for u in utts if u.text is None]:  # scoring them against "" is 3100 % WER
        raise ValueError(f"{data_dir}: no reference transcript for {len(unscored)} utterance(s) (e.g. "
                         f"{unscored[0]!r}; a data dir needs a `text` file to be decoded and scored); "
                         "`asr transcribe` only transcribes")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    failed: list[tuple[str, str]] = []

    def failure(path: str, msg: str) -> None:
        failed.append((path, msg))
        if on_error is not None:
            on_error(path, msg)

    by_path = {}
    t0 = time.time()
    by_audio = {u.audio: u for u in utts}  # a wav.scp command (allowed by the reader) runs only here
    for t in transcriber.transcribe_files(list(by_audio), on_error=failure,
                                          load=lambda audio, sr: by_audio[audio].load_audio(sr)):
        by_path[t.path] = t
    elapsed = time.time() - t0
    hyps = {u.utt_id: by_path[u.audio].text for u in utts if u.audio in by_path}
    with open(out / "hyp.txt", "w") as f:
        f.writelines(f"{k} {v}\n" for k, v in sorted(hyps.items()))
    with open(out / "hyp.jsonl", "w") as f:
        for u in utts:
            if u.audio in by_path:
                f.write(json.dumps({"utt_id": u.utt_id, **by_path[u.audio].to_dict()}, ensure_ascii=False) + "\n")
    stats = score({u.utt_id: u.text or "" for u in utts}, hyps, out)
    rtf = elapsed / max(sum(t.duration for t in by_path.values()), 1e-9)
    (out / "rtf").write_text(f"{rtf:.4f}\n")
    return DecodeResult(stats, rtf, failed)


def whole_file_nbest(segments: list[list[tuple[str, float]]], n: int) -> list[dict]:
    """The n best transcripts of a whole file from its segments' (text, score) alternatives (each
    list best first): a file's transcript is one alternative per segment, scored by their sum.
    Keeping the n best after adding each segment is exact (the n best sums only use the n best
    of each part). The first is the file's transcript, the segments' first choices."""
    combos = [("", 0.0)]
    for alts in segments:
        merged = sorted(((f"{text} {alt}".strip(), score + alt_score) for text, score in combos
                         for alt, alt_score in alts), key=lambda c: -c[1])
        combos = list({text: score for text, score in reversed(merged)}.items())  # best score per text
        combos = sorted(combos, key=lambda c: -c[1])[:n]
    first = " ".join(t for t in (alts[0][0] for alts in segments) if t)
    combos = [(first, sum(alts[0][1] for alts in segments))] + [c for c in combos if c[0] != first]
    return [{"text": text, "score": round(score, 4) if np.isfinite(score) else None} for text, score in combos[:n]]


def to_model_rate(audio, sample_rate: int | None, target_sr: int) -> np.ndarray:
    from .audio import resample

    if sample_rate is None:
        raise ValueError("sample_rate is required with an array input (audio is never assumed to be at the model's rate)")
    x = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    x = x.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1) if x.shape[0] > x.shape[1] else x.mean(axis=0)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"audio array: expected 1-D or (frames, channels) samples, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("audio array contains NaN or Inf samples")
    return resample(x, sample_rate, target_sr)


def expand_inputs(inputs: list[str], stdin=None) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, folders (searched recursively for audio), globs, manifests (.jsonl) and `-` (a list of
    paths on stdin) -> (paths, [(input, error)])."""
    paths, errors = [], []
    for item in inputs:
        if item == "-":
            stream = stdin or sys.stdin
            found = [line.strip() for line in stream if line.strip()]
            if not found:
                errors.append(("-", "no input paths on stdin"))
            paths.extend(found)
        elif os.path.isdir(item):
            found = sorted(str(p) for p in _walk_audio(item))
            if not found:
                errors.append((item, "folder holds no audio files"))
            paths.extend(found)
        elif item.endswith((".jsonl", ".json")) and os.path.isfile(item):
            found, problems = manifest_audio(item)
            paths.extend(found)
            errors.extend(problems)
        elif any(c in item for c in "*?[") and not os.path.exists(item):
            found = sorted(_glob_once(item))
            if not found:
                errors.append((item, "pattern matches no file"))
            paths.extend(found)
        else:
            paths.append(item)
    return paths, errors


def _walk_audio(folder: str):
    """Audio files under `folder`; a linked folder is entered once (a symlink loop would not end)."""
    seen = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        key = os.path.realpath(root)
        if key in seen:
            dirs[:] = []
            continue
        seen.add(key)
        dirs.sort()
        for f in files:
            if os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS:
                yield Path(root) / f


def _glob_once(pattern: str) -> list[str]:
    """glob with `**` that enters each real folder once: Python's recursive glob follows folder
    symlinks, and a link to a parent folder makes it run until the path is too long."""
    if "**" not in pattern:
        return glob.glob(pattern)
    head, _, tail = pattern.partition("**")
    roots = glob.glob(head) if any(c in head for c in "*?[") else [head or "."]
    out, seen = {}, set()
    tail = tail.lstrip("/" + os.sep)
    for root in roots:
        for folder, dirs, _ in os.walk(root or os.curdir, followlinks=True):
            key = os.path.realpath(folder)
            if key in seen:
                dirs[:] = []
                continue
            seen.add(key)
            for hit in glob.glob(os.path.join(glob.escape(folder), tail)) if tail else [folder]:
                out.setdefault(os.path.normpath(hit), None)
    return list(out)


def manifest_audio(path: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The audio paths of a JSON-lines manifest: only `audio_filepath` is needed to transcribe (a
    training manifest's `duration` and `text` are not). A relative path is relative to the manifest's
    folder, so a manifest and its audio can move together."""
    paths, errors = [], []
    folder = os.path.dirname(path)
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                audio = json.loads(line).get("audio_filepath")
            except (ValueError, AttributeError, RecursionError):
                errors.append((f"{path}:{number}", "not a JSON object"))
                continue
            if not isinstance(audio, str) or not audio.strip():
                errors.append((f"{path}:{number}", "no \"audio_filepath\" (a path string)"))
                continue
            paths.append(audio if os.path.isabs(audio) else os.path.join(folder, audio))
    return paths, errors


# -- output formats --------------------------------------------------------------------------

def _ts(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def cues(t: Transcript, max_words: int = 8, max_gap: float = 1.0):
    """Group words into subtitle cues: break on long pauses or after max_words."""
    cue: list[Word] = []
    for w in t.words:
        if cue and (len(cue) >= max_words or w.start - cue[-1].end > max_gap):
            yield cue
            cue = []
        cue.append(w)
    if cue:
        yield cue


def relative_names(paths: list[str]) -> dict[str, str]:
    """A distinct name per input path, for CTM ids and per-input output files: the file's stem, or
    where two inputs share a stem, their paths relative to their common folder (without the
    extension unless that is all that tells them apart)."""
    absolute = {p: os.path.abspath(p) for p in paths}
    by_stem: dict[str, list[str]] = {}
    for p in dict.fromkeys(paths):
        by_stem.setdefault(Path(p).stem, []).append(p)
    names = {}
    for stem, group in by_stem.items():
        if len({absolute[p] for p in group}) == 1:
            names.update({p: stem for p in group})
            continue
        common = os.path.commonpath([os.path.dirname(absolute[p]) for p in group])
        rel = {p: Path(os.path.relpath(absolute[p], common)).as_posix() for p in group}
        no_ext = {p: r[: -len(Path(r).suffix)] if Path(r).suffix else r for p, r in rel.items()}
        distinct = len(set(no_ext.values())) == len({absolute[p] for p in group})
        names.update(no_ext if distinct else rel)
    return names


def ctm_id(name: str) -> str:
    """A CTM utterance id is one whitespace-free field: blanks (and %) are percent-escaped, so
    distinct names stay distinct."""
    return "".join(f"%{ord(c):02X}" if c.isspace() or c == "%" else c for c in name)


def format_transcript(t: Transcript, fmt: str, name: str | None = None) -> str:
    """One transcript in `fmt`; `name` (see relative_names) is the CTM utterance id, by default the
    file's stem."""
    if fmt == "text":
        return f"{t.path}\t{t.text}\n"
    if fmt == "json":
        return json.dumps(t.to_dict(), ensure_ascii=False) + "\n"
    if fmt == "ctm":
        utt = ctm_id(name or Path(t.path).stem)
        # duration from the rounded times, so a word never reaches into the next one's start
        return "".join(f"{utt} 1 {round(w.start, 2):.2f} {round(w.end, 2) - round(w.start, 2):.2f} {w.word} "
                       f"{w.confidence:.2f}\n" for w in t.words)
    if fmt in ("srt", "vtt"):
        sep = "," if fmt == "srt" else "."
        out = [] if fmt == "srt" else ["WEBVTT", ""]
        for i, cue in enumerate(cues(t), 1):
            if fmt == "srt":
                out.append(str(i))
            out += [f"{_ts(cue[0].start, sep)} --> {_ts(cue[-1].end, sep)}", " ".join(w.word for w in cue), ""]
        return "\n".join(out) + ("\n" if out else "")
    raise ValueError(f"--format: {fmt!r} is not one of {FORMATS}")


FORMATS = ["text", "json", "ctm", "srt", "vtt"]

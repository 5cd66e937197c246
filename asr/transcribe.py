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
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import AudioError, load_audio
from .decode import Hypothesis, Word, greedy_decode, proposals, rank_proposals, words_from_labels

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


class Transcriber:
    """Batched transcription with a loaded CTC model and a greedy or beam decoder."""

    def __init__(self, model, decoder: str | None = None, lm: str | None = None, beam_width: int | None = None,
                 alpha: float | None = None, beta: float | None = None, batch_size: int = 8,
                 max_segment: float = 20.0, nbest: int = 1):
        self.model = model.eval()
        # an int8 model (asr.quantize) or an ONNX Runtime one (asr.export) may have buffers only
        self.device = next(itertools.chain(model.parameters(), model.buffers())).device
        self.sr = model.cfg.features.sample_rate
        self.batch_size = batch_size
        self.max_segment = max_segment
        self.nbest = nbest
        self.beam = None
        decoder = decoder or model.cfg.decode.decoder  # a package says how it decodes best (asr tune)
        if decoder == "beam":
            from .beam_search import CTCBeamDecoder
            from .pretrained import package_lm

            d = model.cfg.decode
            if lm is None and d.lm:
                # a tuned package (asr tune) names its LM relative to itself, so both can move together
                lm = package_lm(d.lm, getattr(model, "package_path", None))
                if lm != d.lm and not os.path.isfile(lm):
                    raise FileNotFoundError(f"{model.package_path}: its decode.lm {d.lm!r} is not at {lm}; "
                                            "pass --lm to use another LM")
            self.beam = CTCBeamDecoder(model.vocab.tokens, model_path=lm,
                                       alpha=d.alpha if alpha is None else alpha, beta=d.beta if beta is None else beta,
                                       beam_width=beam_width or d.beam_width, blank_id=model.vocab.blank_id,
                                       log_probs_input=True)
        elif decoder != "greedy":
            raise ValueError(f"decoder: {decoder!r} is not one of ['beam', 'greedy']")

    @torch.inference_mode()
    def _decode_segments(self, segments: list[np.ndarray]) -> list[Hypothesis]:
        lens = torch.tensor([len(s) for s in segments])
        wav = torch.zeros(len(segments), int(lens.max()))
        for i, s in enumerate(segments):
            wav[i, : len(s)] = torch.from_numpy(s)
        out = self.model(wav.to(self.device), lens.to(self.device))
        if isinstance(out, list):  # an ensemble (asr.models.ensemble): one output per member
            return self._ensemble_hypotheses([(lp.cpu(), n.cpu()) for lp, n in out])
        log_probs, out_lens = out[0].cpu(), out[1].cpu()
        if self.beam is None:
            return greedy_decode(log_probs, out_lens, self.model.vocab, self.model.frame_shift)
        return self._beam_hypotheses(log_probs, out_lens)

    def _beam_hypotheses(self, log_probs: torch.Tensor, out_lens: torch.Tensor) -> list[Hypothesis]:
        """ctcdecode-style outputs -> Hypothesis with word times from the beam's label frames."""
        vocab, shift = self.model.vocab, self.model.frame_shift
        results, scores, timesteps, lens = self.beam.decode(log_probs, out_lens)
        probs = log_probs.exp()
        hyps = []
        for b in range(log_probs.size(0)):
            n = int(lens[b, 0])
            tokens, frames = results[b, 0, :n].tolist(), timesteps[b, 0, :n].tolist()
            h = Hypothesis(vocab.decode(tokens).strip(), tokens, frames, -float(scores[b, 0]))
            h.words = words_from_labels(tokens, frames, probs[b], vocab, shift, int(out_lens[b]))
            # a lexicon search whose every beam dies mid-word scores them -inf or NaN, which JSON
            # cannot hold: write null
            h.nbest = [{"text": vocab.decode(results[b, k, : int(lens[b, k])].tolist()).strip(),
                        "score": round(-float(scores[b, k]), 4) if np.isfinite(float(scores[b, k])) else None}
                       for k in range(min(self.nbest, results.size(1))) if int(lens[b, k]) > 0]
            hyps.append(h)
        return hyps

    def _ensemble_hypotheses(self, outputs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[Hypothesis]:
        """Every member's proposals, ranked by the members' mean exact CTC log-likelihood + LM terms."""
        vocab, members = self.model.vocab, self.model.members
        proposed = [proposals(lp, n, vocab, self.beam) for lp, n in outputs]
        lm_score = self.beam.lm_score if self.beam is not None else None
        hyps = []
        for b in range(outputs[0][0].size(0)):
            ranked = rank_proposals([p[b] for p in proposed], [lp[b, :int(n[b])] for lp, n in outputs], vocab,
                                    lm_score)
            best = ranked[0]
            h = Hypothesis(best.text, best.tokens, best.frames, best.acoustic)
            lp, n = outputs[best.member]
            h.words = words_from_labels(best.tokens, best.frames, lp[b].exp(), vocab,
                                        members[best.member].frame_shift, int(n[b]))
            h.nbest = [{"text": c.text, "score": round(c.score, 4) if np.isfinite(c.score) else None}
                       for c in ranked[:self.nbest]]
            hyps.append(h)
        return hyps

    def transcribe_arrays(self, items: list[tuple[str, np.ndarray]]) -> list[Transcript]:
        """(name, mono waveform at the model's rate) pairs -> transcripts, segments batched by length."""
        pieces = []  # (item index, offset seconds, samples)
        for k, (_, wav) in enumerate(items):
            for a, b in split_on_pauses(wav, self.sr, self.max_segment):
                pieces.append((k, a / self.sr, wav[a:b]))
        order = sorted(range(len(pieces)), key=lambda i: len(pieces[i][2]))
        hyps: list[Hypothesis | None] = [None] * len(pieces)
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            for i, h in zip(idx, self._decode_segments([pieces[i][2] for i in idx])):
                hyps[i] = h
        out = [Transcript(name, "", round(len(wav) / self.sr, 3)) for name, wav in items]
        texts: list[list[str]] = [[] for _ in items]
        for (k, offset, seg), h in zip(pieces, hyps):
            if h.text:
                texts[k].append(h.text)
            # Output frames can reach past the last sample (frame stacking pads): clamp to the audio.
            seg_end = offset + len(seg) / self.sr
            out[k].words += [Word(w.word, round(min(w.start + offset, seg_end), 3),
                                  round(min(w.end + offset, seg_end), 3), w.confidence) for w in h.words]
            if self.nbest > 1:
                out[k].nbest += h.nbest
        for k, t in enumerate(out):
            t.text = " ".join(texts[k])
        return out

    def transcribe(self, audio, sample_rate: int | None = None, name: str = "<array>") -> Transcript:
        """One file path, or a waveform (numpy/tensor, mono or (frames, channels)) with its rate."""
        if isinstance(audio, (str, os.PathLike)):
            wav, _ = load_audio(audio, self.sr)
            return self.transcribe_arrays([(str(audio), wav)])[0]
        return self.transcribe_arrays([(name, to_model_rate(audio, sample_rate, self.sr))])[0]

    def transcribe_files(self, paths, on_error=None, progress=None):
        """Yield a Transcript per readable path, in order; unreadable ones go to on_error(path, msg)."""
        batch: list[tuple[str, np.ndarray]] = []
        for p in paths:
            try:
                wav, _ = load_audio(p, self.sr)
                batch.append((str(p), wav))
            except AudioError as e:
                if on_error is None:
                    raise
                on_error(str(p), str(e))
            if progress:
                progress.update(1)
            if sum(len(w) for _, w in batch) > self.batch_size * self.max_segment * self.sr:
                yield from self.transcribe_arrays(batch)
                batch = []
        if batch:
            yield from self.transcribe_arrays(batch)


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
            paths.extend(line.strip() for line in stream if line.strip())
        elif os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                errors.append((item, "folder holds no audio files"))
            paths.extend(found)
        elif item.endswith((".jsonl", ".json")) and os.path.isfile(item):
            from .datadir import read_manifest

            paths.extend(u.audio for u in read_manifest(item))
        elif any(c in item for c in "*?[") and not os.path.exists(item):
            found = sorted(glob.glob(item, recursive=True))
            if not found:
                errors.append((item, "pattern matches no file"))
            paths.extend(found)
        else:
            paths.append(item)
    return paths, errors


# -- output formats --------------------------------------------------------------------------

def _ts(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cues(t: Transcript, max_words: int = 8, max_gap: float = 1.0):
    """Group words into subtitle cues: break on long pauses or after max_words."""
    cue: list[Word] = []
    for w in t.words:
        if cue and (len(cue) >= max_words or w.start - cue[-1].end > max_gap):
            yield cue
            cue = []
        cue.append(w)
    if cue:
        yield cue


def format_transcript(t: Transcript, fmt: str) -> str:
    if fmt == "text":
        return f"{t.path}\t{t.text}\n"
    if fmt == "json":
        return json.dumps(t.to_dict(), ensure_ascii=False) + "\n"
    if fmt == "ctm":
        utt = Path(t.path).stem
        return "".join(f"{utt} 1 {w.start:.2f} {w.end - w.start:.2f} {w.word} {w.confidence:.2f}\n" for w in t.words)
    if fmt in ("srt", "vtt"):
        sep = "," if fmt == "srt" else "."
        out = [] if fmt == "srt" else ["WEBVTT", ""]
        for i, cue in enumerate(_cues(t), 1):
            if fmt == "srt":
                out.append(str(i))
            out += [f"{_ts(cue[0].start, sep)} --> {_ts(cue[-1].end, sep)}", " ".join(w.word for w in cue), ""]
        return "\n".join(out) + ("\n" if out else "")
    raise ValueError(f"--format: {fmt!r} is not one of {FORMATS}")


FORMATS = ["text", "json", "ctm", "srt", "vtt"]

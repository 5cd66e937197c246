"""Text to speech with a trained `tts` model: `synthesize(model, text)` in Python, `asr synthesize`
on the command line, and the evaluation the TTS recipes report (intelligibility through an ASR
model, mel cepstral distortion against real recordings, real-time factor).

    asr synthesize [--model NAME|PATH] [--speaker NAME] --text "three one four" -o out.wav
    asr synthesize --text-file lines.txt -o out_dir/          # out_dir/0001.wav per line
    asr tts evaluate --model M --data DATA_DIR --asr-model digits --out-dir D
    asr tts plot --model M --text "314" -o align.png

The model's text frontend reads the text (digits-tts: digits as words, "314" -> "three one four";
an English model: numbers, abbreviations and symbols as words, asr.tts_text); characters the model
has never seen are an error naming them, never silently dropped. A text of several sentences is
said one sentence at a time (a sentence too long for the decoder one clause group at a time), so a
paragraph is not cut off at max_decoder_steps.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .models import check_arch

DEFAULT_TTS_MODEL = "digits-tts"
# Decoder steps a character takes to say, for packages that do not record their own
# (TTSModel.steps_per_symbol): digits-tts spends 3.4 ("seven" x 10, 59 characters, 198 steps). A
# piece of text that needs more than --max-steps would be cut off after minutes of work (2,000
# digits: 48 s, then cut at 300 steps), so it is refused before any.
STEPS_PER_CHARACTER = 3.4
# Silence between sentences said one by one: the recordings are trimmed, so the model ends each
# sentence without the pause a reader makes before the next.
SENTENCE_PAUSE_S = 0.3


@dataclass
class Synthesis:
    text: str  # as the model read it (digits spelled out)
    wav: np.ndarray  # float32 mono
    sample_rate: int
    mel: np.ndarray  # (frames, n_mels) natural-log mel power
    alignment: np.ndarray  # (decoder steps, text positions incl. end token)
    stopped: bool  # False: the stop token never fired and max_steps cut the utterance
    model_seconds: float = 0.0
    vocoder_seconds: float = 0.0
    speaker: str | None = None

    @property
    def duration(self) -> float:
        return len(self.wav) / self.sample_rate


def load_tts(model=DEFAULT_TTS_MODEL, device: str | torch.device = "cpu"):
    """A TTS model object, or a registry name / package / exp dir loaded as one."""
    if isinstance(model, torch.nn.Module):
        check_arch(getattr(model, "arch", type(model).__name__), "tts", str(getattr(model, "package_path", None) or "model"))
        return model.eval()
    from .registry import load_model

    return load_model(model, device, arch="tts")


def _vocoder(model, name: str, options: dict | None):
    from .vocoder import get_vocoder

    key = (name, json.dumps(options or {}, sort_keys=True))
    cache = model.__dict__.setdefault("_vocoders", {})
    if key not in cache:
        cache[key] = get_vocoder(name, model.cfg.features, **(options or {}))
    return cache[key]


def steps_per_symbol(model) -> float:
    return model.steps_per_symbol or STEPS_PER_CHARACTER


def text_pieces(model, text: str, max_steps: int | None = None) -> list[str]:
    """The text as the model reads it, cut into the pieces it is said in, one decoder run each:
    its sentences, and a sentence too long for max_steps cut at clause breaks. A piece that still
    does not fit has no break to cut at (the caller refuses it or lets max_steps cut it)."""
    from .tts_text import split_text

    max_steps = int(model.extra["max_decoder_steps"] if max_steps is None else max_steps)
    return split_text(model.prepare_text(text), max(1, int(max_steps / steps_per_symbol(model))))


def synthesize(model, text: str, speaker: str | None = None, seed: int = 0, max_steps: int | None = None,
               vocoder: str = "griffinlim", vocoder_options: dict | None = None) -> Synthesis:
    """One text -> waveform, sentence by sentence (text_pieces) with SENTENCE_PAUSE_S between.
    The same model, text, speaker and seed give the same audio: the prenet's inference dropout
    draws from a generator seeded here, not from the global RNG."""
    model = load_tts(model)
    parts = [_synthesize_piece(model, piece, speaker, seed, max_steps, vocoder, vocoder_options)
             for piece in text_pieces(model, text, max_steps)]
    if len(parts) == 1:
        return parts[0]
    sr = parts[0].sample_rate
    pause = np.zeros(int(SENTENCE_PAUSE_S * sr), dtype=np.float32)
    wav = np.concatenate([x for p in parts for x in (pause, p.wav)][1:])
    # one alignment matrix for the whole text: each piece's block on the diagonal
    align = np.zeros((sum(p.alignment.shape[0] for p in parts), sum(p.alignment.shape[1] for p in parts)), np.float32)
    t = n = 0
    for p in parts:
        align[t:t + p.alignment.shape[0], n:n + p.alignment.shape[1]] = p.alignment
        t, n = t + p.alignment.shape[0], n + p.alignment.shape[1]
    return Synthesis(" ".join(p.text for p in parts), wav, sr, np.concatenate([p.mel for p in parts]), align,
                     all(p.stopped for p in parts), sum(p.model_seconds for p in parts),
                     sum(p.vocoder_seconds for p in parts), speaker)


def _synthesize_piece(model, text, speaker, seed, max_steps, vocoder, vocoder_options) -> Synthesis:
    from .models.tts import text_batch

    device = next(model.parameters()).device
    ids, lens, spk = text_batch(model, [text], [speaker] if speaker is not None else None, device)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = model.infer(ids, lens, spk, max_steps=max_steps)
    n = int(out["lengths"][0])
    mel = out["mel"][0, :n].float().cpu()
    t1 = time.perf_counter()
    wav = _vocoder(model, vocoder, vocoder_options)(mel)
    t2 = time.perf_counter()
    steps = -(-n // model.r)
    return Synthesis(model.prepare_text(text), wav, model.cfg.features.sample_rate, mel.numpy(),
                     out["alignments"][0, :steps, : int(lens[0])].cpu().numpy(), bool(out["stopped"][0]),
                     t1 - t0, t2 - t1, speaker)


@torch.no_grad()
def copy_synthesis(model, wav: np.ndarray, vocoder: str = "griffinlim") -> np.ndarray:
    """A real recording through the model's own mel analysis and the vocoder, no model: the
    ceiling that vocoder and feature set put on any synthesis ("analysis-synthesis")."""
    x = torch.from_numpy(np.asarray(wav, dtype=np.float32))[None]
    mel, _ = model.logmel.eval()(x.to(model.cmvn.mean.device), torch.tensor([x.size(1)], device=model.cmvn.mean.device))
    return _vocoder(model, vocoder, None)(mel[0].cpu())


def plot_synthesis(syn: Synthesis, path: str | Path, title: str = "") -> None:
    """Attention alignment (decoder step x text position) above the mel spectrogram, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 1, figsize=(8, 6))
    ax[0].imshow(syn.alignment.T, aspect="auto", origin="lower", interpolation="none", cmap="viridis")
    ax[0].set(xlabel="decoder step", ylabel="text position",
              title=title or f"{syn.text!r}" + ("" if syn.stopped else " (stopped at max steps)"))
    ax[0].set_yticks(range(len(syn.text) + 1), list(syn.text.replace(" ", "_")) + ["$"], fontsize=6)
    ax[1].imshow(syn.mel.T, aspect="auto", origin="lower", interpolation="none", cmap="magma")
    ax[1].set(xlabel="frame", ylabel="mel bin", title="log-mel")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- evaluation ---------------------------------------------------------------------------------

def evaluate(model, utts, asr_model, out_dir: str | Path, seed: int = 0, max_steps: int | None = None,
             plots: int = 4, progress: bool = True) -> dict:
    """Synthesize the text of every utterance (in its speaker's voice when the model knows that
    speaker) and measure, against the utterance's real recording:
      - intelligibility: WER of `asr_model` on the synthesized audio (and, for reference, on the
        real recordings), Kaldi-style `wer` files in out_dir/synth and out_dir/real;
      - mel cepstral distortion (asr.metrics.mel_cepstral_distortion: c1-c24, DTW-aligned);
      - real-time factor of synthesis, split into model and vocoder time, one utterance at a time.
    The same numbers for copy synthesis (the real recording's mels through the vocoder) give the
    ceiling of the vocoder. Writes out_dir/results.json (returned), out_dir/wav/*.wav,
    per-utterance MCD and a few plots."""
    from tqdm import tqdm

    from .audio import save_audio
    from .datadir import utterance_file
    from .metrics import corpus_wer, mel_cepstral_distortion, score
    from .registry import load_model
    from .transcribe import Transcriber
    from .tts_text import spoken_words

    model = load_tts(model)
    out = Path(out_dir)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    if asr_model in (None, "", "none"):
        asr = None
    else:
        asr = load_model(asr_model) if isinstance(asr_model, (str, Path)) else asr_model
    sr = model.cfg.features.sample_rate
    syn_items, real_items, copy_items, refs, mcds, copy_mcds, rows = [], [], [], {}, [], [], []
    by_speaker: dict[str, list[float]] = {}
    model_s = vocoder_s = audio_s = 0.0
    not_stopped = []
    multi = model.speaker_embedding is not None
    for i, u in enumerate(tqdm(utts, desc="synthesize", file=sys.stderr, disable=None if progress else True,
                               leave=False)):
        speaker = u.speaker if multi and u.speaker in model.speaker_index else None
        s = synthesize(model, u.text, speaker, seed=seed, max_steps=max_steps)
        save_audio(utterance_file(out / "wav", u.utt_id, ".wav"), s.wav, sr)
        real, _ = u.load_audio(sr)
        mcd, _ = mel_cepstral_distortion(real, s.wav, sr)
        copy = copy_synthesis(model, real)
        copy_items.append((u.utt_id, copy))
        copy_mcds.append(mel_cepstral_distortion(real, copy, sr)[0])
        model_s, vocoder_s, audio_s = model_s + s.model_seconds, vocoder_s + s.vocoder_seconds, audio_s + s.duration
        if not s.stopped:
            not_stopped.append(u.utt_id)
        syn_items.append((u.utt_id, s.wav))
        real_items.append((u.utt_id, real))
        refs[u.utt_id] = spoken_words(s.text)  # the words said, as an ASR model writes them
        mcds.append(mcd)
        by_speaker.setdefault(u.speaker, []).append(mcd)
        rows.append(f"{u.utt_id}\t{mcd:.3f}\t{s.duration:.2f}\t{len(real) / sr:.2f}\t{s.text}\n")
        if i < plots:
            plot_synthesis(s, utterance_file(out / "plots", u.utt_id, ".png"), f"{u.utt_id}: {s.text!r}")
    (out / "mcd").write_text("utt_id\tmcd_db\tsynth_s\treal_s\ttext\n" + "".join(rows))
    res = {"utterances": len(refs), "seed": seed}
    if asr is not None:
        tr = Transcriber(asr)
        syn_hyps = {t.path: t.text for t in tr.transcribe_arrays(syn_items, sample_rate=sr)}
        syn_stats = score(refs, syn_hyps, out / "synth")
        real_stats = score(refs, {t.path: t.text for t in tr.transcribe_arrays(real_items, sample_rate=sr)}, out / "real")
        copy_stats = score(refs, {t.path: t.text for t in tr.transcribe_arrays(copy_items, sample_rate=sr)}, out / "copy")
        speakers = {u.utt_id: u.speaker for u in utts}
        res["wer_synth_per_speaker"] = {
            spk: round(corpus_wer([refs[k] for k in refs if speakers[k] == spk],
                                  [syn_hyps[k] for k in refs if speakers[k] == spk]).rate, 2)
            for spk in sorted(set(speakers.values()))}
        res.update(wer_synth=syn_stats.rate, wer_synth_line=syn_stats.kaldi_line(), wer_real=real_stats.rate,
                   wer_real_line=real_stats.kaldi_line(), wer_copy=copy_stats.rate, wer_copy_line=copy_stats.kaldi_line(),
                   asr_model=str(asr_model) if isinstance(asr_model, (str, Path)) else "<object>")
    res.update({
        "mcd_db": float(np.mean(mcds)), "mcd_db_std": float(np.std(mcds)), "mcd_copy_db": float(np.mean(copy_mcds)),
        "mcd_per_speaker": {k: round(float(np.mean(v)), 3) for k, v in sorted(by_speaker.items())},
        "voices": "each utterance's own speaker" if multi else f"the model's one voice ({model.speakers[0]})",
        "mcd_desc": "mel cepstra c1-c24 (cosine transform of 40-band natural-log mel amplitude, real-cepstrum "
                    "scale, 25 ms / 5 ms frames), DTW-aligned, "
                    "10*sqrt(2)/ln10 * mean Euclidean distance over the path",
        "rtf": (model_s + vocoder_s) / max(audio_s, 1e-9), "rtf_model": model_s / max(audio_s, 1e-9),
        "rtf_vocoder": vocoder_s / max(audio_s, 1e-9), "synth_audio_s": audio_s,
        "not_stopped": not_stopped, "threads": torch.get_num_threads(),
    })
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    return res

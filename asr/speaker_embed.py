"""Speaker embeddings from a speaker model (asr.models.speaker): waveforms, files or data-dir
utterances -> L2-normalised vectors whose dot product is the cosine score.

The enrollment database (asr.speaker_db) and the evaluation (asr.speaker_eval) score these.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from .audio import load_audio, load_each
from .data import eval_batches
from .features import pad_batch
from .package import weights_sha256


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def embed_arrays(model, wavs: list[np.ndarray], batch_size: int = 16) -> np.ndarray:
    """1-D waveforms at the model's sample rate -> (N, D) L2-normalised embeddings (float32)."""
    was_training = model.training
    model.eval()
    out = None  # the back-end decides the width: the network's embedding, or it joined with statistics
    order = sorted(range(len(wavs)), key=lambda i: len(wavs[i]))  # similar lengths, little padding
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x, lens = pad_batch([wavs[i] for i in idx])
            dev = _device(model)
            emb = model.embed(x.to(dev), lens.to(dev)).cpu().numpy()
            if out is None:
                out = np.zeros((len(wavs), emb.shape[1]), dtype=np.float32)
            out[idx] = emb
    finally:
        model.train(was_training)
    return out if out is not None else np.zeros((0, model.cfg.model.embedding_dim), dtype=np.float32)


def embed_files(model, paths, on_error=None, batch_size: int = 16) -> tuple[list[str], np.ndarray]:
    """(readable paths, their embeddings). An unreadable file raises AudioError naming it, or, with
    `on_error`, is passed to on_error(path, message) and left out."""
    sr = model.cfg.features.sample_rate
    read = list(load_each(paths, lambda p: load_audio(p, sr)[0], on_error and (lambda p, m: on_error(str(p), m))))
    return [str(p) for p, _ in read], embed_arrays(model, [w for _, w in read], batch_size)


def embed_utterances(model, utts, batch_seconds: float = 100.0) -> dict[str, np.ndarray]:
    """{utt_id: embedding} for data-dir utterances; unreadable ones are reported and left out."""
    out = {}
    with torch.no_grad():
        model.eval()
        for batch in eval_batches(utts, model.cfg.features.sample_rate, batch_seconds):
            for utt, why in batch.errors:
                print(f"speaker evaluate: skipped {utt}: {why}", file=sys.stderr)
            if len(batch):
                batch.to(_device(model))
                out.update(zip(batch.utt_ids, model.embed(batch.wav, batch.wav_lens).cpu().numpy()))
    return out


def model_id(model) -> str:
    return weights_sha256(model.state_dict())


def normalize(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)

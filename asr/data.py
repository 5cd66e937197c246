"""Training data: utterances from Kaldi data dirs -> waveforms -> length-bucketed, padded batches.

Features are not precomputed: the frontend runs on the model's device, so the loader only reads
and augments audio.  Every random choice of the loader is a function of (seed, epoch, index), so
a resumed run sees exactly the batches and augmentations an uninterrupted run would have seen,
whatever the number of workers.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch

from .audio import AudioError
from .config import AugmentConfig
from .datadir import Utterance
from .features import augment_waveform, pad_batch


@dataclass
class Batch:
    utt_ids: list[str]
    wav: torch.Tensor  # (B, S) float32, zero padded
    wav_lens: torch.Tensor  # (B,) int64
    texts: list[str]
    speakers: list[str]
    errors: list[tuple[str, str]] = field(default_factory=list)  # (utt_id, why) of unreadable audio

    def __len__(self) -> int:
        return len(self.utt_ids)

    def to(self, device) -> "Batch":
        self.wav = self.wav.to(device, non_blocking=True)
        self.wav_lens = self.wav_lens.to(device)
        return self


class AudioDataset(torch.utils.data.Dataset):
    """Items are (index, epoch) pairs so augmentation is reproducible; broken audio becomes an error
    record instead of an exception, and the trainer reports it and goes on."""

    def __init__(self, utterances: list[Utterance], sample_rate: int, augment: AugmentConfig | None = None,
                 seed: int = 0):
        self.utts = utterances
        self.sample_rate = sample_rate
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        utt = self.utts[index]
        try:
            wav, _ = utt.load_audio(self.sample_rate)
        except AudioError as e:
            return {"utt_id": utt.utt_id, "error": str(e)}
        if self.augment is not None:
            wav = augment_waveform(wav, self.augment, np.random.default_rng([self.seed, epoch, index]),
                                   self.sample_rate)
        return {"utt_id": utt.utt_id, "wav": wav, "text": utt.text or "", "speaker": utt.speaker}


def collate(items: list[dict]) -> Batch:
    good = [it for it in items if "error" not in it]
    errors = [(it["utt_id"], it["error"]) for it in items if "error" in it]
    wav, lens = pad_batch([it["wav"] for it in good])
    return Batch([it["utt_id"] for it in good], wav, lens,
                 [it["text"] for it in good], [it["speaker"] for it in good], errors)


class BucketBatchSampler:
    """Batches of similar-length utterances filling a budget of padded seconds.

    Sorting by duration keeps padding small (so little compute is wasted on it); batches are then
    shuffled as whole units each epoch.  `state_dict` records the epoch and how many batches were
    consumed, and resuming skips exactly those.  With several processes (DDP) each rank takes every
    world_size-th batch of the same order, cut to an equal count so no rank waits on another.
    """

    def __init__(self, durations: list[float], batch_seconds: float, max_batch_size: int = 64,
                 shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 sorted_epochs: int = 0):
        self.durations = durations
        self.shuffle = shuffle
        self.sorted_epochs = sorted_epochs
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.position = 0
        order = sorted(range(len(durations)), key=lambda i: (durations[i], i))
        self.batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            # Sorted ascending, so the newest utterance is the longest: it sets the padded size.
            if current and (len(current) + 1 > max_batch_size or (len(current) + 1) * durations[i] > batch_seconds):
                self.batches.append(current)
                current = []
            current.append(i)
        if current:
            self.batches.append(current)

    def epoch_batches(self) -> list[list[int]]:
        batches = list(self.batches)
        if self.shuffle and self.epoch >= self.sorted_epochs:
            random.Random(self.seed * 100003 + self.epoch).shuffle(batches)
        per_rank = len(batches) // self.world_size if self.world_size > 1 else len(batches)
        return batches[self.rank::self.world_size][:per_rank]

    def __len__(self) -> int:
        return len(self.epoch_batches())

    def __iter__(self):
        batches = self.epoch_batches()
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield [(i, self.epoch) for i in batch]
        # Exhausted: the next pass is the next epoch (the trainer tracks consumed batches itself,
        # since a DataLoader draws indices ahead of the batches it has delivered).
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def padding_efficiency(self) -> float:
        """Real seconds / padded seconds over all batches (1.0 = no padding)."""
        real = sum(self.durations[i] for b in self.batches for i in b)
        padded = sum(len(b) * max(self.durations[i] for i in b) for b in self.batches)
        return real / padded if padded else 1.0


def make_loader(dataset: AudioDataset, sampler: BucketBatchSampler, num_workers: int = 1,
                generator: torch.Generator | None = None) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                       num_workers=num_workers, persistent_workers=False, generator=generator,
                                       prefetch_factor=4 if num_workers else None)


def eval_batches(utterances: list[Utterance], sample_rate: int, batch_seconds: float = 200.0,
                 max_batch_size: int = 64, num_workers: int = 0):
    """Unshuffled, length-sorted batches for evaluation and decoding."""
    ds = AudioDataset(utterances, sample_rate)
    sampler = BucketBatchSampler([u.duration or 1.0 for u in utterances], batch_seconds, max_batch_size,
                                 shuffle=False)
    return make_loader(ds, sampler, num_workers)


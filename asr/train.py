"""One trainer for every model of the toolkit (CTC acoustic, speaker, TTS).

A model brings what `asr.models.base.TrainableModel` asks (from_training_data, check_utterance,
compute_loss, evaluate, best_metric, after_training); the trainer brings the rest: bucketed batches, AdamW with warmup and cosine decay, gradient
clipping, AMP on GPU, DDP under torchrun, atomic checkpoints with everything needed to resume
exactly, best-model selection, early stopping, a CSV log and a training-curve PNG.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import checkpoint as ckpt
from .audio import AudioError
from .config import ExperimentConfig, dump_config
from .data import AudioDataset, BucketBatchSampler, eval_batches, make_loader
from .datadir import read_data_dir
from .models import model_class
from .models.base import Loss, TrainableModel
from .package import PACKAGE_FILE, load_package, save_package
from .text import case_variants

# Fault injection for the kill-and-resume tests: a real SIGKILL at a known step.
_KILL_AT_STEP = int(os.environ.get("ASR_TEST_KILL_AT_STEP", "0"))


def setup_logging(exp_dir: Path, rank: int) -> logging.Logger:
    log = logging.getLogger("asr.train")
    log.handlers.clear()
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if rank == 0:
        fh = logging.FileHandler(exp_dir / "train.log")
        fh.setFormatter(fmt)
        log.addHandler(fh)
    sh = logging.StreamHandler(sys.stderr)
    sh.setFormatter(fmt)
    log.addHandler(sh)
    return log


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def read_utterances(dirs: list[str], log, skipped: list, durations: dict[str, float] | None = None) -> list:
    """All utterances of the data dirs, with durations (from utt2dur, else `durations`, else the
    audio's header); unreadable audio is skipped and recorded."""
    utts = []
    for d in dirs:
        for u in read_data_dir(d):
            if u.duration is None and durations:
                u.duration = durations.get(u.utt_id)
            if u.duration is None:
                try:
                    u.duration = u.audio_duration()
                except AudioError as e:
                    skipped.append((u.utt_id, str(e)))
                    continue
            utts.append(u)
    log.info("read %d utterances (%.2f h) from %s", len(utts), sum(u.duration for u in utts) / 3600, ", ".join(dirs))
    return utts


def _unusable(dirs: list[str], utts: list, skipped: list[tuple[str, str]]) -> str:
    """Why no training utterance is usable, for the error that stops the run."""
    if utts and all(u.text is None for u in utts):
        return f"no transcripts: {', '.join(dirs)} has no `text` file"
    utt, why = skipped[0] if skipped else ("", "")
    return f"{len(skipped)} skipped, e.g. {utt}: {why}"


def lr_lambda(warmup: int, total: int, final_ratio: float):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


class CSVLog:
    """Rows of the training log; on resume rows past the checkpoint's step are dropped."""

    def __init__(self, path: Path, keep_until_step: int | None):
        self.path = path
        self.rows: list[dict] = []
        if keep_until_step is not None and path.exists():
            with open(path) as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until_step]
        self.fields = ["step", "epoch", "split", "loss", "lr", "grad_norm", "utts_per_s", "audio_s_per_s"]
        for r in self.rows:  # the dev metrics of a resumed run's rows are columns too
            self.fields += [k for k in r if k not in self.fields]

    def add(self, **row) -> None:
        for k in row:
            if k not in self.fields:
                self.fields.append(k)
        self.rows.append(row)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, self.fields)
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.path)


def plot_curves(rows: list[dict], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = [(int(r["step"]), float(r["loss"])) for r in rows if r["split"] == "train" and r.get("loss") not in (None, "")]
    dv = [(int(r["step"]), float(r[metric])) for r in rows if r["split"] == "dev" and r.get(metric) not in (None, "")]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    if tr:
        ax[0].plot(*zip(*tr))
    ax[0].set(xlabel="step", ylabel="train loss", yscale="log", title="training loss")
    if dv:
        ax[1].plot(*zip(*dv), marker="o")
    ax[1].set(xlabel="step", ylabel=f"dev {metric}", title=f"dev {metric}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


class _IdleLoss(Loss):
    """The zero loss a rank with nothing to learn from steps on (see _LossForward); not logged."""


class _LossForward(torch.nn.Module):
    """compute_loss as a forward() for DDP. A rank with nothing to learn from (every utterance of its
    batch unreadable or dropped) still joins the gradient all-reduce with a zero loss over every
    parameter; skipping the step would leave the other ranks waiting in all-reduce forever."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        out = self.model.compute_loss(batch) if len(batch) else Loss(None)
        if out.loss is None:
            out = _IdleLoss(sum(p.sum() for p in self.model.parameters()) * 0.0, out.dropped)
        return out


class Trainer:
    """One training run of `cfg` in `exp_dir`: `setup` builds everything (or restores it from the
    newest checkpoint), `step` consumes one loader batch, `evaluate` scores dev and keeps the best
    package, `checkpoint` saves what an exact resume needs, `fit` runs the epochs and `finish` writes
    the final package. The counters (step, epoch, position, best, bad_evals) are attributes, and
    they are what a checkpoint holds."""

    def __init__(self, cfg: ExperimentConfig, exp_dir: str | Path, resume: bool = False,
                 max_steps: int | None = None, device: str | None = None, info: dict | None = None):
        self.cfg, self.exp_dir, self.info = cfg, Path(exp_dir), info
        self.setup(resume, max_steps, device)

    def setup(self, resume: bool, max_steps: int | None, device: str | None) -> None:
        cfg = self.cfg
        cls = model_class(cfg.model.arch)
        if not issubclass(cls, TrainableModel):
            raise ValueError(f"model.arch: {cfg.model.arch} models are not trained; `asr ensemble` combines trained ones")
        self.tc = tc = cfg.train
        if max_steps is not None:
            tc.max_steps = max_steps
        self.world = world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device is None:
            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        self.device = device = torch.device(device)
        if world > 1:
            import torch.distributed as dist

            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        exp_dir = self.exp_dir
        exp_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir = exp_dir / "checkpoints"
        self.log = log = setup_logging(exp_dir, rank)
        seed_everything(tc.seed)
        if rank == 0:
            dump_config(cfg, exp_dir / "config.yaml")

        state = ckpt.load_latest(self.ckpt_dir, log.warning) if resume else None
        if resume and state is None:
            log.info("no checkpoint in %s: starting from scratch", self.ckpt_dir)

        skipped: list[tuple[str, str]] = []
        shard_durations = None
        if tc.train_shards:
            from .shards import resolve_shards

            # the shard index lists every duration: streaming must not need the source audio on disk
            shard_durations = {u: d for s, _ in resolve_shards(tc.train_shards)[1] for u, d in s["items"]}
        train_utts = read_utterances(tc.train_data, log, skipped, shard_durations)
        dev_utts = read_utterances(tc.dev_data, log, skipped) if tc.dev_data else []
        if not train_utts:
            raise ValueError(f"train.train_data: no usable utterances in {tc.train_data}")

        if state is not None:
            model = cls.from_package_meta(cfg, state["model_meta"])
        elif tc.init_from:
            model = load_package(tc.init_from).train()
            model.cfg = cfg
            log.info("initialised from %s", tc.init_from)
        else:
            model = cls.from_training_data(cfg, train_utts)
        self.model = model
        model.to(device)

        if variants := case_variants(u.text for u in train_utts if u.text):
            shown = ", ".join("/".join(v) for v in list(variants.values())[:5])
            log.warning("transcripts spell %d word(s) in more than one case, which become different tokens: %s%s",
                        len(variants), shown, " ..." if len(variants) > 5 else "")
        max_speed = max(cfg.augment.speed_perturb or [1.0])
        kept = []
        for u in train_utts:
            why = "longer than train.max_duration" if u.duration > tc.max_duration else model.check_utterance(u, max_speed)
            (skipped.append((u.utt_id, why)) if why else kept.append(u))
        if rank == 0:
            (exp_dir / "skipped_utts.txt").write_text("".join(f"{u}\t{why}\n" for u, why in skipped))
        if not kept:
            raise ValueError(f"train.train_data: none of the {len(train_utts)} utterances of {tc.train_data} is usable "
                             f"({_unusable(tc.train_data, train_utts, skipped)}); nothing to train on, no package written")
        self.train_utts = kept
        for u in dev_utts:
            if (why := model.check_utterance(u)) is not None:
                log.warning("dev utterance %s: %s", u.utt_id, why)
        if skipped:
            log.warning("skipping %d training utterances (listed in %s)", len(skipped), exp_dir / "skipped_utts.txt")

        if tc.train_shards:  # streamed from tar shards; train_data still gives the vocabulary and the filter above
            from .shards import ShardLoader

            self.sampler = self.loader = ShardLoader(tc.train_shards, cfg.features.sample_rate, cfg.augment,
                                                     tc.batch_seconds, tc.max_batch_size, tc.seed, rank, world,
                                                     tc.num_workers, keep=[u.utt_id for u in kept])
        else:
            self.sampler = BucketBatchSampler([u.duration for u in kept], tc.batch_seconds, tc.max_batch_size,
                                              shuffle=True, seed=tc.seed, rank=rank, world_size=world,
                                              sorted_epochs=tc.sortagrad)
            loader_gen = torch.Generator().manual_seed(tc.seed)  # keeps DataLoader seeding off the global RNG
            dataset = AudioDataset(kept, cfg.features.sample_rate, cfg.augment, tc.seed)
            self.loader = make_loader(dataset, self.sampler, tc.num_workers, loader_gen)
        self.dev_loader = (eval_batches(dev_utts, cfg.features.sample_rate, tc.batch_seconds, tc.max_batch_size)
                           if dev_utts else None)
        log.info("%d batches per epoch, padding efficiency %.3f", len(self.sampler), self.sampler.padding_efficiency())

        steps_per_epoch = max(1, len(self.sampler) // tc.grad_accum)
        self.total_steps = tc.max_steps or tc.max_epochs * steps_per_epoch
        decay = [p for n, p in model.named_parameters() if p.dim() > 1]
        no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(tc.warmup_steps, self.total_steps, tc.final_lr_ratio))
        self.use_amp = device.type == "cuda" and tc.amp in ("bf16", "fp16")
        self.amp_dtype = torch.bfloat16 if tc.amp == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and tc.amp == "fp16")

        self.net = model
        if world > 1:  # DDP hooks run on forward(), so wrap compute_loss as one
            self.net = torch.nn.parallel.DistributedDataParallel(
                _LossForward(model), device_ids=[device.index] if device.type == "cuda" else None)

        self.metric, self.mode = cls.best_metric
        self.step_count, self.epoch, self.position, self.best, self.bad_evals = 0, 0, 0, None, 0
        if state is not None:
            model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"]["torch"])
            if device.type == "cuda" and "cuda" in state["rng"]:
                torch.cuda.set_rng_state(state["rng"]["cuda"], device)
            self.step_count, self.epoch, self.position = state["step"], state["epoch"], state["position"]
            self.best, self.bad_evals = state["best"], state["bad_evals"]
            log.info("resumed from step %d (epoch %d, batch %d)", self.step_count, self.epoch, self.position)
        self.csv_log = CSVLog(exp_dir / "train_log.csv", self.step_count if state is not None else -1)
        self.evaluated_at = max((int(r["step"]) for r in self.csv_log.rows if r["split"] == "dev"), default=-1)
        # what the current optimizer step's micro-batches and the current log row have seen
        self.loss_sum, self.loss_n = 0.0, 0
        self.t_last, self.utts_since, self.audio_since = time.time(), 0, 0.0
        self.bar = None
        self.bad_log = None

    def checkpoint(self) -> None:
        """Everything an exact resume needs, atomically (rank 0 only)."""
        if self.rank != 0:
            return
        device = self.device
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        ckpt.save_checkpoint({
            "model": self.model.state_dict(), "model_meta": self.model.package_meta(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng, "step": self.step_count, "epoch": self.epoch,
            "position": self.position, "best": self.best, "bad_evals": self.bad_evals,
        }, ckpt.checkpoint_path(self.ckpt_dir, self.step_count))
        ckpt.prune_checkpoints(self.ckpt_dir, self.tc.keep_checkpoints)

    def evaluate(self) -> bool:
        """Evaluate on dev; save the package if best. Returns True when early stopping triggers."""
        if self.dev_loader is None or self.rank != 0:
            return False
        model, metric, step = self.model, self.metric, self.step_count
        self.evaluated_at = step
        model.eval()
        t0 = time.time()
        res = model.evaluate(b.to(self.device) for b in self.dev_loader)
        model.train()
        best = self.best
        improved = best is None or (res[metric] < best[metric] if self.mode == "min" else res[metric] > best[metric])
        self.log.info("step %d dev: %s (%.1f s)%s", step, " ".join(f"{k}={v:.4g}" for k, v in res.items()),
                      time.time() - t0, "  *best*" if improved else "")
        self.csv_log.add(step=step, epoch=self.epoch, split="dev", **{k: round(v, 5) for k, v in res.items()})
        if improved:
            self.best, self.bad_evals = {**res, "step": step}, 0
            save_package(model, self.exp_dir / PACKAGE_FILE,
                         {**(self.info or {}), "dev": {k: round(v, 4) for k, v in res.items()}, "step": step})
        else:
            self.bad_evals += 1
        plot_curves(self.csv_log.rows, metric, self.exp_dir / "train_curve.png")
        return bool(self.tc.patience) and self.bad_evals >= self.tc.patience

    def _agree(self, flag: bool) -> bool:
        """Rank 0's early-stopping decision for every rank: one that trained on would wait forever."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        torch.distributed.broadcast(t, 0)
        return bool(t.item())

    def _bad(self, utt: str, why: str, what: str) -> None:
        self.log.warning("%s %s: %s", what, utt, why)
        if self.bad_log:
            self.bad_log.write(f"{utt}\t{why}\n")

    def step(self, batch) -> bool:
        """One loader batch: forward and backward, and every grad_accum-th batch with a loss the
        optimizer update, the log row, the scheduled evaluation and checkpoint. Returns True when
        training is over (step budget spent or early stopping)."""
        tc, device = self.tc, self.device
        self.position += 1
        self.bar.update(1)
        for utt, why in batch.errors:
            self._bad(utt, why, "skipped")
        if len(batch) == 0 and self.world == 1:
            return False
        batch.to(device)
        with torch.autocast(device.type, dtype=self.amp_dtype) if self.use_amp else nullcontext():
            out = self.net(batch) if self.world > 1 else self.model.compute_loss(batch)
        for utt, why in out.dropped:
            self._bad(utt, why, "dropped")
        if out.loss is None:
            return False
        self.scaler.scale(out.loss / tc.grad_accum).backward()
        if not isinstance(out, _IdleLoss):
            self.loss_sum, self.loss_n = self.loss_sum + float(out.loss.detach()), self.loss_n + 1
        self.utts_since += len(batch)
        self.audio_since += float(batch.wav_lens.sum()) / self.cfg.features.sample_rate
        if self.position % tc.grad_accum:
            return False
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip_grad_norm))
        if math.isfinite(grad_norm):
            self.scaler.step(self.optimizer)
        else:
            self.log.warning("step %d: non-finite gradient norm, update skipped", self.step_count)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step_count += 1
        step = self.step_count
        if _KILL_AT_STEP and step == _KILL_AT_STEP:
            os.kill(os.getpid(), signal.SIGKILL)
        loss_value = self.loss_sum / max(self.loss_n, 1)
        self.bar.set_postfix(loss=f"{loss_value:.3f}", step=step)
        if step % tc.log_every == 0 and self.world > 1:  # log the loss of every rank's batches, not rank 0's alone
            t = torch.tensor([self.loss_sum, self.loss_n], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(t)
            loss_value = float(t[0] / t[1].clamp(min=1))
        self.loss_sum, self.loss_n = 0.0, 0
        if step % tc.log_every == 0 and self.rank == 0:
            dt = time.time() - self.t_last
            self.csv_log.add(step=step, epoch=self.epoch, split="train", loss=round(loss_value, 5),
                             lr=f"{self.scheduler.get_last_lr()[0]:.3g}", grad_norm=round(grad_norm, 4),
                             utts_per_s=round(self.utts_since / dt, 2), audio_s_per_s=round(self.audio_since / dt, 2))
            self.t_last, self.utts_since, self.audio_since = time.time(), 0, 0.0
        stop = False
        if tc.eval_every and step % tc.eval_every == 0:
            stop = self._agree(self.evaluate())
        if step % tc.checkpoint_every == 0:
            self.checkpoint()
        return step >= self.total_steps or stop

    def fit(self) -> dict:
        """Train to the step budget, max_epochs or early stopping; returns the best evaluation."""
        tc = self.tc
        self.model.train()
        self.bad_log = open(self.exp_dir / "bad_utts.txt", "a") if self.rank == 0 else None
        # A run that stopped early stays stopped on --resume (unless train.patience was raised).
        stop = self.step_count >= self.total_steps or (bool(tc.patience) and self.bad_evals >= tc.patience)
        self.t_last, self.utts_since, self.audio_since = time.time(), 0, 0.0
        self.loss_sum, self.loss_n = 0.0, 0
        while not stop and self.epoch < tc.max_epochs:
            self.sampler.load_state_dict({"epoch": self.epoch, "position": self.position})
            # With grad_accum > 1 an epoch can end between optimizer steps: its leftover micro-batch
            # gradient is dropped rather than leaked into the next epoch's first step.
            self.optimizer.zero_grad(set_to_none=True)
            self.bar = tqdm(total=len(self.sampler), initial=self.position, desc=f"epoch {self.epoch + 1}",
                            disable=None if self.rank == 0 else True, dynamic_ncols=True, file=sys.stderr, leave=False)
            for batch in self.loader:
                if self.step(batch):
                    stop = True
                    break
            self.bar.close()
            if not stop:
                self.epoch, self.position = self.epoch + 1, 0
                self.log.info("epoch %d done (step %d)", self.epoch, self.step_count)
                if not tc.eval_every:
                    stop = self._agree(self.evaluate())
                self.checkpoint()
        return self.finish()

    def finish(self) -> dict:
        """The last evaluation if the budget ran out between two, the final checkpoint, the package
        (with the model's after-training hook run on its weights) and the curves."""
        exp_dir, device, cfg, tc = self.exp_dir, self.device, self.cfg, self.tc
        if self.evaluated_at != self.step_count:
            self.evaluate()  # the step budget ran out between evaluations: the last steps still count
        if self.bad_log:
            self.bad_log.close()
        if self.dev_loader is None and self.rank == 0:
            save_package(self.model, exp_dir / PACKAGE_FILE, {**(self.info or {}), "step": self.step_count})
        self.checkpoint()
        if self.rank == 0:
            # The hook (a speaker model's scoring back-end) runs on the weights that ship: those of the
            # best package, not of the last step.
            final = load_package(exp_dir / PACKAGE_FILE, device)

            def train_batches():  # built only if the hook reads them
                for b in eval_batches(self.train_utts, cfg.features.sample_rate, tc.batch_seconds, tc.max_batch_size):
                    yield b.to(device)

            if extra := final.after_training(train_batches()):
                save_package(final, exp_dir / PACKAGE_FILE, {**final.info, **extra})
                self.log.info("after training: %s", json.dumps(extra))
        if self.rank == 0 and self.csv_log.rows:
            plot_curves(self.csv_log.rows, self.metric, exp_dir / "train_curve.png")
        self.log.info("finished at step %d; best: %s", self.step_count, self.best)
        if self.world > 1:
            torch.distributed.destroy_process_group()
        return self.best or {}


def train(cfg: ExperimentConfig, exp_dir: str | Path, resume: bool = False, max_steps: int | None = None,
          device: str | None = None, info: dict | None = None) -> dict:
    """Train `cfg` into `exp_dir`; returns the best evaluation. Re-running with resume=True continues
    from the newest valid checkpoint exactly as if the run had not stopped."""
    return Trainer(cfg, exp_dir, resume, max_steps, device, info).fit()

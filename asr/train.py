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


def train(cfg: ExperimentConfig, exp_dir: str | Path, resume: bool = False, max_steps: int | None = None,
          device: str | None = None, info: dict | None = None) -> dict:
    """Train `cfg` into `exp_dir`; returns the best evaluation. Re-running with resume=True continues
    from the newest valid checkpoint exactly as if the run had not stopped."""
    cls = model_class(cfg.model.arch)
    if not issubclass(cls, TrainableModel):
        raise ValueError(f"model.arch: {cfg.model.arch} models are not trained; `asr ensemble` combines trained ones")
    tc = cfg.train
    if max_steps is not None:
        tc.max_steps = max_steps
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = exp_dir / "checkpoints"
    log = setup_logging(exp_dir, rank)
    seed_everything(tc.seed)
    if rank == 0:
        dump_config(cfg, exp_dir / "config.yaml")

    state = ckpt.load_latest(ckpt_dir, log.warning) if resume else None
    if resume and state is None:
        log.info("no checkpoint in %s: starting from scratch", ckpt_dir)

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
    train_utts = kept
    for u in dev_utts:
        if (why := model.check_utterance(u)) is not None:
            log.warning("dev utterance %s: %s", u.utt_id, why)
    if skipped:
        log.warning("skipping %d training utterances (listed in %s)", len(skipped), exp_dir / "skipped_utts.txt")

    if tc.train_shards:  # streamed from tar shards; train_data still gives the vocabulary and the filter above
        from .shards import ShardLoader

        sampler = loader = ShardLoader(tc.train_shards, cfg.features.sample_rate, cfg.augment, tc.batch_seconds,
                                       tc.max_batch_size, tc.seed, rank, world, tc.num_workers,
                                       keep=[u.utt_id for u in train_utts])
    else:
        sampler = BucketBatchSampler([u.duration for u in train_utts], tc.batch_seconds, tc.max_batch_size,
                                     shuffle=True, seed=tc.seed, rank=rank, world_size=world)
        loader_gen = torch.Generator().manual_seed(tc.seed)  # keeps DataLoader seeding off the global RNG
        dataset = AudioDataset(train_utts, cfg.features.sample_rate, cfg.augment, tc.seed)
        loader = make_loader(dataset, sampler, tc.num_workers, loader_gen)
    dev_loader = eval_batches(dev_utts, cfg.features.sample_rate, tc.batch_seconds, tc.max_batch_size) if dev_utts else None
    log.info("%d batches per epoch, padding efficiency %.3f", len(sampler), sampler.padding_efficiency())

    steps_per_epoch = max(1, len(sampler) // tc.grad_accum)
    total_steps = tc.max_steps or tc.max_epochs * steps_per_epoch
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tc.warmup_steps, total_steps, tc.final_lr_ratio))
    use_amp = device.type == "cuda" and tc.amp in ("bf16", "fp16")
    amp_dtype = torch.bfloat16 if tc.amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and tc.amp == "fp16")

    net = model
    if world > 1:  # DDP hooks run on forward(), so wrap compute_loss as one
        net = torch.nn.parallel.DistributedDataParallel(_LossForward(model),
                                                        device_ids=[device.index] if device.type == "cuda" else None)

    metric, mode = cls.best_metric
    step, epoch, position, best, bad_evals = 0, 0, 0, None, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        step, epoch, position = state["step"], state["epoch"], state["position"]
        best, bad_evals = state["best"], state["bad_evals"]
        log.info("resumed from step %d (epoch %d, batch %d)", step, epoch, position)
    csv_log = CSVLog(exp_dir / "train_log.csv", step if state is not None else -1)
    evaluated_at = max((int(r["step"]) for r in csv_log.rows if r["split"] == "dev"), default=-1)

    def save_state():
        if rank != 0:
            return
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        ckpt.save_checkpoint({
            "model": model.state_dict(), "model_meta": model.package_meta(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng, "step": step,
            "epoch": epoch, "position": position, "best": best, "bad_evals": bad_evals,
        }, ckpt.checkpoint_path(ckpt_dir, step))
        ckpt.prune_checkpoints(ckpt_dir, tc.keep_checkpoints)

    def run_eval() -> bool:
        """Evaluate on dev; save the package if best. Returns True when early stopping triggers."""
        nonlocal best, bad_evals, evaluated_at
        if dev_loader is None or rank != 0:
            return False
        evaluated_at = step
        model.eval()
        t0 = time.time()
        res = model.evaluate(b.to(device) for b in dev_loader)
        model.train()
        improved = best is None or (res[metric] < best[metric] if mode == "min" else res[metric] > best[metric])
        log.info("step %d dev: %s (%.1f s)%s", step, " ".join(f"{k}={v:.4g}" for k, v in res.items()),
                 time.time() - t0, "  *best*" if improved else "")
        csv_log.add(step=step, epoch=epoch, split="dev", **{k: round(v, 5) for k, v in res.items()})
        if improved:
            best, bad_evals = {**res, "step": step}, 0
            save_package(model, exp_dir / PACKAGE_FILE, {**(info or {}), "dev": {k: round(v, 4) for k, v in res.items()},
                                                          "step": step})
        else:
            bad_evals += 1
        plot_curves(csv_log.rows, metric, exp_dir / "train_curve.png")
        return bool(tc.patience) and bad_evals >= tc.patience

    def agree(flag: bool) -> bool:
        """Rank 0's early-stopping decision for every rank: one that trained on would wait forever."""
        if world == 1:
            return flag
        t = torch.tensor([int(flag)], device=device)
        torch.distributed.broadcast(t, 0)
        return bool(t.item())

    model.train()
    bad_log = open(exp_dir / "bad_utts.txt", "a") if rank == 0 else None
    # A run that stopped early stays stopped on --resume (unless train.patience was raised).
    stop = step >= total_steps or (bool(tc.patience) and bad_evals >= tc.patience)
    t_last, utts_since, audio_since = time.time(), 0, 0.0
    loss_sum, loss_n = 0.0, 0  # over the micro-batches of one optimizer step
    while not stop and epoch < tc.max_epochs:
        sampler.load_state_dict({"epoch": epoch, "position": position})
        # With grad_accum > 1 an epoch can end between optimizer steps: its leftover micro-batch
        # gradient is dropped rather than leaked into the next epoch's first step.
        optimizer.zero_grad(set_to_none=True)
        bar = tqdm(total=len(sampler), initial=position, desc=f"epoch {epoch + 1}", disable=None if rank == 0 else True,
                   dynamic_ncols=True, file=sys.stderr, leave=False)
        for batch in loader:
            position += 1
            bar.update(1)
            for utt, why in batch.errors:
                log.warning("skipped %s: %s", utt, why)
                bad_log and bad_log.write(f"{utt}\t{why}\n")
            if len(batch) == 0 and world == 1:
                continue
            batch.to(device)
            with torch.autocast(device.type, dtype=amp_dtype) if use_amp else nullcontext():
                out = net(batch) if world > 1 else model.compute_loss(batch)
            for utt, why in out.dropped:
                log.warning("dropped %s: %s", utt, why)
                bad_log and bad_log.write(f"{utt}\t{why}\n")
            if out.loss is None:
                continue
            scaler.scale(out.loss / tc.grad_accum).backward()
            if not isinstance(out, _IdleLoss):
                loss_sum, loss_n = loss_sum + float(out.loss.detach()), loss_n + 1
            utts_since += len(batch)
            audio_since += float(batch.wav_lens.sum()) / cfg.features.sample_rate
            if position % tc.grad_accum:
                continue
            scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad_norm))
            if math.isfinite(grad_norm):
                scaler.step(optimizer)
            else:
                log.warning("step %d: non-finite gradient norm, update skipped", step)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            if _KILL_AT_STEP and step == _KILL_AT_STEP:
                os.kill(os.getpid(), signal.SIGKILL)
            loss_value = loss_sum / max(loss_n, 1)
            bar.set_postfix(loss=f"{loss_value:.3f}", step=step)
            if step % tc.log_every == 0 and world > 1:  # log the loss of every rank's batches, not rank 0's alone
                t = torch.tensor([loss_sum, loss_n], dtype=torch.float64, device=device)
                torch.distributed.all_reduce(t)
                loss_value = float(t[0] / t[1].clamp(min=1))
            loss_sum, loss_n = 0.0, 0
            if step % tc.log_every == 0 and rank == 0:
                dt = time.time() - t_last
                csv_log.add(step=step, epoch=epoch, split="train", loss=round(loss_value, 5),
                            lr=f"{scheduler.get_last_lr()[0]:.3g}", grad_norm=round(grad_norm, 4),
                            utts_per_s=round(utts_since / dt, 2), audio_s_per_s=round(audio_since / dt, 2))
                t_last, utts_since, audio_since = time.time(), 0, 0.0
            if tc.eval_every and step % tc.eval_every == 0:
                stop = agree(run_eval())
            if step % tc.checkpoint_every == 0:
                save_state()
            if step >= total_steps or stop:
                stop = True
                break
        bar.close()
        if not stop:
            epoch, position = epoch + 1, 0
            log.info("epoch %d done (step %d)", epoch, step)
            if not tc.eval_every:
                stop = agree(run_eval())
            save_state()
    if evaluated_at != step:
        run_eval()  # the step budget ran out between evaluations: the last steps still count
    if bad_log:
        bad_log.close()
    if dev_loader is None and rank == 0:
        save_package(model, exp_dir / PACKAGE_FILE, {**(info or {}), "step": step})
    save_state()
    if rank == 0:
        # The hook (a speaker model's scoring back-end) runs on the weights that ship: those of the
        # best package, not of the last step.
        final = load_package(exp_dir / PACKAGE_FILE, device)

        def train_batches():  # built only if the hook reads them
            for b in eval_batches(train_utts, cfg.features.sample_rate, tc.batch_seconds, tc.max_batch_size):
                yield b.to(device)

        if extra := final.after_training(train_batches()):
            save_package(final, exp_dir / PACKAGE_FILE, {**final.info, **extra})
            log.info("after training: %s", json.dumps(extra))
    if rank == 0 and csv_log.rows:
        plot_curves(csv_log.rows, metric, exp_dir / "train_curve.png")
    log.info("finished at step %d; best: %s", step, best)
    if world > 1:
        torch.distributed.destroy_process_group()
    return best or {}

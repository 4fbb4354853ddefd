"""Training: AdamW + DistillationLoss, ReduceLROnPlateau, early stopping, best encoder/head,
atomic checkpoints, resumable runs, history.csv every epoch and loss_curves.png kept current.

`train_run` is the entry point: one Dataset and the three configs in, a run folder and its
summary out. loss_curves.png is redrawn after every epoch as long as the redraws stay within
`TrainConfig.curves_budget` of the training time, so with epochs of a second or more it is
redrawn every epoch; with very short epochs some redraws are skipped. The last epoch of a run,
and the epoch at which a run fails, are always drawn.
Train clips without a hard label (a transfer set) learn from the soft term only: the hard term (and
train_hard) is the mean over each batch's labelled clips; with alpha = 0 they are left out of training.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchaudio
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .atomic import atomic_save, atomic_write_text
from .config import AudioConfig, ModelConfig, TrainConfig
from .data import ClipDataset, Dataset, collate_clips, training_clips
from .early_stopping import EarlyStopping
from .losses import DistillationLoss
from .metrics import classification_metrics
from .models import ClipClassifier
from .run_folders import ON_CONFLICT, check_same_config, place_run, run_config
from .seeding import rng_state, seed_everything, set_rng_state

# What a first loss_curves.png redraw is assumed to cost before one has been timed (seconds).
FIRST_DRAW_GUESS_S = 0.15


def pick_device(name: str = "auto") -> torch.device:
    """The torch device `TrainConfig.device` names; "auto" is CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _random_segments(mask: torch.Tensor) -> torch.Tensor:
    """One real segment index per clip, drawn with the global torch RNG (saved with each checkpoint)."""
    n_real = mask.sum(dim=1).cpu()
    return (torch.rand(n_real.shape) * n_real).long().clamp_max(n_real - 1).to(mask.device)


def spec_augment(feats: torch.Tensor, freq_mask: int, time_mask: int) -> torch.Tensor:
    """SpecAugment on segment features `[B, S, n_mels, frames]`: per segment, one run of up to
    `freq_mask` bands and one of up to `time_mask` frames (torchaudio's masking) set to the batch's mean level."""
    shape = feats.shape
    x = feats.reshape(-1, 1, shape[-2], shape[-1])
    fill = float(x.mean())
    if freq_mask:
        x = torchaudio.functional.mask_along_axis_iid(x, freq_mask, fill, axis=2)
    if time_mask:
        x = torchaudio.functional.mask_along_axis_iid(x, time_mask, fill, axis=3)
    return x.reshape(shape)


class Trainer:
    """Trains a ClipClassifier with DistillationLoss into `run_dir`; resumable from last.pt."""

    def __init__(self, model: ClipClassifier, train_set: ClipDataset, val_set: ClipDataset,
                 cfg: TrainConfig, run_dir, audio: AudioConfig, model_cfg: ModelConfig,
                 extra_config: dict | None = None):
        self.model, self.train_set, self.val_set, self.cfg = model, train_set, val_set, cfg
        self.run_dir = Path(run_dir)
        self.audio, self.model_cfg = audio, model_cfg
        self.device = pick_device(cfg.device)
        # the data was checked where it was loaded: no per-batch checks (each one is a device sync)
        self.loss_fn = DistillationLoss(cfg.alpha, cfg.temperature, class_weights=(
            torch.tensor(cfg.class_weights, dtype=torch.float32) if cfg.class_weights else None), validate=False)
        self.config = run_config(cfg, audio, model_cfg, len(train_set), len(val_set), extra_config)

    # -- one pass -------------------------------------------------------------------------
    def _loader(self, dataset, shuffle: bool, epoch: int) -> DataLoader:
        gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)  # same order on resume
        return DataLoader(dataset, batch_size=self.cfg.batch_size, shuffle=shuffle, generator=gen,
                          collate_fn=collate_clips, num_workers=self.cfg.num_workers)

    def _run_epoch(self, model: ClipClassifier, dataset, train: bool, epoch: int, optimizer=None) -> dict:
        """One pass of `model` over `dataset`, training when `train`: the mean loss terms and, on validation,
        the metrics."""
        model.train(train)
        sums = {"total": 0.0, "soft": 0.0, "hard": 0.0}
        n = n_soft = n_hard = 0
        labels, probs = [], []
        loader = self._loader(dataset, shuffle=train, epoch=epoch)
        bar = tqdm(loader, desc=f"epoch {epoch + 1} {'train' if train else 'val'}", leave=False,
                   disable=not self.cfg.progress)
        amp = self.cfg.amp and self.device.type == "cuda"
        for batch in bar:
            feats, mask, hard, hard_mask, soft, soft_target = self._batch(batch, train)
            with torch.set_grad_enabled(train), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                logits, seg_logits = model(feats, mask)
                parts = self.loss_fn.distill(logits, hard, soft["clip"], soft["clip_mask"], soft_target,
                                             seg_logits, mask, soft["segment"], soft["segment_mask"], hard_mask)
            if train:
                optimizer.zero_grad(set_to_none=True)
                parts["total"].backward()
                optimizer.step()
            b, b_soft = hard.shape[0], int(parts["soft_rows"])
            b_hard = b if hard_mask is None else int(parts["hard_rows"])
            sums["total"] += parts["total"].item() * b
            sums["hard"] += parts["hard"].item() * b_hard  # the hard term averages over rows with a label
            sums["soft"] += parts["soft"].item() * b_soft  # the soft term averages over rows with a teacher
            n, n_soft, n_hard = n + b, n_soft + b_soft, n_hard + b_hard
            if not train:
                labels.append(hard.cpu())
                probs.append(torch.softmax(logits.float(), dim=-1)[:, 1].cpu())
            bar.set_postfix(loss=f"{sums['total'] / n:.4f}")
        out = {"total": sums["total"] / n, "hard": sums["hard"] / n_hard if n_hard else float("nan"),
               "soft": sums["soft"] / n_soft if n_soft else float("nan")}
        if not train:
            y, p = torch.cat(labels).numpy(), torch.cat(probs).numpy()
            metrics = classification_metrics(y, p if np.isfinite(p).all() else np.zeros_like(p))
            if not np.isfinite(p).all():  # diverged: metrics are undefined; the NaN loss stops the run
                metrics = {k: float("nan") for k in metrics}
            out.update(metrics)
        return out

    def _batch(self, batch: dict, train: bool) -> tuple:
        """A collated batch on the device as the model and the loss take it: (features, segment mask, hard labels,
        hard-label mask (None if all have one), soft targets {"clip", "clip_mask", "segment", "segment_mask"}, mode).

        A segment without its own teacher label takes its clip's. With random_segment in training one
        segment per clip stands for the clip, and (soft_target "segment") its label is the clip's target.
        """
        dev, cfg = self.device, self.cfg
        feats, mask, hard = batch["features"].to(dev), batch["segment_mask"].to(dev), batch["label"].to(dev)
        hard_mask = None if bool(batch["label_mask"].all()) else batch["label_mask"].to(dev)  # checked on the CPU
        soft, soft_mask = batch["soft_clip"].to(dev), batch["soft_clip_mask"].to(dev)
        seg_soft, seg_soft_mask = batch["soft_segment"].to(dev), batch["soft_segment_mask"].to(dev)
        mode = cfg.soft_target
        if mode == "segment":
            fill = ~seg_soft_mask & soft_mask.unsqueeze(1)
            seg_soft = torch.where(fill.unsqueeze(-1), soft.unsqueeze(1).expand_as(seg_soft), seg_soft)
            seg_soft_mask = seg_soft_mask | fill
        if train and cfg.random_segment:
            rows, pick = torch.arange(feats.shape[0], device=dev), _random_segments(mask)
            feats, mask = feats[rows, pick].unsqueeze(1), mask.new_ones(feats.shape[0], 1)
            if mode == "segment":
                soft, soft_mask = seg_soft[rows, pick], seg_soft_mask[rows, pick]
            mode = "clip"
        if train and (cfg.freq_mask or cfg.time_mask):
            feats = spec_augment(feats, cfg.freq_mask, cfg.time_mask)
        return feats, mask, hard, hard_mask, {"clip": soft, "clip_mask": soft_mask, "segment": seg_soft,
                                              "segment_mask": seg_soft_mask}, mode

    # -- the loop ---------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        """Train until early stopping or `epochs`; returns the summary also written to result.json."""
        cfg, run = self.cfg, self.run_dir
        run.mkdir(parents=True, exist_ok=True)
        self.model.to(self.device)
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience)
        early = EarlyStopping(patience=cfg.patience, min_delta=cfg.min_delta, mode="min", monitor="val_loss")
        history: list[dict] = []
        start_epoch = 0

        last = run / "last.pt"
        if resume and last.exists():
            check_same_config(run / "config.json", self.config)
            state = torch.load(last, map_location=self.device, weights_only=True)
            self.model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            early.load_state_dict(state["early_stopping"])
            set_rng_state(state["rng"])
            history = list(state["history"])
            start_epoch = int(state["epoch"]) + 1
            if state.get("finished"):
                return self._result(history, early)
        else:
            seed_everything(cfg.seed)
            for stale in ("last.pt", "result.json", "encoder.pt", "head.pt", "history.csv"):
                (run / stale).unlink(missing_ok=True)
        atomic_write_text(json.dumps(self.config, indent=2, default=str), run / "config.json")

        self._curves, self._t_fit, self._t_drawing, self._n_draws, self._drawn_epochs = (
            None, time.perf_counter(), 0.0, 0, 0)
        epochs = tqdm(range(start_epoch, cfg.epochs), desc=f"train {run.name}", initial=start_epoch,
                      total=cfg.epochs, disable=not cfg.progress)
        try:
            self._fit_epochs(epochs, start_epoch, optimizer, scheduler, early, history)
        finally:
            epochs.close()
            if history and self._drawn_epochs != len(history):
                self._draw_curves(history)  # the last state is on the PNG, even when training failed
        return self._result(history, early)

    def _fit_epochs(self, epochs, start_epoch: int, optimizer, scheduler, early: EarlyStopping,
                    history: list[dict]) -> None:
        cfg, run = self.cfg, self.run_dir
        last = run / "last.pt"
        for epoch in epochs:
            t0 = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            tr = self._run_epoch(self.model, self.train_set, True, epoch, optimizer)
            with torch.no_grad():  # validated as it will be used: a copy with BatchNorm folded into the convs
                va = self._run_epoch(copy.deepcopy(self.model).fuse(), self.val_set, False, epoch)
            scheduler.step(va["total"])
            stop = early.step(va["total"])
            row = {"epoch": epoch + 1, "lr": lr,
                   **{f"train_{k}": v for k, v in tr.items()}, **{f"val_{k}": v for k, v in va.items()},
                   "seconds": time.perf_counter() - t0}
            history.append(row)
            if early.best_epoch == epoch:  # the best epoch so far: save the seed's "best encoder and head"
                atomic_save(self.model.encoder.state_dict(), run / "encoder.pt")
                atomic_save(self.model.head.state_dict(), run / "head.pt")
            finished = stop or epoch + 1 == cfg.epochs
            atomic_save({
                "model": self.model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "early_stopping": early.state_dict(),
                "rng": rng_state(), "epoch": epoch, "history": history, "finished": finished,
            }, last)
            self._write_history(history, final=finished)
            epochs.set_postfix(val_loss=f"{va['total']:.4f}", f1=f"{va['macro_f1']:.3f}", lr=f"{lr:.1e}")
            if stop:
                break

    # -- outputs ----------------------------------------------------------------------------
    def _write_history(self, history: list[dict], final: bool) -> None:
        df = pd.DataFrame(history)
        atomic_write_text(df.to_csv(index=False, float_format="%.6g"), self.run_dir / "history.csv")
        elapsed = time.perf_counter() - self._t_fit
        next_cost = self._t_drawing / self._n_draws if self._n_draws else FIRST_DRAW_GUESS_S
        budget = self.cfg.curves_budget
        if final or budget >= 1 or self._t_drawing + next_cost <= budget * elapsed:
            self._draw_curves(history)

    def _draw_curves(self, history: list[dict]) -> None:
        """Redraw loss_curves.png from the history (one reused figure; atomic write)."""
        t0 = time.perf_counter()
        if self._curves is None:
            from .plots import LossCurves  # matplotlib is only needed once there is a history

            self._curves = LossCurves(title=self.run_dir.name, pyplot=False)
        self._curves.update(pd.DataFrame(history))
        self._curves.save(self.run_dir / "loss_curves.png")
        self._t_drawing += time.perf_counter() - t0
        self._n_draws += 1
        self._drawn_epochs = len(history)

    def _result(self, history: list[dict], early: EarlyStopping) -> dict:
        best = history[early.best_epoch] if early.best_epoch is not None and history else {}
        if early.stop_reason:
            reason = early.stop_reason
        elif history and len(history) >= self.cfg.epochs:
            reason = f"reached the epoch budget ({self.cfg.epochs})"
        else:
            reason = "not finished"
        result = {
            "run_dir": str(self.run_dir), "epochs_run": len(history),
            "best_epoch": int(early.best_epoch) + 1 if early.best_epoch is not None else None,
            "stop_reason": reason,
            "best": {k: v for k, v in best.items() if k.startswith("val_")},
        }
        atomic_write_text(json.dumps(result, indent=2), self.run_dir / "result.json")
        return result


def train_run(run_dir, data: Dataset, cfg: TrainConfig, audio: AudioConfig, model_cfg: ModelConfig,
              resume: bool = True, extra_config: dict | None = None, on_conflict: str = "raise") -> dict:
    """Seed, build the model, train on `data`'s train split, validate on its val split; returns the
    run's summary (also in result.json; "run_dir" is where it trained).

    Soft labels are restricted to train and val clips first, so a test clip's teacher label can
    never reach training; clips without a hard label are picked by `data.training_clips`. `extra_config`
    adds entries to config.json. With `resume`, a run left in `run_dir` continues (or, finished, returns
    its summary); when that run was trained with other settings, `on_conflict` says what happens: "raise"
    a ValueError, or "new": leave it untouched and train in `<run_dir>-<hash of the settings>` beside it
    (see run_folders.place_run); the summary's "note" then says so, and is printed.
    """
    if on_conflict not in ON_CONFLICT:
        raise ValueError(f"on_conflict={on_conflict!r}; expected one of {ON_CONFLICT}")
    seed_everything(cfg.seed)
    model = ClipClassifier(audio, model_cfg)
    train_m, val_m = training_clips(data.split("train"), data.soft, cfg.alpha, cfg.soft_target), data.split("val")
    if len(train_m) == 0 or len(val_m) == 0:
        raise ValueError(f"need train and val clips, got {len(train_m)} train and {len(val_m)} val")
    soft = data.soft.restrict(list(train_m.clip_ids) + list(val_m.clip_ids)) if data.soft is not None else None
    train_set, val_set = ClipDataset(train_m, data.features, soft), ClipDataset(val_m, data.features, soft)
    run_dir, note = Path(run_dir), None
    if resume and on_conflict == "new":
        config = run_config(cfg, audio, model_cfg, len(train_set), len(val_set), extra_config)
        run_dir, note = place_run(run_dir, config, cfg, audio, model_cfg, data.key)
        if note:
            print(note)
    result = Trainer(model, train_set, val_set, cfg, run_dir, audio, model_cfg, extra_config).fit(resume=resume)
    return {**result, "note": note} if note else result

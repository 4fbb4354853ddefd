"""Figures for the workbook: loss curves, calibration, confusion, sweeps and data views."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .config import CLASSES
from .atomic import atomic_write
from .data import UNLABELLED, parse_label
from .metrics import reliability_bins


class LossCurves:
    """One loss-curve figure (total, soft, hard for train and val, and the LR), redrawn in place."""

    PARTS = ("total", "soft", "hard")

    def __init__(self, title: str | None = None, baseline: pd.DataFrame | None = None, pyplot: bool = True):
        # Without pyplot the figure is a bare Agg Figure: cheap to redraw, never shown, never leaked.
        if pyplot:
            self.fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
        else:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            self.fig = Figure(figsize=(15, 3.2))
            FigureCanvasAgg(self.fig)
            axes = self.fig.subplots(1, 4)
        self.axes, self.lines, self.empty = axes, {}, {}
        for ax, part in zip(axes[:3], self.PARTS):
            for split, style in (("train", "-"), ("val", "--")):
                col = f"{split}_{part}"
                self.lines[col], = ax.plot([], [], style, marker=".", label=split)
                if baseline is not None and col in baseline and baseline[col].notna().any():
                    ax.plot(baseline["epoch"], baseline[col], style, color="grey", alpha=0.6,
                            label=f"{split} (hard-only)")
            ax.set_title(f"{part} loss")
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7, loc="upper right")
            self.empty[part] = ax.text(0.5, 0.5, "not used (alpha = 0)" if part == "soft" else "no data",
                                       ha="center", va="center", transform=ax.transAxes, color="grey")
        self.best_line = axes[0].axvline(0, color="green", alpha=0.4, lw=1, visible=False)
        self.best_text = axes[0].annotate("best", (0, 0), fontsize=7, visible=False)
        self.lines["lr"], = axes[3].plot([], [], marker=".")
        axes[3].set_yscale("log")
        axes[3].set_title("learning rate")
        axes[3].set_xlabel("epoch")
        if title:
            self.fig.suptitle(title, fontsize=10)
        self.fig.subplots_adjust(left=0.04, right=0.99, bottom=0.17, top=0.83, wspace=0.22)

    def update(self, history: pd.DataFrame):
        """Show `history` (one row per epoch); returns the figure."""
        epoch = history["epoch"].to_numpy() if "epoch" in history else np.arange(1, len(history) + 1)
        for col, line in self.lines.items():
            has = col in history and history[col].notna().any()
            line.set_data(epoch if has else [], history[col].to_numpy() if has else [])
            line.set_visible(has)
        for ax, part in zip(self.axes[:3], self.PARTS):
            none = not any(self.lines[f"{s}_{part}"].get_visible() for s in ("train", "val"))
            self.empty[part].set_visible(none)
            ax.get_legend().set_visible(not none)
        if "val_total" in history and history["val_total"].notna().any():
            best = history["val_total"].idxmin()
            x, y = history.loc[best, "epoch"], history.loc[best, "val_total"]
            self.best_line.set_xdata([x, x])
            self.best_text.xy = self.best_text.xyann = (x, y)  # xy alone moves only the (absent) arrow's tip
            self.best_line.set_visible(True)
            self.best_text.set_visible(True)
        for ax in self.axes:
            ax.relim(visible_only=True)
            ax.autoscale_view()
        return self.fig

    def save(self, path, dpi: int = 80) -> Path:
        """Write the figure as a PNG atomically."""
        return atomic_write(path, lambda f: self.fig.savefig(f, format="png", dpi=dpi))


def plot_loss_curves(history: pd.DataFrame, path=None, title: str | None = None, baseline: pd.DataFrame | None = None):
    """Total, soft and hard loss (train and val) and the learning rate per epoch; optional baseline run."""
    curves = LossCurves(title, baseline, pyplot=path is None)
    fig = curves.update(history)
    if path is not None:
        curves.save(path, dpi=110)
    return fig


def explore_sweep(table: pd.DataFrame, alpha: float, temperature: float, interactive: bool = True):
    """Notebook 04's view of an alpha x T sweep (`experiments.alpha_temperature_sweep`): one run's loss
    curves and best-epoch metrics beside the hard-only run (alpha = 0), chosen with two sliders
    (ipywidgets) or, with `interactive=False`, shown for `alpha` and `temperature` alone."""
    runs = {(r.alpha, r.temperature): r for r in table.itertuples()}
    hard_only = next((r for (a, _), r in runs.items() if a == 0.0), None)
    baseline = pd.read_csv(f"{hard_only.run_dir}/history.csv") if hard_only is not None else None
    cols = ["val_macro_f1", "val_accuracy", "val_roc_auc", "val_ece", "best_epoch"]

    def show_run(alpha: float, temperature: float):
        from IPython.display import display

        r = runs[(alpha, temperature)]
        plot_loss_curves(pd.read_csv(f"{r.run_dir}/history.csv"), title=f"alpha = {alpha:g}, T = {temperature:g}",
                         baseline=baseline)
        plt.show()
        rows = {f"alpha={alpha:g}, T={temperature:g}": table.loc[r.Index, cols]}
        if hard_only is not None:
            rows["hard-only (alpha=0)"] = table.loc[hard_only.Index, cols]
        display(pd.DataFrame(rows).T.round(4))

    if not interactive:
        return show_run(alpha, temperature)
    import ipywidgets as widgets
    from IPython.display import display

    sliders = {"alpha": widgets.SelectionSlider(options=sorted({a for a, _ in runs}), value=alpha,
                                                description="alpha", continuous_update=False),
               "temperature": widgets.SelectionSlider(options=sorted({t for _, t in runs}), value=temperature,
                                                      description="T", continuous_update=False)}
    out = widgets.interactive_output(show_run, sliders)
    display(widgets.HBox(list(sliders.values())), out)


def plot_reliability(results: dict, ax=None, n_bins: int = 15):
    """Reliability diagram: observed noise rate against mean predicted P(noise), one line per model."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect")
    for name, (y, p) in results.items():
        b = reliability_bins(y, p, n_bins)
        ok = b["count"] > 0
        ax.plot(b["mean_predicted"][ok], b["observed"][ok], marker="o", label=name)
    ax.set_xlabel("mean predicted P(noise)")
    ax.set_ylabel("observed fraction labelled noise")
    ax.set_title("reliability")
    ax.legend(fontsize=8)
    return ax


def plot_confusions(matrices: dict, axes=None):
    """One annotated 2x2 confusion matrix per model (rows true, columns predicted)."""
    import seaborn as sns

    if axes is None:
        _, axes = plt.subplots(1, len(matrices), figsize=(3.6 * len(matrices), 3.2))
    axes = np.atleast_1d(axes)
    for ax, (name, cm) in zip(axes, matrices.items()):
        sns.heatmap(cm, annot=True, fmt="d", cbar=False, cmap="Blues", ax=ax,
                    xticklabels=list(CLASSES), yticklabels=list(CLASSES))
        ax.set_xlabel("predicted")
        ax.set_ylabel("label")
        ax.set_title(name)
    return axes


def plot_sweep_heatmaps(table: pd.DataFrame, metrics=("val_macro_f1", "val_ece"), axes=None):
    """Seaborn heatmaps of sweep metrics over alpha (rows) x temperature (columns)."""
    import seaborn as sns

    if axes is None:
        _, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.8))
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        grid = table.pivot_table(index="alpha", columns="temperature", values=metric)
        sns.heatmap(grid, annot=True, fmt=".3f", cmap="viridis_r" if "ece" in metric else "viridis", ax=ax)
        ax.set_title(metric)
    return axes


def plot_label_balance(manifest_df: pd.DataFrame, ax=None):
    """Clips per split and hard label (train clips without one are counted as "unlabelled")."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    names = {**dict(enumerate(CLASSES)), UNLABELLED: "unlabelled"}
    counts = manifest_df.assign(label=manifest_df["label"].map(names)) \
        .groupby(["split", "label"]).size().unstack(fill_value=0).reindex(["train", "val", "test"])
    counts.plot.bar(ax=ax, rot=0, color=["tab:blue", "tab:red", "tab:gray"][:counts.shape[1]])
    ax.set_ylabel("clips")
    ax.set_title("label balance per split")
    return ax


def plot_examples(examples: list[tuple[str, np.ndarray, np.ndarray, int]], sample_rate: int):
    """Waveform (top) and log-mel of the first segment (bottom) for (title, wave, logmel [S, M, F], label) examples."""
    fig, axes = plt.subplots(2, len(examples), figsize=(3.2 * len(examples), 4.6), squeeze=False)
    for i, (title, wave, logmel, label) in enumerate(examples):
        t = np.arange(len(wave)) / sample_rate
        axes[0, i].plot(t, wave, lw=0.4, color="tab:red" if label else "tab:blue")
        axes[0, i].set_title(title, fontsize=8)
        axes[0, i].set_xlabel("s")
        axes[1, i].imshow(logmel[0], origin="lower", aspect="auto", cmap="magma")
        axes[1, i].set_xlabel("frame")
        axes[1, i].set_ylabel("mel band")
    fig.tight_layout()
    return fig


def plot_label_vs_snr(truth: pd.DataFrame, labels: pd.Series | None = None):
    """Annotator P(noise) (curve) and drawn hard labels (dots) against SNR, one panel per noise type.

    Clips without a hard label (a transfer set: an empty label) are on the curve, not among the dots."""
    noisy = truth[truth["noise_type"] != "none"]
    types = sorted(noisy["noise_type"].unique())
    cols = min(4, len(types))
    rows = int(np.ceil(len(types) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), sharex=True, sharey=True, squeeze=False)
    for ax, nt in zip(axes.flat, types):
        d = noisy[noisy["noise_type"] == nt].sort_values("snr_db")
        y = d["label"] if labels is None else labels.loc[d.index]
        dots = y.notna() & (y.astype(str).str.strip() != "")
        y = y[dots].map(parse_label)
        jitter = np.random.default_rng(0).uniform(-0.04, 0.04, len(y))
        ax.scatter(d["snr_db"][dots], np.asarray(y, dtype=float) + jitter, s=4, alpha=0.35, color="tab:grey")
        ax.plot(d["snr_db"], d["p_noise_annotator"], color="tab:red")
        ax.set_title(nt, fontsize=9)
    for ax in axes.flat[len(types):]:
        ax.axis("off")
    fig.supxlabel("SNR (dB)")
    fig.supylabel("label = noise (dots), annotator P(noise) (line)")
    fig.tight_layout()
    return fig


def plot_soft_label_hist(p_noise: np.ndarray, hard: np.ndarray, ax=None, title: str = "teacher soft labels"):
    """Histogram of the teacher's P(noise), split by the human hard label."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    bins = np.linspace(0, 1, 26)
    for lab, name, color in ((0, "labelled clean", "tab:blue"), (1, "labelled noise", "tab:red")):
        ax.hist(p_noise[hard == lab], bins=bins, alpha=0.6, label=name, color=color)
    ax.set_xlabel("teacher P(noise)")
    ax.set_ylabel("clips")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_temperature_effect(p_noise: np.ndarray, temperatures=(1, 2, 4, 8), ax=None):
    """How temperature softens the teacher: the tempered P(noise) of every clip, one histogram per T."""
    import torch

    from .losses import temper

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.2))
    probs = torch.tensor(np.stack([1 - p_noise, p_noise], axis=1), dtype=torch.float64)
    bins = np.linspace(0, 1, 41)
    for t in temperatures:
        ax.hist(temper(probs, float(t))[:, 1].numpy(), bins=bins, histtype="step", lw=1.5, label=f"T = {t:g}")
    ax.set_xlabel("tempered teacher P(noise)")
    ax.set_ylabel("clips")
    ax.set_title("temperature flattens the teacher's distribution")
    ax.legend(fontsize=8)
    return ax


def plot_breakdown(table: pd.DataFrame, ax=None, title: str = ""):
    """Grouped bars of per-group accuracy (columns = models, rows = groups)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3))
    table.drop(columns=["n"], errors="ignore").plot.bar(ax=ax, rot=30)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy vs hard label")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return ax

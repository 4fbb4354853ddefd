"""Figures for the workbook: loss curves, calibration, confusion, sweeps and data views."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .atomic import atomic_write
from .metrics import reliability_bins


def save_figure(fig, path) -> Path:
    """Write a PNG atomically (temp file, then os.replace) and return its path."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def plot_loss_curves(history: pd.DataFrame, path=None, title: str | None = None, baseline: pd.DataFrame | None = None):
    """Total, soft and hard loss (train and val) and the learning rate per epoch; optional baseline run."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    for ax, part in zip(axes[:3], ("total", "soft", "hard")):
        for split, style in (("train", "-"), ("val", "--")):
            col = f"{split}_{part}"
            if col in history and history[col].notna().any():
                ax.plot(history["epoch"], history[col], style, marker=".", label=split)
            if baseline is not None and col in baseline and baseline[col].notna().any():
                ax.plot(baseline["epoch"], baseline[col], style, color="grey", alpha=0.6, label=f"{split} (hard-only)")
        ax.set_title(f"{part} loss")
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not used (alpha = 0)" if part == "soft" else "no data",
                    ha="center", va="center", transform=ax.transAxes, color="grey")
    if "val_total" in history and len(history):
        best = history["val_total"].idxmin()
        axes[0].axvline(history.loc[best, "epoch"], color="green", alpha=0.4, lw=1)
        axes[0].annotate("best", (history.loc[best, "epoch"], history.loc[best, "val_total"]), fontsize=7)
    axes[3].plot(history["epoch"], history["lr"], marker=".")
    axes[3].set_yscale("log")
    axes[3].set_title("learning rate")
    axes[3].set_xlabel("epoch")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
        plt.close(fig)
    return fig


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
                    xticklabels=["clean", "noise"], yticklabels=["clean", "noise"])
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

"""PNG plots of a verification: metrics across precisions, and relearning curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit
import matplotlib.pyplot as plt

PRECISION_METRICS = (
    ("knowmem_em", "forget-set exact match"),
    ("exposure_bits", "canary exposure (bits)"),
    ("mia_auc_loss", "MIA AUC (loss)"),
    ("ppl_retain", "retain perplexity"),
)


def _plain(metadata: dict) -> dict:
    return {"Software": "exante", **metadata}


def precision_plot(results: dict, attacks: list[str], out: Path) -> Path:
    """One panel per metric; x: none and each quantization; one line per subject."""
    fig, axes = plt.subplots(1, len(PRECISION_METRICS), figsize=(4 * len(PRECISION_METRICS), 3.4))
    for ax, (key, title) in zip(axes, PRECISION_METRICS, strict=True):
        for name, by_attack in results.items():
            ys = [by_attack[a]["metrics"].get(key) for a in attacks]
            xs = [i for i, y in enumerate(ys) if y is not None]
            ax.plot(xs, [ys[i] for i in xs], marker="o", label=name)
        ax.set_xticks(range(len(attacks)), attacks, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, format="png", metadata=_plain({"Title": "metrics across precisions"}))
    plt.close(fig)
    return out


def relearn_plot(results: dict, out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    for name, by_attack in results.items():
        curve = by_attack["relearn"]["curve"]
        ks = [c["k"] for c in curve]
        axes[0].plot(ks, [c["em"] for c in curve], marker="o", label=name)
        bits = [(c["k"], c["exposure_bits"]) for c in curve if c["exposure_bits"] is not None]
        if bits:
            axes[1].plot(*zip(*bits, strict=True), marker="o", label=name)
    axes[0].set_title("held-out half: exact match", fontsize=9)
    axes[1].set_title("held-out half: canary exposure (bits)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("relearning steps on the other half", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, format="png", metadata=_plain({"Title": "relearning curves"}))
    plt.close(fig)
    return out

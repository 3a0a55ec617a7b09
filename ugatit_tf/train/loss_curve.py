"""The loss curves of a training run, as a picture a person can look at without TensorBoard.

At every checkpoint save the trainer writes samples/MODEL_DIR/loss_curve.png (matplotlib, Agg:
the discriminator losses, the generator losses, the generator's parts - adversarial, cycle,
identity, CAM - per domain, and the learning rate) and the numbers behind it,
samples/MODEL_DIR/loss_history.csv. The history holds at most about MAX_POINTS rows: each row
is the mean of `iterations` consecutive iterations, so a 1,000,000-iteration run stays small. A
resumed run reads the csv back and continues the same curve.
"""

from __future__ import annotations

import csv
import io
import math
import os

from ugatit_tf.common.files import atomic_write, write_text_atomic

MAX_POINTS = 2000
PNG_NAME = "loss_curve.png"
CSV_NAME = "loss_history.csv"
G_PARTS = ("gan", "cycle", "identity", "cam")


class LossCurve:
    """Means of the losses over bins of `bin_size` iterations, for the whole run."""

    def __init__(self, folder: str, total_iterations: int, start: int = 0):
        self.folder = folder
        self.bin_size = max(1, math.ceil(total_iterations / MAX_POINTS))
        self.rows = [r for r in _read_csv(os.path.join(folder, CSV_NAME)) if r["step"] <= start]

    def add(self, step: int, values: dict) -> None:
        """Add iteration `step`'s (1-based) losses to its bin."""
        last = self.rows[-1] if self.rows else None
        if last is None or (last["step"] - 1) // self.bin_size != (step - 1) // self.bin_size:
            self.rows.append({"step": step, "iterations": 1, **values})
            return
        n = last["iterations"]
        for key, value in values.items():
            last[key] = (last.get(key, value) * n + value) / (n + 1)
        last["step"], last["iterations"] = step, n + 1

    def write(self) -> str:
        """Write the csv and the PNG (each atomically); returns the PNG's path."""
        write_text_atomic(os.path.join(self.folder, CSV_NAME), _csv_text(self.rows))
        figure = plot(self.rows)
        path = os.path.join(self.folder, PNG_NAME)
        return atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=100))


def _csv_text(rows: list[dict]) -> str:
    keys = ["step", "iterations"] + sorted({k for r in rows for k in r} - {"step", "iterations"})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(row[k]) if isinstance(row.get(k), float) else row.get(k, "")
                         for k in keys})
    return out.getvalue()


def _read_csv(path: str) -> list[dict]:
    """The rows of a loss_history.csv; none when it is missing or unreadable (the curve then
    starts at the resumed iteration)."""
    try:
        with open(path, newline="") as f:
            return [{k: (int(v) if k in ("step", "iterations") else float(v))
                     for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    except (OSError, ValueError, KeyError):
        return []


def plot(rows: list[dict]):
    """The figure: D losses, G losses, G parts (A solid, B dashed; log scale), learning rate."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 8), layout="constrained")
    axes = figure.subplots(2, 2, sharex=True)
    line = _line_plotter(rows)
    _plot_discriminator(axes[0, 0], line)
    _plot_generator(axes[0, 1], line)
    _plot_generator_parts(axes[1, 0], line, rows)
    _plot_learning_rate(axes[1, 1], line)
    _finish_axes(axes)
    _add_title(figure, rows)
    return figure


def _line_plotter(rows: list[dict]):
    """A function line(ax, key, label=None, **kw) that plots the rows' `key` against step."""
    steps = [r["step"] for r in rows]
    style = dict(marker="o", markersize=3) if len(rows) < 60 else {}

    def line(ax, key, label=None, **kw):
        values = [r.get(key, math.nan) for r in rows]
        ax.plot(steps, values, label=label or key, **style, **kw)
    return line


def _plot_discriminator(ax, line) -> None:
    """The discriminator panel: the printed total and D_A, D_B."""
    ax.set_title("Discriminator")
    line(ax, "Discriminator_loss", "total (as printed)", color="black", linewidth=2)
    line(ax, "D_A_loss", "D_A (real A vs B->A)")
    line(ax, "D_B_loss", "D_B (real B vs A->B)")


def _plot_generator(ax, line) -> None:
    """The generator panel: the printed total and G_A, G_B."""
    ax.set_title("Generator")
    line(ax, "Generator_loss", "total (as printed)", color="black", linewidth=2)
    line(ax, "G_A_loss", "G_A (B->A)")
    line(ax, "G_B_loss", "G_B (A->B)")


def _plot_generator_parts(ax, line, rows: list[dict]) -> None:
    """The generator's weighted parts (A solid, B dashed); log scale when all are > 0."""
    ax.set_title("Generator parts, weighted (solid: A, dashed: B)")
    for part, colour in zip(G_PARTS, ("tab:red", "tab:blue", "tab:green", "tab:purple")):
        line(ax, f"G_A_{part}", part, color=colour)
        line(ax, f"G_B_{part}", "_", color=colour, linestyle="--")
    if all(r.get(f"G_{d}_{p}", 1.0) > 0 for r in rows for d in "AB" for p in G_PARTS):
        ax.set_yscale("log")


def _plot_learning_rate(ax, line) -> None:
    """The learning-rate panel, in scientific notation."""
    ax.set_title("Learning rate")
    line(ax, "lr", "lr", color="tab:orange")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))


def _finish_axes(axes) -> None:
    """Grids on all panels, legends on all but the learning rate, integer iteration axes."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
        if ax is not axes[1, 1]:
            ax.legend(fontsize=8, loc="best")
    for ax in axes[1]:
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _add_title(figure, rows: list[dict]) -> None:
    """The figure's title, naming the bin size when a point is a mean of several iterations."""
    bin_size = max((r["iterations"] for r in rows), default=1)
    figure.suptitle("U-GAT-IT training losses" +
                    (f" (each point: mean of {bin_size} iterations)" if bin_size > 1 else ""))

"""The eval bar chart: `--phase eval` writes eval.png beside eval.json, one row per direction
(A2B, B2A) and one panel per score: KID x100 and FID of the translations against the
do-nothing baseline (the untranslated inputs), then the paired L1 / PSNR / SSIM of the model,
the identity baseline and the target-domain mean image when the data set has ground truth.
Drawn with matplotlib's Agg canvas (no display, no pyplot state) and written atomically."""

from __future__ import annotations

import io
import os

from ugatit_tf.common.files import write_bytes_atomic

COLOURS = {"model": "#1f77b4", "identity": "#b0b0b0", "target mean": "#e0a030"}
PAIRED = (("l1", "L1 (lower is better)"), ("psnr", "PSNR dB (higher is better)"),
          ("ssim", "SSIM (higher is better)"))


def direction_panels(scores: dict) -> list[tuple[str, dict, dict]]:
    """(title, {bar label: value}, {bar label: error}) for each panel of one direction."""
    identity = scores.get("identity", {})
    panels = [("KID x100 (lower is better)",
               {"model": scores["kid_x100"], "identity": identity.get("kid_x100")},
               {"model": scores.get("kid_x100_std"), "identity": identity.get("kid_x100_std")}),
              ("FID (lower is better)",
               {"model": scores["fid"], "identity": identity.get("fid")}, {})]
    paired = scores.get("paired")
    if paired:
        for metric, title in PAIRED:
            bars = {"model": paired["model"][metric], "identity": paired["identity"][metric]}
            if "target_mean" in paired:
                bars["target mean"] = paired["target_mean"][metric]
            panels.append((f"paired {title}", bars, {}))
    return panels


def eval_figure(report: dict):
    """The matplotlib Figure of an eval.json report."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [(name, direction_panels(scores))
            for name, scores in sorted(report["directions"].items())]
    n_cols = max(len(panels) for _, panels in rows)
    figure = Figure(figsize=(3.1 * n_cols, 3.0 * len(rows) + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), n_cols, squeeze=False)
    for r, (name, panels) in enumerate(rows):
        for c in range(n_cols):
            if c < len(panels):
                draw_panel(axes[r][c], f"{name}: {panels[c][0]}", *panels[c][1:])
            else:
                axes[r][c].set_visible(False)
    step = report.get("step")
    figure.suptitle(f"{report.get('dataset', '')} {report.get('img_size', '')} px, "
                    f"{os.path.basename(str(report.get('checkpoint', '')))}"
                    + (f" (step {step})" if step is not None else "")
                    + ("\nrandom Inception weights: KID / FID are a smoke test only"
                       if report.get("inception_random") else ""))
    return figure


def draw_panel(ax, title: str, bars: dict, errors: dict) -> None:
    labels = [k for k, v in bars.items() if v is not None]
    values = [bars[k] for k in labels]
    yerr = [errors.get(k) or 0.0 for k in labels]
    drawn = ax.bar(labels, values, color=[COLOURS[k] for k in labels],
                   yerr=yerr if any(yerr) else None, capsize=4)
    ax.bar_label(drawn, fmt="%.3g", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.margins(y=0.15)


def write_eval_chart(report: dict, path: str) -> str:
    """Draw the chart of `report` into the PNG `path` (atomically); returns the path."""
    buffer = io.BytesIO()
    eval_figure(report).savefig(buffer, format="png", dpi=100)
    return write_bytes_atomic(path, buffer.getvalue())

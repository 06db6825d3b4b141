"""One self-contained HTML report per evaluation: verdict, metric table, pictures, curves.

Every figure is a PNG embedded as base64, so the file can be mailed or attached to an
issue. The first line answers "is the model useful": the best method's MAE against the
ridge baseline, with the spread over seeds. The table says what was scored (held-out blocks,
or laid clouds in cloud-removal mode; the scored bands) and each method's coverage (a
method with no prediction somewhere, e.g. copying a prior that does not exist, is scored
on fewer pixels); a method that states its uncertainty gets a reliability diagram.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sar2opt.evaluate.protocol import METRICS, ProtocolResult, Scene, donor_name, select_bands
from sar2opt.evaluate.quicklook import (
    RGB_BANDS,
    percentile_limits,
    sar_false_colour,
    to_rgba,
)
from sar2opt.evaluate.reliability import (
    CALIBRATED_TOL,
    GROUP_BLOCK_PX,
    ReliabilityRow,
    reliability_figure,
)

HIGHER_IS_BETTER = {"psnr_db", "ssim"}
LABELS = {
    "mae": "MAE",
    "rmse": "RMSE",
    "psnr_db": "PSNR dB (range 1)",
    "ssim": "SSIM (gaussian σ 1.5 px)",
    "sam_deg": "SAM °",
}


def png_bytes(fig) -> bytes:
    """A matplotlib Figure rendered to PNG bytes (Agg, no pyplot state)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def verdict(
    summary: dict[str, dict[str, tuple[float, float]]],
    reference: str,
    target_frac: float = 0.15,
    exclude: Sequence[str] = (),
) -> dict:
    """Best method by mean MAE (baselines and ``exclude`` left out) against ``reference``.

    ``gain`` = 1 - MAE_best / MAE_reference; ``passed`` when gain >= target_frac;
    ``ssim_ok`` when the best method's mean SSIM >= the reference's (the issue's second
    condition; None when either SSIM is NaN).
    """
    cands = {
        k: v
        for k, v in summary.items()
        if k != reference and k not in exclude and np.isfinite(v["mae"][0])
    }
    if reference not in summary or not cands:
        return {"best": None, "reference": reference, "gain": float("nan"), "passed": False}
    best = min(cands, key=lambda k: cands[k]["mae"][0])
    ref = summary[reference]["mae"][0]
    gain = 1.0 - cands[best]["mae"][0] / ref
    return {
        "best": best,
        "reference": reference,
        "gain": float(gain),
        "target": target_frac,
        "passed": bool(gain >= target_frac),
        "ssim_ok": ssim_at_least(summary, best, reference),
    }


def ssim_at_least(
    summary: dict[str, dict[str, tuple[float, float]]], name: str, reference: str | None
) -> bool | None:
    """Mean SSIM of ``name`` >= the reference's; None when either is missing or NaN."""
    if reference not in summary or name not in summary or "ssim" not in summary[name]:
        return None
    a, b = summary[name]["ssim"][0], summary[reference]["ssim"][0]
    return bool(a >= b) if np.isfinite(a) and np.isfinite(b) else None


def coverage(summary: dict[str, dict[str, tuple[float, float]]], reference: str | None) -> dict:
    """Per method, its scored pixels over the reference's (the most any method has when
    there is no reference): 1.0 = scored everywhere the others are."""
    px = {n: summary[n]["pixels"][0] for n in summary}
    base = px.get(reference) or max(px.values(), default=0.0)
    return {n: (v / base if base else float("nan")) for n, v in px.items()}


def metric_table_html(
    summary: dict[str, dict[str, tuple[float, float]]], reference: str | None, n_seeds: int
) -> str:
    """Rows = methods, cells = mean ± std over seeds; best cell per column in bold; then the
    MAE gain over ``reference``, whether its SSIM is at least the reference's, scored pixels
    per seed and coverage (``coverage``)."""
    names = list(summary)
    cov = coverage(summary, reference)
    head = "".join(f"<th>{LABELS[m]}</th>" for m in METRICS)
    rows = []
    best = {}
    for m in METRICS:
        vals = {n: summary[n][m][0] for n in names if np.isfinite(summary[n][m][0])}
        if vals:
            pick = max if m in HIGHER_IS_BETTER else min
            best[m] = pick(vals, key=vals.get)
    for n in names:
        cells = []
        for m in METRICS:
            mu, sd = summary[n][m]
            fmt = ".2f" if m in ("psnr_db", "sam_deg") else ".4f"
            txt = "n/a" if not np.isfinite(mu) else f"{mu:{fmt}} ± {sd:{fmt}}"
            cells.append(f"<td><b>{txt}</b></td>" if best.get(m) == n else f"<td>{txt}</td>")
        rel, ss = "", ""
        if reference in summary and n != reference and np.isfinite(summary[n]["mae"][0]):
            r = 100 * (1 - summary[n]["mae"][0] / summary[reference]["mae"][0])
            rel = f"{r:+.1f} %"
            ok = ssim_at_least(summary, n, reference)
            ss = "" if ok is None else ("yes" if ok else "no")
        px = summary[n]["pixels"][0]
        c = f"{100 * cov[n]:.0f} %" if np.isfinite(cov[n]) else "n/a"
        rows.append(
            f"<tr><th>{html.escape(n)}</th>{''.join(cells)}<td>{rel}</td><td>{ss}</td>"
            f"<td>{px:.0f}</td>"
            f"<td>{c}</td></tr>"
        )
    ref_name = html.escape(reference or "")
    return (
        f"<table><tr><th>method (mean ± std over {n_seeds} seeds)</th>{head}"
        f"<th>MAE gain vs {ref_name}</th><th>SSIM ≥ {ref_name}</th><th>pixels / seed</th>"
        "<th>coverage</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _pm(v: tuple[float, float], fmt: str = ".4f") -> str:
    mu, sd = v
    return "n/a" if not np.isfinite(mu) else f"{mu:{fmt}} ± {sd:{fmt}}"


def region_groups(regions: dict[str, dict[str, dict[str, tuple[float, float]]]]) -> dict:
    """The region names of ``ProtocolResult.region_summary`` grouped by their first word
    (``class`` of a label raster, ``slope`` of the DEM), in order."""
    names = list(next(iter(regions.values()), {}))
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(n.split(" ", 1)[0], []).append(n)
    return groups


def region_table_html(
    regions: dict[str, dict[str, dict[str, tuple[float, float]]]],
    names: Sequence[str],
    order: Sequence[str],
) -> str:
    """Rows = methods in ``order``, columns = the regions ``names``: MAE and SSIM mean ± std
    over seeds; last row the scored pixels per seed of each region (the reference's)."""
    head = "".join(f"<th colspan=2>{html.escape(n)}</th>" for n in names)
    sub = "".join("<th>MAE</th><th>SSIM</th>" for _ in names)
    rows = []
    for m in order:
        if m not in regions:
            continue
        cells = "".join(
            f"<td>{_pm(regions[m][n]['mae'])}</td><td>{_pm(regions[m][n]['ssim'], '.3f')}</td>"
            for n in names
        )
        rows.append(f"<tr><th>{html.escape(m)}</th>{cells}</tr>")
    first = next(m for m in order if m in regions)
    px = "".join(f"<td colspan=2>{regions[first][n]['pixels'][0]:.0f}</td>" for n in names)
    return (
        f"<table><tr><th rowspan=2>method</th>{head}</tr><tr>{sub}</tr>{''.join(rows)}"
        f"<tr><th>pixels / seed</th>{px}</tr></table>"
    )


def downstream_html(summary: dict[str, dict[str, tuple[float, float]]]) -> str:
    """Accuracy of the downstream map from real S2, the majority class and each method."""
    rows = "".join(
        f"<tr><th>{html.escape(n)}</th><td>{_pm(v['accuracy'], '.3f')}</td>"
        f"<td>{v['pixels'][0]:.0f}</td></tr>"
        for n, v in summary.items()
    )
    return (
        "<table><tr><th>S2 the forest classifies</th><th>accuracy (mean ± std over seeds)"
        f"</th><th>pixels / seed</th></tr>{rows}</table>"
    )


def best_of_n_html(summary: dict[str, dict[str, tuple[float, float]]]) -> str:
    """Methods with candidates: single output vs best of N, both per-image MAE."""
    rows = "".join(
        f"<tr><th>{html.escape(n)}</th><td>{v['n_candidates'][0]:.0f}</td>"
        f"<td>{_pm(v['mae_per_image'])}</td><td>{_pm(v['best_of_n'])}</td></tr>"
        for n, v in summary.items()
        if "best_of_n" in v
    )
    return (
        "<table><tr><th>method</th><th>N candidates</th><th>single output: MAE per image"
        f"</th><th>best of N: MAE per image</th></tr>{rows}</table>"
    )


def reliability_html(tables: dict[str, list[ReliabilityRow]]) -> str:
    """Per method, one row per bin of stated uncertainty: stated, measured, their ratio and,
    where the rows have one, the ratio's 90 % interval over a bootstrap of pixel blocks."""
    parts = []
    tol = CALIBRATED_TOL
    for name, rows in tables.items():
        boot = all(r.ratio_lo is not None for r in rows)
        body = "".join(
            f"<tr><td>{r.bin + 1}</td><td>{r.stated:.4f}</td><td>{r.abs_error:.4f}</td>"
            f"<td>{r.ratio:.2f}</td>"
            + (f"<td>{r.ratio_lo:.2f}–{r.ratio_hi:.2f}</td>" if boot else "")
            + f"<td>{r.count}</td></tr>"
            for r in rows
        )
        ok = sum(abs(r.ratio - 1) <= tol for r in rows)
        note = (
            f"{ok} of {len(rows)} bins have a measured mean |error| within "
            f"±{100 * tol:.0f} % of the stated uncertainty."
        )
        if boot:
            reach = sum(r.ratio_lo <= 1 + tol and r.ratio_hi >= 1 - tol for r in rows)
            note += (
                f" In {reach} of {len(rows)} the 90 % interval (a bootstrap of "
                f"{GROUP_BLOCK_PX}-px blocks of one date: neighbouring pixels err together) "
                "reaches that band; a bin whose "
                "interval is wide rests on too few blocks to tell."
            )
        parts.append(
            f"<h3>{html.escape(name)}</h3><p class='note'>{note}</p><table><tr>"
            "<th>bin (1 = least uncertain)</th><th>mean stated</th><th>mean |error|</th>"
            "<th>|error| / stated</th>"
            + ("<th>90 % interval</th>" if boot else "")
            + f"<th>pixels</th></tr>{body}</table>"
        )
    return "".join(parts)


def tiles_figure(
    scene: Scene,
    preds: dict[str, np.ndarray],
    held: np.ndarray,
    names: Sequence[str],
    tile_px: int = 96,
):
    """SAR | each named prediction | truth | |error| of the first name, on a held-out crop.

    The crop is the ``tile_px`` window holding the most held-out clear pixels at the
    clearest date; one stretch shared by predictions and truth.
    """
    from matplotlib.figure import Figure

    held_t = np.broadcast_to(held, scene.clear.shape)  # blocks (H, W) or laid clouds (T, H, W)
    t = int(np.argmax((scene.clear & held_t).sum(axis=(1, 2))))
    h, w = held.shape[-2:]
    p = min(tile_px, h, w)
    score = held_t[t] & scene.clear[t]
    best_rc, best_n = (0, 0), -1
    for r in range(0, h - p + 1, max(p // 4, 1)):
        for c in range(0, w - p + 1, max(p // 4, 1)):
            n = int(score[r : r + p, c : c + p].sum())
            if n > best_n:
                best_rc, best_n = (r, c), n
    r, c = best_rc
    win = (slice(None), slice(r, r + p), slice(c, c + p))  # (band, y, x) crop
    bands = list(scene.bands)
    idx = [bands.index(b) for b in RGB_BANDS if b in bands]
    if len(idx) < 3:
        idx = [0, min(1, len(bands) - 1), min(2, len(bands) - 1)]
    truth = np.where(scene.clear[t][None], scene.truth[t], np.nan)[win]
    lim = percentile_limits(
        np.concatenate([truth[idx].ravel(), preds[names[0]][t][idx][win].ravel()]), (2, 98)
    )
    panels = [(sar_false_colour(scene.sar_db[t][win]), "S1 VV | VH | VV-VH", {})]
    for n in names:
        panels.append((to_rgba(list(preds[n][t][idx][win]), [lim] * 3), n, {}))
    panels.append((to_rgba(list(truth[idx]), [lim] * 3), "Sentinel-2 (clear pixels)", {}))
    err = np.nanmean(np.abs(preds[names[0]][t][win] - truth), axis=0)
    panels.append((err, f"|{names[0]} - S2|", {"cmap": "magma", "vmin": 0.0}))
    fig = Figure(figsize=(2.6 * len(panels), 3.2), dpi=90, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (img, cap, kw) in zip(axes, panels, strict=True):
        ax.set_facecolor("0.5")
        im = ax.imshow(img, interpolation="nearest", **kw)
        ax.set_title(cap, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        # outline the held-out pixels of the crop
        ax.contour(held_t[t][win[1:]].astype(float), levels=[0.5], colors="cyan", linewidths=0.6)
        if kw.get("cmap"):
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(
        f"{scene.times[t][:10]}, crop rows {r}-{r + p}, cols {c}-{c + p}; cyan = scored area",
        fontsize=9,
    )
    return fig


def block_mae(pred: np.ndarray, scene: Scene, held: np.ndarray, block_px: int) -> np.ndarray:
    """MAE per ``block_px`` block over clear held-out pixels of all dates (NaN elsewhere);
    ``held`` (H, W) blocks or (T, H, W) laid clouds."""
    t, _, h, w = scene.truth.shape
    err = np.abs(pred - scene.truth).mean(axis=1)  # (T, H, W)
    ok = scene.clear & np.broadcast_to(held, scene.clear.shape) & np.isfinite(err)
    held = held if held.ndim == 2 else held.any(axis=0)
    # cells on the held-out blocks' own lattice (it may be anchored off (0, 0))
    rows, cols = np.nonzero(held.any(axis=1))[0], np.nonzero(held.any(axis=0))[0]
    r0 = int(rows[0]) % block_px if rows.size else 0
    c0 = int(cols[0]) % block_px if cols.size else 0
    r_edges = [0, *range(r0, h, block_px)] if r0 else list(range(0, h, block_px))
    c_edges = [0, *range(c0, w, block_px)] if c0 else list(range(0, w, block_px))
    out = np.full((len(r_edges), len(c_edges)), np.nan)
    for i, ra in enumerate(r_edges):
        rb = r_edges[i + 1] if i + 1 < len(r_edges) else h
        for j, ca in enumerate(c_edges):
            cb = c_edges[j + 1] if j + 1 < len(c_edges) else w
            s = (slice(None), slice(ra, rb), slice(ca, cb))
            if ok[s].any():
                out[i, j] = err[s][ok[s]].mean()
    return out


def maps_figure(
    scene: Scene,
    preds: dict[str, np.ndarray],
    held: np.ndarray,
    names: Sequence[str],
    block_px: int,
):
    """Per-block MAE over the region for each named method, one colour scale."""
    from matplotlib.figure import Figure

    maps = [block_mae(preds[n], scene, held, block_px) for n in names]
    vmax = np.nanmax([np.nanmax(m) for m in maps if np.isfinite(m).any()] or [1.0])
    fig = Figure(figsize=(3.0 * len(maps) + 0.8, 3.2), dpi=90, layout="constrained")
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    im = None
    for ax, m, n in zip(axes, maps, names, strict=True):
        ax.set_facecolor("0.85")
        im = ax.imshow(m, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{n}\nmean {np.nanmean(m):.4f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), fraction=0.046, pad=0.02, label="MAE (reflectance)")
    return fig


def read_metrics_csv(path: str | Path) -> dict[str, list[float]]:
    """Columns of a training ``metrics.csv`` as float lists (empty dict when absent)."""
    p = Path(path)
    if not p.is_file():
        return {}
    with open(p, newline="") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            try:
                cols.setdefault(k, []).append(float(v))
            except (TypeError, ValueError):
                cols.setdefault(k, []).append(float("nan"))
    return cols


def curves_figure(cols: dict[str, list[float]]):
    """Generator L1 (train, val) and validation MAE per epoch."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2), dpi=90, layout="constrained")
    a, b = fig.subplots(1, 2)
    ep = cols.get("epoch", list(range(1, len(next(iter(cols.values()))) + 1)))
    for k in ("g_l1", "val_l1"):
        if k in cols:
            a.plot(ep, cols[k], marker=".", label=k)
    a.set_xlabel("epoch")
    a.set_title("L1 (normalised units)", fontsize=9)
    a.legend(fontsize=8)
    if "val_mae_refl" in cols:
        b.plot(ep, cols["val_mae_refl"], marker=".", color="C2")
    b.set_xlabel("epoch")
    b.set_title("validation MAE (reflectance)", fontsize=9)
    return fig


CSS = """body{font-family:sans-serif;max-width:1200px;margin:1em auto;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #bbb;padding:3px 7px}
td{text-align:right}.pass{background:#dfd;padding:8px}.fail{background:#fdd;padding:8px}
img{max-width:100%}.note{color:#555;font-size:13px}"""


def what_scored(result: ProtocolResult) -> str:
    """Short name of the scored area, for headings."""
    if result.mode == "cloud removal":
        return "real cloud masks laid on clear dates (scored under the laid masks only)"
    return "held-out blocks"


def protocol_note(result: ProtocolResult, block_px: int, times: Sequence[str] = ()) -> str:
    """What was held out, what was fitted where, and the bands scored (``times``: the
    scene's dates, to name the laid clouds' dates)."""

    seeds = ", ".join(map(str, result.seeds))
    bands = ", ".join(result.bands) if result.bands else "all"
    if result.mode == "cloud removal":
        lays = "; ".join(
            f"seed {s}: "
            + ", ".join(
                f"{donor_name(d, times)} on {donor_name(t, times)}" for t, d in pairs.items()
            )
            for s, pairs in zip(result.seeds, result.laid, strict=True)
        )
        head = (
            "Cloud removal: per seed, the cloud mask of a cloudy date is laid on each clear "
            f"date (the clouds of one date on another: {lays}); the target's same-date S2 "
            "input gets those pixels masked, every method is scored on the clear pixels "
            "under the laid mask only, and the per-date fits (ridge, mean colour, residual "
            "net) learn from the date's pixels outside it (and its ring): the information a "
            "cloud-removal model has."
        )
    else:
        head = (
            f"Spatially disjoint blocks of {block_px} px are held out (seeds {seeds}); a ring "
            "around them is kept out of training. Every method is scored on the same clear "
            "held-out pixels of every date."
        )
    return (
        f"{head} Reflectance units; bands scored: {bands}. SSIM: gaussian window (σ 1.5 px) "
        "over the scored pixels only, averaged over them. Coverage: the method's scored "
        "pixels over the reference's (a method without a prediction at a pixel, e.g. no "
        "prior clear S2 within the prior window, is scored where it has one). Bold: best in "
        "column."
    )


def ssim_sentence(summary: dict, best: str, reference: str) -> str:
    """'SSIM 0.812 vs 0.790: at least the reference's.' (or 'below'; or why not judged)."""
    ok = ssim_at_least(summary, best, reference)
    if ok is None:
        return "SSIM not judged (no SSIM for one of them)."
    a, b = summary[best]["ssim"][0], summary[reference]["ssim"][0]
    return f"SSIM {a:.3f} vs {b:.3f}: {'at least' if ok else 'below'} the reference's."


def extra_tables_html(result: ProtocolResult, order: Sequence[str]) -> list[str]:
    """Per-class and per-slope scores, the downstream check and best-of-N, where present."""
    from sar2opt.evaluate.downstream import downstream_summary

    parts = []
    regions = result.region_summary()
    titles = {"class": "Per class of the label raster", "slope": "Per terrain slope (DEM)"}
    for group, names in region_groups(regions).items():
        parts += [f"<h2>{titles.get(group, group)}</h2>", region_table_html(regions, names, order)]
    down = downstream_summary(result.downstream)
    if down:
        parts += [
            "<h2>Downstream check: a random forest on real S2 vs synthesised S2</h2>",
            "<p class='note'>A random forest trained on the real clear S2 pixels of each "
            "seed's training area predicts the label; applied to the scored pixels from the "
            "real S2 and from each method's synthesised S2. Majority class: the map that "
            "ignores the image.</p>",
            downstream_html(down),
        ]
    summary = result.summary()
    if any("best_of_n" in v for v in summary.values()):
        parts += [
            "<h2>MultiEarth best-of-N</h2>",
            "<p class='note'>The MultiEarth 2022 challenge scored the best of N generated "
            "candidates per target image: per scored image, the lowest MAE among the "
            "checkpoint's N hypotheses (flips x ensemble members), averaged over images. "
            "It picks with the truth, so it is no deployable score; the single output is "
            "what inference writes.</p>",
            best_of_n_html(summary),
        ]
    return parts


def write_report(
    path: str | Path,
    *,
    title: str,
    result: ProtocolResult,
    scene: Scene,
    reference: str,
    baselines: Sequence[str],
    block_px: int,
    notes: Sequence[str] = (),
    metrics_csv: str | Path | None = None,
    target_frac: float = 0.15,
) -> dict:
    """Write the HTML report; returns the verdict dict (also shown at its top)."""
    if result.bands and tuple(result.bands) != tuple(scene.bands):
        scene = select_bands(scene, result.bands)  # the predictions kept are the scored bands
    summary = result.summary()
    v = verdict(summary, reference, target_frac, exclude=baselines)
    if v["best"] is None:
        head = '<p class="fail">No model to judge: only baselines were scored.</p>'
    else:
        word = "meets" if v["passed"] else "does NOT meet"
        head = (
            f'<p class="{"pass" if v["passed"] else "fail"}"><b>{html.escape(v["best"])}</b> '
            f"has MAE {summary[v['best']]['mae'][0]:.4f} ± {summary[v['best']]['mae'][1]:.4f} "
            f"vs {html.escape(reference)} {summary[reference]['mae'][0]:.4f} ± "
            f"{summary[reference]['mae'][1]:.4f}: a gain of {100 * v['gain']:.1f} %, which "
            f"{word} the {100 * target_frac:.0f} % target ({what_scored(result)}, "
            f"{len(result.seeds)} seeds). {ssim_sentence(summary, v['best'], reference)}</p>"
        )
    order = sorted(summary, key=lambda k: summary[k]["mae"][0])
    models = [n for n in order if n not in baselines]
    shown = (models[:2] + [reference])[:3] if models else [reference]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        head,
        f"<h2>Scores on {what_scored(result)}</h2>",
        metric_table_html({k: summary[k] for k in order}, reference, len(result.seeds)),
        f"<p class='note'>{html.escape(protocol_note(result, block_px, scene.times))}</p>",
        "<h2>Per seed (MAE)</h2><table><tr><th>method</th>"
        + "".join(f"<th>seed {s}</th>" for s in result.seeds)
        + "</tr>"
        + "".join(
            f"<tr><th>{html.escape(n)}</th>"
            + "".join(f"<td>{r['mae']:.4f}</td>" for r in result.per_seed[n])
            + "</tr>"
            for n in order
        )
        + "</table>",
    ]
    parts += extra_tables_html(result, order)
    parts += [
        f"<h2>Example tile (seed {result.seeds[0]})</h2>",
        img_tag(png_bytes(tiles_figure(scene, result.first_preds, result.held[0], shown)), "tiles"),
        f"<h2>MAE per block over the region (seed {result.seeds[0]})</h2>",
        img_tag(
            png_bytes(maps_figure(scene, result.first_preds, result.held[0], shown, block_px)),
            "metric maps",
        ),
    ]
    tables = {k: v for k, v in result.reliability.items() if v}
    if tables:
        parts += [
            "<h2>Reliability of the stated uncertainty</h2>",
            "<p class='note'>Scored pixels of every seed, sorted by the uncertainty the "
            "predictor states (its hypotheses' spread, calibrated when the checkpoint carries "
            "a calibration) and cut into 10 bins of equal count; calibrated: the measured mean "
            "|error| (mean over the scored bands) equals the stated value (dashed line).</p>",
            img_tag(png_bytes(reliability_figure(tables)), "reliability diagram"),
            reliability_html(tables),
        ]
    cols = read_metrics_csv(metrics_csv) if metrics_csv else {}
    parts.append("<h2>Training curves</h2>")
    if cols:
        parts.append(img_tag(png_bytes(curves_figure(cols)), "training curves"))
    else:
        parts.append("<p class='note'>No metrics.csv beside the checkpoint.</p>")
    if notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li>{html.escape(n)}</li>" for n in notes]
        parts.append("</ul>")
    parts.append("</body></html>")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(parts))
    return v

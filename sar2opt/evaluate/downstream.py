"""Downstream check: is the synthesised S2 as useful as the real one for a map made from it?

A random forest (scikit-learn) learns the label (e.g. MultiEarth deforestation, biomass
strata) from the band values of REAL clear S2 pixels of the training area of a seed (every
date), then classifies the scored pixels twice: from the real S2 and from each method's
synthesised S2. Accuracy side by side, beside the majority class (what a map that ignores
the image scores). A method near "real S2" loses nothing for that map.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

REAL = "real S2"
MAJORITY = "majority class"


@dataclass(frozen=True)
class DownstreamSpec:
    """Random forest size and the cap on its training pixels (drawn at random per seed)."""

    n_trees: int = 50
    max_depth: int | None = 12
    max_train_px: int = 20000


def downstream_check(labels: np.ndarray, spec: DownstreamSpec = DownstreamSpec()):
    """The ``run_protocol`` hook: ``check(scene, train, score_mask, preds, seed)`` ->
    {"accuracy": {REAL, MAJORITY, method: accuracy}, "pixels": {...}, "train_px": n} for
    ``labels`` (H, W) int class codes (-1: none).

    Trained on the real clear S2 of the seed's training pixels (``train`` (H, W) or
    (T, H, W)); each method is scored on the scored, labelled pixels where it has a
    prediction, real S2 and the majority class on all of them."""
    lab = np.asarray(labels)

    def check(scene, train, score_mask, preds: Mapping[str, np.ndarray], seed: int) -> dict:
        from sklearn.ensemble import RandomForestClassifier

        t_all = np.broadcast_to(lab, scene.clear.shape)
        x = np.moveaxis(scene.truth, 1, -1)  # (T, H, W, C)
        finite = np.isfinite(x).all(-1)
        tr = np.broadcast_to(np.asarray(train, bool), scene.clear.shape)
        tr = tr & scene.clear & finite & (t_all >= 0)
        te = np.asarray(score_mask, bool) & finite & (t_all >= 0)
        rng = np.random.default_rng(seed)
        idx = np.flatnonzero(tr)
        if idx.size > spec.max_train_px:
            idx = rng.choice(idx, spec.max_train_px, replace=False)
        y_tr = t_all.reshape(-1)[idx]
        n_te = int(te.sum())
        if idx.size == 0 or n_te == 0 or np.unique(y_tr).size < 2:
            return {"accuracy": {}, "pixels": {}, "train_px": int(idx.size),
                    "skipped": "fewer than two classes among the training pixels, or "
                    "no labelled scored pixel"}  # fmt: skip
        rf = RandomForestClassifier(
            n_estimators=spec.n_trees, max_depth=spec.max_depth, random_state=seed, n_jobs=1
        )
        rf.fit(x.reshape(-1, x.shape[-1])[idx], y_tr)
        y_te = t_all[te]
        classes, counts = np.unique(y_tr, return_counts=True)
        acc = {
            REAL: float((rf.predict(x[te]) == y_te).mean()),
            MAJORITY: float((y_te == classes[counts.argmax()]).mean()),
        }
        px = {REAL: n_te, MAJORITY: n_te}
        for name, pred in preds.items():
            p = np.moveaxis(pred, 1, -1)
            ok = te & np.isfinite(p).all(-1)
            if ok.any():
                acc[name] = float((rf.predict(p[ok]) == t_all[ok]).mean())
            else:
                acc[name] = float("nan")
            px[name] = int(ok.sum())
        return {"accuracy": acc, "pixels": px, "train_px": int(idx.size)}

    return check


def downstream_summary(per_seed: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """{name: {"accuracy": mean ± std over seeds, "pixels": mean ± std}} in the first seed's
    order (real S2, majority class, then the methods); empty when every seed was skipped."""
    from sar2opt.evaluate.protocol import mean_std

    rows = [r for r in per_seed if r.get("accuracy")]
    if not rows:
        return {}
    return {
        name: {
            k: mean_std([r[k].get(name, float("nan")) for r in rows])
            for k in ("accuracy", "pixels")
        }
        for name in rows[0]["accuracy"]
    }

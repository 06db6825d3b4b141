"""Evaluation: metrics against real Sentinel-2, the baselines every score stands beside
(held-out patches of a checkpoint, spatial block protocol), HTML report and quicklook PNGs."""

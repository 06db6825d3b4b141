"""Evaluation: metrics against real Sentinel-2 and quicklook PNGs for eyeballing results."""

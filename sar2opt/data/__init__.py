"""Cube -> training patches -> normalised arrays (pure numpy, no Ray)."""

from sar2opt.data.normalise import band_stats, denormalise, normalise
from sar2opt.data.patches import PatchError

__all__ = ["PatchError", "band_stats", "denormalise", "normalise"]

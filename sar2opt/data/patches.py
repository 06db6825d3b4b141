"""Cube band names the patch stages read, and the error they raise.

The cube stores SAR, optical, ``clear`` and, per input set, ``dem`` and ``prior_<band>``
bands; training cuts patches of them (``index`` finds them, ``stream`` reads them).
"""

from __future__ import annotations

from sar2opt.errors import Sar2OptError

CLEAR_BAND = "clear"
DEM_BAND = "dem"  # the cube's elevation band (metres); its name is in attrs["dem_band"]
PRIOR_PREFIX = "prior_"  # prior cloud-free optical: prior_<band>, in attrs["prior_bands"]


class PatchError(Sar2OptError):
    """The cube yields no usable training patches (too small, too cloudy, or missing bands)."""

"""Cube band names the patch stages read, and the error they raise.

The cube stores SAR, optical, ``clear`` and, per input set, ``dem``, ``prior_<band>`` and
``cloudy_<band>`` + ``cloud_mask`` bands; training cuts patches of them (``index`` finds
them, ``stream`` reads them).
"""

from __future__ import annotations

from sar2opt.errors import Sar2OptError

CLEAR_BAND = "clear"
DEM_BAND = "dem"  # the cube's elevation band (metres); its name is in attrs["dem_band"]
PRIOR_PREFIX = "prior_"  # prior cloud-free optical: prior_<band>, in attrs["prior_bands"]
# the same-date S2, clouds included, then its cloud mask: in attrs["cloudy_bands"]
CLOUDY_PREFIX = "cloudy_"
CLOUD_MASK_BAND = "cloud_mask"


class PatchError(Sar2OptError):
    """The cube yields no usable training patches (too small, too cloudy, or missing bands)."""

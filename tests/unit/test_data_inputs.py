"""Input sets: channel order and counts, the one tensor a generator sees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sar2opt.config import load_config
from sar2opt.data.inputs import input_channels, input_keys, model_input
from sar2opt.errors import ConfigError


def test_channels_and_order() -> None:
    assert input_channels("S", 2, 3) == (2, 0)
    assert input_channels("SD", 2, 3) == (3, 1)
    assert input_channels("SO", 2, 4) == (6, 0)
    assert input_channels("SOD", 2, 4) == (7, 1)
    batch = {
        "sar": torch.full((2, 2, 4, 4), 1.0),
        "prior": torch.full((2, 3, 4, 4), 2.0),
        "dem": np.full((2, 1, 4, 4), 3.0, np.float32),
        "opt": torch.zeros(2, 3, 4, 4),
    }
    x = model_input(batch, "SOD")
    # sar, then prior, then the DEM last (the trailing dem_ch channels).
    assert x[0, :, 0, 0].tolist() == [1, 1, 2, 2, 2, 3]
    assert model_input(batch, "S") is batch["sar"]
    assert model_input(batch, "SD")[0, :, 0, 0].tolist() == [1, 1, 3]


def test_errors() -> None:
    with pytest.raises(ConfigError, match="unknown model.input_set 'SAR'; choices: S, SD"):
        input_keys("SAR")
    with pytest.raises(KeyError, match="needs batch key 'dem'"):
        model_input({"sar": torch.zeros(1, 2, 4, 4)}, "SD")
    assert load_config(None, ["model.input_set=SOD"]).model.input_set == "SOD"
    assert load_config(None, []).model.input_set == "S"  # default: the skeleton's behaviour

"""S1 <-> S2 pairing within the window and the nearest-clear composite."""

import numpy as np

from sar2opt.config import CubeSpec
from sar2opt.cube.align import composite_nearest_clear, pair_s1_s2

SPEC = CubeSpec()


def test_pair_s1_s2_nearest_first_within_window():
    s1 = np.array(["2019-06-08", "2019-06-20", "2019-07-02"], dtype="datetime64[D]")
    s2 = np.array(["2019-06-06", "2019-06-11", "2019-07-01", "2019-07-11"], dtype="datetime64[D]")
    assert pair_s1_s2(s1, s2, 6) == [[0, 1], [], [2]]
    assert pair_s1_s2(s1, s2, 12) == [[0, 1], [1, 2], [2, 3]]
    # tie: 3 days before and after -> earlier first
    assert (
        pair_s1_s2(np.array(["2019-06-09"], "datetime64[D]"), s2[:2] + np.array([0, 1]), 5)[0][0]
        == 0
    )


def test_composite_takes_nearest_clear_pixel():
    opt = np.stack([np.full((2, 2, 2), v, "float32") for v in (1.0, 2.0, 3.0)])
    clear = np.array(
        [
            [[False, True], [False, False]],
            [[True, True], [False, False]],
            [[True, True], [True, False]],
        ]
    )
    comp, ok, src = composite_nearest_clear(opt, clear, [1, 0, 2])
    assert src.tolist() == [[1, 1], [2, -1]]
    assert comp[0].tolist()[0] == [2.0, 2.0] and comp[0, 1, 0] == 3.0 and np.isnan(comp[0, 1, 1])
    assert ok.tolist() == [[True, True], [True, False]]

"""Several hypotheses per input: ensemble and MC dropout; best-of-N picks per sample."""

from __future__ import annotations

import pytest
import torch

from sar2opt.models import UNetGenerator
from sar2opt.models.hypotheses import best_of_n, hypotheses


def test_best_of_n_picks_the_closest_per_sample() -> None:
    target = torch.zeros(2, 1, 2, 2)
    hyps = torch.stack([torch.full((2, 1, 2, 2), v) for v in (3.0, -1.0, 2.0)])
    hyps[2, 1] = 0.5  # for sample 1, hypothesis 2 is best
    mask = torch.ones(2, 1, 2, 2)
    mask[0, 0, 0, 0] = 0
    best, idx, l1 = best_of_n(hyps, target, mask)
    assert idx.tolist() == [1, 2]
    assert l1[:, 0].tolist() == [3.0, 1.0, 2.0] and l1[2, 1].item() == 0.5
    assert torch.equal(best[0], hyps[1, 0]) and torch.equal(best[1], hyps[2, 1])
    # Masked pixels do not count: a huge error there changes nothing.
    hyps[1, 0, 0, 0, 0] = 100.0
    assert best_of_n(hyps, target, mask)[1].tolist() == [1, 2]
    assert best_of_n(hyps, target)[2][1, 0].item() == pytest.approx((100 + 3) / 4)


def test_ensemble_and_dropout_samples() -> None:
    torch.manual_seed(0)
    a = UNetGenerator(2, 3, ngf=4, depth=3, dropout=0.5)
    b = UNetGenerator(2, 3, ngf=4, depth=3)
    x = torch.randn(2, 2, 20, 20)  # not a multiple of 8: padded and cropped
    h = hypotheses([a, b], x)
    assert h.shape == (2, 2, 3, 20, 20)
    assert not torch.equal(h[0], h[1])  # two checkpoints, two hypotheses
    assert torch.equal(hypotheses([a], x)[0], h[0])  # one sample per model: deterministic
    s = hypotheses([a], x, samples_per_model=4)
    assert s.shape == (4, 2, 3, 20, 20)
    assert not torch.equal(s[0], s[1])  # dropout kept on: different draws
    assert a.training and all(m.training for m in a.modules())  # modes restored
    a.eval()
    hypotheses([a], x, samples_per_model=2)
    assert not any(m.training for m in a.modules())
    with pytest.raises(ValueError, match="needs a model with dropout"):
        hypotheses([b], x, samples_per_model=2)

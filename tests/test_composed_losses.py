"""Phase-2 composed losses (eq. 10) against hand computations, and the module's triplet branch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unifashion.losses.composed_contrastive import ComposedItcLoss, ids_from_strings
from unifashion.losses.composed_matching import ComposedItmLoss


def _unit(*shape, seed):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_composed_itc_against_a_hand_loop():
    q, gal = _unit(4, 8, seed=0), _unit(4, 3, 8, seed=1)
    ids = torch.tensor([7, 8, 7, 9])  # queries 0 and 2 share a target: both targets are positives of both
    res = ComposedItcLoss(label_smoothing=0.1).compute(q, gal, 0.5, ids)
    expected = 0.0
    for i in range(4):
        sims = [max(float(q[i] @ gal[j, k]) for k in range(3)) / 0.5 for j in range(4)]
        pos = [j for j in range(4) if ids[j] == ids[i]]
        logz = math.log(sum(math.exp(s) for s in sims))
        for j in range(4):
            t = 0.9 * (1 / len(pos) if j in pos else 0) + 0.1 / 4
            expected -= t * (sims[j] - logz)
    assert res.loss.item() == pytest.approx(expected / 4, rel=1e-5)
    assert torch.allclose(res.sim_g2q, res.sim_q2g.t(), atol=1e-6)  # one process: the transpose


def test_composed_itc_with_caption_features_is_a_dot_product():
    q, cap = _unit(3, 8, seed=2), _unit(3, 8, seed=3)
    res = ComposedItcLoss().compute(q, cap, 0.1)
    sims = q @ cap.t() / 0.1
    assert res.loss.item() == pytest.approx(F.cross_entropy(sims, torch.arange(3)).item(), rel=1e-5)


def test_composed_itm_uses_text_and_target_and_the_composed_similarities():
    calls = []

    def itm_logits(vision, ids, mask):
        calls.append((vision.clone(), ids.clone()))
        return torch.zeros(vision.shape[0], 2)

    q, gal = _unit(3, 8, seed=4), _unit(3, 2, 8, seed=5)
    itc = ComposedItcLoss().compute(q, gal, 0.1, torch.tensor([1, 2, 3]))
    vision = torch.arange(3.0).view(3, 1, 1).expand(3, 2, 4)  # image i is filled with i
    ids = torch.tensor([[10], [11], [12]])
    out = ComposedItmLoss().composed(itm_logits, vision, ids, torch.ones(3, 1, dtype=torch.long), itc,
                                     torch.tensor([1, 2, 3]), generator=torch.Generator().manual_seed(0))
    assert out["cir_itm"].item() == pytest.approx(math.log(2))  # zero logits: CE = log 2
    v, t = calls[0]
    assert torch.equal(v[:3, 0, 0], torch.arange(3.0)) and torch.equal(t[:3, 0], ids[:, 0])  # positives
    assert (v[3:6, 0, 0] != torch.arange(3.0)).all()  # negative targets are other targets
    assert (t[6:, 0] != ids[:, 0]).all()  # negative texts are other texts


def test_ids_from_strings_are_stable_and_distinct():
    a = ids_from_strings(["B00ABC", "B00XYZ", "B00ABC"])
    assert a[0] == a[2] and a[0] != a[1]
    assert torch.equal(a, ids_from_strings(["B00ABC", "B00XYZ", "B00ABC"]))


def test_composed_itm_random_negatives_are_uniform_over_other_targets():
    drawn = []

    def itm_logits(vision, ids, mask):
        drawn.append(int(vision[3, 0, 0]))  # batch [3 positives, 3 negative targets, ...]: text 0's negative
        return torch.zeros(vision.shape[0], 2)

    # the composed similarities make target 2 the hardest negative of text 0 by far
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    gal = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[0.99, 0.14]]])
    itc = ComposedItcLoss().compute(q, gal, 0.01, torch.tensor([1, 2, 3]))
    vision = torch.arange(3.0).view(3, 1, 1).expand(3, 1, 4)
    ids, mask = torch.tensor([[10], [11], [12]]), torch.ones(3, 1, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    for mode in ("hard", "random"):
        drawn.clear()
        for _ in range(400):
            ComposedItmLoss().composed(itm_logits, vision, ids, mask, itc, torch.tensor([1, 2, 3]), generator=g,
                                       negatives=mode)
        share = drawn.count(2) / len(drawn)
        assert 0 not in drawn  # never the text's own target
        if mode == "hard":
            assert share > 0.99
        else:
            assert abs(share - 0.5) < 4 * (0.25 / 400) ** 0.5  # uniform over targets 1 and 2


def test_composed_itm_reference_negatives_pair_each_text_with_its_own_reference():
    calls = []

    def itm_logits(vision, ids, mask):
        calls.append((vision.clone(), ids.clone()))
        return torch.stack([torch.zeros(vision.shape[0]), vision[:, 0, 0]], dim=1)  # match logit = image value

    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    itc = ComposedItcLoss().compute(q, q[:, None], 0.1, torch.tensor([1, 2, 3]))
    target = torch.tensor([2.0, 3.0, 4.0]).view(3, 1, 1).expand(3, 2, 4)  # target i is filled with 2 + i
    reference = -torch.tensor([2.0, 3.0, 4.0]).view(3, 1, 1).expand(3, 2, 4)  # its reference with -(2 + i)
    ids, mask = torch.tensor([[10], [11], [12]]), torch.ones(3, 1, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    loss = ComposedItmLoss().composed(itm_logits, target, ids, mask, itc, torch.tensor([1, 2, 3]), generator=g,
                                      negatives="reference", reference_vision_embeds=reference)["cir_itm"]
    v, t = calls[0]
    assert torch.equal(v[:3], target) and torch.equal(v[3:6], reference) and torch.equal(v[6:], target)
    assert torch.equal(t[:6, 0], torch.cat([ids[:, 0], ids[:, 0]]))  # positives and (t, its reference)
    assert (t[6:, 0] != ids[:, 0]).all()  # the negative text of a target is another text
    # hand-computed cross-entropy: logits (0, x) with labels 1 on the positives and 0 on the negatives
    x = v[:, 0, 0]
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 0])
    expected = torch.where(labels == 1, torch.nn.functional.softplus(-x), torch.nn.functional.softplus(x)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="reference_vision_embeds"):
        ComposedItmLoss().composed(itm_logits, target, ids, mask, itc, torch.tensor([1, 2, 3]), negatives="reference")
    with pytest.raises(ValueError, match="'hard', 'random' or 'reference'"):
        ComposedItmLoss().composed(itm_logits, target, ids, mask, itc, negatives="nearest")

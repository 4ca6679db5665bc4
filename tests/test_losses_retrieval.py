"""ITC (eq. 3) and ITM (eq. 4) losses against hand-computed values and naive references."""

import math

import pytest
import torch

from unifashion.losses import distributed
from unifashion.losses.contrastive import ItcLoss
from unifashion.losses.matching import ItmLoss, sample_hard_negatives


def _naive_itc(image_feats, text_feat, temp, ids, eps):
    """ITC with python loops and math (independent of the vectorised code)."""
    n = len(ids)

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b))

    def sim(i, t):  # max over queries of image i against text t, / temp
        return max(dot(q, text_feat[t]) for q in image_feats[i]) / temp

    def row_loss(scores, row):
        pos = [1.0 if ids[row] == ids[j] else 0.0 for j in range(n)]
        targets = [(1 - eps) * p / sum(pos) + eps / n for p in pos]
        log_z = math.log(sum(math.exp(s) for s in scores))
        return -sum(t * (s - log_z) for t, s in zip(targets, scores))

    i2t = [row_loss([sim(i, t) for t in range(n)], i) for i in range(n)]
    t2i = [row_loss([sim(i, t) for i in range(n)], t) for t in range(n)]
    return (sum(i2t) / n + sum(t2i) / n) / 2


def test_itc_hand_computed_two_pairs():
    # image 0 has queries e1, e2; image 1 has (0.6, 0.8), (0.8, -0.6); texts e1 and (0.6, 0.8).
    image_feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [0.8, -0.6]]])
    text_feat = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # max-over-query similarities: [[1, 0.8], [0.8, 1]] / 0.1 = [[10, 8], [8, 10]]; targets with eps=0.1:
    # [0.95, 0.05] -> every row loses 0.95 log(1+e^-2) + 0.05 (2 + log(1+e^-2)) = log(1+e^-2) + 0.1
    expected = math.log(1 + math.exp(-2)) + 0.1
    result = ItcLoss(label_smoothing=0.1).compute(image_feats, text_feat, 0.1, torch.tensor([3, 4]))
    assert result.losses["itc"].item() == pytest.approx(expected, abs=1e-6)
    assert torch.allclose(result.sim_i2t, torch.tensor([[10.0, 8.0], [8.0, 10.0]]))
    assert torch.allclose(result.sim_t2i, torch.tensor([[10.0, 8.0], [8.0, 10.0]]))
    # no ids = the diagonal is the only positive: same value here
    assert ItcLoss()(image_feats, text_feat, 0.1)["itc"].item() == pytest.approx(expected, abs=1e-6)


def test_itc_directions_differ_and_match_naive():
    torch.manual_seed(0)
    image_feats = torch.nn.functional.normalize(torch.randn(5, 3, 4), dim=-1)
    text_feat = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1)
    ids = [1, 2, 1, 3, 2]
    result = ItcLoss(label_smoothing=0.1).compute(image_feats, text_feat, 0.07, torch.tensor(ids))
    expected = _naive_itc(image_feats.tolist(), text_feat.tolist(), 0.07, ids, 0.1)
    assert result.losses["itc"].item() == pytest.approx(expected, rel=1e-5)
    # t2i is the transpose of i2t on one process
    assert torch.allclose(result.sim_t2i, result.sim_i2t.t())
    no_smoothing = ItcLoss(label_smoothing=0.0)(image_feats, text_feat, 0.07, torch.tensor(ids))["itc"]
    assert no_smoothing.item() == pytest.approx(
        _naive_itc(image_feats.tolist(), text_feat.tolist(), 0.07, ids, 0.0), rel=1e-5
    )


def test_itc_product_aware_targets():
    image_feats = torch.nn.functional.normalize(torch.randn(3, 2, 4), dim=-1)
    text_feat = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    result = ItcLoss().compute(image_feats, text_feat, 0.07, torch.tensor([7, 7, 9]))
    expected = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert torch.equal(result.targets, expected)
    without = ItcLoss().compute(image_feats, text_feat, 0.07, None)
    assert torch.equal(without.targets, torch.eye(3))


def test_itc_gradient_reaches_features_and_temperature():
    image_feats = torch.nn.functional.normalize(torch.randn(4, 2, 3), dim=-1).requires_grad_()
    text_feat = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1).requires_grad_()
    temp = torch.tensor(0.07, requires_grad=True)
    ItcLoss()(image_feats, text_feat, temp, torch.arange(4))["itc"].backward()
    assert image_feats.grad.abs().sum() > 0 and text_feat.grad.abs().sum() > 0 and temp.grad != 0


def test_itc_bad_shapes():
    with pytest.raises(ValueError, match="image_feats"):
        ItcLoss()(torch.randn(2, 3), torch.randn(2, 3), 0.1)
    with pytest.raises(ValueError, match="product_ids"):
        ItcLoss()(torch.randn(2, 1, 3), torch.randn(2, 3), 0.1, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="label_smoothing"):
        ItcLoss(label_smoothing=1.5)


def test_distributed_helpers_are_identity_on_one_process():
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.gather_features(x, with_grad=True) is x
    assert distributed.gather_ids(torch.arange(3)).tolist() == [0, 1, 2]
    assert distributed.rank() == 0 and distributed.world_size() == 1


def test_sampler_never_picks_same_product_and_follows_softmax():
    ids = torch.tensor([0, 0, 1, 2])
    positives = ids[:, None] == ids[None, :]
    # row 0 may draw columns 2 and 3 only, with probabilities 2/5 and 3/5
    sim = torch.tensor([[5.0, 9.0, math.log(2.0), math.log(3.0)]]).repeat(4, 1)
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_hard_negatives(sim, positives, gen) for _ in range(3000)])  # (3000, 4)
    assert not positives[torch.arange(4).expand(3000, 4), draws].any()
    frac_col3 = (draws[:, 0] == 3).float().mean().item()
    assert frac_col3 == pytest.approx(0.6, abs=0.04)
    # reproducible with a seeded generator
    again = sample_hard_negatives(sim, positives, torch.Generator().manual_seed(1))
    assert torch.equal(again, sample_hard_negatives(sim, positives, torch.Generator().manual_seed(1)))


def test_sampler_errors_without_negatives():
    positives = torch.ones(2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="no item of another product"):
        sample_hard_negatives(torch.zeros(2, 2), positives)


class _RecordingMatcher:
    """Scores a pair 2 if image i and text i belong together (same product), else -1; records inputs."""

    def __init__(self, product_ids):
        self.product_ids = product_ids
        self.calls = []

    def itm_logits(self, vision_embeds, input_ids, attention_mask):
        image_item = vision_embeds[:, 0, 0].long()  # (N,)
        text_item = input_ids[:, 0] - 10  # (N,)
        self.calls.append((image_item, text_item, attention_mask))
        match = self.product_ids[image_item] == self.product_ids[text_item]
        score = torch.where(match, torch.tensor(2.0), torch.tensor(-1.0))
        return torch.stack([torch.zeros_like(score), score], dim=1)  # (N, 2)


def test_itm_batch_layout_labels_and_value():
    product_ids = torch.tensor([0, 0, 1, 2, 2])
    b = len(product_ids)
    vision_embeds = (
        torch.arange(b, dtype=torch.float).view(b, 1, 1).expand(b, 3, 2).clone()
    )  # item i -> value i
    input_ids = torch.stack([torch.arange(b) + 10, torch.zeros(b, dtype=torch.long)], dim=1)  # (B, 2)
    attention_mask = torch.tensor([[1, 0]] * b)
    sim = torch.randn(b, b)
    matcher = _RecordingMatcher(product_ids)
    gen = torch.Generator().manual_seed(0)
    out = ItmLoss()(matcher, vision_embeds, input_ids, attention_mask, sim, sim.t(), product_ids, gen)
    # positives scored [0, 2] with label 1, negatives [0, -1] with label 0
    expected = (math.log(1 + math.exp(-2)) + 2 * math.log(1 + math.exp(-1))) / 3
    assert out["itm"].item() == pytest.approx(expected, abs=1e-6)
    ((images, texts, _),) = matcher.calls
    items = torch.arange(b)
    assert torch.equal(images[:b], items) and torch.equal(texts[:b], items)  # positives
    assert torch.equal(texts[b : 2 * b], items) and torch.equal(images[2 * b :], items)
    assert (product_ids[images[b : 2 * b]] != product_ids[items]).all()  # negative images
    assert (product_ids[texts[2 * b :]] != product_ids[items]).all()  # negative texts


def test_itm_max_pairs_scores_only_the_first_pairs():
    product_ids = torch.tensor([0, 0, 1, 2, 2])
    b, n = len(product_ids), 2
    vision_embeds = torch.arange(b, dtype=torch.float).view(b, 1, 1).expand(b, 3, 2).clone()
    input_ids = torch.stack([torch.arange(b) + 10, torch.zeros(b, dtype=torch.long)], dim=1)  # (B, 2)
    attention_mask = torch.tensor([[1, 0]] * b)
    sim = torch.randn(b, b)
    matcher = _RecordingMatcher(product_ids)
    out = ItmLoss(max_pairs=n)(matcher, vision_embeds, input_ids, attention_mask, sim, sim.t(), product_ids,
                               torch.Generator().manual_seed(0))
    ((images, texts, _),) = matcher.calls
    assert images.numel() == 3 * n  # [pos, neg-image, neg-text] of the first n pairs only
    assert torch.equal(images[:n], torch.arange(n)) and torch.equal(texts[:n], torch.arange(n))
    assert (product_ids[images[n : 2 * n]] != product_ids[:n]).all()
    expected = (math.log(1 + math.exp(-2)) + 2 * math.log(1 + math.exp(-1))) / 3
    assert out["itm"].item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="max_pairs"):
        ItmLoss(max_pairs=0)


def test_itm_accepts_a_callable_and_gets_gradient():
    product_ids = torch.tensor([0, 1, 2])
    vision_embeds = torch.randn(3, 2, 4, requires_grad=True)
    head = torch.nn.Linear(4, 2)

    def itm_logits(v, ids, mask):
        return head(v.mean(dim=1) + ids.float().mean(dim=1, keepdim=True))

    out = ItmLoss()(
        itm_logits,
        vision_embeds,
        torch.ones(3, 2, dtype=torch.long),
        torch.ones(3, 2, dtype=torch.long),
        torch.zeros(3, 3),
        torch.zeros(3, 3),
        product_ids,
    )
    out["itm"].backward()
    assert vision_embeds.grad.abs().sum() > 0 and head.weight.grad.abs().sum() > 0


def test_itm_bad_similarity_shape():
    with pytest.raises(ValueError, match="similarities"):
        ItmLoss()(
            lambda *a: None,
            torch.randn(2, 1, 1),
            torch.ones(2, 1, dtype=torch.long),
            torch.ones(2, 1, dtype=torch.long),
            torch.zeros(2, 3),
            torch.zeros(2, 3),
        )

"""CMR protocols checked against naive loop implementations written here (DATASETS.md 6.1)."""

from __future__ import annotations

import math

import pytest
import torch

from unifashion.tasks.cmr.protocol import (
    RetrievalEvalConfig,
    TopKScores,
    block100_protocol,
    full_protocol,
    itm_rerank,
    retrieval_metrics,
    sample100_galleries,
    sample100_protocol,
    score_matrix,
)

# ----------------------------------------------------------------------------------------------
# Fixtures: seeded features, products with 1-4 images, several sub-categories
# ----------------------------------------------------------------------------------------------


def _problem(
    seed: int = 0, products: int = 60, subcats: int = 4, q: int = 3, e: int = 16, noise: float = 1.2
):
    g = torch.Generator().manual_seed(seed)
    views = torch.randint(1, 5, (products,), generator=g)  # images per product
    image_pid = torch.repeat_interleave(torch.arange(products) * 7 + 3, views)  # non-contiguous ids
    text_pid = torch.arange(products) * 7 + 3
    product_sub = torch.randint(0, subcats, (products,), generator=g)
    text_sub = [f"SUB {int(s)}" for s in product_sub]
    image_sub = [f"SUB {int(s)}" for s in torch.repeat_interleave(product_sub, views)]
    centre = torch.randn(products, e, generator=g)
    text = torch.nn.functional.normalize(centre + noise * torch.randn(products, e, generator=g), dim=-1)
    image_centre = torch.repeat_interleave(centre, views, dim=0)[:, None]  # (N, 1, E)
    image = image_centre + noise * torch.randn(image_centre.shape[0], q, e, generator=g)
    image = torch.nn.functional.normalize(image, dim=-1)  # (N, Q, E)
    return image, text, image_pid, text_pid, image_sub, text_sub


def _naive_scores(image, text):
    image = image.tolist()
    text = text.tolist()
    return [
        [max(sum(a * b for a, b in zip(query, t)) for query in queries) for t in text] for queries in image
    ]


def _naive_rank(row, positive):
    """Other-product items scoring >= the best positive (pessimistic ties), plain Python."""
    best = max(s for s, p in zip(row, positive) if p)
    return sum(1 for s, p in zip(row, positive) if not p and s >= best)


def _pct(ranks, k):
    return 100.0 * sum(r < k for r in ranks) / len(ranks)


# ----------------------------------------------------------------------------------------------
# score_matrix
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 5, None])
def test_score_matrix_equals_naive_double_loop(chunk_size):
    image, text, *_ = _problem(products=6, q=3, e=8)
    got = score_matrix(image, text, chunk_size=chunk_size, device="cpu")
    want = torch.tensor(_naive_scores(image, text))
    assert got.shape == (image.shape[0], text.shape[0])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_score_matrix_plain_vectors_q1():
    g = torch.Generator().manual_seed(1)
    image = torch.randn(7, 5, generator=g)
    text = torch.randn(4, 5, generator=g)
    got = score_matrix(image, text, chunk_size=3)
    want = torch.tensor([[sum(a * b for a, b in zip(i, t)) for t in text.tolist()] for i in image.tolist()])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(score_matrix(image[:, None], text), got)


def test_score_matrix_topk_matches_sorted_rows():
    image, text, *_ = _problem(products=8, q=2, e=8)
    top = score_matrix(image, text, chunk_size=4, topk=3)
    assert isinstance(top, TopKScores)
    naive = _naive_scores(image, text)
    for i, row in enumerate(naive):
        order = sorted(range(len(row)), key=lambda j: -row[j])[:3]
        assert top.indices[i].tolist() == order
        torch.testing.assert_close(top.values[i], torch.tensor([row[j] for j in order]), atol=1e-5, rtol=0)


def test_score_matrix_bad_shapes_raise():
    with pytest.raises(ValueError, match="embedding sizes differ"):
        score_matrix(torch.randn(2, 3, 4), torch.randn(5, 6))
    with pytest.raises(ValueError, match=r"\(N, Q, E\)"):
        score_matrix(torch.randn(2, 3, 4, 5), torch.randn(5, 5))
    with pytest.raises(ValueError, match="topk"):
        score_matrix(torch.randn(2, 3, 4), torch.randn(5, 4), topk=6)


# ----------------------------------------------------------------------------------------------
# Full protocol
# ----------------------------------------------------------------------------------------------


def test_full_protocol_hand_computed():
    # 3 images, 2 products: images 0, 1 show product 10, image 2 shows product 20.
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.5], [0.3, 0.4]])
    got = full_protocol(scores, [10, 10, 20], [10, 20], ks=(1, 2))
    # i2t: image 0 rank 0, image 1 rank 1 (0.5 > 0.2), image 2 rank 0.
    # t2i: text 10 best positive 0.9 -> rank 0; text 20 positive 0.4 < image 1's 0.5 -> rank 1.
    assert got["i2t/R@1"] == pytest.approx(200 / 3)
    assert got["i2t/R@2"] == pytest.approx(100.0)
    assert got["t2i/R@1"] == pytest.approx(50.0)
    assert got["t2i/R@2"] == pytest.approx(100.0)
    assert got["mean/R"] == pytest.approx((200 / 3 + 100 + 50 + 100) / 4)


def test_full_protocol_ties_are_pessimistic():
    scores = torch.full((3, 2), 0.5)
    got = full_protocol(scores, [0, 0, 1], [0, 1], ks=(1, 2))
    assert got["i2t/R@1"] == 0.0 and got["t2i/R@1"] == 0.0
    # Each image has 1 tied negative text; text 0 has 1 tied negative image, text 1 has 2.
    assert got["i2t/R@2"] == 100.0 and got["t2i/R@2"] == 50.0


@pytest.mark.parametrize("chunk_size", [3, 1024])
def test_full_protocol_matches_naive(chunk_size):
    image, text, image_pid, text_pid, *_ = _problem(seed=3)
    scores = score_matrix(image, text)
    got = full_protocol(scores, image_pid, text_pid, ks=(1, 5, 10), chunk_size=chunk_size)
    s = scores.tolist()
    ip, tp = image_pid.tolist(), text_pid.tolist()
    # Naive: sort the gallery, find the first item of the query's product.
    i2t, t2i = [], []
    for i, row in enumerate(s):
        order = sorted(range(len(tp)), key=lambda j: -row[j])
        i2t.append(next(r for r, j in enumerate(order) if tp[j] == ip[i]))
    for j in range(len(tp)):
        order = sorted(range(len(ip)), key=lambda i: -s[i][j])
        t2i.append(next(r for r, i in enumerate(order) if ip[i] == tp[j]))
    want = {}
    for k in (1, 5, 10):
        want[f"i2t/R@{k}"] = _pct(i2t, k)
        want[f"t2i/R@{k}"] = _pct(t2i, k)
    want["mean/R"] = sum(want.values()) / 6
    assert got == pytest.approx(want)
    assert 0 < got["mean/R"] < 100  # the fixture is neither trivial nor hopeless


def test_full_protocol_missing_positive_raises():
    with pytest.raises(ValueError, match="image 1 .*product 5"):
        full_protocol(torch.zeros(2, 1), [0, 5], [0])


# ----------------------------------------------------------------------------------------------
# Sample-100
# ----------------------------------------------------------------------------------------------


def _codes(names):
    vocab = {n: c for c, n in enumerate(sorted(set(names)))}
    return torch.tensor([vocab[n] for n in names])


def test_sample100_galleries_respect_the_protocol():
    image, text, image_pid, text_pid, image_sub, text_sub = _problem(seed=4, products=80, subcats=3)
    codes = _codes(image_sub + text_sub)
    isub, tsub = codes[: len(image_sub)], codes[len(image_sub) :]
    num_negatives = 20
    for q_pid, g_pid, q_sub, g_sub in ((image_pid, text_pid, isub, tsub), (text_pid, image_pid, tsub, isub)):
        gal = sample100_galleries(
            q_pid, g_pid, q_sub, g_sub, 40, num_negatives, torch.Generator().manual_seed(0), chunk_size=7
        )
        assert len(set(gal.queries.tolist())) == 40  # without replacement
        for b, query in enumerate(gal.queries.tolist()):
            pos, negs = gal.positives[b].item(), gal.negatives[b].tolist()
            assert g_pid[pos] == q_pid[query]
            assert len(set(negs)) == num_negatives
            assert all(g_pid[j] != q_pid[query] for j in negs)
            eligible = {j for j in range(len(g_pid)) if g_sub[j] == q_sub[query] and g_pid[j] != q_pid[query]}
            if len(eligible) >= num_negatives:
                assert not gal.fallback[b]
                assert set(negs) <= eligible
            else:
                assert gal.fallback[b]
                assert eligible <= set(negs)


def test_sample100_draws_are_uniform():
    # 400 queries of one product; gallery: 4 positives, 10 same-sub negatives, 5 other-sub items.
    q_pid = torch.zeros(400, dtype=torch.long)
    q_sub = torch.zeros(400, dtype=torch.long)
    g_pid = torch.tensor([0] * 4 + list(range(1, 16)))
    g_sub = torch.tensor([0] * 14 + [1] * 5)
    gal = sample100_galleries(q_pid, g_pid, q_sub, g_sub, 400, 3, torch.Generator().manual_seed(1))
    pos_counts = torch.bincount(gal.positives, minlength=19)
    neg_counts = torch.bincount(gal.negatives.reshape(-1), minlength=19)
    assert (pos_counts[:4] - 100).abs().max() < 35  # sd ~ 8.7
    assert (neg_counts[4:14] - 120).abs().max() < 35  # sd ~ 9.2
    assert neg_counts[14:].sum() == 0 and not gal.fallback.any()


def _naive_sample100(
    scores, image_pid, text_pid, image_sub, text_sub, num_queries, num_negatives, repeats, seed, ks
):
    """Reference aggregation: same galleries, ranking by a plain Python sort of each gallery."""
    codes = _codes(list(image_sub) + list(text_sub))
    isub, tsub = codes[: len(image_sub)], codes[len(image_sub) :]
    s = scores.tolist()
    gen = torch.Generator().manual_seed(seed)
    totals = {f"{d}/R@{k}": 0.0 for d in ("i2t", "t2i") for k in ks}
    fallback = {"i2t": 0, "t2i": 0}
    for _ in range(repeats):
        for d, (q_pid, g_pid, q_sub, g_sub) in {
            "i2t": (image_pid, text_pid, isub, tsub),
            "t2i": (text_pid, image_pid, tsub, isub),
        }.items():
            gal = sample100_galleries(q_pid, g_pid, q_sub, g_sub, num_queries, num_negatives, gen)
            ranks = []
            for b, query in enumerate(gal.queries.tolist()):

                def score(g, q=query, d=d):
                    return s[q][g] if d == "i2t" else s[g][q]

                items = [(score(gal.positives[b].item()), 1)] + [
                    (score(j), 0) for j in gal.negatives[b].tolist()
                ]
                ordered = sorted(items, key=lambda x: (-x[0], x[1]))  # ties: the positive last
                ranks.append(ordered.index(items[0]))
            for k in ks:
                totals[f"{d}/R@{k}"] += _pct(ranks, k) / repeats
            fallback[d] += int(gal.fallback.sum())
    totals["mean/R"] = sum(totals.values()) / (2 * len(ks))
    return totals, fallback


def test_sample100_matches_naive_and_counts_fallback():
    image, text, image_pid, text_pid, image_sub, text_sub = _problem(seed=5, products=90, subcats=3)
    # One singleton sub-category product forces the fallback path.
    text_sub[0] = "LONELY"
    image_sub = ["LONELY" if p == text_pid[0] else s for p, s in zip(image_pid.tolist(), image_sub)]
    scores = score_matrix(image, text)
    kwargs = dict(num_queries=50, num_negatives=25, repeats=3, seed=11, ks=(1, 5, 10))
    got = sample100_protocol(scores, image_pid, text_pid, image_sub, text_sub, **kwargs)
    want, fallback = _naive_sample100(scores, image_pid, text_pid, image_sub, text_sub, **kwargs)
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key
    assert got["i2t/fallback_queries"] == fallback["i2t"]
    assert got["t2i/fallback_queries"] == fallback["t2i"]
    assert got["i2t/num_queries"] == got["t2i/num_queries"] == 50
    assert 0 < got["mean/R"] < 100


def test_sample100_fallback_path_is_counted():
    # Product 0 alone in sub-category "A"; 30 other products in "B"; 3 negatives per gallery.
    scores = torch.rand(31, 31, generator=torch.Generator().manual_seed(0))
    pid = torch.arange(31)
    sub = ["A"] + ["B"] * 30
    got = sample100_protocol(scores, pid, pid, sub, sub, num_queries=31, num_negatives=3, repeats=2)
    assert got["i2t/fallback_queries"] == 2 and got["t2i/fallback_queries"] == 2  # once per repeat


def test_sample100_is_deterministic_and_seed_dependent():
    image, text, image_pid, text_pid, image_sub, text_sub = _problem(seed=6, products=70)
    scores = score_matrix(image, text)
    args = (scores, image_pid, text_pid, image_sub, text_sub)
    a = sample100_protocol(*args, num_queries=30, num_negatives=10, repeats=2, seed=3)
    b = sample100_protocol(*args, num_queries=30, num_negatives=10, repeats=2, seed=3)
    assert a == b
    codes = _codes(image_sub + text_sub)
    isub, tsub = codes[: len(image_sub)], codes[len(image_sub) :]
    g1 = sample100_galleries(image_pid, text_pid, isub, tsub, 30, 10, torch.Generator().manual_seed(3))
    g2 = sample100_galleries(image_pid, text_pid, isub, tsub, 30, 10, torch.Generator().manual_seed(4))
    assert not torch.equal(g1.queries, g2.queries)


def test_sample100_perfect_and_constant_scores():
    image, text, image_pid, text_pid, image_sub, text_sub = _problem(seed=7, products=50)
    perfect = (image_pid[:, None] == text_pid[None]).float() + 0.1 * torch.rand(len(image_pid), len(text_pid))
    args = (image_pid, text_pid, image_sub, text_sub)
    assert sample100_protocol(perfect, *args, num_queries=20, num_negatives=10)["mean/R"] == 100.0
    assert (
        sample100_protocol(torch.zeros_like(perfect), *args, num_queries=20, num_negatives=10)["mean/R"]
        == 0.0
    )


def test_sample100_too_few_negatives_raises():
    pid = torch.arange(5)
    with pytest.raises(ValueError, match="num_negatives=10"):
        sample100_protocol(torch.rand(5, 5), pid, pid, ["A"] * 5, ["A"] * 5, num_negatives=10)
    # 12 texts, but 3 belong to the query's own product: only 9 possible negatives.
    text_pid = torch.tensor([0, 0, 0, *range(1, 10)])
    with pytest.raises(ValueError, match="only 9 gallery items of other products"):
        sample100_protocol(torch.rand(1, 12), [0], text_pid, ["A"], ["A"] * 12, num_negatives=10)


# ----------------------------------------------------------------------------------------------
# Block-100
# ----------------------------------------------------------------------------------------------


def test_block100_matches_naive():
    g = torch.Generator().manual_seed(8)
    scores = torch.randn(250, 250, generator=g) + 2.0 * torch.eye(250)
    got = block100_protocol(scores, block_size=100, ks=(1, 5, 10))
    s = scores.tolist()
    i2t, t2i = [], []
    for start in (0, 100):  # last 50 pairs dropped
        for a in range(start, start + 100):
            i2t.append(sum(1 for b in range(start, start + 100) if b != a and s[a][b] >= s[a][a]))
            t2i.append(sum(1 for b in range(start, start + 100) if b != a and s[b][a] >= s[a][a]))
    for k in (1, 5, 10):
        assert got[f"i2t/R@{k}"] == pytest.approx(_pct(i2t, k))
        assert got[f"t2i/R@{k}"] == pytest.approx(_pct(t2i, k))
    assert got["dropped_pairs"] == 50
    assert 0 < got["i2t/R@1"] < 100


# ----------------------------------------------------------------------------------------------
# ITM re-ranking
# ----------------------------------------------------------------------------------------------


def _naive_rerank_ranks(s, itm, pid_q, pid_g, k, transpose, itc_scale=1.0):
    ranks = []
    nq = len(pid_q)
    for a in range(nq):
        row = [(s[b][a] if transpose else s[a][b]) for b in range(len(pid_g))]
        lg = [(itm[b][a] if transpose else itm[a][b]) for b in range(len(pid_g))]
        order = sorted(range(len(row)), key=lambda b: -row[b])
        cand = sorted(order[:k], key=lambda b: -(itc_scale * row[b] + lg[b]))
        final = cand + order[k:]
        ranks.append(next(r for r, b in enumerate(final) if pid_g[b] == pid_q[a]))
    return ranks


@pytest.mark.parametrize("rule", ["log_odds", "lavis"])
def test_itm_rerank_matches_naive_with_fake_itm(rule):
    image, text, image_pid, text_pid, *_ = _problem(seed=9, products=25)
    scores = score_matrix(image, text)
    g = torch.Generator().manual_seed(2)
    # Fake ITM: random logits plus a bonus for the right product; the no-match logit is random too.
    table = (
        torch.randn(scores.shape, generator=g) * 0.3 + 1.5 * (image_pid[:, None] == text_pid[None]).float()
    )
    no_match = torch.randn(scores.shape, generator=g) * 0.5
    calls = []

    def itm_fn(i, t):
        calls.append(len(i))
        return torch.stack([no_match[i, t], table[i, t]], dim=1)  # (P, 2) logits

    k, tau = 6, 0.05
    reranked = itm_rerank(scores, itm_fn, k=k, batch_size=37, rule=rule, temperature=tau)
    assert max(calls) <= 37 and sum(calls) == k * (scores.shape[0] + scores.shape[1])
    got = full_protocol(reranked.i2t, image_pid, text_pid, t2i_scores=reranked.t2i, ks=(1, 5, 10))
    # log-odds + s / tau, or (LAVIS) the match logit + s
    itm, scale = ((table - no_match), 1 / tau) if rule == "log_odds" else (table, 1.0)
    s, lg = scores.tolist(), itm.tolist()
    i2t = _naive_rerank_ranks(s, lg, image_pid.tolist(), text_pid.tolist(), k, transpose=False, itc_scale=scale)
    t2i = _naive_rerank_ranks(s, lg, text_pid.tolist(), image_pid.tolist(), k, transpose=True, itc_scale=scale)
    for kk in (1, 5, 10):
        assert got[f"i2t/R@{kk}"] == pytest.approx(_pct(i2t, kk))
        assert got[f"t2i/R@{kk}"] == pytest.approx(_pct(t2i, kk))
    plain = full_protocol(scores, image_pid, text_pid)
    assert got["i2t/R@1"] > plain["i2t/R@1"]  # the product bonus helps


def test_itm_rerank_rules_differ_where_the_itc_gap_is_large():
    # two candidates: ITC prefers column 0 by 0.2 (4 logits at tau 0.05), ITM prefers column 1 by 1 logit
    scores = torch.tensor([[0.9, 0.7]])
    logits = {0: torch.tensor([0.0, 0.0]), 1: torch.tensor([0.0, 1.0])}

    def itm_fn(i, t):
        return torch.stack([logits[int(c)] for c in t])

    lavis = itm_rerank(scores, itm_fn, k=2, rule="lavis")  # 1.0 + 0.7 > 0.0 + 0.9: column 1 wins
    log_odds = itm_rerank(scores, itm_fn, k=2, rule="log_odds", temperature=0.05)  # 1 + 14 < 0 + 18
    assert int(lavis.i2t.argmax()) == 1 and int(log_odds.i2t.argmax()) == 0
    with pytest.raises(ValueError, match="rule"):
        itm_rerank(scores, itm_fn, k=2, rule="sum")
    with pytest.raises(ValueError, match="temperature"):
        itm_rerank(scores, itm_fn, k=2, temperature=0.0)


def test_itm_rerank_bad_logits_shape_raises():
    with pytest.raises(ValueError, match="itm_fn must return"):
        itm_rerank(torch.rand(3, 4), lambda i, t: torch.zeros(len(i), 3), k=2)


# ----------------------------------------------------------------------------------------------
# Flat keys
# ----------------------------------------------------------------------------------------------


def test_retrieval_metrics_flat_keys():
    image, text, image_pid, text_pid, image_sub, text_sub = _problem(seed=10, products=40)
    scores = score_matrix(image, text)
    cfg = RetrievalEvalConfig(num_queries=20, num_negatives=10, repeats=2, seed=1)
    got = retrieval_metrics(
        scores, image_pid, text_pid, image_sub, text_sub, prefix="cmr/fashiongen", config=cfg
    )
    for protocol in ("full", "sample100"):
        for d in ("i2t", "t2i"):
            for k in (1, 5, 10):
                assert f"cmr/fashiongen/{protocol}/{d}/R@{k}" in got
        assert math.isfinite(got[f"cmr/fashiongen/{protocol}/mean/R"])
    assert got["cmr/fashiongen/full/t2i/R@10"] == pytest.approx(
        full_protocol(scores, image_pid, text_pid)["t2i/R@10"]
    )
    direct = sample100_protocol(scores, image_pid, text_pid, image_sub, text_sub, 20, 10, 2, 1)
    assert got["cmr/fashiongen/sample100/mean/R"] == pytest.approx(direct["mean/R"])
    assert "cmr/fashiongen/sample100/i2t/fallback_queries" in got
    with pytest.raises(ValueError, match="sub"):
        retrieval_metrics(scores, image_pid, text_pid, config=cfg)


def test_protocols_leave_the_global_rng_alone():
    image, text, image_pid, text_pid, image_sub, text_sub = _problem(seed=11, products=30)
    scores = score_matrix(image, text)
    state = torch.get_rng_state()
    sample100_protocol(scores, image_pid, text_pid, image_sub, text_sub, num_queries=10, num_negatives=5)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    image, text, image_pid, text_pid, image_sub, text_sub = _problem(seed=12, products=80)
    cpu = score_matrix(image, text, chunk_size=16)
    on_cuda = score_matrix(image, text, chunk_size=16, device="cuda")  # inputs on CPU, products on GPU
    assert on_cuda.device.type == "cpu"
    torch.testing.assert_close(on_cuda, cpu, atol=1e-4, rtol=0)
    gpu_scores = score_matrix(image.cuda(), text.cuda())
    assert gpu_scores.device.type == "cuda"
    torch.testing.assert_close(gpu_scores.cpu(), cpu, atol=1e-4, rtol=0)
    # Protocols on CUDA scores give the CPU numbers (ids stay on CPU).
    assert full_protocol(cpu, image_pid, text_pid) == pytest.approx(
        full_protocol(gpu_scores, image_pid, text_pid)
    )
    args = (image_pid, text_pid, image_sub, text_sub)
    assert sample100_protocol(cpu, *args, num_queries=30, num_negatives=10) == pytest.approx(
        sample100_protocol(gpu_scores, *args, num_queries=30, num_negatives=10)
    )
    assert block100_protocol(cpu[:80, :80], 40) == pytest.approx(block100_protocol(gpu_scores[:80, :80], 40))

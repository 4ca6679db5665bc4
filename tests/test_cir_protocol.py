"""Composed-retrieval protocols (tasks/cir/protocol.py) against naive loops over queries and gallery items."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from unifashion.data.fashioniq import FashionIQDataModule
from unifashion.tasks.cir.protocol import (
    CirGallery,
    CirQueries,
    cir_scores,
    fashion200k_protocol,
    fashioniq_protocol,
)


def _unit(*shape, seed):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def naive_score(q, img, cap, w_img, w_cap):
    """One (query, gallery image) score by loops: max over the image's queries + w * caption dot."""
    best = max(float(q @ img[j]) for j in range(img.shape[0]))
    return w_img * best + (w_cap * float(q @ cap) if w_cap else 0.0)


def naive_recall_fiq(queries, gallery, targets, w_img, w_cap, k):
    hits = 0
    for m in range(queries.shape[0]):
        scores = [naive_score(queries[m], gallery[0][n], gallery[1][n], w_img, w_cap) for n in range(gallery[0].shape[0])]
        t = targets[m]
        before = sum(1 for n, s in enumerate(scores) if n != t and s >= scores[t])  # pessimistic ties
        hits += before < k
    return 100.0 * hits / queries.shape[0]


def test_scores_match_naive_loop():
    q, img, cap = _unit(5, 8, seed=0), _unit(7, 3, 8, seed=1), _unit(7, 8, seed=2)
    s = cir_scores(q, img, cap, 1.0, 0.7, chunk_size=2)
    for m in range(5):
        for n in range(7):
            assert s[m, n].item() == pytest.approx(naive_score(q[m], img[n], cap[n], 1.0, 0.7), abs=1e-5)


def _fiq_setup():
    cats = {"dress": (40, 23), "shirt": (31, 17), "toptee": (25, 30)}  # (gallery size, queries)
    galleries, queries, naive = {}, {}, {}
    for i, (cat, (n, m)) in enumerate(cats.items()):
        img, cap = _unit(n, 4, 8, seed=10 + i), _unit(n, 8, seed=20 + i)
        ids = [f"{cat}{j:03d}" for j in range(n)]
        targets = torch.randint(0, n, (m,), generator=torch.Generator().manual_seed(30 + i))
        # queries near their target (so recalls are neither 0 nor 100)
        q = F.normalize(img[targets].mean(1) + cap[targets] + 1.5 * torch.randn(m, 8, generator=torch.Generator().manual_seed(40 + i)), dim=-1)
        galleries[cat] = CirGallery(ids, img, cap)
        queries[cat] = CirQueries(q, [ids[(int(t) + 1) % n] for t in targets], [ids[int(t)] for t in targets])
        naive[cat] = (q, (img, cap), targets.tolist())
    return galleries, queries, naive


def test_fashioniq_rows_and_every_query_against_naive_loops():
    galleries, queries, naive = _fiq_setup()
    out = fashioniq_protocol(galleries, queries, caption_weight=0.5)
    for row, (w_img, w_cap) in {"cir": (1.0, 0.5), "cir_nocap": (1.0, 0.0), "cir_noimg": (0.0, 1.0)}.items():
        r10s, r50s = [], []
        for cat, (q, gal, targets) in naive.items():
            assert out[f"{row}/fashioniq/{cat}/num_queries"] == len(targets)  # every query counted
            for k in (10, 50):
                expected = naive_recall_fiq(q, gal, targets, w_img, w_cap, k)
                assert out[f"{row}/fashioniq/{cat}/R@{k}"] == pytest.approx(expected)
            r10s.append(out[f"{row}/fashioniq/{cat}/R@10"])
            r50s.append(out[f"{row}/fashioniq/{cat}/R@50"])
        assert out[f"{row}/fashioniq/mean/R@10"] == pytest.approx(sum(r10s) / 3)
        assert out[f"{row}/fashioniq/mean/avg"] == pytest.approx((sum(r10s) / 3 + sum(r50s) / 3) / 2)
    # the three rows differ as defined: with captions identical to noise the rows disagree
    assert len({out[f"{r}/fashioniq/dress/R@10"] for r in ("cir", "cir_nocap", "cir_noimg")}) > 1


def test_rows_follow_their_definitions():
    """w/o cap ignores the captions, w/o img ignores the images, full uses both."""
    galleries, queries, _ = _fiq_setup()
    base = fashioniq_protocol(galleries, queries)
    scrambled_caps = {c: CirGallery(g.image_ids, g.image_feats, g.caption_feats.flip(0)) for c, g in galleries.items()}
    scrambled_imgs = {c: CirGallery(g.image_ids, g.image_feats.flip(0), g.caption_feats) for c, g in galleries.items()}
    caps = fashioniq_protocol(scrambled_caps, queries)
    imgs = fashioniq_protocol(scrambled_imgs, queries)
    key = "fashioniq/mean/avg"
    assert caps[f"cir_nocap/{key}"] == base[f"cir_nocap/{key}"]
    assert caps[f"cir_noimg/{key}"] != base[f"cir_noimg/{key}"]
    assert imgs[f"cir_noimg/{key}"] == base[f"cir_noimg/{key}"]
    assert imgs[f"cir_nocap/{key}"] != base[f"cir_nocap/{key}"]
    assert caps[f"cir/{key}"] != base[f"cir/{key}"] and imgs[f"cir/{key}"] != base[f"cir/{key}"]


def test_reference_stays_in_gallery_and_ties_are_pessimistic():
    # 3 gallery images; the reference (0) equals the query exactly and so outranks the target
    img = torch.eye(3).unsqueeze(1)  # (3, 1, 3)
    gallery = CirGallery(["a", "b", "c"], img, None)
    q = F.normalize(torch.tensor([[1.0, 0.1, 0.0], [0.0, 1.0, 1.0]]), dim=-1)
    queries = CirQueries(q, ["a", "a"], ["b", "b"])
    out = fashioniq_protocol({"dress": gallery}, {"dress": queries}, ks=(1, 2))
    # query 0: the reference "a" outranks the target "b" -> rank 1; query 1: "c" ties "b" -> counted before
    assert out["cir_nocap/fashioniq/dress/R@1"] == 0.0
    assert out["cir_nocap/fashioniq/dress/R@2"] == 100.0
    assert "cir/fashioniq/dress/R@1" not in out  # no caption features: only the w/o-cap row


def test_missing_target_is_an_error():
    gallery = CirGallery(["a", "b"], _unit(2, 2, 4, seed=0))
    queries = CirQueries(_unit(1, 4, seed=1), ["a"], ["zzz"])
    with pytest.raises(ValueError, match="not in the category gallery"):
        fashioniq_protocol({"dress": gallery}, {"dress": queries})


def test_fashion200k_against_naive_loop():
    n, m = 30, 12
    img, cap_feats = _unit(n, 3, 8, seed=5), _unit(n, 8, seed=6)
    captions = [f"caption {j % 9}" for j in range(n)]  # 9 distinct captions shared by several images
    ids = [f"women/x/{j}/{j}_0.jpeg" for j in range(n)]
    g = torch.Generator().manual_seed(7)
    refs = torch.randint(0, n, (m,), generator=g).tolist()
    tgt_caps = [f"caption {int(t)}" for t in torch.randint(0, 9, (m,), generator=g)]
    q = _unit(m, 8, seed=8)
    q[0] = F.normalize(img[refs[0]].mean(0), dim=0)  # a query whose own image would rank first
    out = fashion200k_protocol(CirGallery(ids, img, cap_feats, captions),
                               CirQueries(q, [ids[r] for r in refs], None, tgt_caps), caption_weight=0.3)
    for row, (w_img, w_cap) in {"cir": (1.0, 0.3), "cir_nocap": (1.0, 0.0), "cir_noimg": (0.0, 1.0)}.items():
        for k in (1, 10, 50):
            hits = 0
            for i in range(m):
                scores = [(naive_score(q[i], img[j], cap_feats[j], w_img, w_cap), j) for j in range(n) if j != refs[i]]
                scores.sort(key=lambda x: -x[0])
                # pessimistic: among equal scores, non-hits first
                scores.sort(key=lambda x: (-x[0], captions[x[1]] == tgt_caps[i]))
                hits += any(captions[j] == tgt_caps[i] for _, j in scores[:k])
            assert out[f"{row}/fashion200k/R@{k}"] == pytest.approx(100.0 * hits / m), (row, k)
        assert out[f"{row}/fashion200k/num_queries"] == m


def test_fashion200k_excludes_the_query_image():
    img = torch.eye(3).unsqueeze(1)
    gallery = CirGallery(["p0", "p1", "p2"], img, None, ["red dress", "blue dress", "red dress"])
    # the query IS image 0 (caption "red dress" = the target caption): it must not count as a hit
    queries = CirQueries(torch.tensor([[1.0, 0.0, 0.0]]), ["p0"], None, ["red dress"])
    out = fashion200k_protocol(gallery, queries, ks=(1, 2))
    assert out["cir_nocap/fashion200k/R@1"] == 0.0  # p1 and p2 tie at 0; p1 (a miss) counts first
    assert out["cir_nocap/fashion200k/R@2"] == 100.0


# ---------------------------------------------------------------- the official annotation files, unchanged

OFFICIAL = {  # excerpts in the exact shape of the official files (FIQ repo): empty caption, shared ASIN
    "captions/cap.shirt.val.json": [
        {"target": "B00A0I8ZXI", "candidate": "B007UQ2Z0C", "captions": ["is darker", ""]},
        {"target": "B00BB2L4G0", "candidate": "B00A0I8ZXI", "captions": [" is green.", "Has Long sleeves?"]},
    ],
    "captions/cap.toptee.val.json": [
        {"target": "B00A0I8ZXI", "candidate": "B00BB2L4G0", "captions": ["is a shirt and lighter", "is blue"]},
    ],
    "captions/cap.dress.val.json": [
        {"target": "B008BHCT58", "candidate": "B003FGW7MK", "captions": ["is shiny and silver with shorter sleeves", "fit and flare"]},
    ],
    "image_splits/split.shirt.val.json": ["B007UQ2Z0C", "B00A0I8ZXI", "B00BB2L4G0"],
    "image_splits/split.toptee.val.json": ["B00BB2L4G0", "B00A0I8ZXI", "B0000TTTTT"],
    "image_splits/split.dress.val.json": ["B003FGW7MK", "B008BHCT58"],
}


def test_official_annotation_files_load_and_every_query_counts(tmp_path):
    from PIL import Image

    root = tmp_path / "fashionIQ_dataset"
    for rel, data in OFFICIAL.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(data))
    (root / "images").mkdir()
    asins = {a for rel, d in OFFICIAL.items() if "split" in rel for a in d}
    for i, a in enumerate(sorted(asins)):
        Image.new("RGB", (20 + i, 30), (i * 20, 10, 10)).save(root / "images" / f"{a}.jpg")
    dm = FashionIQDataModule(root=str(tmp_path), image_size=16)
    galleries, queries = {}, {}
    for cat in ("dress", "shirt", "toptee"):
        ids = dm.image_ids(cat, "val")
        trip = dm.triplets(cat, "val")
        galleries[cat] = CirGallery(ids, _unit(len(ids), 2, 4, seed=len(ids)))
        queries[cat] = CirQueries(_unit(len(trip), 4, seed=9), [t.candidate for t in trip], [t.target for t in trip])
    out = fashioniq_protocol(galleries, queries)
    assert out["cir_nocap/fashioniq/shirt/num_queries"] == 2  # the empty caption is kept
    assert out["cir_nocap/fashioniq/toptee/num_queries"] == 1  # shared ASINs scored in their own category
    assert out["cir_nocap/fashioniq/dress/num_queries"] == 1
    from unifashion.data.fashioniq import eval_text

    assert eval_text(dm.triplets("shirt", "val")[0].captions) == "Is darker and "
    assert eval_text(dm.triplets("shirt", "val")[1].captions) == "Is green and Has Long sleeves"

"""GalleryIndex (unifashion.index) against a naive max-over-queries loop (paper eq. 3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unifashion.index import GalleryIndex, IndexSettings
from unifashion.scoring import score_matrix


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def naive_ranking(gallery: torch.Tensor, query: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """k best (position, score) of one (Qa, E) query by a plain loop: max over both query sets,
    ties -> lower position first."""
    scored = []
    for i in range(gallery.shape[0]):
        best = max(float(torch.dot(gallery[i, a].double(), query[b].double()))
                   for a in range(gallery.shape[1]) for b in range(query.shape[0]))
        scored.append((-best, i))
    scored.sort()
    return [(i, -s) for s, i in scored[:k]]


@pytest.fixture(scope="module")
def small():
    g = torch.Generator().manual_seed(0)
    gallery = _unit(torch.randn(60, 4, 16, generator=g))  # (N, Q, E)
    gallery[17] = gallery[3]  # exact duplicates: ties
    gallery[41] = gallery[3]
    texts = _unit(torch.randn(6, 16, generator=g))  # (M, E)
    texts[0] = gallery[3, 2]  # a text whose best images tie (3, 17, 41 score 1)
    return gallery, texts


@pytest.fixture(scope="module")
def clustered():
    """2000 images of 50 products, Q8 E32; texts = perturbed product centres."""
    g = torch.Generator().manual_seed(1)
    centres = _unit(torch.randn(50, 32, generator=g))
    shared = _unit(torch.randn(8, 32, generator=g))
    prod = torch.randint(0, 50, (2000,), generator=g)
    gallery = _unit(0.5 * shared + centres[prod][:, None] + 0.1 * torch.randn(2000, 8, 32, generator=g))
    texts = _unit(centres[torch.randint(0, 50, (40,), generator=g)] + 0.1 * torch.randn(40, 32, generator=g))
    return gallery, texts


def test_exact_search_equals_naive_loop_with_ids_and_ties(small):
    gallery, texts = small
    ids = [f"img-{i}" for i in range(gallery.shape[0])]
    index = GalleryIndex(gallery, ids=ids, settings=IndexSettings(kind="flat"))
    results = index.search(texts, k=8)
    assert len(results) == texts.shape[0]
    for text, got in zip(texts, results):
        want = naive_ranking(gallery, text[None], 8)
        assert [i for i, _ in got] == [ids[p] for p, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    assert [i for i, _ in results[0][:3]] == ["img-3", "img-17", "img-41"]  # tie at score 1: by position
    single = index.search(texts[1], k=8)  # (E,) query -> one list (gemv: scores may differ in the last bit)
    assert [i for i, _ in single] == [i for i, _ in results[1]]


def test_exact_search_ranks_like_score_matrix(clustered):
    gallery, texts = clustered
    index = GalleryIndex(gallery)  # kind auto -> flat on a small gallery
    assert index.kind == "flat"
    top = index.topk(texts, k=10)
    ref = score_matrix(gallery, texts).t().topk(10, dim=1)  # (M, 10)
    assert torch.equal(top.indices, ref.indices)
    assert torch.equal(top.values, ref.values)


def test_image_query_is_max_over_both_query_sets(small):
    gallery, _ = small
    index = GalleryIndex(gallery, settings=IndexSettings(kind="flat"))
    queries = gallery[[5, 30]]  # (2, Q, E)
    for query, got in zip(queries, index.search_image(queries, k=5)):
        want = naive_ranking(gallery, query, 5)
        assert [i for i, _ in got] == [p for p, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    assert index.search_image(gallery[5], k=1)[0][0] == 5  # an image finds itself first


APPROX = [
    IndexSettings(kind="ivf_flat", nlist=64, nprobe=8, candidates=128),
    IndexSettings(kind="ivf_sq8", nlist=64, nprobe=8, candidates=128),
    IndexSettings(kind="ivf_pq", nlist=64, nprobe=8, candidates=128, pq_m=8, pq_bits=6),
    IndexSettings(kind="ivf_pq", nlist=64, nprobe=8, candidates=128, pq_m=8, pq_bits=6, store="float16"),
    IndexSettings(kind="hnsw", hnsw_m=8, ef_construction=32, ef_search=128, candidates=128),
]


@pytest.mark.parametrize("settings", APPROX, ids=lambda s: f"{s.kind}-{s.store}")
def test_approximate_recall_and_exact_scores(clustered, settings):
    gallery, texts = clustered
    exact = GalleryIndex(gallery, settings=IndexSettings(kind="flat")).topk(texts, k=10)
    approx = GalleryIndex(gallery, settings=settings)
    top = approx.topk(texts, k=10)
    recall = np.mean([len(set(a.tolist()) & set(e.tolist())) / 10 for a, e in zip(top.indices, exact.indices)])
    assert recall >= 0.95, recall
    # Returned scores are the exact eq. 3 scores of the returned images (float16 store: ~1e-3).
    ref = torch.einsum("mqe,me->mq", gallery[top.indices.reshape(-1)].reshape(40, 10, 8, 32).flatten(1, 2), texts)
    ref = ref.reshape(40, 10, 8).amax(dim=2)
    tol = 3e-3 if settings.store == "float16" else 1e-5
    torch.testing.assert_close(top.values, ref, atol=tol, rtol=0)
    assert (top.values[:, :-1] >= top.values[:, 1:]).all()  # best first
    if settings.kind == "ivf_flat":  # more probes -> everything exact
        full = approx.topk(texts, k=10, nprobe=64, candidates=10 * 8)
        assert torch.equal(full.indices, exact.indices)


def test_approximate_image_query_scores_match_naive(clustered):
    gallery, _ = clustered
    index = GalleryIndex(gallery, settings=IndexSettings(kind="ivf_flat", nlist=64, nprobe=64))
    got = index.search_image(gallery[7], k=3)
    pairs = torch.einsum("nqe,pe->nqp", gallery.double(), gallery[7].double())  # (N, Q, Qa) all pairs
    want = pairs.flatten(1).amax(dim=1).topk(3)
    assert [i for i, _ in got] == want.indices.tolist()
    np.testing.assert_allclose([s for _, s in got], want.values.numpy(), atol=1e-5)


@pytest.mark.parametrize("settings", [IndexSettings(kind="flat"), APPROX[0], APPROX[3], APPROX[4]],
                         ids=lambda s: f"{s.kind}-{s.store}")
def test_save_load_round_trip(tmp_path, clustered, settings):
    gallery, texts = clustered
    ids = [f"sku{i}" if i % 2 else i for i in range(gallery.shape[0])]  # str and int ids
    index = GalleryIndex(gallery, ids=ids, settings=settings)
    index.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "meta.json").read_text())
    assert (meta["kind"], meta["num_images"], meta["num_queries"], meta["dim"]) == (settings.kind, 2000, 8, 32)
    for mmap in (False, True):
        loaded = GalleryIndex.load(tmp_path / "ix", mmap=mmap)
        assert loaded.ids == ids and loaded.settings == index.settings
        assert loaded.search(texts, k=10) == index.search(texts, k=10)
        assert loaded.search_image(gallery[:3], k=4) == index.search_image(gallery[:3], k=4)


def test_bad_inputs_give_clear_errors(small):
    gallery, texts = small
    index = GalleryIndex(gallery, settings=IndexSettings(kind="flat"))
    with pytest.raises(ValueError, match="embedding size E=8"):
        index.search(_unit(torch.randn(8)))
    with pytest.raises(ValueError, match="search_image"):
        index.search(gallery[:2])  # (M, Q, E) to the text search
    with pytest.raises(ValueError, match="L2-normalised"):
        index.search(texts[0] * 2)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 60\]"):
        index.search(texts[0], k=61)
    with pytest.raises(ValueError, match="k must be"):
        index.search(texts[0], k=0)
    with pytest.raises(ValueError, match="NaN"):
        index.search(torch.full((16,), float("nan")))
    with pytest.raises(ValueError, match=r"\(N, Q, E\)"):
        GalleryIndex(gallery[None])
    with pytest.raises(ValueError, match="L2-normalised"):
        GalleryIndex(gallery * 1.5)
    with pytest.raises(ValueError, match="unique"):
        GalleryIndex(gallery, ids=["a"] * 60)
    with pytest.raises(ValueError, match="60 images"):
        GalleryIndex(gallery, ids=["a", "b"])
    with pytest.raises(ValueError, match="kind"):
        IndexSettings(kind="lsh")
    with pytest.raises(ValueError, match="pq_m=5 must divide"):
        GalleryIndex(gallery, settings=IndexSettings(kind="ivf_pq", nlist=4, pq_m=5))


def test_load_errors_name_the_file(tmp_path, small):
    gallery, _ = small
    with pytest.raises(FileNotFoundError, match="folder not found"):
        GalleryIndex.load(tmp_path / "nowhere")
    d = GalleryIndex(gallery, settings=IndexSettings(kind="ivf_pq", nlist=4, pq_m=4, pq_bits=4)).save(tmp_path / "ix")
    (d / "vectors.npy").rename(d / "v.bak")
    with pytest.raises(FileNotFoundError, match="vectors.npy"):
        GalleryIndex.load(d)
    (d / "v.bak").rename(d / "vectors.npy")
    (d / "index.faiss").write_bytes(b"not a faiss index")
    with pytest.raises(ValueError, match="index.faiss"):
        GalleryIndex.load(d)
    (d / "ids.json").unlink()
    with pytest.raises(FileNotFoundError, match="ids.json"):
        GalleryIndex.load(d)
    (d / "meta.json").write_text("{ broken")
    with pytest.raises(ValueError, match="meta.json: corrupt JSON"):
        GalleryIndex.load(d)

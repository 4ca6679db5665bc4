"""A multi-vector gallery index on faiss: exact for small galleries, approximate + exact re-scoring for
large ones.

An image is Q query embeddings (N, Q, E), L2-normalised, and a text (or a composed query) is one
embedding; their similarity is the max over the image's queries (paper eq. 3),
s(i, t) = max_q img[i, q] . t, the score the evaluation ranks with
(:func:`unifashion.scoring.score_matrix`). The index therefore stores all N*Q query vectors, each
under the id ``image * Q + q``.

Image-to-image search (a query with Qa vectors, e.g. another image's Q queries) uses the same rule
on both sides: s(a, b) = max_{q, q'} a[q] . b[q'] (max over both query sets). It reduces to eq. 3
for Qa = 1, so text, composed and image queries share one code path, and its candidates are found
exactly like a text's (the best pair (q, q') is a near neighbour of one of the query's vectors). An
image's best match in the gallery is itself (score 1).

Search modes (:class:`IndexSettings.kind`):

* ``"flat"`` (exact): a ``faiss.IndexFlatIP`` holds the N*Q vectors (the save format); search is
  ``score_matrix`` over a zero-copy view of them, so the ranking is exactly the evaluation's.
* ``"ivf_flat"`` (approximate, the default for large galleries), ``"ivf_sq8"``, ``"ivf_pq"``,
  ``"hnsw"``: faiss retrieves the ``candidates`` nearest query vectors of each query vector, the
  images they belong to are the candidates, and each candidate is re-scored exactly on its full Q
  vectors (max over queries). The returned scores are exact (up to float32 rounding, or float16
  rounding of the stored vectors with ``store="float16"``); only the candidate set is approximate.

Why IVF-Flat (measured with ``bench/bench_index.py`` on the shared 2-core development machine,
load ~11, 1,000,000 images x Q8 x E64 of clustered synthetic features; table in bench/RESULTS.md,
section "Gallery index"): IVF-Flat, nlist 2048, nprobe 16, 256 candidates (the defaults) reached
recall@10 0.967 against exact search at p50 8.0 ms / p95 15.0 ms per text query, 80x under brute
force (p50 637 ms); nprobe 32 gave 0.983 at 12.5 ms. It held 2.33 GiB resident once reloaded in a
fresh process, and needs no second copy of the vectors for re-scoring (they are reconstructed from
its inverted lists through the direct map). The cost is the build: 324 s (k-means 40 s, assigning
the 8M vectors 278 s). IVF-PQ (24 B per vector in faiss) reached the same recall on a 100k-image
pilot (0.996 at nprobe 16, 256 candidates) but needs a separate store for exact re-scoring, so it
saves memory only with ``store="float16"`` or a memory-mapped store (``GalleryIndex.load(dir,
mmap=True)``). HNSW (32 links) on the 800k vectors of the pilot did not finish building within
~15 minutes on the busy machine and doubles the memory (2*M links per vector), so it is offered but
not the default.

Memory maths (per query vector, E = embedding size, Q vectors per image):

* flat, ivf_flat: 4*E bytes of vectors (+ 8 B id + 8 B direct-map entry for IVF). Tiny config
  (Q8, E64), 1M images: 8M vectors x 256 B = 1.91 GiB (+ 0.12 GiB for IVF).
* ivf_pq (pq_m sub-quantisers of pq_bits): pq_m*pq_bits/8 + 8 bytes in faiss, plus the re-scoring
  store: 4*E (float32) or 2*E (float16) bytes. Q8 E64 pq_m 16: 24 B + 256 B (fp32) / 128 B (fp16).
* paper size (Q32, E256), 1M images: 32M vectors x 1 KiB = 30.5 GiB of float32 vectors; an IVF-PQ
  (pq_m 32) is 1.2 GiB in faiss and the float16 store (15.3 GiB) is best memory-mapped from disk.
* hnsw: 4*E + 8*hnsw_m bytes (level-0 links) per vector.

faiss-gpu is used when it is installed and a CUDA device is present (``device="auto"``): IVF
searches run on the GPU clone, exact search runs ``score_matrix`` on CUDA; HNSW stays on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
import torch
from torch import Tensor

from unifashion.scoring import TopKScores, score_matrix

FORMAT_NAME = "unifashion.gallery_index"
FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.json"
META_FILE = "meta.json"
VECTORS_FILE = "vectors.npy"

# Tolerance of the L2-norm check on gallery and query vectors.
NORM_TOLERANCE = 1e-3
# Number of stored query vectors up to which kind="auto" picks the exact flat index. Exact search
# reads every vector once per query: 800k vectors (100k images x Q8 x E64) took 156 ms per text
# query on the shared 2-core machine (load ~12), so 500k vectors is ~0.1 s there.
AUTO_FLAT_MAX_VECTORS = 500_000
# Output budget (scores) of one exact-search chunk of queries: N x m x Qa floats.
_EXACT_CHUNK_SCORES = 2**26

Kind = Literal["auto", "flat", "ivf_flat", "ivf_sq8", "ivf_pq", "hnsw"]
_KINDS = ("auto", "flat", "ivf_flat", "ivf_sq8", "ivf_pq", "hnsw")
_LOSSLESS = ("flat", "ivf_flat", "hnsw")  # faiss keeps the float32 vectors: re-score from the index


@dataclass
class IndexSettings:
    """How a :class:`GalleryIndex` is built and searched (saved in its meta.json).

    Attributes:
        kind: "flat" = exact (all N*Q vectors, brute force); "ivf_flat" / "ivf_sq8" / "ivf_pq" /
            "hnsw" = approximate candidates + exact re-scoring; "auto" = "flat" up to
            AUTO_FLAT_MAX_VECTORS stored vectors (N*Q), "ivf_flat" above.
        nlist: IVF inverted lists (k-means centroids); None = about sqrt(N*Q) rounded to a
            power of two (8M vectors -> 2048), at most N*Q/39 (faiss wants >= 39 training points
            per centroid). Build cost (k-means + assignment) grows with nlist; search cost with
            nprobe * N*Q / nlist.
        nprobe: IVF lists visited per query vector (recall vs latency; overridable in search()).
        candidates: nearest stored vectors retrieved per query vector; the images they belong to
            are re-scored exactly. At least k*Q are retrieved, so a search never has fewer than k
            distinct images when faiss finds enough vectors (overridable in search()).
        hnsw_m: HNSW graph degree (links per node; level 0 has 2*hnsw_m).
        ef_construction: HNSW build-time beam width.
        ef_search: HNSW search-time beam width (overridable in search()); raised to `candidates`
            when smaller.
        pq_m: product-quantiser sub-vectors (must divide E); bytes per code = pq_m*pq_bits/8.
        pq_bits: bits per PQ sub-vector code (8 = 256 centroids per sub-quantiser).
        store: the vectors re-scoring reads. "auto" = reconstruct them from the faiss index when it
            keeps them losslessly (flat, ivf_flat, hnsw), else a float32 copy; "float32" / "float16"
            = a separate copy (saved as vectors.npy, memory-mappable at load). float16 halves the
            memory; scores are then exact for the float16-rounded vectors (~1e-3).
        train_size: vectors sampled (seeded) for IVF/PQ training; None = min(N*Q, 64*nlist), and
            at least 40*2**pq_bits for PQ (faiss wants 39 points per centroid).
        seed: seed of the training sample and of faiss's k-means.
        device: "auto" = CUDA when faiss-gpu and a GPU are present; "cpu"; "cuda" (raises if
            unavailable). Not saved as a requirement: a CUDA-built index loads on the CPU.
    """

    kind: Kind = "auto"
    nlist: int | None = None
    nprobe: int = 16
    candidates: int = 256
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    pq_m: int = 16
    pq_bits: int = 8
    store: Literal["auto", "float32", "float16"] = "auto"
    train_size: int | None = None
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"IndexSettings.kind must be one of {_KINDS}, got {self.kind!r}")
        if self.store not in ("auto", "float32", "float16"):
            raise ValueError(f"IndexSettings.store must be 'auto', 'float32' or 'float16', got {self.store!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"IndexSettings.device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for name in ("nprobe", "candidates", "hnsw_m", "ef_construction", "ef_search", "pq_m", "pq_bits"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"IndexSettings.{name} must be >= 1, got {getattr(self, name)}")
        if self.nlist is not None and self.nlist < 1:
            raise ValueError(f"IndexSettings.nlist must be >= 1 or None, got {self.nlist}")


def gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees a CUDA device."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0 and torch.cuda.is_available()


def _check_normalised(x: np.ndarray, what: str) -> None:
    flat = x.reshape(-1, x.shape[-1])
    norms = np.sqrt(np.einsum("ij,ij->i", flat, flat))  # (n,) without an n x E temporary
    bad = np.abs(norms - 1.0) > NORM_TOLERANCE
    if bad.any():
        raise ValueError(
            f"{what} must be L2-normalised (the encoder's ITC features are): {int(bad.sum())} of "
            f"{bad.size} vectors have a norm outside 1 +- {NORM_TOLERANCE} (e.g. {norms[bad][0]:.4f}); "
            "apply torch.nn.functional.normalize(x, dim=-1) first"
        )


def _as_float32(x: Tensor | np.ndarray, what: str) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    elif isinstance(x, np.ndarray):
        x = x.astype(np.float32, copy=False)
    else:
        raise TypeError(f"{what} must be a torch.Tensor or a numpy array, got {type(x).__name__}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return np.ascontiguousarray(x)


def _auto_nlist(n_vectors: int) -> int:
    nlist = 2 ** round(math.log2(max(1.0, math.sqrt(n_vectors))))
    return int(max(1, min(nlist, n_vectors // 39)))


def _ranked(scores: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score desc, position asc: deterministic ties) of a candidate set."""
    order = np.lexsort((positions, -scores))[:k]
    return scores[order], positions[order]


def _select_topk(scores: Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top k of each row of (M, N) scores; ties broken by the lower gallery position."""
    m = scores.shape[0]
    values = np.empty((m, k), dtype=np.float32)
    indices = np.empty((m, k), dtype=np.int64)
    kth = scores.topk(k, dim=1).values[:, -1]  # (M,)
    for row in range(m):
        cand = torch.nonzero(scores[row] >= kth[row]).squeeze(1)  # (>=k,), ascending positions
        v, p = _ranked(scores[row, cand].cpu().numpy(), cand.cpu().numpy(), k)
        values[row], indices[row] = v, p
    return values, indices


class GalleryIndex:
    """Searchable gallery of N images of Q query vectors each (module docstring: scores, modes).

    Args:
        features: float (N, Q, E) L2-normalised query embeddings of the gallery images (torch or
            numpy); (N, E) is taken as Q = 1.
        ids: one id (str or int, unique) per image; None = 0..N-1.
        settings: how to build/search; None = IndexSettings() (kind "auto").
    """

    def __init__(
        self,
        features: Tensor | np.ndarray,
        ids: Sequence[Hashable] | None = None,
        settings: IndexSettings | None = None,
    ) -> None:
        settings = IndexSettings() if settings is None else settings
        feats = _as_float32(features, "gallery features")
        if feats.ndim == 2:
            feats = feats[:, None, :]  # (N, 1, E)
        if feats.ndim != 3 or feats.shape[0] == 0 or feats.shape[1] == 0 or feats.shape[2] == 0:
            raise ValueError(f"gallery features must be a non-empty (N, Q, E) array, got shape {tuple(feats.shape)}")
        _check_normalised(feats, "gallery features")
        n, q, e = feats.shape
        self._ids = self._check_ids(ids, n)
        kind = settings.kind
        if kind == "auto":
            kind = "flat" if n * q <= AUTO_FLAT_MAX_VECTORS else "ivf_flat"
        self.settings = IndexSettings(**{**asdict(settings), "kind": kind})
        self._n, self._q, self._e = n, q, e
        flat = feats.reshape(n * q, e)  # (N*Q, E), row = image * Q + query
        self.build_seconds: dict[str, float] = {}
        """Seconds spent in faiss training ("train") and adding ("add") for IVF kinds."""
        self._index = self._build_faiss(flat)
        self._store = self._make_store(flat)
        self._post_load()

    # ---------------------------------------------------------------- construction
    @staticmethod
    def _check_ids(ids: Sequence[Hashable] | None, n: int) -> list:
        if ids is None:
            return list(range(n))
        ids = [i.item() if isinstance(i, np.generic) else i for i in ids]
        if len(ids) != n:
            raise ValueError(f"ids has {len(ids)} entries but the gallery has {n} images")
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, (str, int)):
                raise TypeError(f"ids must be str or int (stored in {IDS_FILE}), got {type(i).__name__} {i!r}")
        if len(set(ids)) != n:
            raise ValueError(f"ids must be unique: {n - len(set(ids))} duplicates")
        return ids

    def _build_faiss(self, flat: np.ndarray) -> faiss.Index:
        s, (nv, e) = self.settings, flat.shape
        if s.kind == "flat":
            index = faiss.IndexFlatIP(e)
            index.add(flat)
            return index
        if s.kind == "hnsw":
            index = faiss.IndexHNSWFlat(e, s.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = s.ef_construction
            index.add(flat)
            return index
        nlist = s.nlist if s.nlist is not None else _auto_nlist(nv)
        if nlist > nv:
            raise ValueError(f"IndexSettings.nlist={nlist} exceeds the {nv} stored vectors")
        if s.kind == "ivf_flat":
            code = "Flat"
        elif s.kind == "ivf_sq8":
            code = "SQ8"
        else:
            if e % s.pq_m:
                raise ValueError(f"IndexSettings.pq_m={s.pq_m} must divide the embedding size E={e}")
            code = f"PQ{s.pq_m}x{s.pq_bits}"
        self.settings.nlist = nlist
        index = faiss.index_factory(e, f"IVF{nlist},{code}", faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = s.seed
        if s.kind == "ivf_pq":
            index.pq.cp.seed = s.seed
            index.do_polysemous_training = False  # Hamming filtering is unused; it costs minutes to train
        default_train = max(64 * nlist, 40 * 2**s.pq_bits if s.kind == "ivf_pq" else 0)
        train_size = min(nv, s.train_size if s.train_size is not None else default_train)
        rng = np.random.default_rng(s.seed)
        sample = flat if train_size >= nv else flat[np.sort(rng.choice(nv, train_size, replace=False))]
        t0 = time.perf_counter()
        index.train(sample)
        self.build_seconds["train"] = time.perf_counter() - t0
        for start in range(0, nv, 1 << 20):  # add in chunks: bounded temporaries
            index.add(flat[start : start + (1 << 20)])
        self.build_seconds["add"] = time.perf_counter() - t0 - self.build_seconds["train"]
        return index

    def _make_store(self, flat: np.ndarray) -> np.ndarray | None:
        store = self.settings.store
        if store == "auto":
            store = None if self.settings.kind in _LOSSLESS else "float32"
        if store is None:
            return None
        return np.array(flat, dtype=np.float16 if store == "float16" else np.float32)  # copy

    def _post_load(self) -> None:
        """Derived state: IVF direct map, zero-copy view of flat vectors, the GPU clone."""
        if self.settings.kind.startswith("ivf") and self._store is None:
            ivf = faiss.extract_index_ivf(self._index)
            if ivf.direct_map.type == faiss.DirectMap.NoMap:
                ivf.make_direct_map()  # id -> (list, offset): exact reconstruction for re-scoring
        self._flat_view = None
        base = self._index
        if self.settings.kind == "hnsw":
            base = faiss.downcast_index(self._index.storage)
        if isinstance(base, faiss.IndexFlat):
            # (N*Q, E) view of faiss's own storage; valid while self._index lives and is not grown.
            self._flat_view = faiss.rev_swig_ptr(base.get_xb(), self._n * self._q * self._e).reshape(-1, self._e)
        self._device = self._resolve_device(self.settings.device)
        self._gpu_index = None
        self._cuda_feats = None
        if self._device == "cuda" and self.settings.kind.startswith("ivf"):
            self._gpu_res = faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_res, torch.cuda.current_device(), self._index)

    @staticmethod
    def _resolve_device(device: str) -> str:
        if device == "cuda" and not gpu_available():
            raise RuntimeError("IndexSettings.device='cuda' but faiss-gpu with a CUDA device is not available")
        if device == "auto":
            return "cuda" if gpu_available() else "cpu"
        return device

    # ---------------------------------------------------------------- properties
    @property
    def ids(self) -> list:
        """Image ids, in gallery order (position i = row i of the features)."""
        return list(self._ids)

    @property
    def num_images(self) -> int:
        return self._n

    @property
    def num_queries(self) -> int:
        """Q: query vectors per gallery image."""
        return self._q

    @property
    def dim(self) -> int:
        """E: embedding size."""
        return self._e

    @property
    def kind(self) -> str:
        return self.settings.kind

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"GalleryIndex(kind={self.kind!r}, images={self._n}, Q={self._q}, E={self._e})"

    def vectors(self) -> np.ndarray:
        """float (N, Q, E) gallery vectors as re-scoring sees them (a view for flat/hnsw, the store if
        any, else reconstructed from the IVF lists: a full copy)."""
        if self._flat_view is not None:
            flat = self._flat_view
        elif self._store is not None:
            flat = self._store
        else:
            flat = self._index.reconstruct_n(0, self._n * self._q)
        return flat.reshape(self._n, self._q, self._e)

    # ---------------------------------------------------------------- search
    def search(self, query: Tensor | np.ndarray, k: int = 10, **overrides) -> list:
        """Images best matching single-vector queries (texts or composed queries), eq. 3.

        Args:
            query: float (E,) one query, or (M, E) a batch; L2-normalised.
            k: results per query (<= number of images).
            **overrides: search-time settings: nprobe, candidates, ef_search, exact (bool: brute
                force whatever the kind).

        Returns:
            For (E,): a list of k (id, score) pairs, best first (ties: lower gallery position
            first). For (M, E): a list of M such lists.
        """
        q = _as_float32(query, "query")
        if q.ndim not in (1, 2):
            raise ValueError(f"search() takes an (E,) or (M, E) query, got shape {q.shape}; use search_image() for (Qa, E) queries")
        single = q.ndim == 1
        top = self.topk(q[None, None, :] if single else q[:, None, :], k, **overrides)
        out = self._to_ids(top)
        return out[0] if single else out

    def search_image(self, query: Tensor | np.ndarray, k: int = 10, **overrides) -> list:
        """Images best matching multi-vector queries (e.g. another image's Q query embeddings),
        scored max over both query sets: s(a, b) = max_{q, q'} a[q] . b[q'].

        Args:
            query: float (Qa, E) one image query, or (M, Qa, E) a batch; L2-normalised.
            k, overrides: as in :meth:`search`.

        Returns:
            For (Qa, E): a list of k (id, score) pairs; for (M, Qa, E): a list of M such lists.
        """
        q = _as_float32(query, "query")
        if q.ndim not in (2, 3):
            raise ValueError(f"search_image() takes a (Qa, E) or (M, Qa, E) query, got shape {q.shape}")
        single = q.ndim == 2
        out = self._to_ids(self.topk(q[None] if single else q, k, **overrides))
        return out[0] if single else out

    def _to_ids(self, top: TopKScores) -> list[list[tuple[Hashable, float]]]:
        vals, idx = top.values.numpy(), top.indices.numpy()
        return [
            [(self._ids[int(p)], float(v)) for v, p in zip(vals[row], idx[row]) if p >= 0]
            for row in range(vals.shape[0])
        ]

    def topk(
        self,
        queries: Tensor | np.ndarray,
        k: int = 10,
        *,
        nprobe: int | None = None,
        candidates: int | None = None,
        ef_search: int | None = None,
        exact: bool = False,
    ) -> TopKScores:
        """Tensor-level search: the k best gallery positions of each query.

        Args:
            queries: float (M, E) single-vector queries or (M, Qa, E) multi-vector queries,
                L2-normalised.
            k: results per query, 1 <= k <= number of images.
            nprobe, candidates, ef_search: override the settings for this call.
            exact: brute force (score_matrix) whatever the kind.

        Returns:
            :class:`TopKScores` with values float (M, k) (exact max-over-queries scores, best first)
            and indices long (M, k) gallery positions (ties: lower position first). Approximate
            kinds pad with -1 / -inf if faiss found vectors of fewer than k images.
        """
        q = _as_float32(queries, "queries")
        if q.ndim == 2:
            q = q[:, None, :]  # (M, 1, E)
        if q.ndim != 3 or q.shape[0] == 0 or q.shape[1] == 0:
            raise ValueError(f"queries must be a non-empty (M, E) or (M, Qa, E) array, got shape {q.shape}")
        if q.shape[2] != self._e:
            raise ValueError(f"query embedding size E={q.shape[2]} differs from the index's E={self._e}")
        _check_normalised(q, "queries")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self._n:
            raise ValueError(f"k must be an int in [1, {self._n}] (the number of gallery images), got {k!r}")
        k = int(k)
        if exact or self.kind == "flat":
            values, indices = self._exact(q, k)
        else:
            values, indices = self._approximate(q, k, nprobe, candidates, ef_search)
        return TopKScores(torch.from_numpy(values), torch.from_numpy(indices))

    def _exact(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        m, qa, e = q.shape
        feats = self._exact_feats()  # (N, Q, E)
        chunk = max(1, _EXACT_CHUNK_SCORES // (self._n * qa))
        values, indices = [], []
        for start in range(0, m, chunk):
            qc = torch.from_numpy(q[start : start + chunk]).reshape(-1, e)  # (c*Qa, E)
            sim = score_matrix(feats, qc.to(feats.device))  # (N, c*Qa), eq. 3
            sim = sim.view(self._n, -1, qa).amax(dim=2).t()  # (c, N): max over both query sets
            v, i = _select_topk(sim, k)
            values.append(v)
            indices.append(i)
        return np.concatenate(values), np.concatenate(indices)

    def _exact_feats(self) -> Tensor:
        if self._device == "cuda":
            if self._cuda_feats is None:
                self._cuda_feats = torch.from_numpy(np.asarray(self.vectors(), dtype=np.float32)).cuda()
            return self._cuda_feats
        vec = self.vectors()
        return torch.from_numpy(vec if vec.dtype == np.float32 else vec.astype(np.float32))

    def _search_params(self, nprobe: int | None, ef_search: int | None, n_cand: int):
        s = self.settings
        if s.kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=max(n_cand, ef_search or s.ef_search))
        return faiss.SearchParametersIVF(nprobe=min(nprobe or s.nprobe, s.nlist))

    def _approximate(
        self, q: np.ndarray, k: int, nprobe: int | None, candidates: int | None, ef_search: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        m, qa, e = q.shape
        n_cand = min(self._n * self._q, max(candidates or self.settings.candidates, k * self._q))
        index = self._gpu_index if self._gpu_index is not None else self._index
        params = self._search_params(nprobe, ef_search, n_cand)
        if self._gpu_index is not None:  # GPU indexes take nprobe as an attribute, not per call
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", params.nprobe)
            _, hits = index.search(q.reshape(m * qa, e), n_cand)
        else:
            _, hits = index.search(q.reshape(m * qa, e), n_cand, params=params)  # (M*Qa, n_cand)
        hits = hits.reshape(m, qa * n_cand)
        values = np.full((m, k), -np.inf, dtype=np.float32)
        indices = np.full((m, k), -1, dtype=np.int64)
        offsets = np.arange(self._q, dtype=np.int64)
        for row in range(m):
            h = hits[row]
            images = np.unique(h[h >= 0] // self._q)  # (C,) candidate images, ascending
            if images.size == 0:
                continue
            vec_ids = (images[:, None] * self._q + offsets).reshape(-1)  # (C*Q,)
            vecs = self._gather(vec_ids).reshape(images.size, self._q, e)  # (C, Q, E)
            sim = (vecs.reshape(-1, e) @ q[row].T).reshape(images.size, -1).max(axis=1)  # (C,) eq. 3
            v, p = _ranked(sim.astype(np.float32), images, k)
            values[row, : v.size], indices[row, : p.size] = v, p
        return values, indices

    def _gather(self, vec_ids: np.ndarray) -> np.ndarray:
        """float32 (len(vec_ids), E) stored vectors for exact re-scoring."""
        if self._store is not None:
            return np.asarray(self._store[vec_ids], dtype=np.float32)
        if self._flat_view is not None:
            return self._flat_view[vec_ids]
        # faiss parallelises batches over 1000 ids with OpenMP, which costs ~100x on a busy 2-core
        # machine (28 ms vs 0.24 ms for 2048 ids, measured): keep each call under that threshold.
        return np.concatenate([self._index.reconstruct_batch(vec_ids[i : i + 1000]) for i in range(0, vec_ids.size, 1000)])

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write index.faiss (faiss.write_index), ids.json, meta.json and, with a separate store,
        vectors.npy into `directory` (created). Returns the directory."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(d / INDEX_FILE))
        if self._store is not None:
            np.save(d / VECTORS_FILE, self._store)
        with open(d / IDS_FILE, "w", encoding="utf-8") as f:
            json.dump(self._ids, f)
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "num_images": self._n,
            "num_queries": self._q,
            "dim": self._e,
            "store": None if self._store is None else str(self._store.dtype),
            "settings": asdict(self.settings),
            "faiss_version": faiss.__version__,
        }
        with open(d / META_FILE, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
        return d

    @classmethod
    def load(
        cls, directory: str | os.PathLike, mmap: bool = False, device: Literal["auto", "cpu", "cuda"] | None = None
    ) -> GalleryIndex:
        """Read an index written by :meth:`save`.

        Args:
            directory: the folder save() wrote.
            mmap: memory-map vectors.npy (the separate re-scoring store) instead of reading it.
            device: override the saved IndexSettings.device.
        """
        d = Path(directory)
        if not d.is_dir():
            raise FileNotFoundError(f"gallery index folder not found: {d}")
        meta = _read_json(d / META_FILE)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise ValueError(f"{d / META_FILE} is not a UniFashion gallery index meta file (format != {FORMAT_NAME!r})")
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{d / META_FILE}: unsupported version {meta.get('version')!r} (this code reads {FORMAT_VERSION})")
        try:
            known = {f.name for f in fields(IndexSettings)}
            settings = IndexSettings(**{k: v for k, v in meta["settings"].items() if k in known})
            n, q, e = int(meta["num_images"]), int(meta["num_queries"]), int(meta["dim"])
            store_dtype = meta["store"]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{d / META_FILE}: bad or missing field: {err}") from err
        if device is not None:
            settings.device = device
        ids = _read_json(d / IDS_FILE)
        if not isinstance(ids, list) or len(ids) != n:
            raise ValueError(f"{d / IDS_FILE}: expected a list of {n} ids, got {type(ids).__name__} of {len(ids) if isinstance(ids, list) else '?'}")
        path = d / INDEX_FILE
        if not path.is_file():
            raise FileNotFoundError(f"gallery index file missing: {path}")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as err:
            raise ValueError(f"{path}: faiss could not read it (corrupt or not a faiss index): {err}") from err
        if index.ntotal != n * q or index.d != e:
            raise ValueError(f"{path}: holds {index.ntotal} vectors of size {index.d}, meta.json says {n}x{q} of size {e}")
        store = None
        if store_dtype is not None:
            vpath = d / VECTORS_FILE
            if not vpath.is_file():
                raise FileNotFoundError(f"gallery index re-scoring vectors missing: {vpath}")
            try:
                store = np.load(vpath, mmap_mode="r" if mmap else None)
            except (ValueError, OSError, EOFError) as err:
                raise ValueError(f"{vpath}: not a readable .npy file: {err}") from err
            if store.shape != (n * q, e) or str(store.dtype) != store_dtype:
                raise ValueError(f"{vpath}: shape {store.shape} dtype {store.dtype}, expected ({n * q}, {e}) {store_dtype}")
        self = cls.__new__(cls)
        self.settings, self._ids = settings, cls._check_ids(ids, n)
        self.build_seconds = {}
        self._n, self._q, self._e = n, q, e
        self._index, self._store = index, store
        self._post_load()
        return self


def _read_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"gallery index file missing: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: corrupt JSON: {err}") from err

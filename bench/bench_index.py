"""Gallery index benchmark: build time, resident memory, text-query latency and recall@10 of the
approximate faiss index (``unifashion.index``) against exact max-over-queries search (eq. 3), and
the exact brute-force latency on the same gallery.

Features (default, runs anywhere): synthetic with the tiny demo encoder's structure
(lightning_configs/tiny/phase1_retrieval.yaml: num_query_tokens 8, embed_dim 64): each image belongs
to one of `--products` product centres (sizes log-normal, so clusters are unbalanced), and its
query vector q is normalise(alpha * u_q + c_p + gamma * d_{p,q} + sigma * n_{i,q}): u_q a direction
shared by query token q over all images (the anisotropy of learned queries), c_p the product centre,
d_{p,q} a per-product per-query offset, n_{i,q} per-image noise. Texts are perturbed centres,
normalise(c_p + tau * n), of products drawn like the gallery's. Not a test.

    .venv/bin/python bench/bench_index.py                     # 1M images, ~10 min on 2 cores
    .venv/bin/python bench/bench_index.py --n 50000 --queries 50 --exact-queries 5
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from unifashion.index import GalleryIndex, IndexSettings


def rss_gib() -> float:
    """Resident set size of this process (GiB), from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def peak_rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def synthetic_features(
    n: int, q: int, e: int, products: int, queries: int, seed: int,
    alpha: float, gamma: float, sigma: float, tau: float, chunk: int = 50_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(gallery float32 (N, Q, E), texts float32 (M, E), product of each image (N,), of each text (M,))."""
    g = torch.Generator().manual_seed(seed)
    centres = _unit(torch.randn(products, e, generator=g))  # (P, E)
    shared = _unit(torch.randn(q, e, generator=g))  # (Q, E): u_q
    offsets = torch.randn(products, q, e, generator=g) / e**0.5  # (P, Q, E): d_{p,q}
    weights = torch.exp(torch.randn(products, generator=g))  # log-normal product sizes
    product_of = torch.multinomial(weights, n, replacement=True, generator=g)  # (N,)
    feats = np.empty((n, q, e), dtype=np.float32)
    for start in range(0, n, chunk):
        p = product_of[start : start + chunk]
        noise = torch.randn(p.numel(), q, e, generator=g) / e**0.5
        x = alpha * shared + centres[p][:, None, :] + gamma * offsets[p] + sigma * noise  # (c, Q, E)
        feats[start : start + p.numel()] = _unit(x).numpy()
    text_products = product_of[torch.randint(0, n, (queries,), generator=g)]  # (M,)
    texts = _unit(centres[text_products] + tau * torch.randn(queries, e, generator=g) / e**0.5)  # (M, E)
    return feats, texts.numpy(), product_of.numpy(), text_products.numpy()


def latencies_ms(index: GalleryIndex, texts: np.ndarray, k: int, **overrides) -> tuple[np.ndarray, list]:
    """Per-query wall time (ms) of index.search at batch 1, and the returned positions."""
    times, results = [], []
    pos = {i: p for p, i in enumerate(index.ids)}
    index.search(texts[0], k, **overrides)  # warm-up
    for t in texts:
        t0 = time.perf_counter()
        hits = index.search(t, k, **overrides)
        times.append((time.perf_counter() - t0) * 1e3)
        results.append([pos[i] for i, _ in hits])
    return np.array(times), results


def recall_at(approx: list, exact: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(a[:k]) & set(e[:k].tolist())) / k for a, e in zip(approx, exact)]))


def serving_rss(directory: str) -> dict:
    """Load the saved index in a fresh process and report its resident memory after one query."""
    code = (
        "import json, sys, time, numpy as np; from unifashion.index import GalleryIndex\n"
        "from bench_index import rss_gib\n"
        "r0 = rss_gib(); t0 = time.perf_counter(); ix = GalleryIndex.load(sys.argv[1]); t1 = time.perf_counter()\n"
        "q = np.zeros(ix.dim, np.float32); q[0] = 1.0; ix.search(q, 10)\n"
        "print(json.dumps({'rss_before_gib': r0, 'rss_loaded_gib': rss_gib(), 'load_s': t1 - t0}))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code, directory], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="gallery images")
    ap.add_argument("--num-queries-per-image", type=int, default=8, help="Q (tiny config: 8)")
    ap.add_argument("--dim", type=int, default=64, help="E (tiny config: 64)")
    ap.add_argument("--products", type=int, default=4000, help="product centres")
    ap.add_argument("--queries", type=int, default=200, help="text queries for latency and recall")
    ap.add_argument("--exact-queries", type=int, default=20, help="text queries timed on brute force")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the shared per-query direction")
    ap.add_argument("--gamma", type=float, default=0.5, help="weight of the per-product per-query offset")
    ap.add_argument("--sigma", type=float, default=0.6, help="weight of the per-image noise")
    ap.add_argument("--tau", type=float, default=0.8, help="weight of the text noise")
    ap.add_argument("--kinds", default="ivf_flat", help="comma list of approximate kinds to build")
    ap.add_argument("--nlist", type=int, default=None)
    ap.add_argument("--nprobes", default="4,8,16,32", help="comma list swept at search time")
    ap.add_argument("--candidates", default="256", help="comma list swept at search time")
    ap.add_argument("--pq-m", type=int, default=16)
    ap.add_argument("--store", default="auto", choices=["auto", "float32", "float16"])
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-searches", default="128,256", help="comma list swept for hnsw")
    ap.add_argument("--threads", type=int, default=None, help="torch/faiss threads (default: all)")
    ap.add_argument("--serve-check", action="store_true", help="save each index, reload it in a fresh process, report its RSS")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write all rows as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        import faiss

        faiss.omp_set_num_threads(args.threads)
    q, e, k = args.num_queries_per_image, args.dim, args.k
    print(f"gallery {args.n} images x Q{q} x E{e} ({args.n * q * e * 4 / 2**30:.2f} GiB float32), "
          f"{args.products} products, {args.queries} text queries; torch threads {torch.get_num_threads()}", flush=True)
    t0 = time.perf_counter()
    feats, texts, _, _ = synthetic_features(args.n, q, e, args.products, args.queries, args.seed,
                                            args.alpha, args.gamma, args.sigma, args.tau)
    print(f"generated in {time.perf_counter() - t0:.1f} s, RSS {rss_gib():.2f} GiB", flush=True)

    rows = []
    approx_results = {}
    for kind in [s for s in args.kinds.split(",") if s]:
        gc.collect()
        r0 = rss_gib()
        settings = IndexSettings(kind=kind, nlist=args.nlist, pq_m=args.pq_m, store=args.store,
                                 hnsw_m=args.hnsw_m, device="cpu", seed=args.seed)
        t0 = time.perf_counter()
        index = GalleryIndex(feats, settings=settings)
        build_s = time.perf_counter() - t0
        index_gib = rss_gib() - r0
        print(f"[{kind}] nlist {index.settings.nlist} built in {build_s:.1f} s {index.build_seconds}, index RSS +{index_gib:.2f} GiB "
              f"(process {rss_gib():.2f}, peak {peak_rss_gib():.2f})", flush=True)
        serve = None
        if args.serve_check:
            with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
                index.save(d)
                serve = serving_rss(d)
            print(f"[{kind}] reloaded in a fresh process: RSS {serve['rss_loaded_gib']:.2f} GiB "
                  f"(interpreter + torch before load {serve['rss_before_gib']:.2f}), load {serve['load_s']:.1f} s", flush=True)
        sweep = ([("ef_search", int(v)) for v in args.ef_searches.split(",")] if kind == "hnsw"
                 else [("nprobe", int(v)) for v in args.nprobes.split(",")])
        for name, value in sweep:
            for cand in [int(c) for c in args.candidates.split(",")]:
                times, res = latencies_ms(index, texts, k, **{name: value, "candidates": cand})
                key = (kind, name, value, cand)
                approx_results[key] = res
                rows.append({"kind": kind, "nlist": index.settings.nlist, name: value, "candidates": cand,
                             "build_s": build_s, **{f"{k}_s": v for k, v in index.build_seconds.items()},
                             "index_rss_gib": index_gib,
                             "serve_rss_gib": serve["rss_loaded_gib"] if serve else None,
                             "p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))})
                print(f"[{kind}] {name} {value} candidates {cand}: p50 {rows[-1]['p50_ms']:.2f} ms "
                      f"p95 {rows[-1]['p95_ms']:.2f} ms", flush=True)
        del index
        gc.collect()

    # Exact reference: the flat index (brute force through score_matrix, eq. 3).
    r0 = rss_gib()
    t0 = time.perf_counter()
    flat = GalleryIndex(feats, settings=IndexSettings(kind="flat", device="cpu"))
    flat_build = time.perf_counter() - t0
    flat_gib = rss_gib() - r0
    del feats
    gc.collect()
    t0 = time.perf_counter()
    exact = flat.topk(texts, k).indices.numpy()  # (M, k) ground truth, batched
    print(f"[flat] built in {flat_build:.1f} s, RSS +{flat_gib:.2f} GiB; ground truth of {len(texts)} "
          f"queries (batched) in {time.perf_counter() - t0:.1f} s", flush=True)
    ex_times, ex_res = latencies_ms(flat, texts[: args.exact_queries], k)
    assert recall_at(ex_res, exact[: args.exact_queries], k) == 1.0, "batch-1 exact disagrees with batched exact"
    exact_p50 = float(np.percentile(ex_times, 50))
    print(f"[flat] brute force batch 1: p50 {exact_p50:.1f} ms p95 {np.percentile(ex_times, 95):.1f} ms", flush=True)
    # A second brute force: faiss's own IndexFlatIP scan for the k*Q best vectors (the same exact
    # top-k images after grouping), to show the flat path's cost is the scan, not score_matrix.
    raw = flat._index
    raw.search(texts[:1], k * q)
    ff_times = []
    for t in texts[: args.exact_queries]:
        t0 = time.perf_counter()
        raw.search(t[None], k * q)
        ff_times.append((time.perf_counter() - t0) * 1e3)
    print(f"[faiss IndexFlatIP, k*Q vectors] batch 1: p50 {np.percentile(ff_times, 50):.1f} ms "
          f"p95 {np.percentile(ff_times, 95):.1f} ms", flush=True)
    for row in rows:
        key = (row["kind"], "ef_search" if "ef_search" in row else "nprobe",
               row.get("ef_search", row.get("nprobe")), row["candidates"])
        row["recall@10"] = recall_at(approx_results[key], exact, k)
        row["speedup_vs_exact_p50"] = exact_p50 / row["p50_ms"]
    rows.append({"kind": "flat (exact)", "build_s": flat_build, "index_rss_gib": flat_gib,
                 "p50_ms": exact_p50, "p95_ms": float(np.percentile(ex_times, 95)), "recall@10": 1.0})
    rows.append({"kind": "faiss IndexFlatIP scan (exact)", "build_s": float("nan"), "index_rss_gib": float("nan"),
                 "p50_ms": float(np.percentile(ff_times, 50)), "p95_ms": float(np.percentile(ff_times, 95)),
                 "recall@10": 1.0, "speedup_vs_exact_p50": exact_p50 / float(np.percentile(ff_times, 50))})
    print("\n| kind | nlist | nprobe / ef | candidates | build (s) | index RSS (GiB) | p50 (ms) | p95 (ms) | recall@10 | exact p50 / p50 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        knob = r.get("nprobe", r.get("ef_search", "-"))
        print(f"| {r['kind']} | {r.get('nlist', '-')} | {knob} | {r.get('candidates', '-')} | {r['build_s']:.1f} | "
              f"{r['index_rss_gib']:.2f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['recall@10']:.3f} | "
              f"{r.get('speedup_vs_exact_p50', 1.0):.0f}x |")
    print(f"\npeak process RSS {peak_rss_gib():.2f} GiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "peak_rss_gib": peak_rss_gib()}, f, indent=2)


if __name__ == "__main__":
    main()

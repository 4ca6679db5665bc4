"""Benchmark the Fashion-IQ composed-retrieval scoring of one category (tasks/cir/protocol.py).

A Fashion-IQ-size category: 6k gallery images (Q query embeddings each, plus one caption feature)
and 2k composed queries, embedding size E. Times `fashioniq_protocol` on that one category for
each row of Table 4 (full = image term + caption term, w/o cap, w/o img): scores of every query
against the whole gallery by chunked matrix products, then the rank of every query's target.
Reference: one plain `torch.matmul` of (N*Q, E) @ (E, M) (the image term's multiply-adds).

    python bench/bench_cir_scoring.py                                # 6000 x Q=32 x E=256 vs 2000 queries
    python bench/bench_cir_scoring.py --gallery 3800 --queries 2017 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from unifashion.tasks.cir.protocol import CirGallery, CirQueries, fashioniq_protocol


def _time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gallery", type=int, default=6000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--num-queries-q", type=int, default=32, help="Q, query embeddings per gallery image")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    n, m, q, e = args.gallery, args.queries, args.num_queries_q, args.dim
    gallery = CirGallery([f"B{i:09d}" for i in range(n)], F.normalize(torch.randn(n, q, e, generator=g), dim=-1),
                         F.normalize(torch.randn(n, e, generator=g), dim=-1))
    targets = torch.randint(0, n, (m,), generator=g)
    queries = CirQueries(F.normalize(torch.randn(m, e, generator=g), dim=-1),
                         [gallery.image_ids[(int(t) + 1) % n] for t in targets], [gallery.image_ids[int(t)] for t in targets])
    print(f"gallery {n} x Q={q} x E={e}, {m} queries, {args.threads} threads")
    flat = gallery.image_feats.reshape(n * q, e)
    t_ref = _time(lambda: flat @ queries.query_feats.t(), args.repeats)
    print(f"  plain matmul (N*Q, E) @ (E, M):         {t_ref:7.3f} s")
    for row in ("cir", "cir_nocap", "cir_noimg"):
        t = _time(lambda row=row: fashioniq_protocol({"dress": gallery}, {"dress": queries}, rows=(row,)), args.repeats)
        print(f"  fashioniq_protocol row {row:10s}      {t:7.3f} s  ({m * n / t / 1e6:.1f} M query-image pairs/s)")
    t = _time(lambda: fashioniq_protocol({"dress": gallery}, {"dress": queries}), args.repeats)
    print(f"  all three rows:                         {t:7.3f} s")


if __name__ == "__main__":
    main()

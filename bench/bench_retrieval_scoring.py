"""Benchmark the chunked ITC score matrix against one plain matmul of the same size.

``score_matrix`` computes s(i, j) = max_q image[i, q] . text[j] (paper eq. 3) in image chunks; the
reference is a single ``torch.matmul`` of (N*Q, E) @ (E, M) (the same multiply-adds, without the
max over queries and without the memory bound). Both run in the same process on the same inputs;
the script prints their times, the ratio and the throughput in image-text pairs per second.

    python bench/bench_retrieval_scoring.py                      # 8k images x Q=8 x E=256 vs 3k texts
    python bench/bench_retrieval_scoring.py --images 2000 --texts 1000 --repeats 2
    python bench/bench_retrieval_scoring.py --device cuda --images 32000 --texts 10000
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from unifashion.tasks.cmr.protocol import full_protocol, sample100_protocol, score_matrix


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark and print one line per variant; returns the timings."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=8000, help="N images")
    parser.add_argument("--queries", type=int, default=8, help="Q query embeddings per image")
    parser.add_argument("--dim", type=int, default=256, help="E embedding size")
    parser.add_argument("--texts", type=int, default=3000, help="M texts")
    parser.add_argument("--chunk-size", type=int, default=None, help="images per chunk (default: automatic)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median reported)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--protocols",
        action="store_true",
        help="also time full_protocol and sample100_protocol on the scores",
    )
    parser.add_argument("--subcats", type=int, default=20, help="sub-categories for --protocols")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    n, q, e, m = args.images, args.queries, args.dim, args.texts

    g = torch.Generator().manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(n, q, e, generator=g), dim=-1).to(device, dtype)
    text = torch.nn.functional.normalize(torch.randn(m, e, generator=g), dim=-1).to(device, dtype)
    flat, text_t = image.reshape(n * q, e), text.t().contiguous()

    # Correctness spot check on a slice before timing.
    ref = (flat[: 4 * q] @ text_t).view(4, q, m).amax(1).float()
    got = score_matrix(image[:4], text, chunk_size=args.chunk_size)
    torch.testing.assert_close(got, ref, atol=1e-2 if dtype != torch.float32 else 1e-5, rtol=0)

    t_chunked = _time(lambda: score_matrix(image, text, chunk_size=args.chunk_size), device, args.repeats)
    t_matmul = _time(lambda: flat @ text_t, device, args.repeats)
    pairs = n * m
    print(
        f"device={device} dtype={args.dtype} threads={torch.get_num_threads()} "
        f"N={n} Q={q} E={e} M={m} chunk={args.chunk_size or 'auto'}"
    )
    print(f"score_matrix (chunked, max over Q): {t_chunked:8.3f} s  {pairs / t_chunked:12.3e} pairs/s")
    print(f"plain matmul (N*Q,E)@(E,M):         {t_matmul:8.3f} s  {pairs / t_matmul:12.3e} pairs/s")
    print(f"ratio score_matrix / matmul: {t_chunked / t_matmul:.2f}x")
    result = {"score_matrix_s": t_chunked, "matmul_s": t_matmul, "ratio": t_chunked / t_matmul}
    if args.protocols:
        scores = score_matrix(image, text, chunk_size=args.chunk_size)
        image_pid = torch.arange(n) % m  # every product has at least one image when n >= m
        text_pid = torch.arange(m)
        image_sub, text_sub = image_pid % args.subcats, text_pid % args.subcats
        result["full_s"] = _time(lambda: full_protocol(scores, image_pid, text_pid), device, 1)
        result["sample100_s"] = _time(
            lambda: sample100_protocol(scores, image_pid, text_pid, image_sub, text_sub), device, 1
        )
        print(f"full_protocol:      {result['full_s']:8.3f} s")
        print(f"sample100_protocol: {result['sample100_s']:8.3f} s (1000 queries x 2 directions x 5 repeats)")
    return result


if __name__ == "__main__":
    main()

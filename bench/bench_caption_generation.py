"""Benchmark caption generation: greedy vs beam search (4 beams) on the same model, same run.

Builds a tiny captioner (random Llama + LoRA from `CaptionerConfig`, byte-level BPE tokenizer
trained on a few fashion captions), then times `Captioner.generate_ids` on the same random
Q-Former outputs with ``num_beams=1`` (greedy) and ``num_beams=4``. Throughput counts generated
caption tokens (up to and including ``</s>``, padding excluded) per second; the beam-search
number counts the returned tokens only, not the 4 x hypotheses explored. Prints a table.

    python bench/bench_caption_generation.py
    python bench/bench_caption_generation.py --batch 16 --new-tokens 40 --hidden 256 --layers 4
    python bench/bench_caption_generation.py --device cuda --dtype bfloat16 --batch 32
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from unifashion.models.captioner import Captioner, CaptionerConfig
from unifashion.models.instructions import INSTRUCTIONS
from unifashion.models.tokenizers import train_bpe_tokenizer

_CORPUS = [
    "red silk dress with long sleeves and a v-neck",
    "black leather biker jacket with a zip closure",
    "white cotton t-shirt with a round neck and short sleeves",
    "slim-fit jeans in blue denim with five pockets",
    "USER: <Img></Img> Assistant:",
] + [s for options in INSTRUCTIONS.values() for s in options]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Runs the benchmark, prints the table and returns ``{variant: {seconds, tokens, tokens_per_s}}``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="captions per generate call")
    parser.add_argument("--queries", type=int, default=32, help="Q query outputs per image")
    parser.add_argument("--query-dim", type=int, default=64, help="H_q, size of a query output")
    parser.add_argument("--hidden", type=int, default=64, help="tiny Llama hidden size")
    parser.add_argument("--layers", type=int, default=2, help="tiny Llama layers")
    parser.add_argument("--heads", type=int, default=4, help="tiny Llama attention heads")
    parser.add_argument("--new-tokens", type=int, default=32, help="max_new_tokens")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median reported)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        train_bpe_tokenizer(_CORPUS * 4, tmp, vocab_size=400)
        config = CaptionerConfig(
            tokenizer=tmp,
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=args.heads,
            intermediate_size=4 * args.hidden,
            lora_rank=8,
            lora_alpha=16,
            torch_dtype=args.dtype,
        )
        model = Captioner(config, query_dim=args.query_dim, num_queries=args.queries).to(device).eval()
    gen = torch.Generator().manual_seed(args.seed)
    z = torch.randn(args.batch, args.queries, args.query_dim, generator=gen).to(device)  # (B, Q, H_q)
    names = [("fashiongen", "fashion200k", "fashioniq")[i % 3] for i in range(args.batch)]
    pad = model.tokenizer.pad_token_id
    eos = model.tokenizer.eos_token_id

    def count(tokens: torch.Tensor) -> int:
        # tokens after a row's first </s> are padding (pad may equal eos for some tokenizers)
        total = 0
        for row in tokens.tolist():
            n = len(row)
            if eos in row:
                n = row.index(eos) + 1
            total += sum(1 for t in row[:n] if t != pad or t == eos)
        return total

    results: dict[str, dict[str, float]] = {}
    for label, beams in (("greedy", 1), ("beam-4", 4)):
        model.generate_ids(z, names, num_beams=beams, max_new_tokens=args.new_tokens)  # warm-up
        times, tokens = [], 0
        for _ in range(args.repeats):
            _sync(device)
            start = time.perf_counter()
            out = model.generate_ids(z, names, num_beams=beams, max_new_tokens=args.new_tokens)
            _sync(device)
            times.append(time.perf_counter() - start)
            tokens = count(out)
        seconds = statistics.median(times)
        results[label] = {"seconds": seconds, "tokens": float(tokens), "tokens_per_s": tokens / seconds}

    print(
        f"caption generation, tiny Llama (hidden {args.hidden}, {args.layers} layers), batch {args.batch}, "
        f"Q={args.queries}, max_new_tokens {args.new_tokens}, {args.device} {args.dtype}, "
        f"threads {torch.get_num_threads()}, median of {args.repeats}"
    )
    print(f"{'decoding':<10}{'seconds':>10}{'tokens':>8}{'tokens/s':>11}{'vs greedy':>11}")
    base = results["greedy"]["tokens_per_s"]
    for label, row in results.items():
        print(
            f"{label:<10}{row['seconds']:>10.4f}{int(row['tokens']):>8}{row['tokens_per_s']:>11.1f}"
            f"{row['tokens_per_s'] / base:>10.2f}x"
        )
    return results


if __name__ == "__main__":
    main()

"""Synthetic fashion benchmark: procedurally rendered garments written in the official layouts.

Entry point: :func:`unifashion.data.synthetic.benchmark.write_benchmark`.
"""

from unifashion.data.synthetic.benchmark import SCALES, Summary, write_benchmark

__all__ = ["SCALES", "Summary", "write_benchmark"]

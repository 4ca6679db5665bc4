"""``metrics.json`` of a run, and the fixed-width tables made from it.

Every evaluation writes flat keys ``task/dataset/protocol/direction/metric`` (e.g.
``cmr/fashiongen/sample100/i2t/R@1``, ``fic/fashiongen/BLEU-4``, ``fig/vitonhd/unpaired/FID``,
``time/fit_s``) into ``<run dir>/metrics.json`` with :func:`update_metrics_json`; reports are made
from that file with :func:`format_table`. The numbers of a reference run (e.g. the untrained model)
sit under the same keys prefixed ``baseline/``.

Run ``python -m unifashion.tasks.report RUN_DIR [--baseline OTHER_RUN_DIR] [--paper]`` to print a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

try:  # POSIX advisory lock so that two evaluations merging into one file do not lose keys
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

METRICS_FILE = "metrics.json"
BASELINE_PREFIX = "baseline/"

PAPER_NUMBERS: dict[str, float] = {
    # Table 1, FashionGen cross-modal retrieval, mean of the six recalls. Which protocol the paper
    # used is UNVERIFIED (DATASETS.md 6.1); the baselines of Table 1 use FashionViL's sample-100.
    "cmr/fashiongen/sample100/mean/R": 87.55,
    # Table 2, FashionGen captioning.
    "fic/fashiongen/BLEU-4": 35.53,
    "fic/fashiongen/METEOR": 29.32,
    "fic/fashiongen/ROUGE-L": 54.59,
    "fic/fashiongen/CIDEr": 169.5,
    # Table 3, try-on (VITON-HD, unpaired) and multimodal garment design (MGD).
    "fig/vitonhd/unpaired/FID": 8.42,
    "fig/vitonhd/unpaired/KID": 0.67,
    "fig/mgd/unpaired/FID": 12.43,
    "fig/mgd/unpaired/KID": 3.74,
    "fig/mgd/unpaired/CLIP-S": 31.29,
    # Table 4, Fashion-IQ composed retrieval, means over dress / shirt / toptee.
    "cir/fashioniq/mean/R@10": 58.93,
    "cir/fashioniq/mean/R@50": 76.93,
    "cir/fashioniq/mean/avg": 67.93,
}
"""Headline numbers of the UniFashion paper (arXiv 2408.11305, Tables 1-4; ANCHORS.md)."""

_COLUMN_ORDER = (
    "R@1",
    "R@5",
    "R@10",
    "R@50",
    "R",
    "BLEU-1",
    "BLEU-2",
    "BLEU-3",
    "BLEU-4",
    "METEOR",
    "ROUGE-L",
    "CIDEr",
    "FID",
    "KID",
    "CLIP-S",
    "SSIM",
    "LPIPS",
)
_LAST_SEGMENTS = ("mean", "avg", "average")  # rows that summarise the rows above them


# ----------------------------------------------------------------------------------------------
# metrics.json
# ----------------------------------------------------------------------------------------------


def metrics_path(path: str | os.PathLike) -> Path:
    """``RUN_DIR`` or ``RUN_DIR/metrics.json`` -> the metrics file path."""
    path = Path(path)
    return path / METRICS_FILE if path.is_dir() or path.suffix != ".json" else path


def _clean(metrics: Mapping[str, object], source: str) -> dict[str, float | int]:
    """Validate keys and turn tensors / numpy scalars into plain finite numbers."""
    out: dict[str, float | int] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key or key.startswith("/") or key.endswith("/"):
            raise ValueError(f"{source}: metric key {key!r} must be a non-empty 'a/b/c' string")
        if hasattr(value, "item"):  # torch.Tensor / numpy scalar
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{source}: metric {key!r} must be a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"{source}: metric {key!r} is not finite ({value})")
        out[key] = value
    return out


def load_metrics(path: str | os.PathLike) -> dict[str, float | int]:
    """Read a run's ``metrics.json`` (a run directory or the file itself).

    Raises:
        FileNotFoundError: the file does not exist (its path is named).
        ValueError: the file is not a flat JSON object of numbers.
    """
    path = metrics_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path} (expected a flat JSON object of metrics)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a flat JSON object, got {type(data).__name__}")
    return _clean(data, str(path))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update_metrics_json(path: str | os.PathLike, new: Mapping[str, object]) -> dict[str, float | int]:
    """Merge ``new`` into ``<run dir>/metrics.json`` (new values win), written atomically with sorted keys.

    Args:
        path: the run directory or the metrics file; created (with its parents) if missing.
        new: flat ``{key: number}`` (tensors and numpy scalars are accepted).

    Returns:
        The merged metrics, as written.
    """
    path = metrics_path(path)
    clean = _clean(new, "new metrics")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        merged = load_metrics(path) if path.exists() else {}
        merged.update(clean)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(merged, f, indent=2, sort_keys=True)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return dict(sorted(merged.items()))


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def _format_value(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.2f}"


def _column_key(name: str) -> tuple[int, str]:
    return (_COLUMN_ORDER.index(name) if name in _COLUMN_ORDER else len(_COLUMN_ORDER), name)


def _row_key(row: str) -> tuple:
    return tuple((part in _LAST_SEGMENTS, part) for part in row.split("/"))


def _grid(header: list[str], lines: list[list[str]], left: int) -> list[str]:
    """Fixed-width text: the first ``left`` columns left-aligned, the others right-aligned."""
    widths = [max(len(line[c]) for line in [header, *lines]) for c in range(len(header))]

    def fmt(line: list[str]) -> str:
        cells = [
            cell.ljust(w) if c < left else cell.rjust(w) for c, (cell, w) in enumerate(zip(line, widths))
        ]
        return "  ".join(cells).rstrip()

    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(line) for line in lines)]


def format_table(
    metrics: Mapping[str, float | int],
    baseline: Mapping[str, float | int] | None = None,
    paper: Mapping[str, float | int] | None = None,
) -> str:
    """A readable fixed-width table of flat metrics, one section per task prefix.

    Keys ``task/.../metric`` become row ``.../`` (without the task) and column ``metric``:
    ``cmr/fashiongen/full/i2t/R@1`` -> section ``cmr``, row ``fashiongen/full/i2t``, column ``R@1``.
    Under each row of trained numbers come, where they exist, a ``baseline`` line (keys prefixed
    ``baseline/`` in ``metrics``, or the ``baseline`` mapping, which wins) and a ``paper`` line.
    Sections whose keys have a single level (``time/fit_s``) are listed one key per line.

    Args:
        metrics: flat metrics of the run (may contain ``baseline/...`` keys).
        baseline: metrics of a reference run, without the ``baseline/`` prefix.
        paper: published numbers under the same keys, e.g. :data:`PAPER_NUMBERS`.

    Returns:
        The table as one string (empty sections are omitted).
    """
    trained = {k: v for k, v in metrics.items() if not k.startswith(BASELINE_PREFIX)}
    base = {k[len(BASELINE_PREFIX) :]: v for k, v in metrics.items() if k.startswith(BASELINE_PREFIX)}
    base.update(baseline or {})
    paper = dict(paper or {})
    sources = [("trained", trained), ("baseline", base), ("paper", paper)]
    # Rows shown: those the run or the baseline has; the paper only annotates them.
    shown = set(trained) | set(base)
    shown_rows = {key.rsplit("/", 1)[0] for key in shown}
    sections: dict[str, dict[str, set[str]]] = {}  # task -> row -> columns
    for key in shown | {k for k in paper if k.rsplit("/", 1)[0] in shown_rows}:
        task, _, rest = key.partition("/")
        row, _, column = rest.rpartition("/")
        sections.setdefault(task, {}).setdefault(row, set()).add(column)

    out: list[str] = []
    used_paper = False
    for task in sorted(sections):
        rows = sections[task]
        out.append(f"== {task} ==")
        if set(rows) == {""}:  # single-level keys, e.g. time/fit_s
            names = sorted(rows[""], key=_column_key)
            present = [(label, src) for label, src in sources if any(f"{task}/{n}" in src for n in names)]
            lines = [
                [name, *(_format_value(src.get(f"{task}/{name}")) for _, src in present)] for name in names
            ]
            out += _grid(["metric", *(label for label, _ in present)], lines, left=1)
            used_paper |= any(label == "paper" for label, _ in present)
            out.append("")
            continue
        columns = sorted(set().union(*rows.values()), key=_column_key)
        lines = []
        for row in sorted(rows, key=_row_key):
            keys = [f"{task}/{row}/{c}" if row else f"{task}/{c}" for c in columns]
            first = True
            for label, src in sources:
                if not any(k in src for k in keys):
                    continue
                lines.append([row if first else "", label, *(_format_value(src.get(k)) for k in keys)])
                used_paper |= label == "paper"
                first = False
        out += _grid(["", "", *columns], lines, left=2)
        out.append("")
    if used_paper:
        out.append("paper = UniFashion (arXiv 2408.11305), headline numbers of Tables 1-4.")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    """Print the table of a run: ``python -m unifashion.tasks.report RUN_DIR [--baseline DIR] [--paper]``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("run", help="run directory or metrics.json")
    parser.add_argument("--baseline", help="run directory or metrics.json of a reference run")
    parser.add_argument("--paper", action="store_true", help="show the paper's headline numbers")
    args = parser.parse_args(argv)
    baseline = load_metrics(args.baseline) if args.baseline else None
    print(format_table(load_metrics(args.run), baseline, PAPER_NUMBERS if args.paper else None), end="")


if __name__ == "__main__":
    main()

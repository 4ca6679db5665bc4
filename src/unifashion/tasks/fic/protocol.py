"""Fashion image captioning (FIC) metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr (paper Table 2).

Computed with pycocoevalcap 1.2 exactly as the COCO caption evaluation does:

- both sides are tokenised by the Stanford PTB tokenizer (`PTBTokenizer`, lower-cased,
  punctuation removed; needs a ``java`` executable on PATH);
- the **references** go in the ``gts`` slot and the **predictions** in the ``res`` slot. (The
  paper's released script passes them the other way round; BLEU's brevity penalty and clipped
  precisions are asymmetric, so that swap changes the scores. We do not reproduce it.)
- no character truncation by default (the released script cuts both sides to 100 characters);
  ``max_chars`` reproduces such a cut when asked;
- every score is multiplied by 100, like the paper's tables (CIDEr 1.695 -> 169.5);
- SPICE is left out (the paper does not report it; it needs a 1 GB Stanford model download).

FashionGen protocol (DATASETS.md 6.2): one prediction and **one reference per product**: the
product's description, taken once per product (the images of one product share it), and the
prediction for the product's first image. `one_reference_per_product` builds that reference dict
from per-image rows. CIDEr's document frequencies come from the evaluated references, so scores
depend on the evaluated set as a whole (compare only runs on the same split).
"""

from __future__ import annotations

import shutil
from collections.abc import Hashable, Iterable, Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
"""Metric names in the order of the paper's Table 2."""


def _check_java() -> None:
    if shutil.which("java") is None:
        raise RuntimeError(
            "caption metrics need a `java` executable on PATH (pycocoevalcap's PTB tokenizer and METEOR are Java)"
        )


def _truncate(text: str, max_chars: int | None) -> str:
    return text if max_chars is None else text[:max_chars]


def caption_metrics(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    max_chars: int | None = None,
    metrics: Sequence[str] = METRICS,
) -> dict[str, float]:
    """Scores generated captions against references with pycocoevalcap (x 100).

    Args:
        predictions: one generated caption per item id.
        references: one or more reference captions per item id; same ids as ``predictions``.
        max_chars: cut every prediction and reference to this many characters before
            tokenisation (the paper's released script used 100); None (default) keeps them whole.
        metrics: which of `METRICS` to compute (default all). METEOR loads a 60 MB paraphrase
            table in Java (tens of seconds on a busy CPU); a training-time monitor can leave it out.

    Returns:
        The requested scores in `METRICS` order, e.g. ``{"BLEU-1": ..., "BLEU-2": ..., "BLEU-3": ...,
        "BLEU-4": ..., "METEOR": ..., "ROUGE-L": ..., "CIDEr": ...}``, corpus-level, x 100.

    Raises:
        ValueError: an unknown metric name, the id sets differ (the message names a few missing ids), an item has no
            reference, a caption is not a string, or the inputs are empty.
        RuntimeError: no ``java`` executable.
    """
    if not predictions:
        raise ValueError("caption_metrics got no predictions")
    unknown = [name for name in metrics if name not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown caption metrics {unknown} (or none asked); known: {list(METRICS)}")
    if max_chars is not None and max_chars <= 0:
        raise ValueError(f"max_chars must be positive or None, got {max_chars!r}")
    pred_ids, ref_ids = set(predictions), set(references)
    if pred_ids != ref_ids:
        no_ref = sorted(map(str, pred_ids - ref_ids))[:5]
        no_pred = sorted(map(str, ref_ids - pred_ids))[:5]
        raise ValueError(
            f"predictions and references must have the same ids: without reference {no_ref}, "
            f"without prediction {no_pred}"
        )
    # pycocoevalcap keys: plain consecutive ints, mapped back nowhere (scores are corpus-level).
    keys = {item: i for i, item in enumerate(predictions)}
    gts: dict[int, list[dict[str, str]]] = {}
    res: dict[int, list[dict[str, str]]] = {}
    for item, key in keys.items():
        prediction, refs = predictions[item], references[item]
        if isinstance(refs, str):
            raise ValueError(f"references[{item!r}] must be a list of strings, got one string")
        if not refs:
            raise ValueError(f"references[{item!r}] is empty: every item needs at least one reference")
        if not isinstance(prediction, str) or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"captions of item {item!r} must be strings")
        gts[key] = [{"caption": _truncate(r, max_chars)} for r in refs]
        res[key] = [{"caption": _truncate(prediction, max_chars)}]
    _check_java()
    # One PTB tokenizer run (one JVM start) for both sides; keys tagged by side.
    both = {("gts", k): v for k, v in gts.items()} | {("res", k): v for k, v in res.items()}
    tokenized = PTBTokenizer().tokenize(both)
    gts_tok = {k: tokenized[("gts", k)] for k in gts}
    res_tok = {k: tokenized[("res", k)] for k in res}
    scores: dict[str, float] = {}
    if any(name.startswith("BLEU") for name in metrics):
        bleu, _ = Bleu(4).compute_score(gts_tok, res_tok, verbose=0)
        for n, value in enumerate(bleu, start=1):
            scores[f"BLEU-{n}"] = 100.0 * float(value)
    if "METEOR" in metrics:
        meteor = Meteor()
        try:
            scores["METEOR"] = 100.0 * float(meteor.compute_score(gts_tok, res_tok)[0])
        finally:
            del meteor  # closes the Java process
    if "ROUGE-L" in metrics:
        scores["ROUGE-L"] = 100.0 * float(Rouge().compute_score(gts_tok, res_tok)[0])
    if "CIDEr" in metrics:
        scores["CIDEr"] = 100.0 * float(Cider().compute_score(gts_tok, res_tok)[0])
    return {name: scores[name] for name in METRICS if name in metrics}


def metric_keys(dataset: str, scores: Mapping[str, float]) -> dict[str, float]:
    """Flat metric keys ``fic/<dataset>/<metric>`` for ``metrics.json``.

    Example: ``metric_keys("fashiongen", {"BLEU-4": 35.5})`` -> ``{"fic/fashiongen/BLEU-4": 35.5}``.

    Raises:
        ValueError: an empty dataset name or one containing ``/``.
    """
    if not dataset or "/" in dataset:
        raise ValueError(f"dataset name must be non-empty and contain no '/', got {dataset!r}")
    return {f"fic/{dataset}/{name}": float(value) for name, value in scores.items()}


def one_reference_per_product(
    product_ids: Iterable[Hashable], texts: Iterable[str]
) -> dict[Hashable, list[str]]:
    """Groups per-image rows into one reference per product (FashionGen protocol, DATASETS.md 6.2).

    Args:
        product_ids: the product of each row (rows of one product are several views).
        texts: the description of each row.

    Returns:
        ``{product_id: [description]}`` in first-seen order.

    Raises:
        ValueError: lengths differ, or two rows of one product carry different descriptions.
    """
    product_ids, texts = list(product_ids), list(texts)
    if len(product_ids) != len(texts):
        raise ValueError(f"{len(product_ids)} product ids but {len(texts)} texts")
    references: dict[Hashable, list[str]] = {}
    for pid, text in zip(product_ids, texts):
        if pid in references:
            if references[pid][0] != text:
                raise ValueError(
                    f"product {pid!r} has two different descriptions: {references[pid][0]!r} and {text!r}"
                )
            continue
        references[pid] = [text]
    return references

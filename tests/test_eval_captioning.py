"""Caption metrics: pycocoevalcap called directly and hand-computed BLEU / ROUGE-L as references."""

import math

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from unifashion.tasks.fic.protocol import METRICS, caption_metrics, metric_keys, one_reference_per_product

FAST = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr")

PREDICTIONS = {
    "p1": "A red silk dress with long sleeves.",
    "p2": "Black leather jacket, zip closure.",
    "p3": "white cotton t-shirt with a round neck",
    "p4": "blue denim jeans",
}
REFERENCES = {
    "p1": ["Red silk dress with long sleeves and a V-neck.", "long-sleeved red dress in silk"],
    "p2": ["Black leather biker jacket with a zip closure."],
    "p3": ["White t-shirt in cotton jersey. Round neck, short sleeves."],
    "p4": ["Slim-fit jeans in blue denim with five pockets."],
}


def _direct(predictions, references, with_meteor):
    """pycocoevalcap as its own README uses it: gts = references, res = predictions."""
    gts = {k: [{"caption": r} for r in refs] for k, refs in references.items()}
    res = {k: [{"caption": predictions[k]}] for k in references}
    tokenizer = PTBTokenizer()
    gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"BLEU-{i + 1}": 100 * b for i, b in enumerate(bleu)}
    out["ROUGE-L"] = 100 * Rouge().compute_score(gts, res)[0]
    out["CIDEr"] = 100 * Cider().compute_score(gts, res)[0]
    if with_meteor:
        out["METEOR"] = 100 * Meteor().compute_score(gts, res)[0]
    return out


def test_matches_pycocoevalcap_direct():
    ours = caption_metrics(PREDICTIONS, REFERENCES, metrics=FAST)
    ref = _direct(PREDICTIONS, REFERENCES, with_meteor=False)
    assert list(ours) == list(FAST)
    for name in FAST:
        assert ours[name] == pytest.approx(ref[name], rel=1e-9, abs=1e-9), name
    assert 0 < ours["BLEU-1"] <= 100  # x 100 scale


@pytest.mark.slow
def test_all_metrics_with_meteor_match_direct():
    ours = caption_metrics(PREDICTIONS, REFERENCES)
    ref = _direct(PREDICTIONS, REFERENCES, with_meteor=True)
    assert list(ours) == list(METRICS)
    for name in METRICS:
        assert ours[name] == pytest.approx(ref[name], rel=1e-9, abs=1e-9), name


def test_slot_order_hand_computed_bleu_and_rouge():
    """Prediction "a red dress", reference "a red silk dress" (computed by hand).

    gts = reference: BLEU-1 = p1 * BP = (3/3) * exp(1 - 4/3); BLEU-2 = BP * sqrt(1 * 1/2).
    Swapped slots (the released script's bug): BLEU-1 = 3/4 (no brevity penalty), BLEU-2 = sqrt(3/4 * 1/3).
    ROUGE-L (beta 1.2): LCS 3, P = 1, R = 3/4 -> (1 + b^2) P R / (R + b^2 P).
    """
    right = caption_metrics({0: "a red dress"}, {0: ["a red silk dress"]}, metrics=FAST)
    swapped = caption_metrics({0: "a red silk dress"}, {0: ["a red dress"]}, metrics=FAST)
    bp = math.exp(1 - 4 / 3)
    assert right["BLEU-1"] == pytest.approx(100 * bp, rel=1e-6)
    assert right["BLEU-2"] == pytest.approx(100 * bp * math.sqrt(0.5), rel=1e-6)
    assert swapped["BLEU-1"] == pytest.approx(75.0, rel=1e-6)
    assert swapped["BLEU-2"] == pytest.approx(100 * math.sqrt(0.75 / 3), rel=1e-6)
    assert right["BLEU-1"] != pytest.approx(swapped["BLEU-1"], rel=1e-3)
    b2 = 1.2**2
    assert right["ROUGE-L"] == pytest.approx(100 * (1 + b2) * 0.75 / (0.75 + b2), rel=1e-6)


def test_no_truncation_by_default_and_max_chars_truncates():
    long_ref = "red dress " + "with a very long description of many details " * 4 + "and a silk belt"
    pred = "red dress with a silk belt"
    assert len(long_ref) > 100
    whole = caption_metrics({0: pred}, {0: [long_ref]}, metrics=("BLEU-1",))
    cut = caption_metrics({0: pred}, {0: [long_ref]}, max_chars=100, metrics=("BLEU-1",))
    assert whole["BLEU-1"] == pytest.approx(_direct({0: pred}, {0: [long_ref]}, False)["BLEU-1"])
    assert cut["BLEU-1"] == pytest.approx(_direct({0: pred[:100]}, {0: [long_ref[:100]]}, False)["BLEU-1"])
    assert whole["BLEU-1"] != pytest.approx(cut["BLEU-1"])  # "silk belt" is past character 100


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="without reference \\['b'\\]"):
        caption_metrics({"a": "x", "b": "y"}, {"a": ["x"]})
    with pytest.raises(ValueError, match="references\\['a'\\] is empty"):
        caption_metrics({"a": "x"}, {"a": []})
    with pytest.raises(ValueError, match="one string"):
        caption_metrics({"a": "x"}, {"a": "x"})
    with pytest.raises(ValueError, match="unknown caption metrics"):
        caption_metrics({"a": "x"}, {"a": ["x"]}, metrics=("SPICE",))


def test_metric_keys_and_one_reference_per_product():
    keys = metric_keys("fashiongen", {"BLEU-4": 35.53, "CIDEr": 169.5})
    assert keys == {"fic/fashiongen/BLEU-4": 35.53, "fic/fashiongen/CIDEr": 169.5}
    with pytest.raises(ValueError):
        metric_keys("a/b", {})
    refs = one_reference_per_product([7, 7, 3, 7], ["red dress", "red dress", "jacket", "red dress"])
    assert refs == {7: ["red dress"], 3: ["jacket"]}
    with pytest.raises(ValueError, match="product 7 has two different descriptions"):
        one_reference_per_product([7, 7], ["red dress", "blue dress"])

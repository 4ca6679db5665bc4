"""The tiny tokenizers are reproducible across processes (the demo trains them on every fresh machine)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys
from unifashion.models.tokenizers import train_bpe_tokenizer, train_wordpiece_tokenizer
texts = ["Long sleeve t-shirt in navy. Polka dots in purple throughout.", "red striped knee-length dress",
         "Sleeveless a-line dress in blue. Crew neck. Loose fit."] * 4 + ["is red and has long sleeves"]
train = {"wordpiece": train_wordpiece_tokenizer, "bpe": train_bpe_tokenizer}[sys.argv[1]]
train(texts, sys.argv[2], vocab_size=300)
"""


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_same_corpus_same_tokenizer_in_two_processes(kind, tmp_path):
    for i, hash_seed in enumerate(("1", "2")):
        subprocess.run([sys.executable, "-c", SCRIPT, kind, str(tmp_path / str(i))], check=True,
                       env={"PYTHONHASHSEED": hash_seed, "HF_HUB_OFFLINE": "1", "PATH": ""})
    assert (tmp_path / "0" / "tokenizer.json").read_bytes() == (tmp_path / "1" / "tokenizer.json").read_bytes()


def test_wordpiece_encodes_unseen_words_by_characters(tmp_path):
    from unifashion.models.tokenizers import train_wordpiece_tokenizer

    tok = train_wordpiece_tokenizer(["red dress", "blue dress"], tmp_path, vocab_size=100)
    assert tok.tokenize("red bed") == ["red", "b", "##e", "##d"]
    assert tok.convert_ids_to_tokens(tok("dress")["input_ids"]) == ["[CLS]", "dress", "[SEP]"]
    with pytest.raises(ValueError, match="vocab_size"):
        train_wordpiece_tokenizer(["red dress"], tmp_path / "small", vocab_size=5)

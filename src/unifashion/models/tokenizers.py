"""Train small tokenizers from text, saved as normal Hugging Face tokenizer directories.

The tiny models of the tests and the demo need real tokenizers whose vocabulary matches their
embedding tables. These helpers train one with the `tokenizers` library, save it with
`save_pretrained`, and load it back with `AutoTokenizer.from_pretrained`, the same path a real
checkpoint's tokenizer takes.

- `train_wordpiece_tokenizer`: BERT-style (lower-case WordPiece, [CLS] ... [SEP]) plus the `[DEC]`
  bos token that LAVIS adds to the Q-Former's BERT tokenizer.
- `train_bpe_tokenizer`: Llama-style byte-level BPE for a tiny causal LM (bos `<s>` prepended,
  eos `</s>`, pad `<pad>`, unk `<unk>`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

WORDPIECE_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]")
"""Special tokens of the BERT-style tokenizer, in id order ([PAD] = 0 as in BERT)."""

BPE_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
"""Special tokens of the Llama-style tokenizer, in id order (unk 0, bos 1, eos 2 as in Llama)."""


def _materialise(texts: Iterable[str]) -> list[str]:
    """Collect the texts and reject an empty corpus or non-string items."""
    items = list(texts)
    if not items:
        raise ValueError("cannot train a tokenizer on an empty list of texts")
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
    return items


def _save_and_reload(fast: PreTrainedTokenizerFast, out_dir: str | Path) -> PreTrainedTokenizerFast:
    """Save a tokenizer to `out_dir` and load it back through `AutoTokenizer`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return AutoTokenizer.from_pretrained(str(out))


def _wordpiece_vocab(corpus: list[str], normalizer, pre_tokenizer, vocab_size: int) -> dict[str, int]:
    """A deterministic WordPiece vocabulary: special tokens, every character (alone and as a `##`
    continuation, so any word of the alphabet encodes), then whole words by falling count (ties by
    spelling) up to `vocab_size`.

    The `tokenizers` WordPieceTrainer breaks ties between equally frequent merges in hash order, so
    two runs on the same captions gave different vocabularies; this keeps `make demo` reproducible.
    """
    counts: Counter[str] = Counter()
    for text in corpus:
        counts.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    alphabet = sorted({c for w in counts for c in w})
    tokens = list(WORDPIECE_SPECIAL_TOKENS) + alphabet + [f"##{c}" for c in alphabet]
    if len(tokens) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is below the {len(tokens)} special + character tokens")
    seen = set(tokens)
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if w not in seen]
    tokens += words[: vocab_size - len(tokens)]
    return {t: i for i, t in enumerate(tokens)}


def train_wordpiece_tokenizer(
    texts: Iterable[str], out_dir: str | Path, vocab_size: int = 2000, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """Build a BERT-style lower-case WordPiece tokenizer from a corpus and save it as an HF tokenizer
    directory (the vocabulary: `_wordpiece_vocab`, deterministic).

    Args:
        texts: training corpus (captions).
        out_dir: directory written with `save_pretrained`; loadable with `AutoTokenizer.from_pretrained`.
        vocab_size: upper bound on the vocabulary size (special tokens included).
        model_max_length: the tokenizer's default maximum length.

    Returns:
        The tokenizer re-loaded from `out_dir`. Encoding a text gives `[CLS] ... [SEP]`;
        `bos_token` is `[DEC]` (the decoder start token of BLIP-2's ITG).
    """
    corpus = _materialise(texts)
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    vocab = _wordpiece_vocab(corpus, normalizer, pre_tokenizer, vocab_size)
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        bos_token="[DEC]",
        model_max_length=model_max_length,
        padding_side="right",
    )
    return _save_and_reload(fast, out_dir)


def train_bpe_tokenizer(
    texts: Iterable[str], out_dir: str | Path, vocab_size: int = 1000, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """Train a Llama-style byte-level BPE tokenizer and save it as an HF tokenizer directory.

    Args:
        texts: training corpus.
        out_dir: directory written with `save_pretrained`; loadable with `AutoTokenizer.from_pretrained`.
        vocab_size: upper bound on the vocabulary size (the 256 byte symbols and specials included).
        model_max_length: the tokenizer's default maximum length.

    Returns:
        The tokenizer re-loaded from `out_dir`. Encoding prepends `<s>` (no eos, as Llama);
        `eos_token` is `</s>`, `pad_token` is `<pad>`, `unk_token` is `<unk>`.
    """
    corpus = _materialise(texts)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(BPE_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", bos_id)]
    )
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=model_max_length,
        padding_side="right",
    )
    return _save_and_reload(fast, out_dir)

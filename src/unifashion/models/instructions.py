"""Caption instructions per dataset (paper Table 7) and the prompt they sit in.

The paper prompts the LLM with

    USER: <Img><queries></Img> {instruction} Assistant: {answer}</s>

where ``{instruction}`` depends on the caption style of the dataset the image comes from. The
first entry of every tuple below is the paper's exact Table 7 string, used at evaluation time;
the others are paraphrases drawn (seeded) during training so that the model does not key on one
fixed wording.
"""

from __future__ import annotations

import random

PROMPT_PREFIX = "USER: <Img>"
"""Text before the query slot."""

PROMPT_AFTER_QUERIES = "</Img> {instruction} Assistant:"
"""Text between the query slot and the answer; ``{instruction}`` is filled per sample."""

INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "fashiongen": (
        "Write a detail and professional description for the cloth.",
        "Write a detailed, professional description of this garment.",
        "Describe this clothing item in detail, like a fashion catalogue.",
        "Give a professional and detailed description of the cloth.",
    ),
    "fashion200k": (
        "Short description.",
        "A short description of the cloth.",
        "Describe the item briefly.",
        "Give a short product title.",
    ),
    "fashioniq": (
        "Describe the cloth's style, color, design... and other key points.",
        "Describe the style, colour and design of this cloth and its other key points.",
        "What are the style, color, design and key features of this garment?",
        "Summarise the cloth's style, color, design and other important details.",
    ),
}
"""Caption instructions per dataset name (keys as `data.batch.DATASETS`); entry 0 is the paper's."""


def instruction_for(dataset: str, rng: random.Random | None = None) -> str:
    """Returns the caption instruction for a dataset.

    Args:
        dataset: dataset name, one of the keys of `INSTRUCTIONS`.
        rng: when given, one of the dataset's instructions is drawn with ``rng.choice``
            (training paraphrases); when None, the paper's Table 7 instruction is returned.

    Returns:
        The instruction text.

    Raises:
        KeyError: the dataset has no caption style.
    """
    try:
        options = INSTRUCTIONS[dataset]
    except KeyError:
        raise KeyError(
            f"no caption instruction for dataset {dataset!r}; known caption datasets: {sorted(INSTRUCTIONS)}"
        ) from None
    if rng is None:
        return options[0]
    return rng.choice(options)


def text_only_prompt(instruction: str) -> str:
    """The prompt with an empty image slot, ``"USER: <Img> </Img> {instruction} Assistant:"`` (text-only
    LM pretraining and the tokenizer corpus)."""
    return f"{PROMPT_PREFIX} {PROMPT_AFTER_QUERIES.format(instruction=instruction)}"


def prompt_after_queries(dataset: str, rng: random.Random | None = None) -> str:
    """Returns the prompt text that follows the query slot, e.g. ``"</Img> Short description. Assistant:"``.

    Args:
        dataset: dataset name (see `instruction_for`).
        rng: paraphrase generator, or None for the paper's instruction.
    """
    return PROMPT_AFTER_QUERIES.format(instruction=instruction_for(dataset, rng))

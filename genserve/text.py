"""Conventions of text generators that training and serving share: token ids and host-side sampling.

A text model reads characters as ids into its vocabulary (`TextInfo.vocabulary`); id `END_OF_TEXT_ID`
separates documents. Generation feeds the end-of-text marker first, then the prompt, so it begins where
a document begins. Each sequence samples with its own `np.random.RandomState(seed)`, one uniform draw per
token, so the text a seed gives does not depend on what else shares the model call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from genserve.store import END_OF_TEXT_ID


def vocabulary_index(vocabulary: Sequence[str]) -> dict[str, int]:
    """Character -> token id; the end-of-text marker is never a prompt character."""
    return {char: index for index, char in enumerate(vocabulary) if index != END_OF_TEXT_ID}


def unknown_characters(text: str, index: dict[str, int]) -> list[str]:
    """Characters of `text` outside the vocabulary, each once, in order of appearance."""
    return list(dict.fromkeys(char for char in text if char not in index))


def context_ids(prompt: str, index: dict[str, int]) -> list[int]:
    """The ids fed before sampling: end-of-text, then the prompt's characters (unknown ones skipped)."""
    return [END_OF_TEXT_ID, *(index[char] for char in prompt if char in index)]


def ids_to_text(ids: Sequence[int], vocabulary: Sequence[str]) -> str:
    """Text of generated ids; the end-of-text marker ends generation and is never part of the text."""
    return "".join(vocabulary[i] for i in ids if i != END_OF_TEXT_ID)


# Sampling at a temperature this low already picks the likeliest token (only exact ties differ), and near 1e-308
# dividing the logits by it overflows to NaN probabilities: such temperatures decode greedily.
GREEDY_BELOW_TEMPERATURE = 1e-30


def sample_token(
    logits: np.ndarray,
    generator: np.random.RandomState,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> int:
    """One token id from a row of logits: temperature (0, or below `GREEDY_BELOW_TEMPERATURE`, is greedy), then
    top-k, then nucleus (top-p).

    Exactly one uniform number is drawn per token, greedy or not, so a sequence's draws stay aligned with
    its tokens whatever options it uses.
    """
    draw = generator.random_sample()
    if temperature < GREEDY_BELOW_TEMPERATURE:
        return int(np.argmax(logits))
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    order = np.argsort(-scaled, kind="stable")
    if top_k is not None and top_k > 0:
        order = order[:top_k]
    weights = np.exp(scaled[order] - scaled[order[0]])
    probabilities = weights / weights.sum()
    if top_p is not None and top_p < 1.0:
        # Keep the smallest prefix whose mass reaches top_p (at least one token).
        keep = int(np.searchsorted(np.cumsum(probabilities), top_p)) + 1
        order, probabilities = order[:keep], probabilities[:keep] / probabilities[:keep].sum()
    position = int(np.searchsorted(np.cumsum(probabilities), draw, side="right"))
    return int(order[min(position, len(order) - 1)])

"""Host-side sampling of text tokens (genserve.text, and the temperatures the batcher hands it): temperature,
top-k, top-p, seeds, context ids."""

from __future__ import annotations

import numpy as np

from app.text.batching import Sampling
from genserve.store import END_OF_TEXT_ID
from genserve.text import context_ids, ids_to_text, sample_token, unknown_characters, vocabulary_index

LOGITS = np.log(np.array([0.05, 0.4, 0.3, 0.15, 0.1]))


def _draws(count: int, **options: object) -> list[int]:
    generator = np.random.RandomState(0)
    return [sample_token(LOGITS, generator, **options) for _ in range(count)]  # type: ignore[arg-type]


def test_temperature_zero_is_greedy_and_still_draws_one_number() -> None:
    generator = np.random.RandomState(5)
    assert sample_token(LOGITS, generator, temperature=0.0) == 1
    assert generator.random_sample() == np.random.RandomState(5).random_sample(2)[1]


def test_top_k_and_top_p_keep_only_the_likeliest_tokens() -> None:
    assert set(_draws(300, top_k=2)) == {1, 2}
    assert set(_draws(300, top_p=0.65)) == {1, 2}
    assert set(_draws(300, top_p=0.1)) == {1}
    assert set(_draws(600)) == {0, 1, 2, 3, 4}


def test_draws_follow_the_distribution_and_the_seed() -> None:
    counts = np.bincount(_draws(4000), minlength=5) / 4000
    np.testing.assert_allclose(counts, np.exp(LOGITS), atol=0.03)
    assert _draws(50, temperature=0.7) == _draws(50, temperature=0.7)


def test_context_starts_with_end_of_text_and_decoding_drops_it() -> None:
    vocabulary = ["\u241e", "a", "b", " "]
    index = vocabulary_index(vocabulary)
    assert "\u241e" not in index
    assert context_ids("ab a", index) == [END_OF_TEXT_ID, 1, 2, 3, 1]
    assert unknown_characters("abcxc\u241e", index) == ["c", "x", "\u241e"]
    assert ids_to_text([1, 3, END_OF_TEXT_ID, 2], vocabulary) == "a b"


def test_temperatures_too_small_to_divide_by_sample_greedily() -> None:
    # Divided by 1e-310 these logits overflow to infinity; as they are, the first token would always come out.
    logits = np.log(np.array([0.3, 0.05, 0.4, 0.25])) + 10.0
    for temperature in (1e-310, 5e-324, 1e-31):
        sampling = Sampling(max_new_tokens=1, temperature=temperature)
        generator = np.random.RandomState(0)
        assert sampling.sampling_temperature == 0.0
        assert [
            sample_token(logits, generator, temperature=sampling.sampling_temperature) for _ in range(20)
        ] == [2] * 20
    assert Sampling(max_new_tokens=1, temperature=1e-3).sampling_temperature == 1e-3


def test_the_sampler_itself_decodes_tiny_temperatures_greedily() -> None:
    generator = np.random.RandomState(0)

    assert [sample_token(LOGITS, generator, temperature=1e-310) for _ in range(20)] == [1] * 20

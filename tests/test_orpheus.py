"""The Orpheus layout: token ids, interleaving, frame dedupe, whole examples, and their inverses."""

from __future__ import annotations

import numpy as np
import pytest

from parla.tokens import orpheus
from parla.tokens.orpheus import (
    build_example,
    dedupe_frames,
    deinterleave,
    interleave_codes,
    split_example,
    with_bos,
)


def random_codes(frames: int, seed: int = 0, alphabet: int = 4096):
    rng = np.random.default_rng(seed)
    return tuple(rng.integers(0, alphabet, n * frames) for n in (1, 2, 4))


def orpheus_notebook_tokens(c0, c1, c2) -> list[int]:
    """Orpheus's own `tokenise_audio` loop, transcribed: the reference the layout must match."""
    tokens = []
    for i in range(len(c0)):
        tokens.append(int(c0[i]) + 128266)
        tokens.append(int(c1[2 * i]) + 128266 + 4096)
        tokens.append(int(c2[4 * i]) + 128266 + 2 * 4096)
        tokens.append(int(c2[4 * i + 1]) + 128266 + 3 * 4096)
        tokens.append(int(c1[2 * i + 1]) + 128266 + 4 * 4096)
        tokens.append(int(c2[4 * i + 2]) + 128266 + 5 * 4096)
        tokens.append(int(c2[4 * i + 3]) + 128266 + 6 * 4096)
    return tokens


def orpheus_notebook_dedupe(tokens: list[int]) -> tuple[list[int], int]:
    """Orpheus's own `remove_duplicate_frames`, transcribed."""
    result = tokens[:7]
    removed = 0
    for i in range(7, len(tokens), 7):
        if tokens[i] != result[-7]:
            result.extend(tokens[i:i + 7])
        else:
            removed += 1
    return result, removed


def test_token_ids_are_orpheus_ids():
    assert (orpheus.START_OF_TEXT, orpheus.END_OF_TEXT) == (128000, 128009)
    assert (orpheus.START_OF_SPEECH, orpheus.END_OF_SPEECH) == (128257, 128258)
    assert (orpheus.START_OF_HUMAN, orpheus.END_OF_HUMAN) == (128259, 128260)
    assert (orpheus.START_OF_AI, orpheus.END_OF_AI) == (128261, 128262)
    assert orpheus.AUDIO_TOKENS_START == 128266
    assert orpheus.AUDIO_TOKENS_END == 128266 + 7 * 4096


def test_one_frame_layout_and_offsets():
    tokens = interleave_codes([1], [2, 3], [4, 5, 6, 7])
    base = 128266
    assert tokens.tolist() == [base + 1, base + 4096 + 2, base + 2 * 4096 + 4,
                               base + 3 * 4096 + 5, base + 4 * 4096 + 3, base + 5 * 4096 + 6,
                               base + 6 * 4096 + 7]


@pytest.mark.parametrize("frames", [0, 1, 5, 37])
def test_interleave_matches_orpheus_and_inverts(frames):
    c0, c1, c2 = random_codes(frames, seed=frames)
    tokens = interleave_codes(c0, c1, c2)
    assert tokens.tolist() == orpheus_notebook_tokens(c0, c1, c2)
    back = deinterleave(tokens)
    for got, want in zip(back, (c0, c1, c2), strict=True):
        assert got.tolist() == list(want)


@pytest.mark.parametrize("codes, message", [
    (([1, 2], [1, 2, 3], [0] * 8), "n, 2n, 4n"),
    (([1], [1, 2], [0, 0, 0]), "n, 2n, 4n"),
    (([4096], [1, 2], [0] * 4), "outside"),
    (([-1], [1, 2], [0] * 4), "outside"),
])
def test_interleave_rejects_bad_codes(codes, message):
    with pytest.raises(ValueError, match=message):
        interleave_codes(*codes)


def test_deinterleave_rejects_tokens_that_are_not_audio_frames():
    good = interleave_codes([1], [2, 3], [4, 5, 6, 7])
    with pytest.raises(ValueError, match="multiple of 7"):
        deinterleave(good[:6])
    swapped = good.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # a level-1 token in position 0
    with pytest.raises(ValueError, match="frame position"):
        deinterleave(swapped)
    with pytest.raises(ValueError, match="frame position"):
        deinterleave([128000] * 7)


def test_dedupe_drops_frames_repeating_the_last_kept_first_token():
    firsts = [5, 5, 6, 5, 5, 5, 7, 7]
    c0 = np.array(firsts)
    c1 = np.arange(2 * len(firsts)) % 4096
    c2 = np.arange(4 * len(firsts)) % 4096
    kept, dropped = dedupe_frames(interleave_codes(c0, c1, c2))
    assert dropped == 4
    kept_c0, kept_c1, _ = deinterleave(kept)
    assert kept_c0.tolist() == [5, 6, 5, 7]
    # the frames kept are whole frames: frame 0, 2, 3, 6 (their level-1 codes say which)
    assert kept_c1.tolist() == [0, 1, 4, 5, 6, 7, 12, 13]


@pytest.mark.parametrize("seed", range(5))
def test_dedupe_matches_orpheus_notebook(seed):
    codes = random_codes(60, seed=seed, alphabet=3)  # a small alphabet: many repeats
    tokens = interleave_codes(*codes)
    want, want_removed = orpheus_notebook_dedupe(tokens.tolist())
    got, removed = dedupe_frames(tokens)
    assert got.tolist() == want
    assert removed == want_removed > 0


def test_dedupe_of_nothing():
    kept, dropped = dedupe_frames(np.zeros(0, dtype=np.int64))
    assert kept.size == 0 and dropped == 0


@pytest.mark.parametrize("text_ids, expected", [
    ([10, 11], [128000, 10, 11]),
    ([128000, 10, 11], [128000, 10, 11]),
    ([128000, 128000, 10], [128000, 10]),
    ([], [128000]),
])
def test_exactly_one_bos(text_ids, expected):
    assert with_bos(text_ids) == expected


def test_build_example_layout():
    codes = (np.array([1, 1, 2]), np.arange(6), np.arange(12))
    example = build_example([128000, 700, 701], codes, dedupe=True)
    audio = interleave_codes(*codes).tolist()
    audio = audio[:7] + audio[14:]  # frame 1 repeats frame 0's first code
    expected = ([128259, 128000, 700, 701, 128009, 128260, 128261, 128257] + audio
                + [128258, 128262])
    assert example["input_ids"].tolist() == expected
    assert example["labels"].tolist() == expected
    assert example["attention_mask"].tolist() == [1] * len(expected)
    assert example["dropped_frames"] == 1
    assert orpheus.sequence_length(3, len(audio)) == len(expected)


def test_build_example_round_trip_without_dedupe():
    codes = random_codes(20, seed=3)
    example = build_example([700, 701, 702], codes, dedupe=False)
    text, audio = split_example(example["input_ids"])
    assert text == [128000, 700, 701, 702]
    for got, want in zip(deinterleave(audio), codes, strict=True):
        assert got.tolist() == want.tolist()
    assert example["dropped_frames"] == 0


def test_split_example_rejects_other_sequences():
    example = build_example([700], random_codes(2), dedupe=False)["input_ids"].tolist()
    with pytest.raises(ValueError, match="wrong start or end tokens"):
        split_example(example[1:])
    with pytest.raises(ValueError, match="wrong start or end tokens"):
        split_example(example[:-1])
    with pytest.raises(ValueError, match="no START_OF_SPEECH token"):
        split_example([t for t in example if t != 128257])
    with pytest.raises(ValueError, match="the text part does not end as expected"):
        split_example([t for t in example if t != orpheus.END_OF_HUMAN])

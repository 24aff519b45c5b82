"""Orpheus TTS sequence layout: SNAC codes <-> Orpheus token ids (pure numpy, no torch).

Mirrors Orpheus's own data preparation (canopylabs finetune notebook). For coarse frame ``i`` the
seven audio tokens are ``c0[i], c1[2i], c2[4i], c2[4i+1], c1[2i+1], c2[4i+2], c2[4i+3]``, position
``k`` offset by ``AUDIO_TOKENS_START + k * CODEBOOK_SIZE``. An example is::

    [START_OF_HUMAN] + [START_OF_TEXT] + text + [END_OF_TEXT] + [END_OF_HUMAN]
    + [START_OF_AI, START_OF_SPEECH] + audio tokens + [END_OF_SPEECH, END_OF_AI]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Token ids of the Orpheus vocabulary: Llama 3's 128256 text tokens, then Orpheus's own.
TEXT_VOCAB_SIZE = 128256
START_OF_TEXT = 128000  # Llama 3 <|begin_of_text|> (BOS)
END_OF_TEXT = 128009  # Llama 3 <|eot_id|>
START_OF_SPEECH = TEXT_VOCAB_SIZE + 1  # 128257
END_OF_SPEECH = TEXT_VOCAB_SIZE + 2  # 128258
START_OF_HUMAN = TEXT_VOCAB_SIZE + 3  # 128259
END_OF_HUMAN = TEXT_VOCAB_SIZE + 4  # 128260
START_OF_AI = TEXT_VOCAB_SIZE + 5  # 128261
END_OF_AI = TEXT_VOCAB_SIZE + 6  # 128262
PAD_TOKEN = TEXT_VOCAB_SIZE + 7  # 128263
AUDIO_TOKENS_START = TEXT_VOCAB_SIZE + 10  # 128266

CODEBOOK_SIZE = 4096
TOKENS_PER_FRAME = 7
# (SNAC level, index within the frame's codes at that level) of each of the 7 frame positions.
FRAME_LAYOUT: tuple[tuple[int, int], ...] = ((0, 0), (1, 0), (2, 0), (2, 1), (1, 1), (2, 2), (2, 3))
POSITION_OFFSETS = AUDIO_TOKENS_START + CODEBOOK_SIZE * np.arange(TOKENS_PER_FRAME, dtype=np.int64)
AUDIO_TOKENS_END = AUDIO_TOKENS_START + TOKENS_PER_FRAME * CODEBOOK_SIZE  # exclusive: 156938

# Tokens around the text and the audio; their counts are what an example adds to its parts.
PROMPT_PREFIX = (START_OF_HUMAN,)
PROMPT_SUFFIX = (END_OF_TEXT, END_OF_HUMAN, START_OF_AI, START_OF_SPEECH)
SPEECH_SUFFIX = (END_OF_SPEECH, END_OF_AI)

Codes = tuple[np.ndarray, np.ndarray, np.ndarray]


def _check_codes(c0: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> int:
    frames = len(c0)
    if len(c1) != 2 * frames or len(c2) != 4 * frames:
        raise ValueError("SNAC code lengths must be n, 2n, 4n; "
                         f"got {len(c0)}, {len(c1)}, {len(c2)}")
    for level, codes in enumerate((c0, c1, c2)):
        if len(codes) and (codes.min() < 0 or codes.max() >= CODEBOOK_SIZE):
            raise ValueError(f"codes_{level} outside [0, {CODEBOOK_SIZE})")
    return frames


def interleave_codes(c0: Sequence[int], c1: Sequence[int], c2: Sequence[int]) -> np.ndarray:
    """The Orpheus audio tokens of three SNAC code levels: 7 tokens per coarse frame (int64)."""
    c0, c1, c2 = (np.asarray(c, dtype=np.int64) for c in (c0, c1, c2))
    frames = _check_codes(c0, c1, c2)
    by_level = (c0.reshape(frames, 1), c1.reshape(frames, 2), c2.reshape(frames, 4))
    columns = [by_level[level][:, index] for level, index in FRAME_LAYOUT]
    return (np.stack(columns, axis=1) + POSITION_OFFSETS).reshape(-1)


def deinterleave(tokens: Sequence[int]) -> Codes:
    """Inverse of `interleave_codes`: audio tokens -> (codes_0, codes_1, codes_2)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if len(tokens) % TOKENS_PER_FRAME:
        raise ValueError(f"audio token count {len(tokens)} is not a multiple of {TOKENS_PER_FRAME}")
    frames = tokens.reshape(-1, TOKENS_PER_FRAME) - POSITION_OFFSETS
    if frames.size and (frames.min() < 0 or frames.max() >= CODEBOOK_SIZE):
        raise ValueError("a token is not the audio token of its frame position")
    levels: list[np.ndarray] = [np.empty((len(frames), n), dtype=np.int64) for n in (1, 2, 4)]
    for position, (level, index) in enumerate(FRAME_LAYOUT):
        levels[level][:, index] = frames[:, position]
    return levels[0].reshape(-1), levels[1].reshape(-1), levels[2].reshape(-1)


def dedupe_frames(tokens: np.ndarray) -> tuple[np.ndarray, int]:
    """Drop each frame whose first token equals the first token of the last kept frame.

    Same rule as Orpheus's ``remove_duplicate_frames``. Since a dropped frame's first token equals
    the last kept one, "equal to the last kept frame" is "equal to the previous frame".
    Returns the kept tokens and how many frames were dropped.
    """
    tokens = np.asarray(tokens)
    frames = tokens.reshape(-1, TOKENS_PER_FRAME)
    if len(frames) == 0:
        return tokens.copy(), 0
    firsts = frames[:, 0]
    keep = np.concatenate(([True], firsts[1:] != firsts[:-1]))
    return frames[keep].reshape(-1), int(len(frames) - keep.sum())


def with_bos(text_ids: Sequence[int]) -> list[int]:
    """Text token ids with exactly one START_OF_TEXT in front (tokenizers differ in adding it)."""
    ids = list(text_ids)
    while ids and ids[0] == START_OF_TEXT:
        ids.pop(0)
    return [START_OF_TEXT, *ids]


def sequence_length(text_tokens: int, audio_tokens: int) -> int:
    """Length of an example whose text part (with BOS) and audio part have these many tokens."""
    return len(PROMPT_PREFIX) + text_tokens + len(PROMPT_SUFFIX) + audio_tokens + len(SPEECH_SUFFIX)


def build_example(text_ids: Sequence[int], codes: Codes, dedupe: bool = True) -> dict:
    """One Orpheus training example from the text's token ids and a clip's SNAC codes.

    Returns ``input_ids``, ``labels`` (equal to input_ids, as Orpheus trains), ``attention_mask``
    (all ones) as int64 arrays, and ``dropped_frames`` (frames removed by `dedupe_frames`).
    """
    audio = interleave_codes(*codes)
    dropped = 0
    if dedupe:
        audio, dropped = dedupe_frames(audio)
    input_ids = np.concatenate([
        np.asarray(PROMPT_PREFIX, dtype=np.int64),
        np.asarray(with_bos(text_ids), dtype=np.int64),
        np.asarray(PROMPT_SUFFIX, dtype=np.int64),
        audio,
        np.asarray(SPEECH_SUFFIX, dtype=np.int64),
    ])
    return {
        "input_ids": input_ids,
        "labels": input_ids.copy(),
        "attention_mask": np.ones(len(input_ids), dtype=np.int64),
        "dropped_frames": dropped,
    }


def split_example(input_ids: Sequence[int]) -> tuple[list[int], np.ndarray]:
    """Inverse of `build_example`'s layout: (text ids with BOS, audio tokens)."""
    ids = [int(i) for i in input_ids]
    head, tail = len(PROMPT_PREFIX), len(PROMPT_SUFFIX)
    if tuple(ids[:head]) != PROMPT_PREFIX or tuple(ids[-len(SPEECH_SUFFIX):]) != SPEECH_SUFFIX:
        raise ValueError("not an Orpheus example: wrong start or end tokens")
    try:
        speech_start = ids.index(START_OF_SPEECH)
    except ValueError:
        raise ValueError("not an Orpheus example: no START_OF_SPEECH token") from None
    if tuple(ids[speech_start + 1 - tail:speech_start + 1]) != PROMPT_SUFFIX:
        raise ValueError("not an Orpheus example: the text part does not end as expected")
    text = ids[head:speech_start + 1 - tail]
    audio = np.asarray(ids[speech_start + 1:-len(SPEECH_SUFFIX)], dtype=np.int64)
    return text, audio

"""Which optional extras are installed, checked before any work so a missing one fails at once.

`find_spec` only: nothing is imported, so checking costs nothing and pulls in no torch.
"""

from __future__ import annotations

import importlib.util

from parla.errors import UsageError

QUALITY_PACKAGES = ("speechmos", "onnxruntime")  # parla[quality]: DNSMOS scoring
TOKENIZE_PACKAGES = ("torch", "snac", "tokenizers")  # parla[tokenize]: SNAC and the text tokenizer


def _missing(packages: tuple[str, ...]) -> list[str]:
    return [name for name in packages if importlib.util.find_spec(name) is None]


def require_quality_extra() -> None:
    """UsageError (exit 2) unless speechmos and onnxruntime are importable (`parla[quality]`)."""
    missing = _missing(QUALITY_PACKAGES)
    if missing:
        raise UsageError(f"--dnsmos needs {' and '.join(missing)}: pip install 'parla[quality]'")


def require_tokenize_extra() -> None:
    """UsageError unless torch, snac and tokenizers are importable (the `parla[tokenize]` extra)."""
    missing = _missing(TOKENIZE_PACKAGES)
    if missing:
        raise UsageError(f"tokenize needs {', '.join(missing)}: pip install 'parla[tokenize]'")

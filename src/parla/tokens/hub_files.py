"""Model files by Hub id: from the Hugging Face cache, or the Hub when online (no torch)."""

from __future__ import annotations

import re
from pathlib import Path

from parla.endpoint import hub_offline, use_timeouts
from parla.errors import UsageError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def is_hub_id(name: str) -> bool:
    """Whether a missing local path could be a Hub repository id ("name" or "owner/name")."""
    return bool(_HUB_ID.match(name)) and not name.endswith(".json")


def hub_file(repo_id: str, filename: str, what: str, local_hint: str) -> Path:
    """A file of a Hub repository from the cache (or the Hub when online); UsageError if absent."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    use_timeouts()  # a stalled Hub ends this request (and the cached copy is used), not hangs
    offline = hub_offline()
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename,
                                    local_files_only=offline))
    except (HfHubHTTPError, HFValidationError, OSError, ValueError) as error:
        where = ("is not in the Hugging Face cache and HF_HUB_OFFLINE is set" if offline
                 else "could not be found in the Hugging Face cache or downloaded from the Hub")
        raise UsageError(
            f"{what} {repo_id!r}: {filename} {where} ({type(error).__name__}). {local_hint}"
        ) from None

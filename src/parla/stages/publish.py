"""The publish stage: a prepared or tokenized folder to the Hugging Face Hub, with its card."""

from __future__ import annotations

import time

from parla.hub.client import upload_folder
from parla.options import PublishOptions
from parla.stages.result import StageResult
from parla.store.urls import use_storage_options


def publish(options: PublishOptions, token: str | None = None) -> StageResult:
    """Upload ``options.folder`` (its card regenerated first); ``output`` is the dataset's URL.

    A failure raises one HubAccessError or HubError saying what failed; the local folder is left
    as it was, and publishing it again finishes the upload.
    """
    started = time.monotonic()
    use_storage_options(options.storage_options)  # a folder given as a bucket URL
    url = upload_folder(options, token)
    return StageResult("publish", url, seconds=time.monotonic() - started)

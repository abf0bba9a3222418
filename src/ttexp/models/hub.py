"""A model named by its Hugging Face hub id (``model.pretrained_path=TinyLlama/...``), made a local
directory before anything loads it.

    python -m ttexp experiment=trickster_n150 model.pretrained_path=TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T

The local Hugging Face cache is tried first (no network). Otherwise one request with a short
timeout asks the hub whether the model exists; an offline machine (or ``HF_HUB_OFFLINE=1``) gets
one error in about a second that says how to download the model, instead of
``transformers``' retries (5 per file, with backoff: about 50 s and a screen of warnings). When
the hub answers, the model's config, tokenizer and safetensors files are downloaded once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ttexp.config.validate import GET_WEIGHTS_HINT
from ttexp.errors import TtexpError

log = logging.getLogger("ttexp")

PROBE_TIMEOUT_S = 10.0
"""Seconds the one request that checks the hub may take."""
MODEL_FILES = ["*.json", "*.safetensors", "tokenizer.model"]
"""What a model directory needs (never ``*.bin``: weights load from safetensors only)."""


def local_snapshot(repo_id: str) -> Path:
    """The local directory of hub model ``repo_id``: the cached snapshot, else a download.

    Raises:
        TtexpError: the model is not cached and the machine is offline (``HF_HUB_OFFLINE``), the
            hub does not answer within :data:`PROBE_TIMEOUT_S`, or it has no such model.
    """
    from huggingface_hub import HfApi, constants, snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=MODEL_FILES, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (its error class varies across versions)
        pass
    if constants.HF_HUB_OFFLINE:
        raise TtexpError(f"The model '{repo_id}' is not a local directory, it is not in the Hugging "
                         f"Face cache, and HF_HUB_OFFLINE is set. {GET_WEIGHTS_HINT}")
    try:
        HfApi().model_info(repo_id, timeout=PROBE_TIMEOUT_S)  # one request, no retries
    except Exception as exc:  # noqa: BLE001 - network errors come from several libraries
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise TtexpError(f"Could not load the model '{repo_id}': it is not a local directory, not "
                         f"in the Hugging Face cache, and the hub did not answer ({first}). "
                         f"{GET_WEIGHTS_HINT}") from None
    log.info("Downloading %s from the Hugging Face hub (once; it is cached).", repo_id)
    return Path(snapshot_download(repo_id, allow_patterns=MODEL_FILES))

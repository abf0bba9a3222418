"""Find a text corpus on disk (or download it once), check it, and fingerprint it.

Search order for a corpus named by ``data.filename`` (DESIGN.md, "Data"):

1. ``data.path`` when set (a missing file there is an error, never a silent fallback);
2. ``$TTEXP_DATA_DIR/<filename>``;
3. the user cache, ``$XDG_CACHE_HOME/ttexp/<filename>`` (default ``~/.cache/ttexp``);
4. a download from ``data.url`` into the cache, checked against ``data.sha256``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Optional

from ttexp.config.schema import DataConfig
from ttexp.errors import DataError
from ttexp.files import sha256_of

log = logging.getLogger("ttexp")


def cache_dir() -> Path:
    """The user cache for corpora: ``$XDG_CACHE_HOME/ttexp`` or ``~/.cache/ttexp``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ttexp"


def search_paths(filename: str) -> list[Path]:
    """Where a corpus not given by ``data.path`` is looked for, in order (steps 2 and 3 of the
    module docstring): ``$TTEXP_DATA_DIR/<filename>`` when the variable is set, then the cache.

    Args:
        filename: ``data.filename``.

    Returns:
        The candidate paths; they need not exist.
    """
    candidates = []
    if os.environ.get("TTEXP_DATA_DIR"):
        candidates.append(Path(os.environ["TTEXP_DATA_DIR"]).expanduser() / filename)
    return candidates + [cache_dir() / filename]




def resolve_corpus(data_cfg: DataConfig) -> Path:
    """Return the path of the corpus file, downloading it into the cache if needed.

    Raises:
        DataError: ``data.path`` is set but missing or unreadable; or the file is found nowhere
            and cannot be downloaded (the message says where it looked and how to fix it); or a
            download's SHA-256 does not match ``data.sha256``.
    """
    explicit: Optional[str] = data_cfg.path
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise DataError(
                f"data.path={explicit} does not exist or is not a file. "
                "Point data.path at the corpus, or unset it to search $TTEXP_DATA_DIR and the cache."
            )
        if not os.access(path, os.R_OK):
            raise DataError(f"data.path={explicit} is not readable; check its permissions.")
        return path

    filename = data_cfg.filename
    candidates = search_paths(filename)
    for path in candidates:
        if path.is_file():
            return path

    url = data_cfg.url
    looked = ", ".join(str(p) for p in candidates)
    if not url:
        raise DataError(
            f"Could not find {filename} (looked in: {looked}). Set data.path=FILE or TTEXP_DATA_DIR."
        )
    return _download(url, cache_dir() / filename, data_cfg.sha256, looked)


def _download(url: str, dest: Path, sha256: Optional[str], looked: str) -> Path:
    """Download ``url`` to ``dest`` atomically and check its SHA-256."""
    log.info("Downloading %s to %s", url, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
            out.write(resp.read())
        got = sha256_of(Path(tmp))
        if sha256 and got != sha256:
            raise DataError(
                f"Downloaded {url} but its SHA-256 is {got}, expected {sha256}. "
                "The file was not kept; download it yourself and set data.path."
            )
        os.replace(tmp, dest)
    except OSError as exc:
        raise DataError(
            f"Could not find {dest.name} (looked in: {looked}) and could not download it from "
            f"{url} ({exc}). On an offline machine, copy the file there or set data.path=FILE "
            "or TTEXP_DATA_DIR=DIR."
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest

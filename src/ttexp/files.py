"""Atomic writes: a reader sees the old file or directory, or the new one, never half of either."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

LOW_SPACE_BYTES = 64 * 2**20
"""Below this many free bytes, a write error without an errno (torch's "file write failed") is
taken to be a full disk."""


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary sibling and a rename; creates the parent
    directory.

    Raises:
        OSError: the directory cannot be written (the old file, if any, is untouched).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (serialised first: a NaN raises ValueError before any file
    exists; other objects are written as their ``str``)."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=str, allow_nan=False) + "\n")


def read_json_dict(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; {} when the file is missing, unreadable, not JSON or not an
    object (a cache that a crash or another version left behind is no error)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def write_dir_atomic(final: Path, fill: Callable[[Path], None]) -> Path:
    """Create ``final`` by calling ``fill(tmp)`` on a temporary sibling, then renaming it.

    An existing ``final`` is replaced. If ``fill`` raises, the temporary directory is removed and
    the error propagates; ``final`` is untouched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    os.chmod(tmp, 0o755)
    try:
        fill(tmp)
        if final.exists():
            old = final.with_name(f".old-{final.name}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def disk_full_message(path: Path, exc: BaseException) -> Optional[str]:
    """"the disk is full at PATH (N bytes free)" when ``exc`` (or an error it wraps) is ENOSPC, or a
    write error without an errno (torch, safetensors) with under :data:`LOW_SPACE_BYTES` free at
    ``path``; None for any other error."""
    chain, e = [], exc
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = None
    full = any(getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e) for e in chain)
    if not full and free is not None and free < LOW_SPACE_BYTES:
        full = any("write" in str(e).lower() for e in chain)
    if not full:
        return None
    return f"the disk is full at {path} ({free:,} bytes free)" if free is not None else \
        f"the disk is full at {path}"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (about 0.8 GB/s on one core here)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

"""Where a run came from: the git state of the project and the versions of the packages that train.

Both are taken when the run record is created, before ttexp writes anything for the run. ttexp
itself rewrites one tracked file of a project, the journal (``experiments/experiments.md``), below
its :data:`JOURNAL_MARKER` line. A file whose only change against ``HEAD`` lies below that line is
listed under ``changed_by_ttexp`` and does not make the run ``dirty``: otherwise every run after
the first would record a dirty tree that ttexp caused.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

JOURNAL_MARKER = "<!-- ttexp: everything below this line is regenerated from result.json files -->"
"""The journal's marker line: text above it is the team's, text below it is ttexp's."""

VERSIONED_PACKAGES = ("torch", "transformers", "hydra-core", "omegaconf", "ttml", "ttexp")
"""Distributions whose versions result.json records (``null`` = not installed)."""

MAX_LISTED = 20


def _git(start: Path, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(start), *args], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _above_marker(text: str) -> Optional[str]:
    return text.split(JOURNAL_MARKER, 1)[0] if JOURNAL_MARKER in text else None


def changed_only_by_ttexp(start: Path, top: Path, path: str) -> bool:
    """True when ``path`` (relative to the work tree ``top``) differs from ``HEAD`` only below the
    journal marker, i.e. in the part ttexp regenerates."""
    try:
        now = (top / path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    before = _git(start, "show", f"HEAD:{path}")
    mine = _above_marker(now)
    return mine is not None and before is not None and _above_marker(before + "\n") is not None \
        and mine.rstrip() == _above_marker(before + "\n").rstrip()


def git_info(start: Path) -> dict[str, Any]:
    """The git state of the work tree containing ``start``.

    Returns:
        ``commit`` (HEAD), ``dirty`` (tracked files changed by someone other than ttexp),
        ``dirty_files`` (those files, at most 20, relative to the work tree) and
        ``changed_by_ttexp`` (tracked files whose only change is the journal part ttexp
        regenerates); nulls outside git.
    """
    # one git process for both (each costs a fork and exec at start-up); none more outside git
    head_top = (_git(start, "rev-parse", "HEAD", "--show-toplevel") or "").splitlines()
    commit, top = (head_top[0], head_top[1]) if len(head_top) == 2 else (None, None)
    names = _git(start, "diff", "--name-only", "HEAD") if commit else None
    if commit is None or top is None or names is None:
        return {"commit": commit, "dirty": None, "dirty_files": [], "changed_by_ttexp": []}
    changed = [n for n in names.splitlines() if n]
    ours = [n for n in changed if changed_only_by_ttexp(start, Path(top), n)]
    theirs = [n for n in changed if n not in ours]
    return {"commit": commit, "dirty": bool(theirs), "dirty_files": theirs[:MAX_LISTED],
            "changed_by_ttexp": ours}


def project_git_info() -> dict[str, Any]:
    """The git state of the project the run was launched from (the current directory), else of
    ttexp's own source tree (an editable install), with ``repo`` saying which."""
    for where in (Path.cwd(), Path(__file__).parent):
        info = git_info(where)
        if info["commit"]:
            return {**info, "repo": str(where)}
    return {"commit": None, "dirty": None, "repo": None}


def package_versions() -> dict[str, Optional[str]]:
    """Installed versions of :data:`VERSIONED_PACKAGES` and Python, from package metadata (nothing
    is imported). ``ttml`` is whichever distribution of that name is installed: ``python -m
    ttexp.doctor`` tells tt-train's package from the unrelated PyPI one."""
    import platform

    out: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out

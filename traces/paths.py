"""Where shared raw traces and the parse cache live."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
DATA_DIR = PACKAGE_DIR / "data"


def shared_dir() -> Path:
    """The shared directory holding traces/raw/.

    Order: env SPILLWAY_SHARED_DIR; else <project root>/../shared (project root = parent of
    this package); else ../shared relative to the cwd. If none exists, the first candidate is
    returned so error messages point at a concrete path.
    """
    env = os.environ.get("SPILLWAY_SHARED_DIR")
    if env:
        return Path(env).expanduser()
    candidates = [PROJECT_ROOT.parent / "shared", Path.cwd().parent / "shared"]
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]


def raw_dir() -> Path:
    return shared_dir() / "traces" / "raw"


def cache_dir() -> Path:
    """~/.cache/spillway (or $SPILLWAY_CACHE_DIR)."""
    env = os.environ.get("SPILLWAY_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spillway"

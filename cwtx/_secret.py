"""
The shared secret that master, workers and clients prove they know.

Where it comes from, first match wins:

1. an explicit ``secret_file`` (``--secret-file``);
2. ``$CWTX_SECRET`` (the secret itself);
3. ``$CWTX_SECRET_FILE`` (a path);
4. ``$XDG_CONFIG_HOME/cwtx/secret`` (default ``~/.config/cwtx/secret``),
   created on first use with mode 0600.  On a cluster whose home directory
   is shared, every node sees the same file, so nothing needs configuring.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from cwtx._errors import SecretError

__all__ = ["SecretError", "default_secret_path", "load_secret", "secret_source"]

#: A secret file larger than this is not a secret file.
MAX_SECRET_FILE = 4096
MIN_SECRET_BYTES = 16


def default_secret_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config) / "cwtx" / "secret"


def secret_source(secret_file: str | os.PathLike[str] | None = None) -> str:
    """Where the secret comes from, for error messages."""
    if secret_file is not None:
        return str(secret_file)
    if os.environ.get("CWTX_SECRET"):
        return "$CWTX_SECRET"
    if os.environ.get("CWTX_SECRET_FILE"):
        return os.environ["CWTX_SECRET_FILE"]
    return str(default_secret_path())


def load_secret(secret_file: str | os.PathLike[str] | None = None) -> bytes:
    """The shared secret, creating the default file if there is none."""
    if secret_file is not None:
        return _read(Path(secret_file))
    env = os.environ.get("CWTX_SECRET")
    if env:
        return _check(env.encode("utf-8"), "$CWTX_SECRET")
    path = os.environ.get("CWTX_SECRET_FILE")
    if path:
        return _read(Path(path))
    default = default_secret_path()
    if not default.exists():
        _create(default)
    return _read(default)


def _create(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first: use theirs
    except OSError as e:
        raise SecretError(f"cannot create the cwtx secret file {path}: {e}") from e
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")


def _read(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise SecretError(f"cannot read the cwtx secret file {path}: {e.strerror}") from e
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise SecretError(f"the cwtx secret file {path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        if info.st_mode & 0o077:
            raise SecretError(
                f"the cwtx secret file {path} is readable by others "
                f"(mode {stat.S_IMODE(info.st_mode):o}); run: chmod 600 {path}"
            )
        data = f.read(MAX_SECRET_FILE + 1)
    if len(data) > MAX_SECRET_FILE:
        raise SecretError(f"the cwtx secret file {path} is over {MAX_SECRET_FILE} bytes")
    return _check(data.strip(), str(path))


def _check(secret: bytes, where: str) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(
            f"the cwtx secret from {where} is {len(secret)} bytes; "
            f"it needs at least {MIN_SECRET_BYTES}"
        )
    return secret

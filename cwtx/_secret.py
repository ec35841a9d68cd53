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
#: A secret shorter than this, or with fewer distinct bytes, is refused:
#: anyone who can connect may try to guess it offline.
MIN_SECRET_BYTES = 32
MIN_DISTINCT_BYTES = 10
HOW_TO_MAKE_ONE = "make a good one with: python3 -c 'import secrets; print(secrets.token_hex(32))'"


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
    elif default.parent.exists():
        _tighten(default.parent)
    return _read(default)


def _create(path: Path) -> None:
    """Write a new secret to a file of our own beside ``path``, then link it
    there: a process starting at the same moment (a master and workers
    started together) sees no file or a whole one, never an empty one."""
    secret = secrets.token_hex(32) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _tighten(path.parent)
        _write_new(tmp, secret)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: write in place
            _write_new(path, secret)
    except FileExistsError:
        pass  # another process made it first: use theirs
    except OSError as e:
        raise SecretError(f"cannot create the cwtx secret file {path}: {e}") from e
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` (mode 0600; FileExistsError if it exists) holding ``text``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _tighten(directory: Path) -> None:
    """Our own config directory is ours alone: 0700, as the docs promise."""
    info = directory.stat()
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & 0o077:
        directory.chmod(0o700)


def _read(path: Path) -> bytes:
    _check_directory(path)
    try:
        # O_NONBLOCK: a FIFO put there must not hang us; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as e:
        raise SecretError(f"cannot read the cwtx secret file {path}: {e.strerror}") from e
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise SecretError(f"the cwtx secret file {path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        if info.st_uid != os.geteuid():
            raise SecretError(
                f"the cwtx secret file {path} belongs to uid {info.st_uid}, not to you "
                f"(uid {os.geteuid()})"
            )
        if info.st_mode & 0o077:
            raise SecretError(
                f"the cwtx secret file {path} is readable by others "
                f"(mode {stat.S_IMODE(info.st_mode):o}); run: chmod 600 {path}"
            )
        data = f.read(MAX_SECRET_FILE + 1)
    if len(data) > MAX_SECRET_FILE:
        raise SecretError(f"the cwtx secret file {path} is over {MAX_SECRET_FILE} bytes")
    return _check(data.strip(), str(path))


def _check_directory(path: Path) -> None:
    """Refuse a secret in a directory others may write to: they could put
    their own file in its place (a sticky directory, like /tmp, is safe)."""
    directory = path.parent
    try:
        info = directory.stat()
    except OSError:
        return  # reading the file will say what is wrong
    writable_by_others = stat.S_IMODE(info.st_mode) & 0o022
    if writable_by_others and not info.st_mode & stat.S_ISVTX:
        raise SecretError(
            f"the cwtx secret file {path} is in a directory others can write to "
            f"(mode {stat.S_IMODE(info.st_mode):o}); run: chmod go-w {directory}"
        )
    if info.st_uid not in (os.geteuid(), 0):
        raise SecretError(
            f"the cwtx secret file {path} is in a directory of uid {info.st_uid}, not yours"
        )


def _check(secret: bytes, where: str) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(
            f"the cwtx secret from {where} is {len(secret)} bytes; it needs at least "
            f"{MIN_SECRET_BYTES}: {HOW_TO_MAKE_ONE}"
        )
    if len(set(secret)) < MIN_DISTINCT_BYTES:
        raise SecretError(
            f"the cwtx secret from {where} is too easy to guess ({len(set(secret))} "
            f"different characters): {HOW_TO_MAKE_ONE}"
        )
    return secret

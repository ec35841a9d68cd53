"""
Where the master is.  Every entry point asks this module: ``cwtx.connect``,
ClientThread, ClusterExecutor, ``cwtx.aio``, ``cw status`` and
``twistd cw-worker``.  When not told a host, the first of these wins:

1. the master a launcher in this process started and has not stopped
   (``cwtx.start``, ``cwtx.allocate``, ``cwtx.local.start``), latest first;
2. ``$CWTX_MASTER``, as ``HOST[:PORT]``;
3. the master that a running ``cw local start`` recorded in its run directory;
4. the master of this user's SLURM cluster (``cw slurm start``): the one
   named ``$CWTX_CLUSTER``, else ``default``, else the only one there is,
   as it wrote itself in its address file;
5. ``localhost``, on port 5494.

An explicit port without a host replaces the port of what the chain found;
a host given as ``HOST:PORT`` carries its own.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading

#: The master's default TCP port.
PORT = 5494

_HOST = re.compile(r"[A-Za-z0-9_.-]+")

_lock = threading.Lock()
#: Masters that launchers in this process started and have not stopped, oldest first.
_started: list[tuple[str, int]] = []


def parse_master_address(text: str, default_port: int = PORT) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[IPV6]:PORT`` or a bare IPv6 address, to
    (host, port); anything else is a ValueError naming what is wrong."""
    if not isinstance(text, str) or not text:
        raise ValueError("the master's address is empty; give HOST or HOST:PORT")
    if "://" in text:
        raise ValueError(
            f"{text!r} looks like a URL; give the master as HOST or HOST:PORT, e.g. node1:5494"
        )
    host, port_text = text, None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not [IPV6] or [IPV6]:PORT")
        port_text = rest[1:] if rest else None
        if not _ipv6(host):
            raise ValueError(f"{host!r} in {text!r} is not an IPv6 address")
    elif text.count(":") > 1:
        if not _ipv6(text):
            raise ValueError(f"{text!r} is not HOST[:PORT] nor an IPv6 address")
    else:
        host, colon, port_text = text.partition(":")
        if colon and not port_text:
            raise ValueError(f"{text!r} has no port after the colon")
        if not colon:
            port_text = None
        if not host or not _HOST.fullmatch(host):
            raise ValueError(f"{host!r} in {text!r} is not a host name or address")
    port = default_port if port_text is None else _port(port_text, text)
    return host, port


def _ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)  # with a %scope too
    except ValueError:
        return False
    return True


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"the port in {whole!r} must be a number from 1 to 65535, not {text!r}")
    return int(text)


def started(address: tuple[str, int]) -> None:
    """A launcher in this process started a master at ``address``."""
    with _lock:
        _started.append(address)


def stopped(address: tuple[str, int]) -> None:
    """That master was stopped: the one started before it is current again."""
    with _lock:
        if address in _started:
            _started.remove(address)


def current() -> tuple[str, int] | None:
    """The master this process started last and has not stopped, if any."""
    with _lock:
        return _started[-1] if _started else None


def find_master(host: str | None = None, port: int | None = None) -> tuple[str, int]:
    """The (host, port) to use, given ``host``/``port`` or not (see above).
    A given ``host`` may carry its own port (``node1:5495``)."""
    if host is not None:
        return parse_master_address(host, PORT if port is None else port)
    found = (
        current()
        or _from_environment()
        or _recorded_by_cw_local()
        or _recorded_by_cw_slurm()
        or ("localhost", PORT)
    )
    return found if port is None else (found[0], port)


def format_address(host: str, port: int) -> str:
    """(host, port) as ``HOST:PORT``, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def write_address_file(path: str | os.PathLike[str], host: str, port: int) -> None:
    """Publish where a master listens, atomically: a reader never sees half."""
    tmp = f"{os.fspath(path)}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(format_address(host, port) + "\n")
    os.replace(tmp, path)


def read_address_file(path: str | os.PathLike[str]) -> tuple[str, int] | None:
    """The address a master published in ``path``; None while there is none.
    A file that holds no address is an error naming the file."""
    try:
        with open(path) as f:
            text = f.read(1024).strip()
    except FileNotFoundError:
        return None
    try:
        return parse_master_address(text)
    except ValueError as e:
        raise ValueError(f"the master's address file {os.fspath(path)}: {e}") from None


def read_address_file_quietly(path: str | os.PathLike[str]) -> tuple[str, int] | None:
    """The address in ``path``, or None if it is missing, unreadable or not
    an address: for lookups that go on to the next place to look."""
    try:
        return read_address_file(path)
    except (OSError, ValueError):
        return None


def _from_environment() -> tuple[str, int] | None:
    text = os.environ.get("CWTX_MASTER")
    if not text:
        return None
    try:
        return parse_master_address(text.strip())
    except ValueError as e:
        raise ValueError(f"$CWTX_MASTER: {e}") from None


def _recorded_by_cw_local() -> tuple[str, int] | None:
    from cwtx.launch.local import recorded_master  # the launcher imports this module

    return recorded_master()


def _recorded_by_cw_slurm() -> tuple[str, int] | None:
    from cwtx.launch.slurm import recorded_master  # the launcher imports this module

    return recorded_master()

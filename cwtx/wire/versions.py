"""Versions that each side states in its hello."""

import getpass
import os
import platform
import socket

import cloudpickle

from cwtx.wire.names import PROTOCOL_VERSION

PYTHON = platform.python_version()
CLOUDPICKLE = cloudpickle.__version__


def hello_arguments(role: str, name: str) -> dict[str, object]:
    return {
        "role": role,
        "name": name,
        "protocol": PROTOCOL_VERSION,
        "python": PYTHON,
        "cloudpickle": CLOUDPICKLE,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "user": _user(),
    }


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return str(os.getuid())

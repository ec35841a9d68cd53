"""Versions that each side states in its hello."""

import platform

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
    }

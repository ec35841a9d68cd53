"""
Resources: what a worker offers (``--resources gpu=2,mem=64G``) and what a
job asks for (``.options(resources={"gpu": 1})``), as amounts by name.

A worker resource given as a whole number without a unit (``gpu=2``) is
made of *devices*, numbered from 0: a job that holds some is told their ids
(``CUDA_VISIBLE_DEVICES`` for ``gpu``, ``CWTX_RESOURCE_<NAME>`` for each).
One with a unit or a fraction (``mem=64G``, ``scratch=1.5``) is an amount:
the job is told how much it holds.  Standard library only.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: The longest resources text (JSON) a job or a worker may carry.
MAX_RESOURCES = 1024
#: The weights a client may have in the fair share (``SetShare``): a
#: million to one at most, so that no client's virtual time runs away.
MIN_SHARE = 1e-3
MAX_SHARE = 1e3
#: Devices of one resource a worker may offer.
MAX_DEVICES = 4096

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGTP]?)(i?B?)\s*\Z", re.I)
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}


def amount(value: Any, what: str) -> float:
    """A number, or a size such as ``64G``, ``512MiB`` (powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: {value!r} is not an amount")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        number = float(m.group(1)) * _UNITS[m.group(2).upper()]
    else:
        raise ValueError(f"{what}: {value!r} is not an amount (a number, or a size like 64G)")
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{what}: {value!r} must be a finite amount, 0 or more")
    return number


def amounts(given: Any, what: str = "resources") -> dict[str, float]:
    """Check and normalise a mapping of resource names to amounts (zero
    amounts are dropped); a clear ValueError names what is wrong."""
    if not isinstance(given, dict):
        raise ValueError(f"{what} must be a mapping of names to amounts, not {given!r:.80}")
    out: dict[str, float] = {}
    for name, value in given.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"{what}: {name!r:.80} is not a resource name (letters, digits, _ . -; at most 64)"
            )
        number = amount(value, f"{what}: {name}")
        if number:
            out[name] = number
    return out


def describe(amount: float) -> str:
    """An amount as people write it: ``2``, ``0.5``, and from 1 MiB up in
    binary units, ``64G`` (status lines and unschedulable reasons)."""
    if amount >= 2**20:
        unit = next(u for u in "PTGM" if amount >= _UNITS[u])
        return f"{amount / _UNITS[unit]:.4g}{unit}"
    return f"{amount:g}"


def size_text(size: float) -> str:
    """Bytes as people read them: ``4 GiB``, ``4.3 GiB``, ``200 MiB``."""
    for unit, name in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if size >= unit:
            value = size / unit
            text = f"{value:.1f}".rstrip("0").rstrip(".") if value < 100 else f"{value:.0f}"
            return f"{text} {name}"
    return f"{size:.0f} B"


def parse_spec(spec: str) -> tuple[dict[str, float], set[str]]:
    """A worker's ``--resources``: ``gpu=2,mem=64G`` or a JSON object.  The
    amounts, and the names that are devices (whole numbers, no unit)."""
    spec = spec.strip()
    if spec.startswith(("{", "[")):
        try:
            given = json.loads(spec)
        except ValueError as e:
            raise ValueError(f"--resources is not JSON: {e}") from None
        if not isinstance(given, dict):
            raise ValueError("--resources must be a JSON object or NAME=AMOUNT,...")
        raw = dict(given)
    else:
        raw = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--resources: {item!r} is not NAME=AMOUNT")
            raw[name.strip()] = value.strip()
    out = amounts(raw, "--resources")
    devices = {
        name
        for name, value in raw.items()
        if name in out and _whole(value) and out[name] <= MAX_DEVICES
    }
    return out, devices


def _whole(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().isdigit()


def encode(needs: dict[str, float]) -> str:
    """The canonical text of a job's needs (its *shape*: equal needs, equal text)."""
    if not needs:
        return "{}"
    whole = {k: int(v) if v == int(v) else v for k, v in needs.items()}
    return json.dumps(whole, sort_keys=True, separators=(",", ":"))


def decode(text: str, what: str) -> dict[str, float]:
    if text in ("{}", ""):
        return {}  # most jobs: no JSON to parse
    try:
        given = json.loads(text) if text else {}
    except ValueError:
        raise ValueError(f"{what} is not JSON") from None
    return amounts(given, what)


def environment(held: dict[str, Any]) -> dict[str, str]:
    """The environment a job sees for what it holds: device ids as lists,
    amounts as numbers."""
    env = {}
    for name, value in held.items():
        key = "CWTX_RESOURCE_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
        if isinstance(value, list):
            env[key] = ",".join(str(i) for i in value)
            if name.lower() == "gpu":
                env["CUDA_VISIBLE_DEVICES"] = env[key]
        else:
            env[key] = f"{value:g}" if value != int(value) else str(int(value))
    return env

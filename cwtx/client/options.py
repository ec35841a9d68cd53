"""Per-job options (timeout, priority, retries, resources, forward_output)
and their validation."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from cwtx.wire.resources import MAX_SHARE, MIN_SHARE, amounts, encode


def check_share(share: float) -> float:
    """A client's weight in the fair share of slots: a ValueError at the
    call (not later, inside connect, as a ConnectionError)."""
    if isinstance(share, bool) or not (
        isinstance(share, (int, float)) and MIN_SHARE <= share <= MAX_SHARE
    ):
        raise ValueError(
            f"share must be a number from {MIN_SHARE:g} to {MAX_SHARE:g}, not {share!r}"
        )
    return float(share)


def _resources(value: Any) -> str:
    """A job's resources, checked here (a bad one raises at the call) and
    sent as canonical text: ``{"gpu": 1, "mem": "16G"}``."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else {}
    return encode(amounts(value or {}, "resources"))


@dataclass(frozen=True)
class JobOptions:
    """Per-job settings; ``max_retries=None`` means the master's default;
    ``forward_output``: the job's stdout and stderr lines come back to the
    client (docs/clients.md, "Forwarding output")."""

    timeout: float | None = None
    priority: int = 0
    max_retries: int | None = None
    resources: str = "{}"
    forward_output: bool = False

    def replace(self, **changes: Any) -> JobOptions:
        """A copy with ``changes``; an unknown or bad option raises here."""
        fields = dict(self.__dict__)
        for key, value in changes.items():
            if key not in fields:
                raise TypeError(f"unknown job option {key!r}")
            if key == "resources":
                value = _resources(value)
            fields[key] = value
        result = JobOptions(**fields)
        result.validate()
        return result

    def validate(self) -> None:
        if self.timeout is not None and not (
            isinstance(self.timeout, (int, float))
            and self.timeout > 0
            and math.isfinite(self.timeout)
        ):
            raise ValueError(f"timeout must be a positive number of seconds, not {self.timeout!r}")
        if self.max_retries is not None and (
            not isinstance(self.max_retries, int) or self.max_retries < 0
        ):
            raise ValueError(f"max_retries must be an int >= 0, not {self.max_retries!r}")
        if not isinstance(self.priority, int):
            raise ValueError(f"priority must be an int, not {self.priority!r}")
        if not isinstance(self.forward_output, bool):
            raise ValueError(f"forward_output must be True or False, not {self.forward_output!r}")

"""
Extra sbatch options a user gives (``--master-args``, ``--worker-args``),
checked: those cwtx sets itself are refused, however they are spelled.

sbatch reads its options with getopt: a long option may be shortened to any
unambiguous prefix (``--jo`` is ``--job-name``) and short options may be
bundled (``-QW`` is ``-Q -W``); both are checked here.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

#: Options cwtx sets itself: given again, they would hide a job from
#: ``stop`` (its name, its directory), break the array, lose the logs or
#: make sbatch wait for the job to end.
REFUSED_LONG = ("--job-name", "--array", "--output", "--chdir", "--clusters", "--wait", "--wrap")
REFUSED_SHORT = frozenset("JaoDMW")

#: sbatch's short options that take a value: what follows them in the same
#: word is that value, not more options.
SHORT_WITH_VALUE = frozenset("AaBbcCDdeFGiJLMmNnopqStwx")


def _refused_long(option: str) -> str | None:
    """The refused option that ``option`` spells, perhaps shortened."""
    name = option.split("=", 1)[0]
    if len(name) < 3:  # "--" alone
        return None
    return next((full for full in REFUSED_LONG if full.startswith(name)), None)


def _refused_short(word: str) -> str | None:
    """The refused letter in a bundle of short options (``-QW``), if any."""
    for letter in word[1:]:
        if letter in REFUSED_SHORT:
            return f"-{letter}"
        if letter in SHORT_WITH_VALUE:
            return None  # the rest of the word is its value
    return None


def _is_export(word: str) -> bool:
    name = word.partition("=")[0]
    return len(name) >= 5 and "--export".startswith(name)


def _keeps_all(value: str) -> bool:
    """sbatch's --export keeps the environment if ALL is in its list."""
    return any(item.strip().upper() == "ALL" for item in value.split(","))


def extra_options(args: str | Sequence[str], what: str = "extra sbatch options") -> list[str]:
    """``args`` as a shell string (``"--qos=high --mem=4G"``) or a list of
    words; a ValueError naming any option that cwtx must set itself."""
    words = shlex.split(args) if isinstance(args, str) else [str(a) for a in args]
    for i, word in enumerate(words):
        if word.startswith("--"):
            refused = _refused_long(word)
        elif word.startswith("-") and len(word) > 1 and not word[1].isdigit():
            refused = _refused_short(word)
        else:
            continue  # a value
        if refused:
            raise ValueError(
                f"{what}: {word!r} ({refused}) is set by cwtx itself: its job names, array, "
                "output and directory are how stop finds and ends its jobs (docs/slurm.md)"
            )
        if _is_export(word):
            value = word.partition("=")[2] if "=" in word else " ".join(words[i + 1 : i + 2])
            if _keeps_all(value):
                continue
            raise ValueError(
                f"{what}: {word!r} would keep the environment (PATH, the secret) from "
                "the jobs; use --export=ALL,NAME=VALUE"
            )
    return words

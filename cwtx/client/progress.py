"""Progress bars (tqdm, the optional extra ``cwtx[progress]``)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError(
            "cwtx progress bars need tqdm: pip install 'cwtx[progress]' (or tqdm)"
        ) from None
    return tqdm


def bar(iterable: Iterable[T], total: int | None = None, desc: str | None = None) -> Iterator[T]:
    """Yield from ``iterable`` while a bar counts the items."""
    tqdm = _tqdm()
    with tqdm(total=total, desc=desc) as progress_bar:
        for item in iterable:
            progress_bar.update(1)
            yield item


def progress(
    futures: Iterable[concurrent.futures.Future[Any]], desc: str | None = None
) -> list[concurrent.futures.Future[Any]]:
    """Show a bar while ``futures`` complete; return them once all have.

    Like ``dask.distributed.progress``: it blocks, and it does not raise a
    job's exception (ask each future for its result).
    """
    tqdm = _tqdm()
    fs = list(futures)
    with tqdm(total=len(fs), desc=desc) as progress_bar:
        for _ in concurrent.futures.as_completed(fs):
            progress_bar.update(1)
    return fs

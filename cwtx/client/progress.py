"""Progress bars (tqdm, the optional extra ``cwtx[progress]``)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def require_tqdm() -> Any:
    """tqdm's bar class, or an ImportError that says what to install.

    ``map(..., progress=True)`` calls it before sending any job, so a
    missing tqdm fails the call, not the iteration after every job ran.
    """
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError(
            "cwtx progress bars need tqdm: pip install 'cwtx[progress]' (or tqdm)"
        ) from None
    return tqdm


def bar(iterable: Iterable[T], total: int | None = None, desc: str | None = None) -> Iterator[T]:
    """Yield from ``iterable`` while a bar counts the items.

    Each item is yielded straight from the call that fetched it, never kept
    in a local: ``map``'s results stay collectable once the caller drops them.
    """
    tqdm = require_tqdm()
    items = iter(iterable)
    with tqdm(total=total, desc=desc) as progress_bar:
        while True:
            try:
                yield _counted(next(items), progress_bar)
            except StopIteration:
                return


def _counted(item: T, progress_bar: Any) -> T:
    progress_bar.update(1)
    return item


def progress(
    futures: Iterable[concurrent.futures.Future[Any]], desc: str | None = None
) -> list[concurrent.futures.Future[Any]]:
    """Show a bar while ``futures`` complete; return them once all have.

    Like ``dask.distributed.progress``: it blocks, and it does not raise a
    job's exception (ask each future for its result).
    """
    tqdm = require_tqdm()
    fs = list(futures)
    with tqdm(total=len(fs), desc=desc) as progress_bar:
        for _ in concurrent.futures.as_completed(fs):
            progress_bar.update(1)
    return fs

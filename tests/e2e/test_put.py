"""
Reused data (``put``) through every client API, against real master and
worker processes: the data crosses the client's connection once, each
worker process unpickles it once, and dropping the Ref frees it.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import cwtx
from cwtx.client import reactor_thread

from ..conftest import ROOT, wait_until

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two workers with two slots each."""
    with cwtx.local.allocate(2, run_dir=tmp_path_factory.mktemp("put"), slots=2) as c:
        yield c


def count_writes(client: cwtx.Client) -> list[int]:
    """Bytes the client writes to the master from now on (reactor thread)."""
    written = [0]

    def wrap() -> None:
        transport = client._protocol.transport
        write = transport.write

        def counting(data: bytes) -> None:
            written[0] += len(data)
            write(data)

        transport.write = counting

    reactor_thread.blocking(wrap, timeout=30)
    return written


def where(data: Any) -> tuple[int, int, int]:
    """Which process ran the job, and which object it got."""
    return os.getpid(), id(data), len(data)


def test_twenty_jobs_on_one_put_send_the_data_once(cluster):
    data = os.urandom(4 * MIB)
    with cwtx.ClusterExecutor(cluster.host, cluster.port) as ex:
        written = count_writes(ex._client)
        ref = ex.put(data)
        assert ref.size > len(data)
        got = [f.result(60) for f in [ex.submit(where, ref) for _ in range(20)]]
        assert {n for _, _, n in got} == {len(data)}
        assert ref.size < written[0] < ref.size + MIB  # once, with 20 small job records
        objects: dict[int, set[int]] = {}
        for pid, obj, _ in got:
            objects.setdefault(pid, set()).add(obj)
        assert all(len(ids) == 1 for ids in objects.values())  # unpickled once per child
        table = ex._client.refs
        del ref, got
        gc.collect()  # in this thread: the free goes through the reactor thread
        wait_until(lambda: len(table) == 0 and not table.sent, what="the Ref freed")


def test_refs_nested_anywhere_and_from_every_client_api(cluster, tmp_path):
    results: dict[Any, Any] = {}
    with cwtx.ClientThread(results.__setitem__, cluster.host, cluster.port) as ct:
        ref = ct.put({"weights": [1, 2, 3]})
        ct.submit(
            "nested", lambda d, *, more: (d["weights"], more[0]["x"] is d), ref, more=[{"x": ref}]
        )
    assert results == {"nested": ([1, 2, 3], True)}

    client = reactor_thread.blocking(cwtx.connect, cluster.host, cluster.port, timeout=60)
    try:
        ref = client.put(b"deferred")
        d = reactor_thread.call(lambda: client.submit(len, ref))
        assert d.result(60) == len(b"deferred")
        other = cwtx.ClusterExecutor(cluster.host, cluster.port)
        try:
            with pytest.raises(ValueError, match="put by another client"):
                other.submit(len, ref)
        finally:
            other.shutdown()
    finally:
        reactor_thread.blocking(client.close, timeout=30)


AIO_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import cwtx.aio

    async def main():
        client = await cwtx.aio.connect(sys.argv[1], int(sys.argv[2]))
        ref = client.put(list(range(1000)))
        print(await asyncio.gather(*(client.submit(sum, ref) for _ in range(5))))
        await client.close()

    asyncio.run(main())
    """
)


def test_asyncio_put(cluster, tmp_path):
    script = tmp_path / "aio_put.py"
    script.write_text(AIO_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), cluster.host, str(cluster.port)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str([sum(range(1000))] * 5)

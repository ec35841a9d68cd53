"""Status of any size: pages of JSON, asked for one after another."""

from __future__ import annotations

from cwtx.master.sessions import ClientSession, WorkerSession
from cwtx.testing import MemoryCluster
from cwtx.wire.status import PER_PAGE


def simulate(cluster: MemoryCluster, workers: int, clients: int = 0) -> None:
    """Register light workers (and clients) straight with the master."""
    for i in range(workers):
        cluster.master.workers.append(
            WorkerSession(f"simulated-{i}", 2, lambda job: None, lambda task: None)
        )
    for i in range(clients):
        cluster.master.clients.append(ClientSession(f"client-{i}", lambda item: None))


def test_status_with_ten_thousand_workers_through_a_client():
    cluster = MemoryCluster(workers=1)
    simulate(cluster, 10_000, clients=2_500)
    client = cluster.client()
    d = client.status()
    cluster.flush()
    status = cluster.result(d)
    assert len(status["workers"]) == 10_001 and status["slots"] == 20_001
    assert len(status["clients"]) == 2_501
    names = [w["name"] for w in status["workers"]]
    assert names[0] == "memory-0" and names[-1] == "simulated-9999" and len(set(names)) == 10_001
    assert status["pages"] == 11 and client.connected  # the connection survived
    assert status == {**cluster.master.status(), "pages": 11}


def test_a_small_status_is_one_page():
    cluster = MemoryCluster(workers=2)
    d = cluster.client().status()
    cluster.flush()
    status = cluster.result(d)
    assert status["pages"] == 1 and len(status["workers"]) == 2
    assert status["queued"] == 0 and "page" not in status


def test_every_page_is_under_the_amp_value_limit_in_pieces():
    from cwtx.master.status import page
    from cwtx.wire.status import pieces

    cluster = MemoryCluster(workers=0)
    simulate(cluster, 3 * PER_PAGE)
    for n in range(3):
        parts = pieces(page(cluster.master, n))
        assert all(len(p) < 65_535 for p in parts) and len(parts) <= 64


def test_each_client_s_put_data_and_functions_show_until_freed():
    import gc

    from cwtx.master.sessions import DATA_OVERHEAD

    cluster = MemoryCluster(workers=1)
    client = cluster.client()

    def clients() -> list[dict]:
        d = client.status()
        cluster.flush()
        return cluster.result(d)["clients"]

    (fresh,) = clients()
    assert (fresh["put_data"], fresh["put_bytes"]) == (0, 0)
    assert (fresh["functions"], fresh["function_bytes"]) == (0, 0)
    refs = [client.put(bytes(100_000)), client.put("small")]
    d = client.submit(lambda *xs: len(xs), *refs)
    cluster.flush()
    assert cluster.result(d) == 2
    (session,) = cluster.master.clients
    (held,) = clients()
    assert held["put_data"] == 2
    assert held["put_bytes"] == sum(r.size for r in refs) + 2 * DATA_OVERHEAD
    assert held["functions"] == len(session.functions) >= 1
    assert held["function_bytes"] == sum(f.size for f in session.functions.values()) > 0
    del refs, d
    gc.collect()  # the client frees what no Ref names any more
    cluster.flush()
    (freed,) = clients()
    assert (freed["put_data"], freed["put_bytes"]) == (0, 0)

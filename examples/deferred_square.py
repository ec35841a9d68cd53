"""
Square numbers on a cwtx cluster with the Deferred API.

    python examples/deferred_square.py --local 2    # starts its own master and 2 workers
    python examples/deferred_square.py --host HOST  # uses a running master
"""

import argparse

from twisted.internet import defer, task

import cwtx


async def run(reactor, host, port, count):
    client = await cwtx.connect(host, port, reactor=reactor)
    offset = 1000  # captured by the closure below, shipped with it

    def square_plus(x):
        return x * x + offset

    results = await defer.gatherResults([client.submit(square_plus, i) for i in range(count)])
    for i, r in enumerate(results):
        print(f"{i}^2 + {offset} = {r}")

    try:
        await client.submit(lambda: 1 / 0)
    except ZeroDivisionError as e:
        print(f"a failing job raised {e!r} on the worker")

    status = await client.status()
    print(
        f"done: the master has {len(status['workers'])} workers, "
        f"{status['completed']} jobs completed"
    )
    client.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--host", help="the master (default: $CWTX_MASTER, else localhost)")
    parser.add_argument("--port", type=int, help=f"its port (default {cwtx.PORT})")
    parser.add_argument(
        "--local",
        type=int,
        metavar="N",
        default=0,
        help="start a local master and N workers for this run",
    )
    parser.add_argument("-n", "--count", type=int, default=10)
    args = parser.parse_args()

    def go(host, port):
        task.react(
            lambda reactor: defer.Deferred.fromCoroutine(run(reactor, host, port, args.count))
        )

    if args.local:
        with cwtx.local.allocate(args.local) as cluster:
            print(f"started a local master on port {cluster.port} and {args.local} workers")
            go(cluster.host, cluster.port)
    else:
        go(args.host, args.port)


if __name__ == "__main__":
    main()

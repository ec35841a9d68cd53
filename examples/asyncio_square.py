"""
cwtx in an asyncio program: await jobs (Twisted's asyncio reactor runs on
the same loop).

    python examples/asyncio_square.py
"""

import asyncio

import cwtx
import cwtx.aio


async def squares(n):
    client = await cwtx.aio.connect()  # finds the cluster started below
    offset = 0.5
    results = await asyncio.gather(*(client.submit(lambda x: x * x + offset, i) for i in range(n)))
    for i, r in enumerate(results):
        print(f"{i}^2 + {offset} = {r}")
    await client.close()


def main():
    with cwtx.allocate(nworkers=2):
        asyncio.run(squares(10))


if __name__ == "__main__":
    main()

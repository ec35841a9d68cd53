"""
concurrent.futures on a cwtx cluster: submit, map (with a bounded number of
jobs in flight), as_completed, and job options.

    python examples/executor.py
"""

import concurrent.futures

import cwtx


def collatz_steps(n):
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def main():
    with cwtx.allocate(nworkers=2), cwtx.ClusterExecutor() as executor:
        # map keeps the input order; buffersize bounds the jobs in flight.
        steps = list(executor.map(collatz_steps, range(1, 2001), buffersize=200))
        best = max(range(len(steps)), key=steps.__getitem__) + 1
        print(f"below 2001, {best} takes the most Collatz steps: {steps[best - 1]}")

        # Futures work with the usual helpers.
        futures = {executor.submit(pow, 3, k): k for k in range(5)}
        for future in concurrent.futures.as_completed(futures):
            print(f"3**{futures[future]} = {future.result()}")

        # Job options: a job that runs too long is killed and fails.
        slow = executor.options(timeout=1).submit(collatz_steps, 27)
        print(f"27 takes {slow.result()} steps (within its 1 s timeout)")


if __name__ == "__main__":
    main()

"""
The seed's with.py, ported to cwtx: a context manager starts the master and
workers for the block, and another runs the client.

    python examples/with.py
"""

import cwtx


def completion(jobid, output):
    print(f"the square for job {jobid} is {output}")


def work(n):
    return n * n


def main():
    with cwtx.allocate(nworkers=2):
        # Entering starts the client; leaving waits for every job, then stops.
        with cwtx.ClientThread(completion) as client:
            for i in range(10):
                jobid = cwtx.randid()
                print(f"submitting job {jobid} to square {i}")
                client.submit(jobid, work, i)


if __name__ == "__main__":
    main()

"""
The seed's square.py, ported to cwtx: start a cluster, submit jobs through a
ClientThread, wait, stop the cluster.

    python examples/square.py
"""

import cwtx


def completion(jobid, output):
    """Called in the ClientThread's callback thread whenever a job completes,
    with the job ID (given at submission) and the job's return value."""
    print(f"the square for job {jobid} is {output}")


def work(n):
    """Square the argument! So much work to be done; better parallelize it."""
    return n * n


def main():
    # Start a master and two workers just for this script (real twistd
    # processes; on any free port). With SLURM this will use SLURM instead.
    cwtx.start(nworkers=2, port=0)
    try:
        # With no host, the client finds the cluster this process started
        # (else $CWTX_MASTER, else localhost).
        client = cwtx.ClientThread(completion)
        client.start()

        for i in range(10):
            # cwtx.randid() makes unique job IDs when you have no natural ones.
            jobid = cwtx.randid()
            print(f"submitting job {jobid} to square {i}")
            client.submit(jobid, work, i)

        # Wait for every job to finish (raises the first job error, if any).
        client.wait()
        client.stop()
    finally:
        cwtx.stop()


if __name__ == "__main__":
    main()

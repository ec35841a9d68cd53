"""The ``cw`` command: start and stop local clusters, show a master's status."""

from __future__ import annotations

import argparse
import json
import sys

from cwtx._errors import AuthenticationError, CwtxError, ProtocolMismatch
from cwtx.client.address import PORT, find_master
from cwtx.client.status import query_status
from cwtx.launch import local


def _local_start(args: argparse.Namespace) -> int:
    cluster = local.start(
        args.workers,
        args.port,
        slots=args.slots,
        run_dir=args.run_dir,
        host=args.host,
        timeout=args.timeout,
    )
    print(
        f"cwtx master listening on {cluster.host}:{cluster.port} with "
        f"{cluster.nworkers} workers; pid files and logs in {cluster.run_dir}"
    )
    return 0


def _local_stop(args: argparse.Namespace) -> int:
    stopped = local.stop(args.run_dir)
    print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _status(args: argparse.Namespace) -> int:
    host, port = find_master(args.host, args.port)
    try:
        status = query_status(host, port, timeout=args.timeout)
    except (AuthenticationError, ProtocolMismatch) as e:
        print(f"cw: the cwtx master at {host}:{port} would not let us in: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"cw: no cwtx master answers at {host}:{port}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(
        f"master {status['master']}: {len(status['workers'])} workers, "
        f"{status['slots']} slots, {status['running']} running, "
        f"{status['queued']} queued, {status['completed']} completed, "
        f"{len(status['clients'])} clients"
    )
    for w in status["workers"]:
        print(f"  worker {w['name']}: {w['running']}/{w['slots']} slots busy")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="cw", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    loc = sub.add_parser("local", help="a master and workers on this machine")
    loc_sub = loc.add_subparsers(dest="action", required=True)
    start = loc_sub.add_parser("start", help="start a master and N workers")
    start.add_argument("-n", "--workers", type=int, default=2, help="workers to start")
    start.add_argument("-p", "--port", type=int, default=PORT, help="master port (0: any)")
    start.add_argument("--slots", type=int, default=1, help="slots per worker")
    start.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    start.add_argument("--run-dir", default=None, help="pid files and logs")
    start.add_argument("--timeout", type=float, default=local.START_TIMEOUT)
    start.set_defaults(func=_local_start)
    stop = loc_sub.add_parser("stop", help="stop what `cw local start` started")
    stop.add_argument("--run-dir", default=None, help="pid files and logs")
    stop.set_defaults(func=_local_stop)

    status = sub.add_parser("status", help="show a master's workers and jobs")
    status.add_argument(
        "--host",
        default=None,
        help="the master's host (default: $CWTX_MASTER, a running `cw local`, else localhost)",
    )
    status.add_argument("-p", "--port", type=int, default=None, help=f"its port (default {PORT})")
    status.add_argument("--json", action="store_true")
    status.add_argument("--timeout", type=float, default=5.0)
    status.set_defaults(func=_status)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (CwtxError, ValueError) as e:  # what the user can fix: one line, no traceback
        print(f"cw: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

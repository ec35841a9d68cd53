"""cw: start and stop local and SLURM clusters, show a master's status."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

from cwtx import _status_text as status_text
from cwtx import logfile
from cwtx._errors import AuthenticationError, CwtxError, ProtocolMismatch
from cwtx._secret import load_secret
from cwtx.client.address import PORT, find_master, parse_master_address
from cwtx.client.status import query_status
from cwtx.launch import local, slurm
from cwtx.wire.resources import parse_spec


def _local_start(args: argparse.Namespace) -> int:
    logs = ["--log-level", args.log_level] if args.log_level else []
    cluster = local.start(
        args.workers,
        args.port,
        slots=args.slots,
        run_dir=args.run_dir or local.default_run_dir(),
        host=args.host,
        timeout=args.timeout,
        master_args=_master_options(args) + logs,
        worker_args=_worker_options(args) + logs,
        log_size=args.log_size,
        log_files=args.log_files,
    )
    print(
        f"cwtx master listening on {cluster.host}:{cluster.port} with "
        f"{cluster.nworkers} workers; pid files and logs in {cluster.run_dir}"
    )
    return 0


def _worker_options(args: argparse.Namespace) -> list[str]:
    """cw-worker options the cw commands pass on (checked here, so a bad
    one fails before anything starts)."""
    if not getattr(args, "resources", None):
        return []
    try:
        parse_spec(args.resources)
    except ValueError as e:
        raise SystemExit(f"cw: {e}") from None
    return ["--resources", args.resources]


def _master_options(args: argparse.Namespace) -> list[str]:
    names = getattr(args, "priority_clients", None)
    return ["--priority-clients", names] if names else []


def _local_stop(args: argparse.Namespace) -> int:
    stopped = local.stop(args.run_dir or local.default_run_dir())
    print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _cluster(args: argparse.Namespace) -> str:
    """The cluster a command means: the one named, else the one clients
    would find ($CWTX_CLUSTER, else 'default', else the only one running)."""
    return args.name or slurm.which_cluster() or slurm.DEFAULT_NAME


def _workers(n: int) -> str:
    return "1 worker" if n == 1 else f"{n} workers"


def _say(message: str) -> None:
    print(f"cw: {message}", file=sys.stderr, flush=True)


def _slurm_start(args: argparse.Namespace) -> int:
    cluster = slurm.start(
        args.workers,
        args.port,
        name=args.name or os.environ.get("CWTX_CLUSTER") or slurm.DEFAULT_NAME,
        slots=args.slots,
        partition=args.partition,
        time=args.time,
        account=args.account,
        master_args=args.master_args,
        worker_args=args.worker_args,
        docker_image=args.docker_image,
        docker_args=args.docker_args,
        timeout=args.timeout,
        secret_file=args.secret_file,
        master_service_args=_master_options(args),
        worker_service_args=_worker_options(args),
        report=_say,
        log_size=args.log_size,
        log_files=args.log_files,
    )
    print(
        f"cwtx cluster {cluster.name!r}: master on {cluster.host}:{cluster.port}, "
        f"{_workers(cluster.nworkers)}; scripts and logs in {cluster.directory}"
    )
    return 0


def _slurm_add(args: argparse.Namespace) -> int:
    name = _cluster(args)
    names = slurm.add(
        args.workers,
        name,
        slots=args.slots,
        timeout=args.timeout,
        report=_say,
        worker_service_args=_worker_options(args),
    )
    print(f"added {_workers(len(names))} to cluster {name!r}: {', '.join(names)}")
    return 0


def _slurm_stop(args: argparse.Namespace) -> int:
    name = _cluster(args)
    stopped = slurm.stop(name, report=_say)
    if stopped:
        print(f"stopped cluster {name!r}: SLURM jobs {', '.join(stopped)}")
    else:
        print(f"cluster {name!r} had no SLURM jobs")
    return 0


def _slurm_status(args: argparse.Namespace) -> int:
    found = slurm.status(_cluster(args))
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    print(f"cluster {found['name']!r} ({found['directory']}):")
    if not found["jobs"]:
        print("  no SLURM jobs")
    for job in found["jobs"]:
        reason = f" ({job['reason']})" if job["state"] == "PENDING" else ""
        node = f" on {job['nodes']}" if job["nodes"] else ""
        print(f"  {job['role']:8} job {job['id']:>12}: {job['state']}{reason}{node}")
    if found["master"] is None:
        print(f"  master: {found.get('error')}")
        return 1
    _print_status(found["master"])
    return 0


def _slurm_list(args: argparse.Namespace) -> int:
    clusters = slurm.clusters()
    if not clusters:
        print(f"no cwtx SLURM clusters in {slurm.default_state_dir()}")
    for name, jobs in clusters.items():
        states = ", ".join(f"{n} {state}" for state, n in sorted(jobs.items())) or "no SLURM jobs"
        print(f"{name}: {states}")
    return 0


def _status(args: argparse.Namespace) -> int:
    if args.master:
        host, port = parse_master_address(args.master)
    else:
        host, port = find_master(args.host, args.port)
    if not args.watch:
        status = _query(host, port, args.timeout)
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            print(_status_text(status, every=args.all))
        return 0
    try:
        while True:  # like watch(1): redraw in place until Ctrl-C
            try:
                text = _status_text(_query(host, port, args.timeout), every=args.all)
            except CwtxError as e:
                text = f"cw: {e}"
            stamp = time.strftime("%H:%M:%S")
            sys.stdout.write(
                f"\x1b[H\x1b[2J{stamp}  every {args.watch:g} s, Ctrl-C to stop\n{text}\n"
            )
            sys.stdout.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def _query(host: str, port: int, timeout: float) -> dict:
    try:
        return query_status(host, port, timeout=timeout)
    except (AuthenticationError, ProtocolMismatch) as e:
        raise CwtxError(f"the cwtx master at {host}:{port} would not let us in: {e}") from None
    except OSError as e:
        raise CwtxError(f"no cwtx master answers at {host}:{port}: {e}") from None


def _print_status(status: dict) -> None:
    print(_status_text(status))


def _status_text(status: dict, every: bool = False) -> str:
    text = status_text.render(status, every=every)
    if status.get("http"):
        from cwtx.master.web import url

        # Status never carries the token: it is made here, from our own secret.
        text += f"\ndashboard: {url(status['http'], load_secret())}"
    return text


def _argument(check: Any) -> Any:
    """An argparse type from a check that raises ValueError."""

    def convert(value: str) -> Any:
        try:
            return check(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = check.__name__
    return convert


def log_options(parser: argparse.ArgumentParser) -> None:
    """How much log each process it starts may keep (cwtx.logfile)."""
    parser.add_argument(
        "--log-size",
        type=_argument(logfile.log_size),
        default=logfile.DEFAULT_SIZE,
        metavar="SIZE",
        help="rotate each process's log at this size (bytes, or 10M; default 10M)",
    )
    parser.add_argument(
        "--log-files",
        type=_argument(logfile.log_files),
        default=logfile.DEFAULT_FILES,
        metavar="N",
        help=f"rotated log files kept per process ({logfile.DEFAULT_FILES})",
    )


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
    start.add_argument(
        "--timeout",
        type=float,
        default=local.START_TIMEOUT,
        metavar="SECONDS",
        help=f"give up (and stop what started) after this long ({local.START_TIMEOUT:g})",
    )
    start.add_argument(
        "--log-level",
        choices=("debug", "info", "warn", "error"),
        help="what the master and workers log (debug: every job's lifecycle)",
    )
    scheduling(start)
    log_options(start)
    secret_option(start)
    start.set_defaults(func=_local_start)
    stop = loc_sub.add_parser("stop", help="stop what `cw local start` started")
    stop.add_argument("--run-dir", default=None, help="pid files and logs")
    secret_option(stop)
    stop.set_defaults(func=_local_stop)

    _slurm_parser(sub)

    status = sub.add_parser("status", help="show a master's workers, clients and jobs")
    status.add_argument(
        "--master",
        metavar="HOST:PORT",
        help="the master to ask (default: $CWTX_MASTER, a running `cw local`, this user's "
        "SLURM cluster ($CWTX_CLUSTER, else 'default'), else localhost)",
    )
    status.add_argument("--host", default=None, help="the master's host (or use --master)")
    status.add_argument("-p", "--port", type=int, default=None, help=f"its port (default {PORT})")
    status.add_argument(
        "--json", action="store_true", help="print the status as JSON (docs/operations.md)"
    )
    status.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=2.0,
        default=None,
        metavar="SECONDS",
        help="redraw every SECONDS (2), in place, until Ctrl-C",
    )
    status.add_argument(
        "--all",
        action="store_true",
        help=f"list every worker and client (else the {status_text.SHOWN} busiest of each)",
    )
    status.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS", help="give up after (5)"
    )
    secret_option(status)
    status.set_defaults(func=_status)
    return top


def _slurm_parser(sub: Any) -> None:
    top = sub.add_parser("slurm", help="a master and workers as SLURM jobs (docs/slurm.md)")
    actions = top.add_subparsers(dest="action", required=True)

    def named(parser: argparse.ArgumentParser, found: str = ", else the only one running") -> None:
        parser.add_argument(
            "--name",
            default=None,
            help="the cluster's name: one user can run several side by side "
            f"(default: $CWTX_CLUSTER, else {slurm.DEFAULT_NAME!r}{found})",
        )

    def waited(parser: argparse.ArgumentParser, what: str) -> None:
        parser.add_argument(
            "--timeout",
            type=float,
            default=slurm.START_TIMEOUT,
            metavar="SECONDS",
            help=f"give up (and cancel {what}) after this long (default {slurm.START_TIMEOUT:g})",
        )

    start = actions.add_parser("start", help="submit a master and N workers, wait until ready")
    start.add_argument("-n", "--workers", type=int, default=2, help="workers to start (2)")
    named(start, found="")
    start.add_argument(
        "--slots", type=int, default=1, help="slots per worker (its --cpus-per-task)"
    )
    start.add_argument("--partition", help="SLURM partition for every job")
    start.add_argument("--time", help="time limit for every job (sbatch --time)")
    start.add_argument("--account", help="account to charge (sbatch --account)")
    start.add_argument(
        "--master-args", default="", metavar="ARGS", help="extra sbatch options for the master"
    )
    start.add_argument(
        "--worker-args", default="", metavar="ARGS", help="extra sbatch options for the workers"
    )
    start.add_argument("--docker-image", metavar="IMAGE", help="run each worker in this image")
    start.add_argument(
        "--docker-args",
        default="",
        metavar="ARGS",
        help="extra `docker run` options: mount the shared filesystem here",
    )
    start.add_argument(
        "-p", "--port", type=int, default=0, help="the master's port (default 0: any free port)"
    )
    scheduling(start)
    log_options(start)
    secret_option(start)
    waited(start, "the jobs")
    start.set_defaults(func=_slurm_start)

    add = actions.add_parser("add", help="add N workers to a running cluster")
    add.add_argument("-n", "--workers", type=int, default=1, help="workers to add (1)")
    named(add)
    add.add_argument(
        "--slots", type=int, default=None, help="slots per new worker (default: as started)"
    )
    add.add_argument("--resources", metavar="SPEC", help=RESOURCES_HELP + " (these workers)")
    waited(add, "them")
    secret_option(add)
    add.set_defaults(func=_slurm_add)

    stop = actions.add_parser("stop", help="workers leave gracefully, then the master")
    named(stop)
    secret_option(stop)
    stop.set_defaults(func=_slurm_stop)

    status = actions.add_parser("status", help="the cluster's SLURM jobs and its master's status")
    named(status)
    status.add_argument("--json", action="store_true", help="print it as JSON")
    secret_option(status)
    status.set_defaults(func=_slurm_status)

    listing = actions.add_parser("list", help="this user's clusters and their SLURM jobs")
    listing.set_defaults(func=_slurm_list)


RESOURCES_HELP = "what each worker offers, e.g. gpu=2,mem=64G (docs/scheduling.md)"


def secret_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--secret-file",
        metavar="PATH",
        help="the file with the cluster's shared secret (default: $CWTX_SECRET, "
        "$CWTX_SECRET_FILE, else ~/.config/cwtx/secret; docs/security.md)",
    )


def scheduling(parser: argparse.ArgumentParser) -> None:
    """The scheduling options a cluster's start takes."""
    parser.add_argument("--resources", metavar="SPEC", help=RESOURCES_HELP)
    parser.add_argument(
        "--priority-clients",
        metavar="NAMES",
        help="client names (shell patterns, comma-separated) whose jobs go first",
    )


#: Options whose value is itself options: ``--worker-args --mem=4G`` would
#: otherwise be taken by argparse for an option of ``cw``.
_OPTION_VALUED = ("--master-args", "--worker-args", "--docker-args")


def _join_option_values(argv: list[str]) -> list[str]:
    joined, words = [], iter(argv)
    for word in words:
        if word in _OPTION_VALUED:
            word = f"{word}={next(words, '')}"
        joined.append(word)
    return joined


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that a start cleans up as
    it does on Ctrl-C."""


def _terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(_join_option_values(sys.argv[1:] if argv is None else argv))
    if argv is None:  # the cw command itself, not a caller's process
        # Ctrl-C interrupts, even where our parent left SIGINT ignored (a
        # background job) or blocked: a start then cleans up, as on SIGTERM.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _terminated)
        # `cw status | head`: a closed pipe ends cw quietly, as it does cat.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        if getattr(args, "secret_file", None):
            # Checked now (one clear line if it is unusable), and passed on
            # to everything cw starts or asks.
            load_secret(args.secret_file)
            os.environ["CWTX_SECRET_FILE"] = os.path.abspath(args.secret_file)
            os.environ.pop("CWTX_SECRET", None)
        return args.func(args)
    except (CwtxError, ValueError, OSError) as e:  # what the user can fix: one line
        print(f"cw: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # a start interrupted has cancelled what it submitted
        print(
            "cw: terminated" if isinstance(e, _Terminated) else "cw: interrupted", file=sys.stderr
        )
        return 143 if isinstance(e, _Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())

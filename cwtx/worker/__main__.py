"""``python -m cwtx.worker [--logfile PATH] [cw-worker options]``: see cwtx.tap.foreground."""

from cwtx.tap.foreground import run

if __name__ == "__main__":
    run("cw-worker")

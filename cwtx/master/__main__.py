"""``python -m cwtx.master [--logfile PATH] [cw-master options]``: see cwtx.tap.foreground."""

from cwtx.tap.foreground import run

if __name__ == "__main__":
    run("cw-master")

"""twistd entry points for cwtx: ``twistd cw-master`` and ``twistd cw-worker``."""

from twisted.application.service import ServiceMaker

cw_master = ServiceMaker(
    "cwtx master",
    "cwtx.tap.master",
    "Route cwtx jobs from clients to workers.",
    "cw-master",
)
cw_worker = ServiceMaker(
    "cwtx worker",
    "cwtx.tap.worker",
    "Run cwtx jobs from a master, in child processes.",
    "cw-worker",
)

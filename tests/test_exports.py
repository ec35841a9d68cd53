"""The public API, pinned: what ``cwtx`` and its public modules export."""

from __future__ import annotations

import importlib

import pytest

import cwtx

PUBLIC = [
    "AuthenticationError",
    "Client",
    "ClientThread",
    "ClusterExecutor",
    "CwtxError",
    "DependencyFailed",
    "JobCancelled",
    "JobLost",
    "JobMemoryError",
    "JobOptions",
    "JobTimeout",
    "LaunchError",
    "MasterConnectionLost",
    "PORT",
    "ProtocolError",
    "ProtocolMismatch",
    "Ref",
    "RemoteError",
    "RemoteTraceback",
    "SecretError",
    "allocate",
    "connect",
    "progress",
    "randid",
    "start",
    "stop",
]


#: What cwtx.local (and cwtx.mp, the seed's name for it) exports.
LOCAL = [
    "START_TIMEOUT",
    "LaunchError",
    "LocalCluster",
    "allocate",
    "default_run_dir",
    "start",
    "stop",
]


def test_cwtx_exports_exactly_the_public_names():
    assert sorted(cwtx.__all__) == sorted(PUBLIC)
    assert sorted(cwtx._EXPORTS) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(cwtx, name) is not None, name
        assert name in dir(cwtx)


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("cwtx.aio", ["AsyncClient", "connect"]),
        ("cwtx.local", LOCAL),
        (
            "cwtx.slurm",
            [
                "DEFAULT_NAME",
                "START_TIMEOUT",
                "LaunchError",
                "SlurmCluster",
                "add",
                "allocate",
                "cluster_dir",
                "clusters",
                "default_state_dir",
                "master_host",
                "start",
                "status",
                "stop",
                "which_cluster",
            ],
        ),
        ("cwtx.mp", LOCAL),  # the seed's name for it
        (
            "cwtx.testing",
            ["FakeChildProcess", "FakeProcessReactor", "MemoryCluster", "MemoryEndpoint"],
        ),
    ],
)
def test_public_modules_export_what_they_say(module, names):
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(names)
    assert getattr(cwtx, module.split(".")[1]) is mod


def test_every_error_is_a_cwtx_error_and_keeps_its_stdlib_kind():
    errors = [getattr(cwtx, n) for n in PUBLIC]
    errors = [e for e in errors if isinstance(e, type) and issubclass(e, BaseException)]
    assert len(errors) == 14
    assert all(issubclass(e, cwtx.CwtxError) for e in errors)
    assert issubclass(cwtx.MasterConnectionLost, ConnectionError)
    assert issubclass(cwtx.AuthenticationError, ConnectionError)
    assert issubclass(cwtx.ProtocolMismatch, ConnectionError)
    assert issubclass(cwtx.ProtocolError, ValueError)
    assert issubclass(cwtx.JobMemoryError, MemoryError)
    from twisted.internet.defer import CancelledError

    from cwtx._errors import FramingError

    assert issubclass(cwtx.JobCancelled, CancelledError)
    assert issubclass(FramingError, cwtx.CwtxError)


def test_no_cwtx_name_shadows_a_twisted_one():
    import twisted.internet.defer
    import twisted.internet.error

    twisted_names = set(dir(twisted.internet.error)) | set(dir(twisted.internet.defer))
    assert twisted_names.isdisjoint(cwtx.__all__)


def test_the_old_connection_lost_name_still_works_with_a_warning():
    with pytest.warns(DeprecationWarning, match="MasterConnectionLost"):
        assert cwtx.ConnectionLost is cwtx.MasterConnectionLost
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        cwtx.nothing_here  # noqa: B018

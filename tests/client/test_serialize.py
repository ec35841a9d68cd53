"""Pickling jobs, and turning result records back into values or exceptions."""

from __future__ import annotations

import json
import pickle

import pytest

import cwtx
from cwtx._errors import error_json
from cwtx.client import serialize
from cwtx.client.serialize import decode_result, pickle_function


def test_a_result_that_does_not_unpickle_here_is_a_remote_error():
    ok, error = decode_result("ok", b"not a pickle", "")
    assert not ok and isinstance(error, cwtx.RemoteError)
    assert "could not be unpickled here" in error.message


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("timeout", cwtx.JobTimeout),
        ("cancelled", cwtx.JobCancelled),
        ("lost", cwtx.JobLost),
    ],
)
def test_statuses_become_their_errors(status, kind):
    ok, error = decode_result(status, b"", error_json(status, "it happened"))
    assert not ok and isinstance(error, kind) and "it happened" in str(error)


def test_an_exception_that_does_not_unpickle_is_a_remote_error_with_the_traceback():
    ok, error = decode_result("error", b"garbage", error_json("Odd", "odd", "Traceback..."))
    assert not ok and isinstance(error, cwtx.RemoteError)
    assert (error.type_name, error.message, error.remote_traceback) == (
        "Odd",
        "odd",
        "Traceback...",
    )


class Frozen(Exception):
    """An exception that refuses new attributes."""

    __slots__ = ()

    def __setattr__(self, name, value):
        raise AttributeError(name)


def test_an_exception_that_takes_no_attributes_still_arrives():
    ok, error = decode_result("error", pickle.dumps(Frozen("x")), error_json("Frozen", "x", "tb"))
    assert not ok and isinstance(error, Frozen)


def test_only_callables_are_jobs():
    with pytest.raises(TypeError, match="must be callable, not int"):
        pickle_function(42)


def test_the_function_key_is_its_content_and_environment():
    a, b = pickle_function(abs, env="{}"), pickle_function(abs, env=json.dumps({"cwd": "/x"}))
    assert a.hash != b.hash and a.code == b.code
    assert pickle_function(abs, env="{}").hash == a.hash


def test_a_function_submitted_again_is_one_object_while_a_job_holds_it():
    a = pickle_function(abs)
    assert pickle_function(abs) is a  # hashed once, held in memory once
    assert pickle_function(len) is not a
    factor = 2
    closure = pickle_function(lambda x: x * factor)
    factor = 3
    assert pickle_function(lambda x: x * factor).code != closure.code  # by content


def test_the_environment_follows_the_working_directory_and_sys_path(tmp_path, monkeypatch):
    env = serialize.current_env()
    assert serialize.current_env() is env  # not written again for each job
    monkeypatch.chdir(tmp_path)
    assert json.loads(serialize.current_env())["cwd"] == str(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    assert json.loads(pickle_function(abs).env)["path"][0] == str(tmp_path / "lib")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        ("error", "[" * 5000 + "]" * 5000),
        ("lost", '{"message": "m", "attempts": 7}'),
        ("timeout", '{"message": ["not", "text"]}'),
    ],
)
def test_a_result_that_cannot_be_read_still_ends_its_job(status, error):
    ok, exc = decode_result(status, b"", error)
    assert not ok and isinstance(exc, cwtx.CwtxError)


def test_decoding_never_raises(monkeypatch):
    from cwtx.client import serialize

    def broken(*args):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(serialize, "_decode_result", broken)
    ok, exc = decode_result("error", b"", "")
    assert not ok and isinstance(exc, cwtx.RemoteError)
    assert "could not be read: RecursionError" in exc.message

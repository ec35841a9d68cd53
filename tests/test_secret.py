"""
The shared secret (where it comes from, and which files are refused), pid
files, and version checks, all in this process: no sockets, no processes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import cwtx
from cwtx._secret import SecretError, default_secret_path, load_secret
from cwtx.launch.procs import read_pid
from cwtx.testing import MemoryCluster

#: A secret good enough to be accepted: 32 bytes or more, varied.
GOOD = "s3cret-0123456789-abcdefghijklmnopqrstuvwxyz"


def write_secret(path: Path, text: str = GOOD, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# -- the secret ----------------------------------------------------------------------------


def test_secret_is_created_once_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.delenv("CWTX_SECRET_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = default_secret_path()
    assert path == tmp_path / "config" / "cwtx" / "secret"
    first = load_secret()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret() == first and len(first) >= 32


def test_a_new_secret_appears_whole_and_the_first_one_made_wins(tmp_path, monkeypatch):
    """A master and workers started at once on first use all create the
    secret: each must see no file or a whole one (an empty one was refused
    as 0 bytes), and all end up with the same secret."""
    monkeypatch.delenv("CWTX_SECRET_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = default_secret_path()
    real_link = os.link
    linked = []

    def link(source, target):
        # The moment the secret appears under its name, it is all there.
        assert len(Path(source).read_text().strip()) == 64
        assert stat.S_IMODE(os.stat(source).st_mode) == 0o600
        if not linked:  # another process links its own secret first
            write_secret(path, "theirs-" + GOOD)
        linked.append(target)
        return real_link(source, target)

    monkeypatch.setattr(os, "link", link)
    assert load_secret() == b"theirs-" + GOOD.encode()
    assert linked == [path]
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret"]  # no leftovers


def test_a_new_secret_is_written_in_place_without_hard_links(tmp_path, monkeypatch):
    monkeypatch.delenv("CWTX_SECRET_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))

    def no_link(source, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    first = load_secret()
    assert len(first) == 64 and load_secret() == first
    path = default_secret_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret"]


def test_secret_sources_in_order(tmp_path, monkeypatch):
    explicit = write_secret(tmp_path / "explicit", "explicit-" + GOOD)
    from_file = write_secret(tmp_path / "from-env-file", "file-" + GOOD)
    monkeypatch.setenv("CWTX_SECRET_FILE", str(from_file))
    assert load_secret() == b"file-" + GOOD.encode()
    monkeypatch.setenv("CWTX_SECRET", "env-" + GOOD)
    assert load_secret() == b"env-" + GOOD.encode()
    assert load_secret(explicit) == b"explicit-" + GOOD.encode()


#: Bad secret files, by name: (how to make one, what the error says).
BAD_SECRET_FILES = {
    "mode 644": (lambda p: write_secret(p, mode=0o644), "readable by others"),
    "mode 640": (lambda p: write_secret(p, mode=0o640), "readable by others"),
    "mode 604": (lambda p: write_secret(p, mode=0o604), "readable by others"),
    "mode 620": (lambda p: write_secret(p, mode=0o620), "readable by others"),
    "mode 602": (lambda p: write_secret(p, mode=0o602), "readable by others"),
    "short": (lambda p: write_secret(p, "short"), "5 bytes; it needs at least 32: make a good one"),
    "low entropy": (lambda p: write_secret(p, "password" * 5), "too easy to guess"),
    "fifo": (lambda p: os.mkfifo(p, 0o600), "not a regular file"),
    "too big": (lambda p: write_secret(p, "x" * 10_000), "over 4096 bytes"),
    "directory": (lambda p: p.mkdir(), "cannot read|not a regular file"),
    "symlink": (lambda p: p.symlink_to("/etc/hostname"), "cannot read"),
    "missing": (lambda p: None, "cannot read"),
}


@pytest.mark.parametrize(("setup", "message"), BAD_SECRET_FILES.values(), ids=BAD_SECRET_FILES)
def test_bad_secret_files_are_refused_clearly(tmp_path, setup, message):
    path = tmp_path / "secret"
    setup(path)
    with pytest.raises(SecretError, match=message):
        load_secret(path)


def test_bad_pid_files_are_read_as_no_pid(tmp_path):
    cases = {
        "empty": "",
        "text": "not a pid",
        "huge": "9" * 100_000,
        "one": "1",
        "negative": "-5",
        "binary": "\x00\xff",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        assert read_pid(tmp_path / name) is None, name
    (tmp_path / "ok").write_text(" 1234\n")
    assert read_pid(tmp_path / "ok") == 1234


# -- authentication, in memory -----------------------------------------------------------------


def test_wrong_secret_client_is_refused_in_memory():
    cluster = MemoryCluster(workers=1)
    with pytest.raises(cwtx.AuthenticationError, match="could not prove"):
        cluster.client(secret=b"another secret, not the master's")


def test_version_mismatch_names_both_versions(monkeypatch):
    from cwtx.wire import versions as _versions

    cluster = MemoryCluster(workers=0)
    monkeypatch.setattr(_versions, "PYTHON", "3.99.0")
    monkeypatch.setattr(_versions, "CLOUDPICKLE", "0.0.1")
    cluster.add_worker(name="odd")
    monkeypatch.undo()
    client = cluster.client()
    d = client.submit(abs, -1)
    cluster.flush()
    with pytest.raises(cwtx.RemoteError) as info:
        cluster.result(d)
    assert info.value.type_name == "VersionMismatch"
    message = info.value.message
    assert "3.99.0" in message and "0.0.1" in message
    assert _versions.PYTHON in message and _versions.CLOUDPICKLE in message
    # A matching worker joins: jobs run there, never on the odd one.
    odd = cluster.workers[0]
    match = cluster.add_worker(name="match")
    ds = [client.submit(abs, -i) for i in range(2, 6)]
    cluster.flush()
    assert [cluster.result(d) for d in ds] == [2, 3, 4, 5]
    assert cluster.ran(odd) == [] and len(cluster.ran(match)) == 4


def test_an_owner_only_secret_file_is_accepted(tmp_path):
    for mode in (0o600, 0o400):
        path = write_secret(tmp_path / f"s{mode:o}", mode=mode)
        assert load_secret(path) == GOOD.encode()


def test_the_source_of_the_secret_is_named_in_order(tmp_path, monkeypatch):
    from cwtx._secret import secret_source

    monkeypatch.delenv("CWTX_SECRET", raising=False)
    monkeypatch.delenv("CWTX_SECRET_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert secret_source() == str(tmp_path / "cwtx" / "secret")
    monkeypatch.setenv("CWTX_SECRET_FILE", "/some/file")
    assert secret_source() == "/some/file"
    monkeypatch.setenv("CWTX_SECRET", GOOD)
    assert secret_source() == "$CWTX_SECRET"
    assert secret_source(tmp_path / "given") == str(tmp_path / "given")


def test_a_secret_that_cannot_be_created_says_where(tmp_path, monkeypatch):
    monkeypatch.delenv("CWTX_SECRET_FILE", raising=False)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(blocker))
    with pytest.raises(SecretError, match="cannot create the cwtx secret file .*not-a-directory"):
        load_secret()


def test_a_short_secret_in_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv("CWTX_SECRET", "short")
    with pytest.raises(SecretError, match=r"from \$CWTX_SECRET is 5 bytes; it needs at least 32"):
        load_secret()
    monkeypatch.setenv("CWTX_SECRET", " " * 40)
    with pytest.raises(SecretError, match="too easy to guess.*secrets.token_hex"):
        load_secret()


def test_a_secret_in_a_directory_others_may_write_to_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    path = write_secret(shared / "secret")
    shared.chmod(0o777)
    with pytest.raises(SecretError, match="in a directory others can write to .*chmod go-w"):
        load_secret(path)
    shared.chmod(0o1777)  # sticky, as /tmp: others cannot replace our file
    assert load_secret(path) == GOOD.encode()


AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")


@AS_ROOT
def test_a_secret_file_of_another_user_is_refused(tmp_path):
    path = write_secret(tmp_path / "theirs")
    os.chown(path, 12345, 12345)
    with pytest.raises(SecretError, match="belongs to uid 12345, not to you"):
        load_secret(path)


@AS_ROOT
def test_a_secret_in_another_users_directory_is_refused(tmp_path):
    directory = tmp_path / "theirs"
    directory.mkdir()
    path = write_secret(directory / "secret")
    os.chown(directory, 12345, 12345)
    with pytest.raises(SecretError, match="is in a directory of uid 12345, not yours"):
        load_secret(path)


@AS_ROOT
def test_a_secret_of_ours_in_a_directory_of_root_is_accepted(tmp_path, monkeypatch):
    # A shared /etc/cwtx/ of root's holding each user's own file is fine.
    directory = tmp_path / "etc"
    directory.mkdir(mode=0o755)
    path = write_secret(directory / "secret")
    os.chown(path, 12345, 12345)
    monkeypatch.setattr(os, "geteuid", lambda: 12345)
    assert load_secret(path) == GOOD.encode()


def test_the_config_directory_is_made_and_kept_0700(tmp_path, monkeypatch):
    monkeypatch.delenv("CWTX_SECRET_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    directory = tmp_path / "config" / "cwtx"
    directory.mkdir(parents=True, mode=0o755)
    directory.chmod(0o755)
    load_secret()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    directory.chmod(0o750)
    load_secret()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


@AS_ROOT
def test_a_config_directory_of_another_user_is_refused_not_changed(tmp_path, monkeypatch):
    monkeypatch.delenv("CWTX_SECRET_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    directory = tmp_path / "config" / "cwtx"
    directory.mkdir(parents=True)
    write_secret(directory / "secret")
    directory.chmod(0o755)
    os.chown(directory, 12345, 12345)
    with pytest.raises(SecretError, match="not yours"):
        load_secret()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755


def test_the_secret_file_is_named_when_it_is_refused(tmp_path):
    path = write_secret(tmp_path / "secret", "short")
    with pytest.raises(SecretError, match=f"the cwtx secret from {path} is 5 bytes"):
        load_secret(path)


def test_the_limits_on_a_secret_are_inclusive(tmp_path, monkeypatch):
    exactly = "0123456789" + "9" * 22  # 32 bytes, 10 distinct
    assert (len(exactly), len(set(exactly))) == (32, 10)
    monkeypatch.setenv("CWTX_SECRET", exactly)
    assert load_secret() == exactly.encode()
    monkeypatch.setenv("CWTX_SECRET", "012345678" + "8" * 23)  # 9 distinct
    with pytest.raises(SecretError, match="too easy to guess"):
        load_secret()
    monkeypatch.delenv("CWTX_SECRET")
    biggest = "0123456789" * 409 + "abcdef"  # 4096 bytes, the most a file may hold
    path = write_secret(tmp_path / "secret", biggest)
    path.write_text(biggest)  # no newline: exactly 4096 bytes
    assert load_secret(path) == biggest.encode()


def test_the_default_secret_is_64_hex_digits_under_dot_config(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("CWTX_SECRET", raising=False)
    monkeypatch.delenv("CWTX_SECRET_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    secret = load_secret()
    path = tmp_path / ".config" / "cwtx" / "secret"
    assert path.read_bytes() == secret + b"\n"
    assert len(secret) == 64 and int(secret, 16) >= 0


def test_a_secret_in_a_directory_others_may_only_enter_is_accepted(tmp_path):
    directory = tmp_path / "shared"
    directory.mkdir()
    path = write_secret(directory / "secret", GOOD)
    directory.chmod(0o755)
    assert load_secret(path) == GOOD.encode()

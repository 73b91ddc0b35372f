"""What a daemon says when it ends early: one line and a sysexits status, whatever ended it."""

from __future__ import annotations

import pytest

from tls_privsep.shared import cli
from tls_privsep.shared.errors import ConfigError
from tls_privsep.shared.preload import InstallUnreadable


def ended_by(exc: BaseException, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    def body() -> None:
        raise exc

    status = cli.run_daemon("appd", body)
    return status, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(("exc", "status", "line"), [
    (cli.StartupFailure("no channel to secured", cli.EX_UNAVAILABLE), 69, "appd: error: no channel to secured"),
    (ConfigError("appd.listen must name at least one address"), 78,
     "appd: error: appd.listen must name at least one address"),
    (InstallUnreadable("cannot read /root as user nobody (Permission denied): install where that user can read it"),
     77, "appd: error: cannot read /root as user nobody (Permission denied): install where that user can read it"),
    (ValueError("odd\nthing"), 70, "appd: error: unexpected ValueError: odd\\nthing"),
    # trio wraps what ends its run in groups: the line is the cause inside, not the group
    (BaseExceptionGroup("", [ExceptionGroup("", [cli.StartupFailure("refusing it", cli.EX_NOPERM)])]), 77,
     "appd: error: refusing it"),
])
def test_one_line_and_a_status(exc: BaseException, status: int, line: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert ended_by(exc, capsys) == (status, [line])


def test_ctrl_c_before_the_signal_handlers_is_a_quiet_stop(capsys: pytest.CaptureFixture[str]) -> None:
    assert ended_by(BaseExceptionGroup("", [KeyboardInterrupt()]), capsys) == (cli.EX_OK, [])
    assert ended_by(KeyboardInterrupt(), capsys) == (cli.EX_OK, [])


def test_a_usage_error_is_one_line_and_64(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.ArgumentParser(prog="secured")
    parser.add_argument("--user")
    with pytest.raises(SystemExit) as caught:
        parser.parse_args(["--bogus"])
    assert caught.value.code == cli.EX_USAGE
    assert capsys.readouterr().err.splitlines() == ["secured: error: unrecognized arguments: --bogus (see secured --help)"]


def test_an_ipc_fd_that_is_not_a_channel_socket_is_a_usage_error() -> None:
    import os
    import socket

    with pytest.raises(cli.StartupFailure) as closed:
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        cli.check_channel_fd(r)
    assert closed.value.status == cli.EX_USAGE and "Bad file descriptor" in str(closed.value)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stream, pytest.raises(cli.StartupFailure) as wrong:
        cli.check_channel_fd(stream.fileno())
    assert "not a Unix SEQPACKET socket" in str(wrong.value)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        cli.check_channel_fd(a.fileno())  # the real thing passes, and stays open
        a.send(b"still open")
        assert b.recv(100) == b"still open"

"""A Go client's pooled smux session survives our limits (issue 10).

Go ehco keeps a session that carried streams in its pool (up to 10 minutes) and reuses it after
a pause; if the server had closed it meanwhile, one user connection fails before the client
notices. So our server closes a session that carried streams only after ``smux_idle_timeout``
(default longer than Go's 10 minutes), and the short ``smux_handshake_timeout`` applies only
until the first stream. Here both are small: the pause is longer than the handshake deadline
and shorter than the idle deadline, and the Go client must get through on the same session.
"""

from __future__ import annotations

import os
import socket
import time

from ..support import LOOPBACK, EchoServer, EhcoProcess, free_port, wait_port, write_config
from .test_go_interop import GoNode, recv_exactly

HANDSHAKE, IDLE, PAUSE = 0.5, 2.5, 1.0
SIZE = 4096


class OneShotEchoServer(EchoServer):
    """Echoes SIZE bytes, then closes: a stream through the Go client (which cannot
    half-close it) ends only when the server ends it."""

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.sendall(recv_exactly(conn, SIZE))
        except (OSError, AssertionError):
            pass
        finally:
            conn.close()


def echoed(port: int) -> bool:
    """4 KiB there and back (read back exactly: the Go client cannot half-close a stream)."""
    payload = os.urandom(SIZE)
    with socket.create_connection((LOOPBACK, port), timeout=20) as conn:
        conn.sendall(payload)
        return recv_exactly(conn, len(payload)) == payload


def test_pooled_session_reused_after_a_pause(goehco, tmp_path):
    echo = OneShotEchoServer()
    middle, entry = free_port(), free_port()
    cfg = {"log_level": "debug", "enable_ping": False,
           "smux_handshake_timeout": HANDSHAKE, "smux_idle_timeout": IDLE,
           "relay_configs": [{"label": "mtcp-in", "listen": f"{LOOPBACK}:{middle}",
                              "listen_type": "mtcp", "tcp_remotes": [f"{LOOPBACK}:{echo.port}"]}]}
    ours = EhcoProcess(["-c", str(write_config(tmp_path, cfg))], tmp_path)
    go = None
    try:
        wait_port(middle)
        go = GoNode(goehco, ["-mode", "client", "-transport", "mtcp", "-l", f"{LOOPBACK}:{entry}",
                             "-r", f"{LOOPBACK}:{middle}"], tmp_path)
        go.wait_log("listening on")  # not wait_port: its empty connection would hold a stream
        for _ in range(2):
            assert echoed(entry)
            time.sleep(PAUSE)  # longer than the handshake deadline, shorter than idle
        assert go.log.count("session dialed") == 1, go.log
        assert "smux_handshake_timeout" not in ours.log
        # idle past smux_idle_timeout: our side closes it; the Go pool notices and redials
        time.sleep(IDLE + 1)
        assert echoed(entry)
        assert go.log.count("session dialed") == 2, go.log
        assert f"closed: idle for {IDLE:g} s" in ours.log
    finally:
        if go is not None:
            go.stop()
        ours.stop()
        echo.close()

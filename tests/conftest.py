import pytest

from .support import EchoServer, EhcoProcess, UDPEchoServer


@pytest.fixture
def echo_server():
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def udp_echo_server():
    server = UDPEchoServer()
    yield server
    server.close()


@pytest.fixture
def ehco(tmp_path):
    """Start real ehco processes: ``ehco(args)``; all are stopped (by PID) at teardown."""
    procs = []

    def start(*args, env=None):
        proc = EhcoProcess([str(a) for a in args], tmp_path, env=env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()

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


def pytest_generate_tests(metafunc):
    """A test marked ``workers`` runs twice: with one relay process, and with a supervisor and
    two relay workers (the ``ehco`` fixture sets EHCO_WORKERS=2, which a config without a
    ``workers`` key takes), so the same assertions hold for both."""
    if metafunc.definition.get_closest_marker("workers") and "ehco_workers" in metafunc.fixturenames:
        metafunc.parametrize("ehco_workers", [1, 2], indirect=True, ids=["1proc", "2workers"])


@pytest.fixture
def ehco_workers(request):
    """The number of relay processes the ``ehco`` fixture's processes run."""
    return getattr(request, "param", 1)


@pytest.fixture
def ehco(tmp_path, ehco_workers):
    """Start real ehco processes: ``ehco(args)``; all are stopped (by PID) at teardown."""
    procs = []

    def start(*args, env=None):
        if ehco_workers != 1:
            env = {"EHCO_WORKERS": str(ehco_workers), **(env or {})}
        proc = EhcoProcess([str(a) for a in args], tmp_path, env=env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()

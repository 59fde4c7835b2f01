"""TLS for wss/mwss: the operator's certificate files, the generated one, and bad files."""

import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ehco_gevent.transports.tls import self_signed_pem

from ..support import free_port, wait_port


def peer_certificate(port: int) -> x509.Certificate:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as sock:
            der = sock.getpeercert(binary_form=True)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ") and b"access from remote ip: 127.0.0.1:" in answer
    return x509.load_der_x509_certificate(der)


def test_generated_certificate_is_self_signed_rsa_2048():
    cert_pem, key_pem = self_signed_pem()
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, None)
    assert cert.issuer == cert.subject
    assert key.key_size == 2048 and cert.public_key().public_numbers() == key.public_key().public_numbers()


@pytest.mark.workers
@pytest.mark.parametrize("kind", ["wss", "mwss"])
def test_listener_without_files_serves_a_generated_certificate(ehco, kind):
    port = free_port()
    ehco("-l", f"127.0.0.1:{port}", "-lt", kind, "-r", "127.0.0.1:9")
    wait_port(port)
    cert = peer_certificate(port)
    assert cert.issuer == cert.subject and cert.public_key().key_size == 2048


def test_certificate_files_from_the_environment_are_served(ehco, tmp_path):
    cert_pem, key_pem = self_signed_pem("tunnel.example")
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    port = free_port()
    proc = ehco("-l", f"127.0.0.1:{port}", "-lt", "wss", "-r", "127.0.0.1:9",
                env={"EHCO_CERT_FILE_NAME": str(tmp_path / "cert.pem"),
                     "EHCO_KEY_FILE_NAME": str(tmp_path / "key.pem")})
    wait_port(port)
    served = peer_certificate(port)
    assert served == x509.load_pem_x509_certificate(cert_pem)
    proc.wait_log(f"TLS certificate loaded from {tmp_path / 'cert.pem'}")


def _exit_of(ehco, tmp_path, cert: str, key: str):
    port = free_port()
    proc = ehco("-l", f"127.0.0.1:{port}", "-lt", "mwss", "-r", "127.0.0.1:9",
                env={"EHCO_CERT_FILE_NAME": cert, "EHCO_KEY_FILE_NAME": key})
    code = proc.proc.wait(30)
    return code, proc.log


def test_missing_certificate_file_exits_2_naming_it(ehco, tmp_path):
    key_pem = self_signed_pem()[1]
    (tmp_path / "key.pem").write_bytes(key_pem)
    missing = tmp_path / "no-such-cert.pem"
    code, log = _exit_of(ehco, tmp_path, str(missing), str(tmp_path / "key.pem"))
    assert code == 2
    assert f"EHCO_CERT_FILE_NAME={missing}" in log and "Traceback" not in log


def test_missing_key_file_exits_2_naming_it(ehco, tmp_path):
    (tmp_path / "cert.pem").write_bytes(self_signed_pem()[0])
    missing = tmp_path / "no-such-key.pem"
    code, log = _exit_of(ehco, tmp_path, str(tmp_path / "cert.pem"), str(missing))
    assert code == 2
    assert f"EHCO_KEY_FILE_NAME={missing}" in log and "Traceback" not in log


@pytest.mark.parametrize("problem", ["garbage", "mismatch"])
def test_unusable_certificate_exits_2_naming_it(ehco, tmp_path, problem):
    cert_pem, key_pem = self_signed_pem()
    if problem == "garbage":
        cert_pem = b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
    else:
        key_pem = self_signed_pem()[1]  # a key of another certificate
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    code, log = _exit_of(ehco, tmp_path, str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    assert code == 2
    assert f"EHCO_CERT_FILE_NAME={tmp_path / 'cert.pem'}" in log and "Traceback" not in log


def test_only_one_file_named_warns_and_serves_a_generated_certificate(ehco, tmp_path):
    cert_pem, _ = self_signed_pem("only-cert")
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    port = free_port()
    proc = ehco("-l", f"127.0.0.1:{port}", "-lt", "wss", "-r", "127.0.0.1:9",
                env={"EHCO_CERT_FILE_NAME": str(tmp_path / "cert.pem")})
    wait_port(port)
    assert peer_certificate(port) != x509.load_pem_x509_certificate(cert_pem)
    proc.wait_log("only one of EHCO_CERT_FILE_NAME and EHCO_KEY_FILE_NAME is set")



def negotiated_alpn(server_ctx) -> str | None:
    """Handshake a client offering h2 against ``server_ctx`` in memory; the protocol chosen."""
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.set_alpn_protocols(["h2", "http/1.1"])
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = set()
    for _ in range(10):
        for name, obj in (("client", client), ("server", server)):
            try:
                obj.do_handshake()
                done.add(name)
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == {"client", "server"}:
            return server.selected_alpn_protocol()
    raise AssertionError("handshake did not finish")


def test_contexts_for_other_users_do_not_change_the_shared_one():
    """trojan sets ALPN on its own context; the wss listeners' shared one must not offer h2."""
    from ehco_gevent.transports import tls

    own = tls.new_server_context()
    own.set_alpn_protocols(["h2", "http/1.1"])
    assert own is not tls.server_context()
    assert negotiated_alpn(own) == "h2"
    assert negotiated_alpn(tls.server_context()) is None
    trojan = tls.new_server_context("", "", ("h2", "http/1.1"))  # trojan inbound, no cert of its own
    assert negotiated_alpn(trojan) == "h2"
    assert negotiated_alpn(tls.server_context()) is None

"""TLS for wss, mwss and trojan, as ehco 1.1.4 sets it up.

The server side uses the PEM files named by ``EHCO_CERT_FILE_NAME`` / ``EHCO_KEY_FILE_NAME``,
or else a self-signed RSA-2048 certificate generated once at start. The client side does not
verify the server's certificate, exactly as ehco's (a tunnel's ends are configured together;
the point of TLS there is to look like HTTPS, not to authenticate).

Contexts come from gevent's ssl module, so handshakes and reads wait on the hub.
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import tempfile

from gevent import ssl

log = logging.getLogger("ehco.tls")

CERT_ENV = "EHCO_CERT_FILE_NAME"
KEY_ENV = "EHCO_KEY_FILE_NAME"


def self_signed_pem(common_name: str = "ehco") -> tuple[bytes, bytes]:
    """A fresh RSA-2048 certificate and key, PEM encoded."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@functools.lru_cache(maxsize=1)
def _process_certificate() -> tuple[bytes, bytes] | None:
    """The process's own certificate: None when the environment names PEM files, else a
    self-signed one generated once, so wss and trojan present the same certificate."""
    if os.environ.get(CERT_ENV) and os.environ.get(KEY_ENV):
        return None
    pems = self_signed_pem()
    log.info("TLS: generated a self-signed RSA-2048 certificate")
    return pems


def _load_pems(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    # load_cert_chain only reads files; they live just long enough to be read
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as fh:
            fh.write(cert_pem)
        with open(key_path, "wb") as fh:
            fh.write(key_pem)
        ctx.load_cert_chain(cert_path, key_path)


def new_server_context(cert_file: str = "", key_file: str = "",
                       alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """A fresh server context: the given PEM files, else the process's certificate
    (``EHCO_CERT_FILE_NAME``/``EHCO_KEY_FILE_NAME`` or the generated one).

    Fresh so that a listener with its own files or ALPN list (a trojan inbound) does not
    change the context every wss listener shares. Raises OSError (ssl.SSLError) for files
    that cannot be loaded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if cert_file and key_file:
        ctx.load_cert_chain(cert_file, key_file)
    else:
        generated = _process_certificate()
        if generated is None:
            ctx.load_cert_chain(os.environ[CERT_ENV], os.environ[KEY_ENV])
            log.info("TLS certificate loaded from %s", os.environ[CERT_ENV])
        else:
            _load_pems(ctx, *generated)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


@functools.lru_cache(maxsize=1)
def server_context() -> ssl.SSLContext:
    """The shared server context of the wss/mwss listeners (and of trojan inbounds without
    their own certificate or ALPN)."""
    return new_server_context()


@functools.lru_cache(maxsize=1)
def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx

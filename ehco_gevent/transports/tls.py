"""TLS for wss, mwss and trojan, as ehco 1.1.4 sets it up.

The server side uses the PEM files named by ``EHCO_CERT_FILE_NAME`` / ``EHCO_KEY_FILE_NAME``,
or else a self-signed RSA-2048 certificate generated once at start. The client side does not
verify the server's certificate, exactly as ehco's (a tunnel's ends are configured together;
the point of TLS there is to look like HTTPS, not to authenticate).

Contexts come from gevent's ssl module, so handshakes and reads wait on the hub.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import logging
import os
import shutil
import tempfile

from gevent import ssl

from ..config import ConfigError

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


def _load_files(ctx: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    """Load the operator's PEM files; a missing or unusable one is a configuration error
    (exit 2 with the file named), not a traceback."""
    for env, path in ((CERT_ENV, cert_file), (KEY_ENV, key_file)):
        if not os.path.isfile(path):
            raise ConfigError(f"TLS: {env}={path}: no such file")
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        reason = (f"not a matching PEM certificate and key ({exc})" if isinstance(exc, ssl.SSLError)
                  else exc.strerror or str(exc))
        raise ConfigError(f"TLS: cannot load certificate {CERT_ENV}={cert_file} with key "
                          f"{KEY_ENV}={key_file}: {reason}") from None


@functools.lru_cache(maxsize=1)
def certificate_files() -> tuple[str, str]:
    """``(cert, key)`` paths of this process's certificate: the operator's files (checked once
    here, so a bad one stops the start), or a self-signed one generated on first use and kept
    in a private temporary folder until exit (one certificate for every TLS listener)."""
    cert_file, key_file = os.environ.get(CERT_ENV), os.environ.get(KEY_ENV)
    if cert_file and key_file:
        _load_files(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert_file, key_file)
        log.info("TLS certificate loaded from %s", cert_file)
        return cert_file, key_file
    if cert_file or key_file:
        log.warning("TLS: only one of %s and %s is set; using a generated certificate",
                    CERT_ENV, KEY_ENV)
    cert_pem, key_pem = self_signed_pem()
    folder = tempfile.mkdtemp(prefix="ehco-tls-")
    atexit.register(shutil.rmtree, folder, True)
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as fh:
        fh.write(cert_pem)
    with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
        fh.write(key_pem)
    log.info("TLS: generated a self-signed RSA-2048 certificate")
    return cert_path, key_path


def new_server_context(cert_file: str = "", key_file: str = "",
                       alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """A server context of the caller's own: the given PEM files, else the process's
    certificate. Own, so that options a caller sets (a trojan inbound's ALPN list) do not leak
    into the context every wss listener shares. Raises OSError (ssl.SSLError) for given files
    that cannot be loaded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if cert_file and key_file:
        ctx.load_cert_chain(cert_file, key_file)
    else:
        _load_files(ctx, *certificate_files())
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


@functools.lru_cache(maxsize=1)
def server_context() -> ssl.SSLContext:
    """The context shared by the wss and mwss listeners; never modify it (see
    :func:`new_server_context`)."""
    return new_server_context()


@functools.lru_cache(maxsize=1)
def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx

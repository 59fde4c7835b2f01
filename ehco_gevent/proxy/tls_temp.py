"""TEMPORARY: a self-signed TLS server context for the trojan inbound.

The project's TLS helper (``ehco_gevent.tls.server_context``, written on branch ``ws``: the
self-signed RSA-2048 certificate of design.md section 4, or EHCO_CERT_FILE_NAME /
EHCO_KEY_FILE_NAME) was not merged when this was written. :func:`server_context` uses it when
it exists and only otherwise builds its own certificate here. Delete this module once
``ehco_gevent.tls`` is on main.
"""

from __future__ import annotations

import datetime
import os
import tempfile

from gevent import ssl


def _self_signed_files() -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ehco")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    folder = tempfile.mkdtemp(prefix="ehco-tls-")
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


_GENERATED: tuple[str, str] | None = None


def server_context(cert_file: str = "", key_file: str = "", alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    if not cert_file:
        try:  # the project's helper, once merged
            # a context of its own: the ALPN set below must not reach the shared wss context
            from ..tls import new_server_context as project_context  # type: ignore[attr-defined]

            ctx = project_context()
            if alpn:
                ctx.set_alpn_protocols(list(alpn))
            return ctx
        except ImportError:
            pass
        global _GENERATED
        cert_file = os.environ.get("EHCO_CERT_FILE_NAME", "")
        key_file = os.environ.get("EHCO_KEY_FILE_NAME", "")
        if not cert_file:
            if _GENERATED is None:
                _GENERATED = _self_signed_files()
            cert_file, key_file = _GENERATED
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx

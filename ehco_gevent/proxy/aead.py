"""Shadowsocks AEAD ciphers as pure functions over bytes (no sockets).

The wire format (shadowsocks.org, "AEAD ciphers"):

- master key from the password with OpenSSL's EVP_BytesToKey (MD5, no salt, one round);
- per direction a random salt (as long as the key) starts the stream; the session subkey is
  HKDF-SHA1(master key, salt, info ``ss-subkey``);
- TCP: chunks of ``seal(2-byte big-endian length) + seal(payload)``, payload at most 0x3FFF
  bytes; each seal uses a 12-byte little-endian counter nonce that starts at 0 and goes up by
  one per seal;
- UDP: each packet is ``salt + seal(payload)`` with nonce 0.

The heavy lifting is the ``cryptography`` package (OpenSSL); Python only frames 16 KiB chunks,
so the per-byte cost stays in C.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TAG_SIZE = 16
NONCE_SIZE = 12
MAX_PAYLOAD = 0x3FFF
LENGTH_CHUNK = 2 + TAG_SIZE
SUBKEY_INFO = b"ss-subkey"


class AuthError(Exception):
    """A chunk or packet that does not decrypt: wrong key, tampering or junk."""


@dataclass(frozen=True)
class Cipher:
    name: str
    key_size: int
    salt_size: int
    aead: type


CIPHERS = {
    "aes-128-gcm": Cipher("aes-128-gcm", 16, 16, AESGCM),
    "aes-256-gcm": Cipher("aes-256-gcm", 32, 32, AESGCM),
    "chacha20-ietf-poly1305": Cipher("chacha20-ietf-poly1305", 32, 32, ChaCha20Poly1305),
}
MAX_SALT = max(c.salt_size for c in CIPHERS.values())


def evp_bytes_to_key(password: bytes, key_size: int) -> bytes:
    """OpenSSL EVP_BytesToKey with MD5, no salt, count 1: D_i = MD5(D_{i-1} || password)."""
    out = b""
    prev = b""
    while len(out) < key_size:
        prev = hashlib.md5(prev + password).digest()
        out += prev
    return out[:key_size]


def master_key(cipher: Cipher, password: str) -> bytes:
    return evp_bytes_to_key(password.encode("utf-8"), cipher.key_size)


def session_subkey(cipher: Cipher, key: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA1(), length=cipher.key_size, salt=salt,
                info=SUBKEY_INFO).derive(key)


def nonce(counter: int) -> bytes:
    return counter.to_bytes(NONCE_SIZE, "little")


class _Sealer:
    """One direction's AEAD with its counter nonce."""

    def __init__(self, cipher: Cipher, key: bytes, salt: bytes):
        self.aead = cipher.aead(session_subkey(cipher, key, salt))
        self.counter = 0

    def seal(self, data) -> bytes:
        out = self.aead.encrypt(self.counter.to_bytes(NONCE_SIZE, "little"), data, None)
        self.counter += 1
        return out

    def open(self, data) -> bytes:
        try:
            out = self.aead.decrypt(self.counter.to_bytes(NONCE_SIZE, "little"), data, None)
        except InvalidTag:
            raise AuthError("chunk does not decrypt") from None
        self.counter += 1
        return out


class Encryptor:
    """TCP sending side: the salt first, then length+payload chunks."""

    def __init__(self, cipher: Cipher, key: bytes, salt: bytes | None = None):
        self.salt = salt if salt is not None else os.urandom(cipher.salt_size)
        self._sealer = _Sealer(cipher, key, self.salt)
        self._salt_sent = False

    def encrypt(self, data) -> bytes:
        parts = []
        if not self._salt_sent:
            parts.append(self.salt)
            self._salt_sent = True
        view = memoryview(data)
        seal = self._sealer.seal
        for start in range(0, len(view), MAX_PAYLOAD):
            piece = view[start:start + MAX_PAYLOAD]
            parts.append(seal(len(piece).to_bytes(2, "big")))
            parts.append(seal(piece))
        return b"".join(parts)


class Decryptor:
    """TCP receiving side, after the salt: feed bytes, get the plaintext of whole chunks.

    Raises :class:`AuthError` on a chunk that does not decrypt or a length over 0x3FFF.
    ``partial`` tells whether bytes of an unfinished chunk are buffered (EOF then means the
    stream was truncated).
    """

    def __init__(self, cipher: Cipher, key: bytes, salt: bytes):
        self._sealer = _Sealer(cipher, key, salt)
        self._buf = bytearray()
        self._need = 0  # payload length of the chunk being read, 0 = expecting a length

    @property
    def partial(self) -> bool:
        return bool(self._buf) or bool(self._need)

    def feed(self, data) -> bytes:
        buf = self._buf
        buf += data
        out = []
        pos = 0
        end = len(buf)
        open_ = self._sealer.open
        while True:
            if not self._need:
                if end - pos < LENGTH_CHUNK:
                    break
                length = int.from_bytes(open_(bytes(buf[pos:pos + LENGTH_CHUNK])), "big")
                if not 0 < length <= MAX_PAYLOAD:
                    # the spec says the upper two bits must be zero; 0 is never sent
                    raise AuthError(f"bad chunk length {length:#x}")
                pos += LENGTH_CHUNK
                self._need = length
            size = self._need + TAG_SIZE
            if end - pos < size:
                break
            out.append(open_(bytes(buf[pos:pos + size])))
            pos += size
            self._need = 0
        del buf[:pos]
        return b"".join(out)


def open_first_length(cipher: Cipher, key: bytes, salt: bytes, chunk: bytes) -> int | None:
    """The payload length in a stream's first length chunk if ``key`` opens it, else None.

    This is how a multi-user port finds its user: whoever's key decrypts it.
    """
    aead = cipher.aead(session_subkey(cipher, key, salt))
    try:
        plain = aead.decrypt(nonce(0), chunk[:LENGTH_CHUNK], None)
    except InvalidTag:
        return None
    return int.from_bytes(plain, "big")


def seal_packet(cipher: Cipher, key: bytes, payload: bytes, salt: bytes | None = None) -> bytes:
    salt = salt if salt is not None else os.urandom(cipher.salt_size)
    aead = cipher.aead(session_subkey(cipher, key, salt))
    return salt + aead.encrypt(nonce(0), payload, None)


def open_packet(cipher: Cipher, key: bytes, packet: bytes) -> bytes:
    """Decrypt one UDP packet; AuthError when the key does not fit."""
    if len(packet) < cipher.salt_size + TAG_SIZE:
        raise AuthError("packet too short")
    salt = packet[:cipher.salt_size]
    aead = cipher.aead(session_subkey(cipher, key, salt))
    try:
        return aead.decrypt(nonce(0), packet[cipher.salt_size:], None)
    except InvalidTag:
        raise AuthError("packet does not decrypt") from None

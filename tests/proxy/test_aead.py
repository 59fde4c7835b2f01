"""Shadowsocks AEAD codec, tested directly: vectors derived independently, round trips."""

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from ehco_gevent.proxy import aead

# `openssl enc -aes-128-cbc -k 'barfoo!' -P -nosalt -md md5` (key, and key+iv for 256 bits)
OPENSSL_128 = bytes.fromhex("B3ADC47839E047EB228870526DC8FC30")
OPENSSL_256 = bytes.fromhex("B3ADC47839E047EB228870526DC8FC30B347287FFCA3045DCEA06B3FDF090ACB")


def test_master_key_matches_openssl():
    assert aead.evp_bytes_to_key(b"barfoo!", 16) == OPENSSL_128
    assert aead.evp_bytes_to_key(b"barfoo!", 32) == OPENSSL_256


def hkdf_sha1_by_hand(key, salt, info, length):
    """RFC 5869 written out with hmac, independent of the cryptography package."""
    prk = hmac.new(salt, key, hashlib.sha1).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha1).digest()
        out += block
        i += 1
    return out[:length]


def test_rfc5869_sha1_vector_by_hand():
    # RFC 5869 test case 4 checks the helper itself
    okm = hkdf_sha1_by_hand(bytes([0x0b] * 11), bytes(range(13)), bytes(range(0xf0, 0xfa)), 42)
    assert okm.hex() == ("085a01ea1b10f36933068b56efa5ad81a4f14b822f5b091568a9cdd4f155fda2"
                         "c22e422478d305f3f896")


@pytest.mark.parametrize("name", sorted(aead.CIPHERS))
def test_subkey_is_hkdf_sha1_ss_subkey(name):
    c = aead.CIPHERS[name]
    key = aead.master_key(c, "barfoo!")
    salt = bytes(range(c.salt_size))
    assert aead.session_subkey(c, key, salt) == hkdf_sha1_by_hand(key, salt, b"ss-subkey", c.key_size)


def test_first_chunk_layout_by_hand():
    """salt | AES-GCM(len, nonce 0) | AES-GCM(payload, nonce 1), built without our code."""
    c = aead.CIPHERS["aes-128-gcm"]
    key = OPENSSL_128
    salt = bytes(16)
    sub = hkdf_sha1_by_hand(key, salt, b"ss-subkey", 16)
    g = AESGCM(sub)
    expected = (salt + g.encrypt(bytes(12), b"\x00\x05", None)
                + g.encrypt(b"\x01" + bytes(11), b"hello", None))
    assert aead.Encryptor(c, key, salt).encrypt(b"hello") == expected


@pytest.mark.parametrize("name", sorted(aead.CIPHERS))
def test_large_write_is_split_into_max_chunks(name):
    c = aead.CIPHERS[name]
    key = aead.master_key(c, "pw")
    data = bytes(range(256)) * 200  # 51200 bytes = 3 full chunks + rest
    wire = aead.Encryptor(c, key, bytes(c.salt_size)).encrypt(data)
    nchunks = -(-len(data) // aead.MAX_PAYLOAD)
    assert len(wire) == c.salt_size + len(data) + nchunks * (2 + 16 + 16)
    dec = aead.Decryptor(c, key, wire[:c.salt_size])
    assert dec.feed(wire[c.salt_size:]) == data
    assert not dec.partial


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(aead.CIPHERS)),
       writes=st.lists(st.binary(min_size=1, max_size=40000), min_size=1, max_size=4),
       cuts=st.lists(st.integers(min_value=1, max_value=5000), max_size=20))
def test_round_trip_any_split(name, writes, cuts):
    c = aead.CIPHERS[name]
    key = aead.master_key(c, "secret")
    enc = aead.Encryptor(c, key)
    wire = b"".join(enc.encrypt(w) for w in writes)
    dec = aead.Decryptor(c, key, wire[:c.salt_size])
    rest = wire[c.salt_size:]
    out, pos = [], 0
    for cut in cuts:
        out.append(dec.feed(rest[pos:pos + cut]))
        pos += cut
    out.append(dec.feed(rest[pos:]))
    assert b"".join(out) == b"".join(writes)
    assert not dec.partial


@pytest.mark.parametrize("name", sorted(aead.CIPHERS))
def test_wrong_key_and_tampering_raise(name):
    c = aead.CIPHERS[name]
    wire = aead.Encryptor(c, aead.master_key(c, "right")).encrypt(b"x" * 100)
    salt, body = wire[:c.salt_size], wire[c.salt_size:]
    with pytest.raises(aead.AuthError):
        aead.Decryptor(c, aead.master_key(c, "wrong"), salt).feed(body)
    flipped = bytearray(body)
    flipped[30] ^= 1
    with pytest.raises(aead.AuthError):
        aead.Decryptor(c, aead.master_key(c, "right"), salt).feed(bytes(flipped))
    assert aead.open_first_length(c, aead.master_key(c, "wrong"), salt, body) is None
    assert aead.open_first_length(c, aead.master_key(c, "right"), salt, body) == 100


def test_truncated_chunk_is_partial():
    c = aead.CIPHERS["chacha20-ietf-poly1305"]
    key = aead.master_key(c, "k")
    wire = aead.Encryptor(c, key).encrypt(b"y" * 1000)
    dec = aead.Decryptor(c, key, wire[:32])
    assert dec.feed(wire[32:-5]) == b""
    assert dec.partial


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(aead.CIPHERS)), payload=st.binary(max_size=2000))
def test_udp_packet_round_trip(name, payload):
    c = aead.CIPHERS[name]
    key = aead.master_key(c, "udp")
    packet = aead.seal_packet(c, key, payload)
    assert len(packet) == c.salt_size + len(payload) + 16
    assert aead.open_packet(c, key, packet) == payload
    with pytest.raises(aead.AuthError):
        aead.open_packet(c, aead.master_key(c, "other"), packet)

"""Who may see the pages: ehco's two optional gates, as plain functions over request values.

``web_token`` must arrive as ``?token=``; ``web_auth_user``/``web_auth_pass`` as HTTP basic auth.
Both comparisons run in constant time (hmac.compare_digest) so response timing does not leak how
much of a guess was right.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Optional


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def token_ok(expected: str, given: Optional[str]) -> bool:
    """True when no token is configured, or ``given`` equals it."""
    if not expected:
        return True
    return given is not None and _same(given, expected)


def basic_ok(user: str, password: str, given_user: Optional[str],
             given_password: Optional[str]) -> bool:
    """True when basic auth is off (either half unset, as ehco), or both halves match.

    Both halves are always compared so a wrong user name costs the same time as a wrong password.
    """
    if not (user and password):
        return True
    if given_user is None or given_password is None:
        return False
    user_ok = _same(given_user, user)
    pass_ok = _same(given_password, password)
    return user_ok and pass_ok


def loopback_only(host: str) -> bool:
    """True when a listen host can be reached from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:  # a name: it may resolve to anything
        return False
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return (mapped or addr).is_loopback


def unguarded_exposure(host: str, token: str, user: str, password: str) -> bool:
    """True when the web server is reachable beyond this machine and nothing guards it: anyone
    on the network could read the config and trigger reloads."""
    return not loopback_only(host) and not token and not (user and password)

"""Host names and user-agent tokens, normalised for app identification (which runs them once per distinct
value, see `apps.identify_apps`).

A host is lowercased and trimmed; `[ipv6]:port` and `name:port` lose the port; trailing dots go. IP
literals name no domain. User-agent product tokens are `Name` of `Name/1.2` and `Outer(Inner)` of
`Outer(Inner/1.2)`, each starting the string or following whitespace, a bracket, a comma or a semicolon.
"""

from __future__ import annotations

import re

UA_TOKENS_MAX = 16  # distinct product tokens looked at per user agent (real UAs carry about 6-14)
_PORT = r"^([^:]*):\d+$"
_BRACKETED = r"^\[([^\]]*)\](:\d+)?$"
_IPV4 = r"^\d{1,3}(\.\d{1,3}){3}$"
_BOUNDARY = r"(?:^|(?<=[\s(),;]))"
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
UA_PLAIN = f"{_BOUNDARY}({_NAME})/"
UA_NESTED = rf"{_BOUNDARY}({_NAME}\({_NAME})/"


def normalise_host(host: str | None) -> str:
    """Lowercase, no port, no trailing dot; '' for nothing."""
    name = (host or "").strip().lower()
    name = re.sub(_BRACKETED, r"\1", name)
    name = re.sub(_PORT, r"\1", name)
    return name.rstrip(".")


def is_ip_literal(name: str) -> bool:
    return bool(re.match(_IPV4, name)) or ":" in name


def domain_labels(host: str | None) -> list[str]:
    """Labels of a normalised host name, or [] for empty names and IP literals."""
    if not host or is_ip_literal(host):
        return []
    return host.split(".")


def ua_tokens(user_agent: str | None) -> list[str]:
    """The first UA_TOKENS_MAX distinct product tokens: plain ones in order, then nested ones."""
    text = user_agent or ""
    tokens = re.findall(UA_PLAIN, text) + [f"{t})" for t in re.findall(UA_NESTED, text)]
    return list(dict.fromkeys(tokens))[:UA_TOKENS_MAX]

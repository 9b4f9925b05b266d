"""What every blueprint reads from the request it serves: the settings, the client's
address and scheme (through trusted proxies only), the fields of a posted form, a safe place
to go next."""
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from quart import current_app, g, request

from .config import Config, Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
SCHEMES = {"http", "https"}
PORT = re.compile(r":[0-9]{1,5}")
# One RFC 7239 parameter: name=token or name="quoted string", then ";" (next parameter),
# "," (next element) or the end. Unquoted values are read leniently (a bare IPv6, a port).
FORWARDED_PAIR = re.compile(
    r"""\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^";,\s]+)\s*([;,]|\Z)""")


def settings() -> Config:
    return current_app.config["GATEHOUSE"]


def client_ip() -> str:
    """The client's address: the socket's peer, or the address a trusted proxy forwarded."""
    return g.client_ip


def client_scheme() -> str:
    """The scheme the client used: http or https, as a trusted proxy reports it."""
    return g.client_scheme


def client_key() -> str:
    """The client's address as throttles and caps count it (see address_key)."""
    return address_key(client_ip())


async def identify_client():
    """Before every other hook: who sent this request, and over which scheme."""
    g.client_ip, g.client_scheme = forwarded_client(
        request.remote_addr or "", request.scheme, request.headers, settings().trusted_proxies)


# ---- addresses and the headers proxies add ----------------------------------------------

@dataclass(frozen=True)
class Hop:
    """What one proxy recorded of the connection it received: from where, over which scheme."""
    address: Address | None  # None: unknown, hidden ("_name") or garbled
    scheme: str | None


def parse_address(text: str) -> Address | None:
    """An address as proxies write one: bare, IPv4 with a port, IPv6 in brackets with or
    without a port. IPv4-mapped IPv6 becomes IPv4 (a dual-stack socket's view of an IPv4
    client); a zone id is dropped (it means nothing on another host)."""
    text = text.strip()
    if text.startswith("["):
        text, bracket, port = text[1:].partition("]")
        if not bracket or port and not PORT.fullmatch(port):
            return None
    elif text.count(":") == 1:
        text, port = text.split(":")
        if not PORT.fullmatch(":" + port):
            return None
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def address_key(text: str) -> str:
    """The address counted for throttles and caps. An IPv6 client usually holds a whole /64
    and can use any address in it, so IPv6 counts per /64; IPv4-mapped IPv6 as its IPv4."""
    address = parse_address(text)
    if address is None:
        return text
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def forwarded_client(peer: str, scheme: str, headers, trusted: tuple[Network, ...]) -> tuple[str, str]:
    """The client's address and scheme. Forwarded headers are believed only from a trusted
    proxy: walking the hops from the right (the nearest proxy appended last), each trusted
    address hands over to the hop it recorded; the first untrusted address is the client.
    Anything to its left was written by the client and is ignored."""
    address = parse_address(peer)
    if address is None:
        return peer, scheme
    if not is_trusted(address, trusted):
        return str(address), scheme
    hops, scheme = recorded_hops(headers, scheme)
    for hop in reversed(hops):
        if hop.address is None:
            break  # the last trusted proxy is as far as anyone can see
        address, scheme = hop.address, hop.scheme or scheme
        if not is_trusted(address, trusted):
            break
    return str(address), scheme


def is_trusted(address: Address, trusted: tuple[Network, ...]) -> bool:
    return any(address in network for network in trusted)


def recorded_hops(headers, scheme: str) -> tuple[list[Hop], str]:
    """The hops the proxies recorded, nearest last, and the scheme the nearest one reports.
    X-Forwarded-For/-Proto when the request has either (what nearly every proxy writes, while
    most pass a client's own Forwarded header through untouched); RFC 7239 Forwarded otherwise."""
    addresses, protos = joined(headers, "X-Forwarded-For"), joined(headers, "X-Forwarded-Proto")
    if addresses is None and protos is None:
        hops = [forwarded_hop(element) for element in forwarded_elements(joined(headers, "Forwarded") or "")]
        schemes = [hop.scheme for hop in hops]
    else:
        entries = addresses.split(",") if addresses else []
        schemes = [scheme_of(proto) for proto in protos.split(",")] if protos else []
        # Each hop's scheme only when every hop recorded one; otherwise who wrote which is unknown.
        per_hop = schemes if len(schemes) == len(entries) else [None] * len(entries)
        hops = [Hop(parse_address(entry), hop_scheme) for entry, hop_scheme in zip(entries, per_hop)]
    return hops, (schemes[-1] if schemes and schemes[-1] else scheme)


def joined(headers, name: str) -> str | None:
    """All of a header's lines as one comma-separated list (RFC 9110 5.3), None when absent."""
    values = headers.getlist(name)
    return ", ".join(values) if values else None


def scheme_of(text: str | None) -> str | None:
    scheme = (text or "").strip().lower()
    return scheme if scheme in SCHEMES else None


def forwarded_elements(header: str):
    """The elements of a Forwarded header, left to right, as {parameter: value}; None for one
    that does not parse. A garbled element ends at the next comma, so a client's unbalanced
    quote cannot swallow the element its proxy appended."""
    element, pos = {}, 0
    while pos < len(header):
        match = FORWARDED_PAIR.match(header, pos)
        if match is None or match.group(1).lower() in element:
            yield None
            element, comma = {}, header.find(",", pos)
            pos = len(header) if comma < 0 else comma + 1
            continue
        name, value, separator = match.groups()
        element[name.lower()] = re.sub(r"\\(.)", r"\1", value[1:-1]) if value.startswith('"') else value
        pos = match.end()
        if separator != ";":
            yield element
            element = {}
    if element:
        yield element


def forwarded_hop(element: dict[str, str] | None) -> Hop:
    if element is None:
        return Hop(None, None)
    address = parse_address(element["for"]) if "for" in element else None
    return Hop(address, scheme_of(element.get("proto")))


# ---- forms and redirects ----------------------------------------------------------------

async def form_fields(*names: str) -> dict[str, str]:
    """Only the named fields of the posted form, as stripped strings (passwords kept as typed)."""
    form = await request.form
    return {name: form.get(name, "") if "password" in name else form.get(name, "").strip()
            for name in names}


def safe_next(target: str | None) -> str | None:
    """`next` only when it is a path on this site: no scheme, no host, no backslash tricks."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ord(c) < 32 for c in target):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None

"""Behind a reverse proxy: forwarded headers are believed only from TRUSTED_PROXIES, the
client is the right-most address that is not a trusted proxy, and IPv6 clients count per /64.

The live tests put a real HTTP proxy (a small one written here) in front of a real Hypercorn
server. Every party has its own loopback address, so the server sees who really connected:
the proxy connects from 127.0.0.2 (the only trusted proxy), clients behind it from
127.0.0.10 and 127.0.0.11, and a client that goes straight to the server from 127.0.0.1.
They run on SQLite only: which address the app believes does not depend on the database (the
throttles and the audit trail it feeds are tested on both elsewhere).
"""
import asyncio
import ipaddress
import os
import re
import subprocess
import sys
import time
from contextlib import asynccontextmanager

import httpx
import pytest
from werkzeug.datastructures import Headers

from conftest import PASSWORD, ROOT, SECRET, csrf_from
from helpers import audit_rows
from web.core.config import Config, ConfigError
from web import create_app
from web.core.context import address_key, client_ip, client_key, forwarded_client, identify_client
from web.core.db import Database

pytestmark = pytest.mark.sqlite_only

PROXY_SOURCE = "127.0.0.2"
ATTACKER, VICTIM, DIRECT = "127.0.0.10", "127.0.0.11", "127.0.0.1"


def trusting(*entries: str):
    return tuple(ipaddress.ip_network(entry) for entry in entries)


def resolve(peer: str, *headers: tuple[str, str], trusted=("10.0.0.0/8", "fd00::/8"), scheme="http"):
    return forwarded_client(peer, scheme, Headers(list(headers)), trusting(*trusted))


# ---- TRUSTED_PROXIES ------------------------------------------------------------------------

def test_no_proxy_is_trusted_by_default(tmp_path):
    assert Config.from_env(environ={"SECRET_KEY": SECRET}, instance=tmp_path).trusted_proxies == ()


def test_trusted_proxies_lists_addresses_and_networks_of_both_families(tmp_path):
    config = Config.from_env(environ={"SECRET_KEY": SECRET, "TRUSTED_PROXIES":
                                      " 127.0.0.2, 10.0.0.0/8,,::1 , fd00::/8 "}, instance=tmp_path)
    assert config.trusted_proxies == trusting("127.0.0.2/32", "10.0.0.0/8", "::1/128", "fd00::/8")


@pytest.mark.parametrize("entry", ["proxy.internal", "10.0.0.0/33", "10.0.0.1/8", "[::1]", "300.1.1.1"])
def test_a_trusted_proxy_that_is_not_an_address_or_network_is_refused_by_name(tmp_path, entry):
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES") as error:
        Config.from_env(environ={"SECRET_KEY": SECRET, "TRUSTED_PROXIES": f"10.1.1.1, {entry}"},
                        instance=tmp_path)
    assert repr(entry) in str(error.value)


# ---- who the client is ----------------------------------------------------------------------

def test_forwarded_headers_from_a_peer_that_is_not_trusted_are_ignored():
    assert resolve("203.0.113.7", ("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-Proto", "https"),
                   ("Forwarded", "for=198.51.100.2;proto=https")) == ("203.0.113.7", "http")


def test_nothing_is_believed_when_no_proxy_is_trusted():
    assert resolve("10.0.0.5", ("X-Forwarded-For", "198.51.100.1"), trusted=()) == ("10.0.0.5", "http")


def test_a_trusted_proxy_names_the_client_and_its_scheme():
    assert resolve("10.0.0.5", ("X-Forwarded-For", "198.51.100.1"),
                   ("X-Forwarded-Proto", "https")) == ("198.51.100.1", "https")


def test_addresses_a_client_wrote_left_of_the_one_its_proxy_appended_are_ignored():
    spoofed = ("X-Forwarded-For", "1.1.1.1, 10.0.0.9, 198.51.100.1")
    assert resolve("10.0.0.5", spoofed) == ("198.51.100.1", "http")


def test_trusted_hops_are_skipped_from_the_right():
    hops = ("X-Forwarded-For", "6.6.6.6, 198.51.100.1, 10.0.0.7, 10.0.0.6")
    assert resolve("10.0.0.5", hops) == ("198.51.100.1", "http")


def test_several_header_lines_are_one_list():
    lines = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.1, 10.0.0.6")]
    assert resolve("10.0.0.5", *lines) == ("198.51.100.1", "http")


def test_when_every_hop_is_trusted_the_first_one_is_the_client():
    assert resolve("10.0.0.5", ("X-Forwarded-For", "10.0.0.8, 10.0.0.7")) == ("10.0.0.8", "http")


@pytest.mark.parametrize("garbled", ["unknown", "", "not-an-ip", "198.51.100.1:http", "1.2.3", "[::1"])
def test_a_garbled_hop_stops_the_walk_at_the_last_trusted_proxy(garbled):
    hops = ("X-Forwarded-For", f"198.51.100.1, {garbled}, 10.0.0.6")
    assert resolve("10.0.0.5", hops) == ("10.0.0.6", "http")


def test_ports_and_brackets_are_read_and_dropped():
    assert resolve("10.0.0.5", ("X-Forwarded-For", "198.51.100.1:4711"))[0] == "198.51.100.1"
    assert resolve("10.0.0.5", ("X-Forwarded-For", "[2001:db8::17]:4711"))[0] == "2001:db8::17"


def test_ipv6_clients_and_proxies():
    assert resolve("fd00::5", ("X-Forwarded-For", "2001:db8::1, fd00::6"))[0] == "2001:db8::1"
    assert resolve("::ffff:10.0.0.5", ("X-Forwarded-For", "::ffff:198.51.100.1"))[0] == "198.51.100.1"


def test_a_direct_client_over_a_dual_stack_socket_is_shown_as_ipv4():
    assert resolve("::ffff:203.0.113.7") == ("203.0.113.7", "http")


def test_a_peer_without_an_address_is_kept_as_it_is():
    assert resolve("", ("X-Forwarded-For", "198.51.100.1")) == ("", "http")


def test_the_forwarded_header_names_the_client():
    header = ("Forwarded", 'for=6.6.6.6;proto=http, for="[2001:db8:cafe::17]:4711";proto=https;by=10.0.0.5, '
                           "For=10.0.0.6")
    assert resolve("10.0.0.5", header) == ("2001:db8:cafe::17", "https")


@pytest.mark.parametrize("element", ["for=unknown", "for=_hidden", "proto=https", "for", "for=1.2.3.4;for=5.6.7.8",
                                     'for="198.51.100.1', "for=198.51.100.1 junk"])
def test_an_unknown_or_garbled_forwarded_element_stops_the_walk(element):
    assert resolve("10.0.0.5", ("Forwarded", f"for=6.6.6.6, {element}, for=10.0.0.6"))[0] == "10.0.0.6"


def test_a_clients_unbalanced_quote_cannot_swallow_the_element_its_proxy_appended():
    lines = [("Forwarded", 'for="6.6.6.6'), ("Forwarded", "for=198.51.100.1")]
    assert resolve("10.0.0.5", *lines)[0] == "198.51.100.1"


def test_quoted_values_may_hold_separators():
    header = ("Forwarded", 'for=198.51.100.1;by="a,b;c";proto="https"')
    assert resolve("10.0.0.5", header) == ("198.51.100.1", "https")


def test_x_forwarded_for_wins_over_a_forwarded_header_a_client_sent_through():
    # The usual proxy writes X-Forwarded-For and passes a client's own Forwarded on untouched.
    headers = [("Forwarded", "for=6.6.6.6;proto=https"), ("X-Forwarded-For", "198.51.100.1")]
    assert resolve("10.0.0.5", *headers) == ("198.51.100.1", "http")


def test_x_forwarded_proto_alone_keeps_the_proxy_as_the_client():
    headers = [("Forwarded", "for=6.6.6.6"), ("X-Forwarded-Proto", "https")]
    assert resolve("10.0.0.5", *headers) == ("10.0.0.5", "https")


def test_each_hop_has_its_scheme_when_every_hop_recorded_one():
    headers = [("X-Forwarded-For", "6.6.6.6, 198.51.100.1, 10.0.0.6"), ("X-Forwarded-Proto", "https, http, https")]
    assert resolve("10.0.0.5", *headers) == ("198.51.100.1", "http")


def test_otherwise_the_nearest_proxys_scheme_counts():
    headers = [("X-Forwarded-For", "198.51.100.1, 10.0.0.6"), ("X-Forwarded-Proto", "https")]
    assert resolve("10.0.0.5", *headers) == ("198.51.100.1", "https")


@pytest.mark.parametrize("proto", ["ftp", "javascript", "", "https http"])
def test_a_scheme_other_than_http_or_https_is_ignored(proto):
    headers = [("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-Proto", proto)]
    assert resolve("10.0.0.5", *headers, scheme="http") == ("198.51.100.1", "http")


# ---- the address throttles count ----------------------------------------------------------

@pytest.mark.parametrize("address, key", [
    ("198.51.100.1", "198.51.100.1"),
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
    ("::ffff:198.51.100.1", "198.51.100.1"),
    ("::1", "::/64"),
    ("", ""),
])
def test_throttles_count_ipv6_per_64_and_ipv4_per_address(address, key):
    assert address_key(address) == key


def test_two_addresses_of_one_ipv6_64_are_one_client():
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")


async def test_client_key_is_the_forwarded_clients_64(tmp_path):
    app = create_app(Config(database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.sqlite3'}",
                            secret_key=SECRET, trusted_proxies=trusting("10.0.0.0/8")))
    # Quart's ASGI layer puts the socket's peer first in Remote-Addr; this context skips it.
    async with app.test_request_context("/", headers={"Remote-Addr": "10.0.0.5",
                                                      "X-Forwarded-For": "2001:db8:1:2::7"}):
        await identify_client()
        assert (client_ip(), client_key()) == ("2001:db8:1:2::7", "2001:db8:1:2::/64")


# ---- a live server behind a live proxy ------------------------------------------------------

RUNNING = re.compile(rb"Running on http://127\.0\.0\.1:(\d+)")


def start_server(database_url: str, log_path) -> tuple[subprocess.Popen, str]:
    """Hypercorn on a free port chosen by the kernel, trusting only the proxy's address."""
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": SECRET, "GATEHOUSE_ENV": "development",
           "TRUSTED_PROXIES": PROXY_SOURCE}
    log = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-m", "hypercorn", "--bind", "127.0.0.1:0", "web.asgi:app"],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        if match := RUNNING.search(log_path.read_bytes()):
            return process, f"http://127.0.0.1:{int(match.group(1))}"
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"the server did not start: {log_path.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def server_url(database_url, tmp_path_factory):
    database = Database(database_url)
    asyncio.run(database.create_schema())
    asyncio.run(database.dispose())
    process, url = start_server(database_url, tmp_path_factory.mktemp("proxied") / "server.log")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


async def forward(reader, writer, backend_port: int, proto: str) -> None:
    """One request, as a reverse proxy in front of the app passes it on: the client's own
    headers kept, its socket address appended to X-Forwarded-For, the scheme it used set."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
        headers = [line.split(":", 1) for line in lines]
        client = writer.get_extra_info("peername")[0]
        sent_for = [value.strip() for name, value in headers if name.lower() == "x-forwarded-for"]
        headers = [(name, value.strip()) for name, value in headers
                   if name.lower() not in {"x-forwarded-for", "x-forwarded-proto", "connection"}]
        headers += [("X-Forwarded-For", ", ".join([*sent_for, client])), ("X-Forwarded-Proto", proto),
                    ("Connection", "close")]
        length = int(next((value for name, value in headers if name.lower() == "content-length"), "0"))
        body = await reader.readexactly(length)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend_port,
                                                             local_addr=(PROXY_SOURCE, 0))
        up_writer.write("\r\n".join([request_line, *(f"{n}: {v}" for n, v in headers), "", ""]).encode("latin-1"))
        up_writer.write(body)
        writer.write(await up_reader.read())  # the app closes the connection after answering
        await writer.drain()
        up_writer.close()
    finally:
        writer.close()


@asynccontextmanager
async def reverse_proxy(backend_url: str, proto: str = "https"):
    """A proxy on 127.0.0.1, in front of the live server, that terminates `proto` for it."""
    backend_port = int(backend_url.rsplit(":", 1)[1])
    proxy = await asyncio.start_server(lambda r, w: forward(r, w, backend_port, proto), "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"
    finally:
        proxy.close()
        await proxy.wait_closed()


@pytest.fixture
async def proxy_url(server_url, db):
    async with reverse_proxy(server_url) as url:
        yield url


def browser(base_url: str, source: str) -> httpx.AsyncClient:
    """A client connecting from its own loopback address, one connection per request."""
    transport = httpx.AsyncHTTPTransport(local_address=source, limits=httpx.Limits(max_keepalive_connections=0))
    return httpx.AsyncClient(base_url=base_url, transport=transport, timeout=30)


async def log_in(client: httpx.AsyncClient, identifier: str, password: str, headers=None) -> httpx.Response:
    """The login form: GET /login for the token and its cookie, then POST it."""
    page = await client.get("/login")
    form = {"identifier": identifier, "password": password, "csrf_token": csrf_from(page.text)}
    return await client.post("/login", data=form, headers=headers or {})


async def test_behind_the_proxy_failures_from_one_client_do_not_lock_out_another(proxy_url, make_user, db):
    victim = await make_user()
    async with browser(proxy_url, ATTACKER) as attacker, browser(proxy_url, VICTIM) as user:
        for n in range(5):
            assert (await log_in(attacker, f"nobody{n}", "wrong password, guessed")).status_code == 401
        assert (await log_in(attacker, "nobody5", "wrong password, guessed")).status_code == 429
        assert (await log_in(user, victim["username"], PASSWORD)).status_code == 303


async def test_behind_the_proxy_the_audit_trail_shows_the_client_not_the_proxy(proxy_url, make_user, db):
    user = await make_user()
    async with browser(proxy_url, ATTACKER) as attacker, browser(proxy_url, VICTIM) as client:
        # Whatever a client writes in X-Forwarded-For itself, the proxy appends its address.
        await log_in(attacker, "nobody", "wrong password, guessed", headers={"X-Forwarded-For": "203.0.113.9"})
        await log_in(client, user["username"], PASSWORD)
    assert [row.ip for row in await audit_rows(db, "login_failed")] == [ATTACKER]
    assert [row.ip for row in await audit_rows(db, "login")] == [VICTIM]


async def test_a_client_that_reaches_the_server_directly_cannot_choose_its_address(server_url, db):
    async with browser(server_url, DIRECT) as direct:
        await log_in(direct, "nobody", "wrong password, guessed",
                     headers={"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=203.0.113.9",
                              "Remote-Addr": "203.0.113.9"})
    assert [row.ip for row in await audit_rows(db, "login_failed")] == [DIRECT]


async def test_an_https_origin_is_same_origin_when_the_trusted_proxy_terminated_https(proxy_url, make_user):
    user = await make_user()
    async with browser(proxy_url, VICTIM) as client:
        origin = f"https://{proxy_url.removeprefix('http://')}"
        response = await log_in(client, user["username"], PASSWORD, headers={"Origin": origin})
    assert response.status_code == 303, response.text


async def test_an_https_origin_from_a_client_that_only_claims_https_is_refused(server_url, make_user):
    user = await make_user()
    async with browser(server_url, DIRECT) as client:
        origin = f"https://{server_url.removeprefix('http://')}"
        response = await log_in(client, user["username"], PASSWORD,
                                headers={"Origin": origin, "X-Forwarded-Proto": "https"})
    assert response.status_code == 403
    assert "another site" in response.text

"""Fetch media over http(s) for `--allow-http` without letting a client aim the server at its own network.

Every hop, redirects included, must resolve only to public addresses (not private, loopback, link-local,
shared, reserved or multicast ones) unless the operator named its host; the connection goes to the
address that was checked (a second lookup cannot swap it), and the whole fetch, name lookups, headers and
body of every hop, ends by one deadline, so a host that trickles bytes or a slow DNS server cannot hold the
request.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection

MAX_REDIRECTS = 5
REDIRECTS = {301, 302, 303, 307, 308}
CHUNK_BYTES = 65_536


class FetchError(ValueError):
    """The URL could not or may not be fetched; the message is safe to return to the client."""


def resolve(host: str, port: int, deadline: float, getaddrinfo: Callable = socket.getaddrinfo) -> list[tuple]:
    """`getaddrinfo(host, port)` for a stream socket, waited for until `deadline` at most (else TimeoutError).

    A lookup cannot be cancelled: one that outlives the deadline ends on its own in its daemon thread."""
    answer: dict = {}

    def look_up() -> None:
        try:
            answer["found"] = getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except Exception as error:  # handed to the caller
            answer["error"] = error

    thread = threading.Thread(target=look_up, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(remaining(deadline))
    if thread.is_alive():
        raise TimeoutError
    if "error" in answer:
        raise answer["error"]
    return answer["found"]


def checked_address(
    host: str, port: int, allowed_hosts: Collection[str], deadline: float, getaddrinfo: Callable = socket.getaddrinfo
) -> tuple:
    """The first (family, sockaddr) `host` resolves to by `deadline`, refusing hosts with any non-public address."""
    try:
        found = resolve(host, port, deadline, getaddrinfo)
    except (socket.gaierror, UnicodeError) as error:
        raise FetchError(f"could not resolve {host}: {error}") from error
    if host not in allowed_hosts:
        for *_, sockaddr in found:
            address = ipaddress.ip_address(sockaddr[0].split("%")[0])
            if not address.is_global or address.is_multicast:
                raise FetchError(
                    f"{host} resolves to {address}, a private, loopback or link-local address; "
                    "this server only fetches media from public hosts"
                )
    family, *_, sockaddr = found[0]
    return family, sockaddr


def open_connection(parts: urllib.parse.SplitResult, deadline: float, allowed_hosts: Collection[str]):
    """An http.client connection to the checked address of `parts.hostname` (TLS for https)."""
    https = parts.scheme == "https"
    try:
        port = parts.port or (443 if https else 80)
    except ValueError as error:
        raise FetchError(f"invalid port in {parts.geturl()}") from error
    family, sockaddr = checked_address(parts.hostname, port, allowed_hosts, deadline)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(remaining(deadline))
        sock.connect(sockaddr)
        if https:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
    except BaseException:
        sock.close()
        raise
    kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
    connection = kind(parts.hostname, port)
    connection.sock = sock  # already connected: http.client sends on it and never connects again
    return connection


def remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def fetch(url: str, max_bytes: int, timeout_s: float, allowed_hosts: Collection[str] = ()) -> bytes:
    """The body of `url` (GET, following up to MAX_REDIRECTS redirects), at most `max_bytes`, within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    try:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise FetchError(f"{url} is not an http(s) URL")
            connection = open_connection(parts, deadline, allowed_hosts)
            sock = connection.sock
            # Reading a header line can take many reads: at the deadline, shut the socket whatever it does.
            watchdog = threading.Timer(remaining(deadline), shut, args=(sock,))
            watchdog.start()
            try:
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                connection.request("GET", target, headers={"User-Agent": "llava-mini", "Connection": "close"})
                # Read the answer here rather than with getresponse(), which lets go of the socket whose
                # timeout the deadline has to keep shortening.
                response = http.client.HTTPResponse(sock, method="GET")
                response.begin()
                if response.status in REDIRECTS and response.getheader("Location"):
                    url = urllib.parse.urljoin(url, response.getheader("Location"))
                    continue
                if response.status != 200:
                    raise FetchError(f"fetching {url} gave HTTP {response.status}")
                return read_body(response, sock, deadline, max_bytes, url)
            finally:
                watchdog.cancel()
                sock.close()
        raise FetchError(f"more than {MAX_REDIRECTS} redirects fetching {url}")
    except TimeoutError:
        raise FetchError(f"fetching {url} took longer than {timeout_s:g} s") from None
    except (OSError, http.client.HTTPException) as error:
        if time.monotonic() >= deadline:  # the watchdog shut the socket
            raise FetchError(f"fetching {url} took longer than {timeout_s:g} s") from None
        raise FetchError(f"could not fetch {url}: {error}") from error


def shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def read_body(
    response: http.client.HTTPResponse, sock: socket.socket, deadline: float, max_bytes: int, url: str
) -> bytes:
    """At most `max_bytes` of the response's body, read before `deadline` (else TimeoutError)."""
    declared = response.getheader("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(f"media at {url} exceeds the limit of {max_bytes} bytes")
    chunks, size = [], 0
    while True:
        sock.settimeout(remaining(deadline))  # each read waits no longer than the fetch has left
        chunk = response.read1(min(CHUNK_BYTES, max_bytes + 1 - size))  # returns after one recv
        if not chunk:
            if time.monotonic() >= deadline:
                raise TimeoutError  # the watchdog ended the body early
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"media at {url} exceeds the limit of {max_bytes} bytes")

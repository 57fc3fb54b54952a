"""--allow-http fetching against local servers on 127.0.0.1 only: loopback and private targets are refused,
after every redirect too, and one deadline bounds the whole fetch, name lookups included."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llava_mini.serve.http_fetch import FetchError, checked_address, fetch
from llava_mini.serve.media import MediaError, MediaPolicy, read_reference

BODY = b"\x89PNG not really" * 10


class Handler(BaseHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        Handler.requests.append(self.path)
        host = f"127.0.0.1:{self.server.server_address[1]}"
        if self.path.startswith("/to/"):  # /to/<host:port>/<path>: redirect there
            self.send_response(302)
            self.send_header("Location", "http://" + self.path.removeprefix("/to/"))
            self.end_headers()
        elif self.path == "/file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(301)
            self.send_header("Location", f"http://{host}/loop")
            self.end_headers()
        elif self.path == "/slow-headers":  # a header line that never ends
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
        elif self.path == "/slow":  # a byte every 0.2 s: each read is quick, the whole is not
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)


@pytest.fixture(scope="module")
def origin():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_loopback_is_refused_before_any_connection(origin):
    Handler.requests.clear()
    policy = MediaPolicy(allow_http=True)
    with pytest.raises(MediaError, match="127.0.0.1, a private, loopback or link-local address"):
        read_reference(f"http://{origin}/image.png", policy)
    with pytest.raises(MediaError, match="private, loopback or link-local"):
        read_reference(f"http://localhost:{origin.split(':')[1]}/image.png", policy)
    assert Handler.requests == []


@pytest.mark.parametrize("target", ["127.0.0.2:80/x.png", "169.254.169.254/latest/meta-data", "10.0.0.1/x", "localhost/x"])
def test_a_redirect_to_a_private_address_is_refused(origin, target):
    """The first hop is a host the operator allowed; the redirect leads elsewhere and is checked again."""
    Handler.requests.clear()
    with pytest.raises(FetchError, match="private, loopback or link-local"):
        fetch(f"http://{origin}/to/{target}", 10_000, 5.0, allowed_hosts={"127.0.0.1"})
    assert Handler.requests == [f"/to/{target}"]  # nothing was sent to the redirect's target


def test_an_allowed_host_is_fetched_with_redirects_and_limits(origin):
    assert fetch(f"http://{origin}/to/{origin}/image.png", 10_000, 5.0, allowed_hosts={"127.0.0.1"}) == BODY
    with pytest.raises(FetchError, match="exceeds the limit of 20 bytes"):
        fetch(f"http://{origin}/image.png", 20, 5.0, allowed_hosts={"127.0.0.1"})
    with pytest.raises(FetchError, match="more than 5 redirects"):
        fetch(f"http://{origin}/loop", 10_000, 5.0, allowed_hosts={"127.0.0.1"})
    with pytest.raises(FetchError, match="file:///etc/passwd is not an http"):
        fetch(f"http://{origin}/file", 10_000, 5.0, allowed_hosts={"127.0.0.1"})


@pytest.mark.parametrize("path", ["/slow", "/slow-headers"])
def test_a_slow_host_is_cut_at_the_deadline(origin, path):
    started = time.monotonic()
    with pytest.raises(FetchError, match="took longer than 1 s"):
        fetch(f"http://{origin}{path}", 10_000, 1.0, allowed_hosts={"127.0.0.1"})
    assert time.monotonic() - started < 10  # bounds a hang only: 1000 bytes would take 200 s


def test_a_slow_name_lookup_is_cut_at_the_deadline():
    answer = threading.Event()

    def slow_lookup(host, port, **_):  # a DNS server that does not answer until the test ends
        answer.wait()
        return []

    def failed_lookup(host, port, **_):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):  # fetch() answers it as "took longer than ..."
            checked_address("slow.example", 80, (), time.monotonic() + 0.3, getaddrinfo=slow_lookup)
        assert time.monotonic() - started < 10  # bounds a hang only: the lookup never ends by itself
    finally:
        answer.set()
    with pytest.raises(FetchError, match="could not resolve nowhere.example"):
        checked_address("nowhere.example", 80, (), time.monotonic() + 5, getaddrinfo=failed_lookup)

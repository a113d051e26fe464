"""The OpenAI-compatible client against real HTTP servers on 127.0.0.1 (no network, no mocks)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rankalign.remote import RemoteConfig, RemoteError, chat_many, chat_one


class ChatServer:
    """A chat-completions server whose behaviour per request is `plan(request_number, body)`.

    plan returns (status, payload_dict_or_text, delay_seconds). Requests are recorded.
    """

    def __init__(self, plan):
        self.plan, self.requests, self.lock = plan, [], threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    number = len(server.requests)
                status, payload, delay = server.plan(number, body)
                time.sleep(delay)
                data = (json.dumps(payload) if isinstance(payload, dict) else payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(body: dict) -> dict:
    """Answer with the last user message reversed, n times (choice i gets suffix '#i')."""
    text = body["messages"][-1]["content"][::-1]
    n = body.get("n", 1)
    return {
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": f"{text}#{i}"}}
            for i in range(n)
        ]
    }


@pytest.fixture
def serve():
    servers = []

    def start(plan):
        s = ChatServer(plan)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def conv(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_chat_many_order_n_and_auth_header(serve, monkeypatch):
    server = serve(lambda i, body: (200, completion(body), 0.01 * (i % 3)))
    monkeypatch.setenv("RANKALIGN_TEST_KEY", "sk-test-123")
    cfg = RemoteConfig(
        base_url=server.url, model="m", api_key_env="RANKALIGN_TEST_KEY", concurrency=4
    )
    out = chat_many(
        cfg, [conv(f"q{i}") for i in range(10)], n=2, temperature=0.7, max_tokens=9, seed=5
    )
    assert out == [[f"{i}q#0", f"{i}q#1"] for i in range(10)]  # input order despite concurrency
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test-123"
    assert req["body"]["model"] == "m" and req["body"]["n"] == 2 and req["body"]["max_tokens"] == 9
    assert req["body"]["temperature"] == 0.7 and req["body"]["seed"] == 5


def test_no_key_sends_no_auth_header(serve, monkeypatch):
    monkeypatch.delenv("RANKALIGN_ABSENT_KEY", raising=False)
    server = serve(lambda i, body: (200, completion(body), 0))
    cfg = RemoteConfig(base_url=server.url, model="m", api_key_env="RANKALIGN_ABSENT_KEY")
    assert chat_one(cfg, conv("ab")) == ["ba#0"]
    assert "Authorization" not in server.requests[0]["headers"]


def test_retries_on_500_and_429_then_succeeds(serve):
    def plan(i, body):
        if i == 1:
            return 500, "boom", 0
        if i == 2:
            return 429, {"error": "slow down"}, 0
        return 200, completion(body), 0

    server = serve(plan)
    cfg = RemoteConfig(base_url=server.url, model="m", backoff=0.01, max_retries=3)
    assert chat_one(cfg, conv("xy")) == ["yx#0"]
    assert len(server.requests) == 3


def test_one_bad_request_does_not_fail_the_batch(serve, monkeypatch):
    monkeypatch.setenv("RANKALIGN_TEST_KEY", "sk-secret-999")

    def plan(i, body):
        text = body["messages"][-1]["content"]
        if text == "always-500":
            return 503, "unavailable; your key sk-secret-999 is fine", 0
        if text == "bad-request":
            return 400, {"error": "bad"}, 0
        return 200, completion(body), 0

    server = serve(plan)
    cfg = RemoteConfig(
        base_url=server.url,
        model="m",
        api_key_env="RANKALIGN_TEST_KEY",
        backoff=0.01,
        max_retries=2,
    )
    out = chat_many(cfg, [conv("ok"), conv("always-500"), conv("bad-request"), conv("fine")])
    assert out[0] == ["ko#0"] and out[3] == ["enif#0"]
    assert isinstance(out[1], RemoteError) and out[1].status == 503 and out[1].attempts == 3
    assert "sk-secret-999" not in str(out[1])  # an echoed key is scrubbed
    assert isinstance(out[2], RemoteError) and out[2].status == 400 and out[2].attempts == 1
    # 1 + 3 attempts + 1 + 1 requests: 400 is not retried
    assert len(server.requests) == 6


def test_timeout_is_retried_then_reported(serve):
    server = serve(lambda i, body: (200, completion(body), 1.0 if i <= 2 else 0))
    cfg = RemoteConfig(base_url=server.url, model="m", timeout=0.2, backoff=0.01, max_retries=1)
    (res,) = chat_many(cfg, [conv("a")])
    assert isinstance(res, RemoteError) and "timed out" in str(res)
    cfg = RemoteConfig(base_url=server.url, model="m", timeout=0.2, backoff=0.01, max_retries=2)
    assert chat_one(cfg, conv("ab")) == ["ba#0"]  # third attempt is fast


def test_connection_refused_is_an_error_not_a_crash():
    import socket

    with socket.socket() as s:  # a port with no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = RemoteConfig(
        base_url=f"http://127.0.0.1:{port}/v1", model="m", backoff=0.01, max_retries=1
    )
    (res,) = chat_many(cfg, [conv("a")])
    assert isinstance(res, RemoteError) and "connection failed" in str(res)


def test_server_returning_fewer_than_n_is_topped_up(serve):
    def plan(i, body):  # a server that ignores n
        return 200, completion({**body, "n": 1}), 0

    server = serve(plan)
    cfg = RemoteConfig(base_url=server.url, model="m")
    assert chat_one(cfg, conv("ab"), n=3) == ["ba#0"] * 3
    assert [r["body"]["n"] for r in server.requests] == [3, 2, 1]


def test_config_validation():
    with pytest.raises(ValueError, match="base_url"):
        RemoteConfig(base_url="localhost:8000", model="m")
    with pytest.raises(ValueError, match="model"):
        RemoteConfig(base_url="http://x", model="")

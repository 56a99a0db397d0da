"""A real chat-completions HTTP server on 127.0.0.1 for the generation tests (stdlib
http.server in a thread). What it answers is scripted by the class name the question asks
about; every request is recorded, so tests count what reached the server."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAIR_IN_QUESTION = re.compile(r"tell an? (.+?) apart from an? (.+?) in a photo\?")
CLASS_IN_QUESTION = re.compile(r"distinguishing an? (.+?) in a photo\?")
EXAMPLE_COPY = (
    "- a very small bird\n- a long, needle-thin bill\n- a striped tail"  # two of the default prompt's examples
)

ANSWERS = {
    "zebra": "- black and white stripes\n- a horse-like body\n- a short upright mane",
    "martini": "1. a cone-shaped glass.\n2) a thin stem\n3. an olive on a pick.",
    "lobster": "* a red shell\n* two large claws\n* long antennae",
    "giraffe": "Sure! Here are some useful visual features:\n\n- a very long neck\n- a coat of brown patches\n\n"
    "These features help you recognise a giraffe.",
    "copycat": EXAMPLE_COPY,
}
SLEEP_SECONDS = 1.0  # past the tests' client timeout (0.5 s)


class ChatServer:
    """``behaviour``: class name -> list of steps taken on its 1st, 2nd, ... request (the
    last repeats): "ok", "empty", "429", "500", "sleep" (past the client's timeout), "pause"
    (0.3 s, then ok). ``refuse_structured``: a request with
    ``response_format`` gets a 400."""

    def __init__(self, api_key: str, behaviour: dict[str, list[str]] | None = None, refuse_structured: bool = False):
        self.api_key = api_key
        self.behaviour = behaviour or {}
        self.refuse_structured = refuse_structured
        self.requests: list[dict] = []
        self.per_class: Counter = Counter()
        self.in_flight = 0
        self.max_in_flight = 0  # the most chat requests handled at the same time
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def answer_for(self, name: str) -> str:
        return ANSWERS.get(name, f"- a {name} shape\n- the colour of a {name}")

    def _step(self, name: str) -> str:
        with self._lock:
            n = self.per_class[name]
            self.per_class[name] += 1
        steps = self.behaviour.get(name, ["ok"])
        return steps[min(n, len(steps) - 1)]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    server.requests.append(
                        {"path": self.path, "body": body, "authorization": self.headers.get("Authorization")}
                    )
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, {"error": {"message": "bad key"}})
                content = body["messages"][-1]["content"]
                pair = PAIR_IN_QUESTION.findall(content)
                if pair:
                    a, b = pair[0]
                    return self._answer(body, f"{a} / {b}", "pair")
                found = CLASS_IN_QUESTION.findall(content)
                name = found[-1] if found else "?"
                if "response_format" in body and server.refuse_structured:
                    return self._send(
                        400, {"error": {"message": "response_format is not supported", "type": "invalid_request_error"}}
                    )
                step = server._step(name)
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer(body, name, step)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self, body: dict, name: str, step: str) -> None:
                if step == "429":
                    return self._send(429, {"error": {"message": "slow down"}}, {"retry-after-ms": "10"})
                if step == "500":  # a careless server that echoes the request's key in its error
                    return self._send(
                        500,
                        {"error": {"message": f"internal error for {self.headers.get('Authorization')}"}},
                        {"retry-after-ms": "10"},
                    )
                if step in ("sleep", "pause"):
                    time.sleep(SLEEP_SECONDS if step == "sleep" else 0.3)
                if step == "pair":
                    a, b = name.split(" / ")
                    text = (
                        f"Here are the differences:\n- colour: the colour of a {a}. | the colour of a {b}\n"
                        f"- shape: a {a} outline | a {b} outline\n- a line without a pair"
                    )
                else:
                    text = "" if step == "empty" else server.answer_for(name)
                if "response_format" in body and step != "empty":
                    lines = [line.lstrip("-*0123456789.) ") for line in text.splitlines() if line.strip()]
                    text = json.dumps({"descriptors": lines})
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{len(server.requests)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "m"),
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

        return Handler

"""A small, faithful stand-in for the serving app's OpenAI-compatible streaming endpoint.

A real HTTP/1.1 server on loopback: `GET /v1/models` lists what it serves;
`POST /v1/chat/completions` without `stream` answers one `chat.completion` with `usage`
(`n` identical choices); with `stream: true` it answers `text/event-stream` in chunked
transfer encoding, one `chat.completion.chunk` per piece and choice (the first carrying
the assistant role), a final chunk per choice with `finish_reason`, a usage chunk when
`stream_options.include_usage` is set, then `data: [DONE]`. `POST /v1/completions` does
the same in `text_completion` shape, for each prompt × `n`. `POST /v1/embeddings` answers
as serving does: a unit vector per input (384 wide, from the text's hash), as floats or
base64, and its usage (a token per word plus two); it refuses another model, token arrays
and `dimensions` other than 384 in serving's words. Usage counts every choice: prompt
tokens once per prompt, completion tokens per choice.

A field named in `unsupported` is refused as serving refuses a field it does not
implement: 400, OpenAI's error shape, naming it.

Each request takes the next scripted `Reply` (or the default one). A reply can hold
after N pieces until the test releases it (a slow model, without wall-clock sleeps),
drop the connection after N pieces (serving crashing mid-stream), send an error event
after N pieces (serving's model failing mid-stream), or answer an HTTP error before
streaming.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

from testkit.http import JsonHandler
from testkit.stack import free_port


@dataclass
class Reply:
    pieces: list[str] = field(default_factory=lambda: ["Hello", ", ", "world", "!"])
    model: str = "orchard-chat/3"
    hold_after: int | None = None  # send this many pieces, then wait for release()
    crash_after: int | None = None  # send this many pieces, then drop the connection
    error_after: int | None = None  # send this many pieces, then an error event, no [DONE]
    status: int = 200  # anything else: a JSON error body instead of a stream
    prompt_tokens: int = 12


class ServingStub:
    def __init__(self) -> None:
        self.reset()
        stub = self

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # As serving's uvicorn does: each chunk leaves at once (with Nagle, a small
                # write waits for the client's delayed ACK, 40 ms).
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                stub.connections.add(self.connection)
                stub.opened += 1

            def finish(self) -> None:
                stub.connections.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    return self.reply(200, {"object": "list", "data": stub.models})
                return self.reply(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                try:
                    stub._answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the platform hung up first
                    stub.hangups += 1
                finally:
                    stub.finished.set()

        self.handler = Handler
        self.connections: set[socket.socket] = set()  # open keep-alive connections
        self.port = free_port()
        self.stopped = True
        self.start()

    def start(self) -> None:
        """Listen (again, after `stop`: on the same port, so the platform's URL holds)."""
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.stopped = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Back to a new stub's state (a stub is shared by the tests of a module): no
        scripted replies, no recorded requests, the default model list; a reply still held
        by an earlier test is released first."""
        if hasattr(self, "released"):
            self.released.set()
        self.replies: deque[Reply] = deque()
        self.requests: list[dict] = []
        self.holding = threading.Event()  # set while a reply is held
        self.released = threading.Event()
        self.finished = threading.Event()  # set when a handler is done with its request
        self.hangups = 0  # streams the platform closed before the end
        self.opened = 0  # connections the platform opened
        self.unsupported: set[str] = set()  # fields refused as serving refuses them
        self.models = [  # what GET /v1/models lists, like serving's directory
            {"id": name, "object": "model", "created": 0, "owned_by": "orchard"}
            for name in ("orchard-chat", "champion", "challenger", "orchard-chat/3")
        ]

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def release(self) -> None:
        self.released.set()

    def stop(self) -> None:
        """Stop listening (serving down); `start` brings it back on the same port."""
        self.release()
        if self.stopped:
            return
        self.server.shutdown()
        self.server.server_close()
        for connection in list(self.connections):  # a kept-alive connection answers too
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(10)
        self.stopped = True

    # -- the endpoints ------------------------------------------------------------------
    def _answer(self, handler: JsonHandler) -> None:
        length = int(handler.headers.get("Content-Length", 0))
        request = json.loads(handler.rfile.read(length))
        paths = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
        if handler.path not in paths or not isinstance(request, dict):
            return handler.reply(404, {"error": {"message": "not found"}})
        self.requests.append(request)
        for name in self.unsupported:
            if request.get(name) not in (None, False):
                return handler.reply(400, _unsupported(name))
        if handler.path == "/v1/embeddings":
            return self._embeddings(handler, request)
        chat = handler.path == "/v1/chat/completions"
        reply = self.replies.popleft() if self.replies else Reply()
        if reply.status != 200:
            error = {"message": "model crashed", "type": "server_error"}
            return handler.reply(reply.status, {"error": error})
        if not request.get("stream"):
            return handler.reply(200, self._completion(request, reply, chat))
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        base = {
            "id": "chatcmpl-stub" if chat else "cmpl-stub",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": reply.model,
        }
        choices = _prompt_count(request, chat) * (request.get("n") or 1)

        def send(payload: dict | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps({**base, **payload})
            body = f"data: {data}\n\n".encode()
            handler.wfile.write(f"{len(body):x}\r\n".encode() + body + b"\r\n")
            handler.wfile.flush()

        def choice(index: int, text: str | None, finish: str | None = None) -> dict:
            if not chat:
                return {"index": index, "text": text or "", "finish_reason": finish}
            delta = {} if text is None else {"content": text}
            return {"index": index, "delta": delta, "finish_reason": finish}

        if chat:
            for i in range(choices):
                send({"choices": [{"index": i, "delta": {"role": "assistant", "content": ""}}]})
        for index, piece in enumerate(reply.pieces):
            if index == reply.crash_after:
                handler.connection.shutdown(socket.SHUT_RDWR)  # no final chunk: a crash
                handler.close_connection = True
                return
            if index == reply.error_after:  # what serving sends when its model fails
                send({"error": {"message": "internal error", "type": "server_error"}})
                handler.wfile.write(b"0\r\n\r\n")
                return
            if index == reply.hold_after:
                self.holding.set()
                self.released.wait(60)
            for i in range(choices):
                send({"choices": [choice(i, piece)]})
        for i in range(choices):
            send({"choices": [choice(i, None, "stop")]})
        if (request.get("stream_options") or {}).get("include_usage"):
            send({"choices": [], "usage": _usage(request, reply, chat)})
        send("[DONE]")
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()

    @staticmethod
    def _completion(request: dict, reply: Reply, chat: bool = True) -> dict:
        """A non-streaming `chat.completion` or `text_completion`, with identical choices
        (`n` per prompt)."""
        choices = _prompt_count(request, chat) * (request.get("n") or 1)
        text = "".join(reply.pieces)
        if chat:
            message = {"role": "assistant", "content": text}
            answers = [
                {"index": i, "message": message, "finish_reason": "stop"} for i in range(choices)
            ]
        else:
            answers = [{"index": i, "text": text, "finish_reason": "stop"} for i in range(choices)]
        return {
            "id": "chatcmpl-stub" if chat else "cmpl-stub",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": reply.model,
            "choices": answers,
            "usage": _usage(request, reply, chat),
        }

    def _embeddings(self, handler: JsonHandler, request: dict) -> None:
        """As serving's `/v1/embeddings` (serving/ingress.py, serving/openai_api.py): the
        model under its full or short name, text only, `dimensions` only the model's, a
        unit vector per input (`stub_vector`), as floats or base64 float32."""
        model, inputs = request.get("model"), request.get("input")
        if model not in (EMBEDDING_MODEL, EMBEDDING_MODEL.rsplit("/", 1)[-1]):
            message = (
                f"The model {model!r} does not exist. Use one of: {EMBEDDING_MODEL} "
                "(GET /v1/models lists what is served)."
            )
            return handler.reply(404, _error(message, "model", "model_not_found"))
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            message = "token arrays are not supported: send the text as strings (parameter input)"
            return handler.reply(400, _error(message, "input"))
        dimensions = request.get("dimensions")
        if dimensions is not None and dimensions != EMBEDDING_DIMENSION:
            message = (
                "dimensions is not supported by Orchard serving: leave it unset (the model "
                f"gives {EMBEDDING_DIMENSION})"
            )
            return handler.reply(400, _error(message, "dimensions"))
        base64_wanted = request.get("encoding_format") == "base64"

        def encode(vector: list[float]) -> list[float] | str:
            if not base64_wanted:
                return vector
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()

        tokens = sum(len(text.split()) + 2 for text in texts)
        return handler.reply(
            200,
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": encode(stub_vector(text))}
                    for i, text in enumerate(texts)
                ],
                "model": EMBEDDING_MODEL,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )


EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIMENSION = 384


def stub_vector(text: str) -> list[float]:
    """The stand-in's embedding of `text`: unit length, `EMBEDDING_DIMENSION` float32
    values drawn from the text's hash (the same text, the same vector; not a meaning)."""
    draw = random.Random(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
    values = [draw.gauss(0.0, 1.0) for _ in range(EMBEDDING_DIMENSION)]
    norm = math.sqrt(sum(v * v for v in values))
    packed = struct.pack(f"<{EMBEDDING_DIMENSION}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{EMBEDDING_DIMENSION}f", packed))  # float32, as serving's


def _error(message: str, param: str, code: str | None = None) -> dict:
    """Serving's OpenAI error body."""
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return {"error": error}


def _prompt_count(request: dict, chat: bool) -> int:
    prompt = request.get("prompt")
    if chat or not isinstance(prompt, list) or all(isinstance(p, int) for p in prompt):
        return 1
    return len(prompt)


def _usage(request: dict, reply: Reply, chat: bool) -> dict:
    """The prompt's tokens once per prompt, the completion's for every choice."""
    prompts = _prompt_count(request, chat)
    prompt = reply.prompt_tokens * prompts
    completion = len(reply.pieces) * prompts * (request.get("n") or 1)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _unsupported(param: str) -> dict:
    """Serving's answer to a field it does not implement (serving/openai_api.py)."""
    return {
        "error": {
            "message": f"{param} is not supported by Orchard serving: leave it unset",
            "type": "invalid_request_error",
            "param": param,
            "code": None,
        }
    }

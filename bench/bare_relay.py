"""The floor under the gateway's overhead: a relay that does nothing but pass
`POST /v1/chat/completions` to serving and its streamed answer back, on the same stack
as the platform API (uvicorn, Starlette, one pooled `httpx.AsyncClient`), with no auth,
no database, no parsing. `bench/api.py` runs it beside the gateway.

    .venv/bin/python bench/bare_relay.py --port PORT --upstream http://127.0.0.1:SERVE_PORT
"""

from __future__ import annotations

import argparse
from contextlib import asynccontextmanager

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route


def relay_app(upstream: str) -> Starlette:
    client = httpx.AsyncClient(timeout=300)

    async def completions(request: Request) -> StreamingResponse:
        sent = client.build_request(
            "POST",
            f"{upstream}/v1/chat/completions",
            content=await request.body(),
            headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
        )
        response = await client.send(sent, stream=True)

        async def body():
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                await response.aclose()

        return StreamingResponse(
            body(),
            status_code=response.status_code,
            media_type=response.headers.get("content-type"),
        )

    @asynccontextmanager
    async def lifespan(_app):
        yield
        await client.aclose()

    return Starlette(
        routes=[Route("/v1/chat/completions", completions, methods=["POST"])],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(relay_app(args.upstream), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

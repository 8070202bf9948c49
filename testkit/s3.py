"""moto's S3 server, the tests' stand-in for MinIO and AWS S3 (no MinIO server ships in a
package registry): Orchard talks to it through the same S3 code path as to either."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def moto_s3(address: str = "127.0.0.1") -> Iterator[str]:
    """moto's threaded S3 server on `address` and a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=address, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()

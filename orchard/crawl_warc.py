"""The crawl's WARC output: gzipped parts written page by page, recovered after a kill.

Apart from the fetching loop in `ray_jobs.crawl`. Every page is a response + request record
pair (warcio writes the response first, as Common Crawl does), fsynced before the page is
marked stored in the frontier. A kill can still cut a part mid-record or between the two
records of a pair: `recover_parts` keeps exactly the complete pairs.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

log = logging.getLogger("orchard.crawl")

# Headers describing the bytes on the wire, not the decoded body that is stored.
_WIRE_HEADERS = {"content-encoding", "transfer-encoding", "content-length"}


class WarcParts:
    """WARC output, one gzip part per attempt, rotated by size, durable page by page."""

    def __init__(self, directory: Path, part_bytes: int, user_agent: str):
        self.directory = directory
        self.part_bytes = part_bytes
        self.user_agent = user_agent
        directory.mkdir(parents=True, exist_ok=True)
        self._handle: io.BufferedWriter | None = None
        self._writer: WARCWriter | None = None

    def _open(self) -> WARCWriter:
        if self._handle is not None and self._handle.tell() < self.part_bytes:
            return self._writer
        self.close()
        index = len(list(self.directory.glob("crawl-*.warc.gz")))
        path = self.directory / f"crawl-{index:05d}.warc.gz"
        self._handle = open(path, "wb")
        self._writer = WARCWriter(self._handle, gzip=True)
        info = {
            "software": "Orchard crawl",
            "robots": "obey",
            "http-header-user-agent": self.user_agent,
        }
        self._writer.write_record(self._writer.create_warcinfo_record(path.name, info))
        return self._writer

    def write(self, url: str, response: httpx.Response, body: bytes, media_type: str) -> None:
        """Write the page's response + request pair and fsync it: once this returns, the
        page may be marked stored, and a kill cannot take the records back."""
        writer = self._open()
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        request_headers = StatusAndHeaders(
            f"GET {target} {response.http_version}",
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.request.headers.raw],
            is_http_request=True,
        )
        request = writer.create_warc_record(url, "request", http_headers=request_headers)
        # httpx has decoded any Content-Encoding and chunking: the payload is the decoded
        # body, so the wire headers are renamed (as Common Crawl does) and the length fixed,
        # or WARC readers would try to decode it again.
        headers = [
            (f"X-Crawler-{k}" if k.lower() in _WIRE_HEADERS else k, v)
            for k, v in (
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw
            )
        ] + [("Content-Length", str(len(body)))]
        reason = response.reason_phrase or "OK"
        http_headers = StatusAndHeaders(
            f"{response.status_code} {reason}", headers, response.http_version
        )
        record = writer.create_warc_record(
            url,
            "response",
            payload=io.BytesIO(body),
            length=len(body),
            http_headers=http_headers,
            warc_headers_dict={"WARC-Identified-Payload-Type": media_type},
        )
        writer.write_request_response_pair(request, record)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle = self._writer = None


def recover_parts(directory: Path) -> set[str]:
    """Target URIs of the pages whose response and request records are both complete.

    A part cut off by a kill (mid-record, or between a page's response and its request,
    which warcio writes second) is rewritten with just its complete pairs.
    """
    urls: set[str] = set()
    for part in sorted(directory.glob("crawl-*.warc.gz")):
        records, cut = [], False
        try:
            with open(part, "rb") as handle:
                for record in ArchiveIterator(handle):
                    payload = record.content_stream().read()
                    records.append(
                        (record.rec_type, record.rec_headers, record.http_headers, payload)
                    )
        except Exception as error:  # noqa: BLE001 - truncated gzip or WARC
            cut = True
            log.warning("%s was cut off (%s): keeping its complete records", part, error)
        paired = {h.get_header("WARC-Concurrent-To") for t, h, _, _ in records if t == "request"}
        complete = [
            r for r in records if r[0] != "response" or r[1].get_header("WARC-Record-ID") in paired
        ]
        if cut or len(complete) < len(records):
            tmp = part.with_suffix(".tmp")
            with open(tmp, "wb") as handle:
                writer = WARCWriter(handle, gzip=True)
                for rec_type, rec_headers, http_headers, payload in complete:
                    writer.write_record(
                        writer.create_warc_record(
                            rec_headers.get_header("WARC-Target-URI") or "",
                            rec_type,
                            payload=io.BytesIO(payload),
                            length=len(payload),
                            http_headers=http_headers,
                            warc_headers=rec_headers,
                        )
                    )
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(part)
        urls |= {h.get_header("WARC-Target-URI") for t, h, _, _ in complete if t == "response"}
    return urls

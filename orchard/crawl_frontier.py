"""The crawl's memory: URL normalisation, link extraction and the SQLite frontier.

Apart from the fetching loop in `ray_jobs.crawl` so each piece stays small and testable.
The frontier lives in the step's work directory, which survives a killed attempt: that
is what makes a crawl resumable.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
# Left as they are in a path or query: RFC 3986 reserved and unreserved characters, and
# '%' so an escaped URL is not escaped twice; spaces and non-ASCII are escaped, so a link
# written either way is one URL.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"


def normalize(url: str, base: str | None = None) -> str | None:
    """The one spelling of `url` (resolved against `base`); None if it is not http(s).

    Two links to the same page must give the same string, or the page is fetched twice:
    scheme and host are lower-cased; default ports, fragments, user info and an empty
    `?` dropped; `.`/`..` segments resolved; query parameters sorted as raw `k=v` strings
    (not decoded and re-encoded, so `?a` stays `?a` and the server sees what it linked).
    """
    try:
        if base is not None:
            url = urljoin(base, url.strip())
        parts = urlsplit(url.strip())
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:  # a port that is not a number, a broken IPv6 literal
        return None
    if scheme not in DEFAULT_PORTS or not host:
        return None
    host = host.rstrip(".")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = quote(_remove_dot_segments(parts.path), safe=_PATH_SAFE)
    query = quote("&".join(sorted(p for p in parts.query.split("&") if p)), safe=_QUERY_SAFE)
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, also for absolute links (urljoin leaves those alone)."""
    segments = ("/" + path.lstrip("/")).split("/")
    out: list[str] = []
    for segment in segments[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    if segments[-1] in (".", ".."):
        out.append("")  # "/a/b/.." is the directory "/a/"
    return "/" + "/".join(out)


def allowed_host(url: str, domains: Iterable[str]) -> bool:
    """True when the URL's host is one of `domains` or a subdomain of one."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    return any(host == d or host.endswith(f".{d}") for d in domains)


def extract_links(body: bytes, base: str) -> list[str]:
    """`<a href>` targets, normalised, resolved against `<base href>`.

    Links the page asks crawlers not to follow are left out: `rel="nofollow"` on the
    link, or `<meta name="robots" content="nofollow">` (or `none`) for the whole page.
    Links that are not http(s) (mailto:, javascript:) or do not parse are left out too.
    """
    import lxml.html

    try:
        doc = lxml.html.document_fromstring(body)
    except (ValueError, lxml.etree.ParserError):
        return []
    for meta in doc.iterfind(".//meta[@name]"):
        if meta.get("name", "").lower() == "robots":
            directives = {d.strip() for d in (meta.get("content") or "").lower().split(",")}
            if directives & {"nofollow", "none"}:
                return []
    for element in doc.iterfind(".//base[@href]"):
        base = normalize(element.get("href"), base) or base
        break
    links = []
    for anchor in doc.iterfind(".//a[@href]"):
        if "nofollow" in (anchor.get("rel") or "").lower().split():
            continue
        if (link := normalize(anchor.get("href"), base)) is not None:
            links.append(link)
    return links


class Frontier:
    """Every URL seen (keyed by its normalised form), its depth, state and failure reason,
    plus the crawl's running counts, so a resumed attempt reports the whole crawl.

    States: queued (including a URL in flight when a process died), stored, redirected,
    skipped, failed.
    """

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path)
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS urls (url TEXT PRIMARY KEY, depth INTEGER, "
            "state TEXT NOT NULL DEFAULT 'queued', reason TEXT);"
            "CREATE TABLE IF NOT EXISTS counts (name TEXT PRIMARY KEY, value INTEGER);"
        )
        self.db.commit()

    def add(self, urls: Iterable[str], depth: int) -> list[str]:
        """Queue the URLs not seen before, in one transaction; return those."""
        new = []
        for url in urls:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO urls (url, depth) VALUES (?, ?)", (url, depth)
            )
            if cursor.rowcount == 1:
                new.append(url)
        self.db.commit()
        return new

    def mark(self, url: str, state: str, reason: str | None, counts: Mapping[str, int]) -> None:
        """Record a URL's state and the counts so far, in one transaction."""
        self.db.execute(
            "INSERT INTO urls (url, depth, state, reason) VALUES (?, 0, ?, ?) "
            "ON CONFLICT(url) DO UPDATE SET state = excluded.state, reason = excluded.reason",
            (url, state, reason),
        )
        self.db.executemany(
            "INSERT OR REPLACE INTO counts (name, value) VALUES (?, ?)", counts.items()
        )
        self.db.commit()

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT name, value FROM counts").fetchall())

    def queued(self) -> list[tuple[str, int]]:
        return self.db.execute(
            "SELECT url, depth FROM urls WHERE state = 'queued' ORDER BY rowid"
        ).fetchall()

    def stored(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT url FROM urls WHERE state = 'stored'")}

    def set_state(self, urls: Iterable[str], state: str) -> None:
        self.db.executemany(
            "UPDATE urls SET state = ?, reason = NULL WHERE url = ?", [(state, u) for u in urls]
        )
        self.db.commit()

    def close(self) -> None:
        self.db.close()

"""The crawl step: a polite web crawler that writes gzipped WARC files.

Polite means: robots.txt is fetched once per host and obeyed (a disallowed URL is never
requested; a robots.txt that answers 5xx, 429 or not at all disallows the host, a 4xx
allows it, as Google does), requests to one host are spaced by `per_host_delay_s` (or the
robots Crawl-delay when larger, whole seconds: `urllib.robotparser` reads no fractions)
with at most `per_host_concurrency` in flight, links marked nofollow are not followed,
and the crawl stays inside the allow-list, following redirects hop by hop, each hop
checked against the allow-list and robots.txt.

The spacing runs from the moment the previous response's headers arrived, not from when
its request was started: a request that leaves late (a busy event loop, a slow connect)
can then never reach the server right behind the one before it.

Every URL is normalised before it is queued (`orchard.crawl_frontier.normalize`), and the
frontier is a SQLite table keyed by that form, so no page is fetched twice. The frontier and
the WARC parts live in the step's work directory: a killed crawl resumes from them. Each
attempt writes its own parts, fsynced after every page before the page is marked stored;
on resume every part is re-read, a part cut off mid-record (or between a response and its
request) is rewritten with its complete pairs, pages whose pair survived count as stored
and pages whose records were lost are queued again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

import httpx
from pydantic import Field, field_validator, model_validator

from orchard.crawl_frontier import Frontier, allowed_host, extract_links, normalize
from orchard.crawl_warc import WarcParts, recover_parts
from orchard.errors import OrchardError
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, StepSpec

__all__ = ["CrawlConfig", "crawl", "main", "normalize", "run"]

log = logging.getLogger("orchard.crawl")

RETRY_STATUS = {429, 500, 502, 503, 504}
REDIRECT_STATUS = {301, 302, 303, 307, 308}
ROBOTS_MAX_BYTES = 500 * 1024  # what Google reads of a robots.txt


class CrawlConfig(StepConfig):
    seeds: tuple[str, ...] = Field(description="Start URLs (http or https), depth 0.")
    allowed_domains: tuple[str, ...] = Field(
        (), description="Hosts to stay on, with their subdomains; empty: the seeds' hosts."
    )
    max_pages: int = Field(500, ge=1, description="Pages stored at most.")
    max_depth: int = Field(5, ge=0, description="Links followed from a seed at most.")
    per_host_delay_s: float = Field(
        0.5, ge=0, description="Minimum gap between requests to one host."
    )
    per_host_concurrency: int = Field(2, ge=1, description="Requests in flight per host.")
    concurrency: int = Field(8, ge=1, description="Requests in flight overall.")
    max_bytes: int = Field(
        5_000_000, ge=1, description="Larger bodies are not read to the end, and skipped."
    )
    content_types: tuple[str, ...] = Field(
        ("text/html", "application/xhtml+xml", "text/plain"),
        min_length=1,
        description="Media types stored; others are skipped unread.",
    )
    timeout_s: float = Field(10.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(3, ge=0, description="Retries on 5xx, 429 and network errors.")
    backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles each time.")
    max_redirects: int = Field(5, ge=0, description="Redirect hops followed per URL.")
    user_agent: str = Field(
        "OrchardBot/0.1 (+https://github.com/orchard)",
        min_length=1,
        description="User-Agent sent; its first word is the name matched in robots.txt.",
    )
    part_bytes: int = Field(50_000_000, ge=1, description="WARC part size before rotating.")
    not_in_key: ClassVar[frozenset[str]] = frozenset(
        {"concurrency", "per_host_concurrency", "part_bytes", "timeout_s", "backoff_s"}
    )

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: tuple[str, ...]) -> tuple[str, ...]:
        if not seeds:
            raise ValueError("give at least one seed URL")
        normalised = []
        for seed in seeds:
            if (url := normalize(seed)) is None:
                raise ValueError(f"seed {seed!r} is not an http(s) URL with a host")
            normalised.append(url)
        return tuple(normalised)

    @field_validator("allowed_domains")
    @classmethod
    def _hosts(cls, domains: tuple[str, ...]) -> tuple[str, ...]:
        hosts = tuple(d.strip().lower().removeprefix("*.").strip(".") for d in domains)
        for domain, host in zip(domains, hosts, strict=True):
            if not host or any(c in host for c in "/ \t"):
                raise ValueError(f"allowed domain {domain!r} is not a host name (example.com)")
        return hosts

    @field_validator("content_types")
    @classmethod
    def _media_types(cls, types: tuple[str, ...]) -> tuple[str, ...]:
        for media_type in types:
            if media_type.count("/") != 1 or " " in media_type.strip():
                raise ValueError(f"content type {media_type!r} is not a media type (text/html)")
        return tuple(t.strip().lower() for t in types)

    @model_validator(mode="after")
    def _domains(self) -> CrawlConfig:
        if not self.allowed_domains:
            hosts = tuple(sorted({urlsplit(seed).hostname.rstrip(".") for seed in self.seeds}))
            object.__setattr__(self, "allowed_domains", hosts)
        for seed in self.seeds:
            if not allowed_host(seed, self.allowed_domains):
                raise ValueError(f"seed {seed} is outside allowed_domains {self.allowed_domains}")
        return self


@dataclass
class Host:
    """One host's politeness state: its robots rules, request spacing and slots."""

    slots: asyncio.Semaphore
    robots: RobotFileParser | None = None
    robots_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    delay: float = 0.0  # the robots Crawl-delay
    next_request: float = 0.0
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)


class Crawler:
    def __init__(self, config: CrawlConfig, frontier: Frontier, parts: WarcParts):
        self.config = config
        self.frontier = frontier
        self.parts = parts
        self.counts: Counter[str] = Counter(frontier.counts())
        self.hosts: dict[str, Host] = {}
        self.stored = len(frontier.stored())
        self.in_flight = 0  # URLs being visited, each of which may still become a page
        self.budget = asyncio.Condition()
        self.queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()

    async def run(self) -> None:
        self.frontier.add(self.config.seeds, 0)
        for url, depth in self.frontier.queued():
            self.queue.put_nowait((url, depth))
        headers = {"User-Agent": self.config.user_agent}
        timeout = httpx.Timeout(self.config.timeout_s)
        async with httpx.AsyncClient(headers=headers, timeout=timeout) as self.client:
            workers = [asyncio.create_task(self._worker()) for _ in range(self.config.concurrency)]
            await self.queue.join()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    def _mark(self, url: str, state: str, reason: str | None = None) -> None:
        self.frontier.mark(url, state, reason, self.counts)

    async def _worker(self) -> None:
        while True:
            url, depth = await self.queue.get()
            try:
                if await self._reserve():
                    try:
                        await self._visit(url, depth)
                    finally:
                        async with self.budget:
                            self.in_flight -= 1
                            self.budget.notify_all()
            except Exception as error:  # noqa: BLE001 - one bad page must not stop the crawl
                self.counts["fetch_errors"] += 1
                if url not in self.frontier.stored():
                    self._mark(url, "failed", repr(error)[:200])
                log.warning("failed %s: %r", url, error)
            finally:
                self.queue.task_done()

    async def _reserve(self) -> bool:
        """Wait until this URL could still become a page under max_pages.

        URLs in flight count against the budget, so concurrent workers never fetch pages
        that would be thrown away; when the budget is spent the URL stays queued.
        """
        async with self.budget:
            await self.budget.wait_for(
                lambda: (
                    self.stored + self.in_flight < self.config.max_pages
                    or self.stored >= self.config.max_pages
                )
            )
            if self.stored >= self.config.max_pages:
                return False
            self.in_flight += 1
            return True

    def _host(self, url: str) -> Host:
        key = urlsplit(url).netloc
        if key not in self.hosts:
            self.hosts[key] = Host(slots=asyncio.Semaphore(self.config.per_host_concurrency))
        return self.hosts[key]

    async def _polite_get(self, url: str) -> httpx.Response:
        """GET (streamed) with the host's spacing and slots, retrying 5xx/429/network errors.

        The host's turn is held until the response headers arrive, and the next request
        waits the delay from then: the gap the server sees is never shorter than the delay.
        """
        host = self._host(url)
        for attempt in range(self.config.max_retries + 1):
            async with host.slots:
                try:
                    async with host.turn:
                        await asyncio.sleep(max(0.0, host.next_request - time.monotonic()))
                        try:
                            request = self.client.build_request("GET", url)
                            response = await self.client.send(request, stream=True)
                        finally:
                            delay = max(self.config.per_host_delay_s, host.delay)
                            host.next_request = time.monotonic() + delay
                    if (
                        response.status_code not in RETRY_STATUS
                        or attempt == self.config.max_retries
                    ):
                        return response
                    await response.aclose()
                except (httpx.TimeoutException, httpx.TransportError):
                    if attempt == self.config.max_retries:
                        raise
            self.counts["retries"] += 1
            await asyncio.sleep(self.config.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    async def _allowed_by_robots(self, url: str) -> bool:
        host = self._host(url)
        async with host.robots_lock:  # one fetch per host, whoever asks first
            if host.robots is None:
                parts = urlsplit(url)
                host.robots = await self._load_robots(f"{parts.scheme}://{parts.netloc}")
                host.delay = float(host.robots.crawl_delay(self.config.user_agent) or 0)
                # The robots.txt request itself was the last one: space the next by it too.
                host.next_request = max(host.next_request, time.monotonic() + host.delay)
        return host.robots.can_fetch(self.config.user_agent, url)

    async def _load_robots(self, origin: str) -> RobotFileParser:
        """robots.txt as Google reads it: 2xx rules; 4xx none (allow all); 5xx, 429 or no
        answer after the retries: disallow all; redirects followed (a loop allows all)."""
        robots = RobotFileParser()
        url = f"{origin}/robots.txt"
        for _ in range(self.config.max_redirects + 1):
            try:
                response = await self._polite_get(url)
                try:
                    status, location = response.status_code, response.headers.get("location")
                    body = b""
                    if status < 300:
                        async for chunk in response.aiter_bytes():
                            body += chunk
                            if len(body) > ROBOTS_MAX_BYTES:
                                break
                finally:
                    await response.aclose()
            except httpx.HTTPError:
                status, location = 503, None
            if status in REDIRECT_STATUS and location and normalize(location, url):
                url = normalize(location, url)
                continue
            if status in RETRY_STATUS or status >= 500:
                self.counts["robots_unreachable"] += 1
                robots.disallow_all = True
            elif status >= 300:
                robots.allow_all = True
            else:
                robots.parse(body[:ROBOTS_MAX_BYTES].decode("utf-8", "replace").splitlines())
            return robots
        robots.allow_all = True
        return robots

    async def _visit(self, url: str, depth: int) -> None:
        for _ in range(self.config.max_redirects + 1):
            if not await self._allowed_by_robots(url):
                self.counts["robots_disallowed"] += 1
                self._mark(url, "skipped", "robots.txt")
                return
            response = await self._polite_get(url)
            try:
                if response.status_code in REDIRECT_STATUS and "location" in response.headers:
                    self.counts["redirects"] += 1
                    target = normalize(response.headers["location"], url)
                    if target is None:
                        self.counts["bad_redirects"] += 1
                        self._mark(url, "skipped", "redirect to a non-http(s) URL")
                        return
                    if not allowed_host(target, self.config.allowed_domains):
                        self.counts["offsite_dropped"] += 1
                        self._mark(url, "skipped", f"redirect offsite to {target}")
                        return
                    self._mark(url, "redirected", target)
                    if not self.frontier.add([target], depth):
                        self.counts["duplicates_skipped"] += 1
                        return
                    url = target
                    continue
                await self._store(url, depth, response)
                return
            finally:
                await response.aclose()
        self.counts["too_many_redirects"] += 1
        self._mark(url, "skipped", "too many redirects")

    async def _store(self, url: str, depth: int, response: httpx.Response) -> None:
        if response.status_code != 200:
            self.counts["http_errors"] += 1
            self._mark(url, "failed", f"HTTP {response.status_code}")
            return
        media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in self.config.content_types:
            self.counts["bad_content_type"] += 1
            self._mark(url, "skipped", f"content type {media_type or 'none'}")
            return
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.config.max_bytes:
            self.counts["too_large"] += 1
            self._mark(url, "skipped", "too large")
            return
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self.config.max_bytes:
                self.counts["too_large"] += 1
                self._mark(url, "skipped", "too large")
                return
        self.parts.write(url, response, body, media_type)
        self.stored += 1
        self.counts["pages_stored"] += 1
        self._mark(url, "stored")
        if depth < self.config.max_depth and media_type != "text/plain":
            links = extract_links(body, url)
            onsite = [link for link in links if allowed_host(link, self.config.allowed_domains)]
            new = self.frontier.add(onsite, depth + 1)
            self.counts["offsite_links"] += len(links) - len(onsite)
            self.counts["duplicates_skipped"] += len(onsite) - len(new)
            for link in new:
                self.queue.put_nowait((link, depth + 1))


def crawl(config: CrawlConfig, ctx: StepContext) -> StepOutput:
    """The step body: crawl into `ctx.work`, then publish the WARC parts in `ctx.out`."""
    frontier = Frontier(ctx.work / "frontier.sqlite")
    parts_dir = ctx.work / "parts"
    survived = recover_parts(parts_dir) if parts_dir.exists() else set()
    marked = frontier.stored()
    if lost := marked - survived:
        log.warning("re-queueing %d pages whose records were lost in a killed attempt", len(lost))
        frontier.set_state(lost, "queued")
    # Records written and fsynced, but the process died before the page was marked.
    frontier.set_state(survived - marked, "stored")
    parts = WarcParts(parts_dir, config.part_bytes, config.user_agent)
    crawler = Crawler(config, frontier, parts)
    crawler.counts["pages_stored"] = crawler.stored
    try:
        asyncio.run(crawler.run())
    finally:
        parts.close()
        frontier.close()
    if crawler.stored == 0:
        raise OrchardError(
            f"the crawl stored no page from {', '.join(config.seeds)} "
            f"({dict(crawler.counts) or 'nothing fetched'}): check the seeds and robots.txt"
        )
    for part in sorted(parts_dir.glob("crawl-*.warc.gz")):
        # A link, not a move: a kill before the step is published loses no part.
        try:
            os.link(part, ctx.out / part.name)
        except OSError:
            shutil.copy2(part, ctx.out / part.name)
    counts = dict(crawler.counts) | {"pages_stored": crawler.stored}
    return StepOutput(counts=counts, metrics={"pages": float(crawler.stored)})


STEP = StepSpec("crawl", CrawlConfig, default_name="web", doc=__doc__)


def run(
    config: CrawlConfig,
    inputs: list[Manifest],
    settings: Settings,
    name: str = STEP.default_name,
    force: bool = False,
) -> Manifest:
    return STEP.run(settings, config, lambda ctx: crawl(config, ctx), inputs, name, force)


def main(argv: list[str] | None = None) -> int:
    return STEP.main(run, argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())

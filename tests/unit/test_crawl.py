"""The crawler against a real HTTP server on loopback: politeness, limits, WARC output,
resuming a killed crawl. Assertions are on what the server saw and what the WARCs hold."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from warcio.archiveiterator import ArchiveIterator

from orchard import steps
from orchard.crawl_frontier import allowed_host
from orchard.errors import OrchardError
from orchard.settings import Settings
from orchard.steps import run_step
from ray_jobs.crawl import CrawlConfig, crawl, normalize, run
from tests.sites import (
    blocking,
    flaky,
    html,
    large,
    links_page,
    redirect,
    robots,
    serve,
    slow,
    typed,
)

REPO = Path(__file__).resolve().parents[2]
TEXT = "<p>" + "The river carries the old boat to the harbor and back again. " * 20 + "</p>"
NO_ROBOTS = html("", 404)


def page(*links: str, extra: str = ""):
    return links_page(*links, text=TEXT + extra)


def config_for(site, **overrides) -> CrawlConfig:
    values = {"seeds": (f"{site.url}/",), "per_host_delay_s": 0.0, "backoff_s": 0.01}
    return CrawlConfig(**(values | overrides))


def run_crawl(tmp_path: Path, site, **overrides):
    config = config_for(site, **overrides)
    return run_step(
        step="crawl",
        name="web",
        config=config,
        data_root=tmp_path,
        body=lambda ctx: crawl(config, ctx),
    )


def records(manifest) -> list:
    """(type, WARC headers, HTTP headers, payload) of every record of every part, in order."""
    out = []
    for part in sorted(Path(manifest.path).glob("crawl-*.warc.gz")):
        with open(part, "rb") as handle:
            for r in ArchiveIterator(handle):
                out.append((r.rec_type, r.rec_headers, r.http_headers, r.content_stream().read()))
    return out


def warc_urls(manifest) -> list[str]:
    return [h.get_header("WARC-Target-URI") for t, h, _, _ in records(manifest) if t == "response"]


def test_normalize_gives_one_spelling_per_page():
    assert (
        normalize("HTTP://Example.COM:80/a/./b/../c?b=2&a=1#frag")
        == "http://example.com/a/c?a=1&b=2"
    )
    assert normalize("https://example.com:443") == "https://example.com/"
    assert normalize("http://example.com:8080/x?") == "http://example.com:8080/x"
    assert normalize("../up.html", "http://e.com/a/b/page.html") == "http://e.com/a/up.html"
    assert normalize("/a b/é", "http://e.com/") == normalize("/a%20b/%C3%A9", "http://e.com/")
    assert normalize("?page", "http://e.com/list") == "http://e.com/list?page"  # not "page="
    for bad in ("mailto:a@e.com", "ftp://e.com/", "http://e.com:port/", "javascript:go()"):
        assert normalize(bad, "http://e.com/") is None
    assert allowed_host("http://docs.example.com/", ("example.com",))
    assert not allowed_host("http://badexample.com/", ("example.com",))


def test_robots_disallow_nofollow_and_each_page_fetched_once(tmp_path):
    pages = {"/robots.txt": robots("User-agent: *\nDisallow: /private/\n")}
    with serve(pages) as site:
        pages |= {
            "/": page(
                "/a.html#top",
                "./a.html",
                "/x/../a.html",
                f"{site.url.upper()}/a.html",
                "/b.html?",
                "/private/x.html",
                "http://127.0.0.1:notaport/",  # unparsable: ignored, the page still counts
                "/meta.html",
            ),
            "/a.html": page("/", "/b.html", "/a.html?y=2&x=1"),
            "/b.html": page("/a.html?x=1&y=2", extra='<a rel="nofollow" href="/nf.html">n</a>'),
            "/a.html?x=1&y=2": page(),
            "/meta.html": html('<meta name="robots" content="nofollow"><a href="/hidden">h</a>'),
            "/private/x.html": page(),
            "/nf.html": page(),
            "/hidden": page(),
        }
        # Two seeds on one host and 8 workers: robots.txt is still fetched once.
        done = run_crawl(tmp_path, site, seeds=(f"{site.url}/", f"{site.url}/b.html"))
        requested = site.paths()
    assert Counter(requested) == {
        p: 1 for p in ("/robots.txt", "/", "/a.html", "/b.html", "/a.html?x=1&y=2", "/meta.html")
    }
    assert done.counts["robots_disallowed"] == 1 and "fetch_errors" not in done.counts
    assert sorted(warc_urls(done)) == sorted(
        f"{site.url}{p}" for p in ("/", "/a.html", "/b.html", "/a.html?x=1&y=2", "/meta.html")
    )


def test_offsite_links_and_redirects_are_never_fetched(tmp_path):
    with serve({}) as other, serve({"/robots.txt": NO_ROBOTS}) as site:
        offsite = other.url.replace("127.0.0.1", "localhost")  # same server, another host
        site.pages |= {
            "/": page(f"{offsite}/linked.html", "/away"),
            "/away": redirect(f"{offsite}/redirected.html", 302),
        }
        done = run_crawl(tmp_path, site)
        assert other.paths() == []
    assert done.counts["offsite_links"] == 1 and done.counts["offsite_dropped"] == 1
    assert warc_urls(done) == [f"{site.url}/"]


def test_limits_redirects_retries_and_skips(tmp_path):
    pages = {
        "/robots.txt": NO_ROBOTS,
        "/": page("/moved", "/flaky", "/big", "/big-undeclared", "/image.png", "/deep1", "/r1"),
        "/moved": redirect("/target"),
        "/target": page("/moved"),  # known: not fetched again
        "/flaky": flaky(page(), failures=2),
        "/big": large(3000),
        "/big-undeclared": large(3000, declare_length=False),
        "/image.png": typed("image/png"),
        "/deep1": page("/deep2"),
        "/deep2": page("/deep3"),
        "/deep3": page(),
        "/r1": redirect("/r2"),
        "/r2": redirect("/r3"),
        "/r3": redirect("/r4"),
        "/r4": page(),
    }
    with serve(pages) as site:
        done = run_crawl(tmp_path, site, max_depth=2, max_bytes=2500, max_redirects=2)
        requested = Counter(site.paths())
    urls = {u.removeprefix(site.url) for u in warc_urls(done)}
    assert urls == {"/", "/target", "/flaky", "/deep1", "/deep2"}
    assert requested["/flaky"] == 3 and done.counts["retries"] == 2
    assert requested["/deep3"] == requested["/r4"] == 0 and requested["/moved"] == 1
    counts = done.counts
    assert counts["too_large"] == 2 and counts["bad_content_type"] == 1
    assert counts["redirects"] == 4 and counts["too_many_redirects"] == 1


def test_a_request_that_times_out_is_retried_then_given_up(tmp_path):
    pages = {"/robots.txt": NO_ROBOTS, "/": page("/slow"), "/slow": slow(page(), 1.0)}
    with serve(pages) as site:
        done = run_crawl(tmp_path, site, timeout_s=0.2, max_retries=1)
        assert site.count("/slow") == 2
    assert done.counts["fetch_errors"] == 1 and done.counts["retries"] == 1
    assert warc_urls(done) == [f"{site.url}/"]


def test_max_pages_and_per_host_delay(tmp_path):
    pages = {"/robots.txt": NO_ROBOTS, "/": page(*(f"/p{i}" for i in range(20)))}
    pages |= {f"/p{i}": page() for i in range(20)}
    with serve(pages) as site:
        # 8 workers, 2 per host: the gap the server sees still never drops under the delay.
        done = run_crawl(tmp_path, site, max_pages=5, per_host_delay_s=0.1, per_host_concurrency=2)
        times = sorted(t for _, t in site.requests)
        requested = site.paths()
    assert len(warc_urls(done)) == done.counts["pages_stored"] == 5
    assert len(requested) == 1 + 5  # robots.txt, then no page fetched only to be thrown away
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.1 * 0.9


def test_robots_crawl_delay_is_honoured(tmp_path):
    rules = "User-agent: OrchardBot\nCrawl-delay: 1\n\nUser-agent: *\nDisallow: /\n"
    with serve({"/robots.txt": robots(rules), "/": page()}) as site:
        done = run_crawl(tmp_path, site)  # the bot's own group allows it, with a delay
        (_, robots_at), (_, page_at) = site.requests
    assert done.counts["pages_stored"] == 1
    assert page_at - robots_at >= 0.9


@pytest.mark.parametrize("status", [503, 429])
def test_an_unreachable_robots_txt_disallows_the_host(tmp_path, status):
    with serve({"/robots.txt": html("down", status), "/": page()}) as site:
        with pytest.raises(OrchardError, match="stored no page"):
            run_crawl(tmp_path, site, max_retries=1)
        assert site.paths() == ["/robots.txt", "/robots.txt"]  # retried, then nothing


def test_warc_is_readable_with_request_response_pairs(tmp_path):
    pages = {"/robots.txt": NO_ROBOTS, "/doc?a=1&b=2": page("/two", "/three")}
    pages |= {"/two": page(), "/three": typed("text/plain; charset=utf-8", b"plain words")}
    with serve(pages) as site:
        done = run_crawl(tmp_path, site, seeds=(f"{site.url}/doc?b=2&a=1",), part_bytes=1)
        agents = {headers["User-Agent"] for headers in site.headers}
    assert agents == {"OrchardBot/0.1 (+https://github.com/orchard)"}
    parts = sorted(p.name for p in Path(done.path).glob("*.warc.gz"))
    assert parts == ["crawl-00000.warc.gz", "crawl-00001.warc.gz", "crawl-00002.warc.gz"]
    with gzip.open(Path(done.path, parts[0])) as handle:
        assert handle.read(8) == b"WARC/1.0"
    found = records(done)
    # Each part: warcinfo, then the page's response and request (Common Crawl's order).
    assert [t for t, *_ in found] == ["warcinfo", "response", "request"] * 3
    by_id = {h.get_header("WARC-Record-ID"): (t, h, http, body) for t, h, http, body in found}
    for rec_type, headers, _, _ in found:
        if rec_type == "request":
            _, response, response_http, body = by_id[headers.get_header("WARC-Concurrent-To")]
            assert headers.get_header("WARC-Target-URI") == response.get_header("WARC-Target-URI")
            assert int(response_http.get_header("Content-Length")) == len(body)
    first_response, first_request = found[1], found[2]
    assert first_response[1].get_header("WARC-Target-URI") == f"{site.url}/doc?a=1&b=2"
    assert first_request[2].protocol == "GET"
    assert first_request[2].statusline.startswith("/doc?a=1&b=2 ")
    assert first_response[2].get_statuscode() == "200"
    assert first_response[2].get_header("Content-Type") == "text/html; charset=utf-8"
    assert b"old boat" in first_response[3]
    assert sorted(warc_urls(done)) == sorted(
        f"{site.url}{p}" for p in ("/doc?a=1&b=2", "/two", "/three")
    )


def test_a_killed_crawl_resumes_without_fetching_twice(tmp_path):
    """Kill the Ray-job command mid-page, cut its last part between a page's response and
    request records, resume: only the page in flight and the cut page are fetched again,
    and every page is in the output exactly once, as a complete pair."""
    hang, release = blocking(page())
    names = [f"/p{i}" for i in range(6)] + ["/hang"] + [f"/q{i}" for i in range(4)]
    pages = {"/robots.txt": NO_ROBOTS, "/": page(*names), "/hang": hang}
    pages |= {name: page() for name in names if name != "/hang"}
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHARD_")}
    env |= {
        "ORCHARD_HOME": str(tmp_path / "home"),
        "ORCHARD_DATA_ROOT": str(data),
        "ORCHARD_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PYTHONPATH": str(REPO),
    }
    with serve(pages) as site:
        config = config_for(site, per_host_delay_s=0.02, concurrency=1, part_bytes=1)
        command = [sys.executable, "-m", "ray_jobs.crawl", "--config", config.model_dump_json()]
        job = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while site.count("/hang") == 0 and time.monotonic() < deadline and job.poll() is None:
                time.sleep(0.02)
        finally:
            job.kill()
            job.wait()
            release.set()
        assert site.count("/hang") == 1, "the crawl never reached the hanging page"
        before = site.paths()
        (work,) = (data / "crawl").glob(".web-*.work")
        last = max((work / "parts").glob("crawl-*.warc.gz"))
        with open(last, "rb") as handle:
            stream = ArchiveIterator(handle)
            for record in stream:
                if record.rec_type == "request":
                    cut_at = stream.get_record_offset()
                elif record.rec_type == "response":
                    cut = record.rec_headers.get_header("WARC-Target-URI").removeprefix(site.url)
        os.truncate(last, cut_at)  # the page's response survives, its request does not

        done = run_step(
            step="crawl",
            name="web",
            config=config,
            data_root=data,
            body=lambda ctx: crawl(config, ctx),
        )
        after = site.paths()[len(before) :]
    assert cut in names and cut != "/hang"
    fetched = Counter(p for p in before + after if p != "/robots.txt")
    assert {p for p, n in fetched.items() if n > 1} == {"/hang", cut}
    assert set(fetched) == {"/", *names}
    found = records(done)
    urls = [h.get_header("WARC-Target-URI") for t, h, _, _ in found if t == "response"]
    assert sorted(urls) == sorted(f"{site.url}{p}" for p in ["/", *names])  # each exactly once
    requests = {h.get_header("WARC-Concurrent-To") for t, h, _, _ in found if t == "request"}
    assert all(
        h.get_header("WARC-Record-ID") in requests for t, h, _, _ in found if t == "response"
    )
    assert done.counts["pages_stored"] == len(names) + 1


def test_a_finished_crawl_is_skipped(tmp_path, clean_env, monkeypatch):
    """The entry point: a second run with the same config reuses the manifest, no request.
    (MLflow logging itself is covered by test_steps; here only that `run` asks for it.)"""
    logged = []
    monkeypatch.setattr(
        steps, "_log_to_mlflow", lambda uri, manifest, *_, **__: logged.append(uri) or "run-1"
    )
    settings = Settings(data_root=str(tmp_path / "data"), mlflow_tracking_uri="http://mlflow:1")
    with serve({"/robots.txt": NO_ROBOTS, "/": page()}) as site:
        config = config_for(site)
        first = run(config, [], settings)
        count = len(site.paths())
        again = run(config, [], settings)
        assert len(site.paths()) == count == 2
    assert again == first and logged == ["http://mlflow:1"]
    assert first.mlflow_run_id == "run-1" and first.counts["pages_stored"] == 1
    assert Path(first.path, "crawl-00000.warc.gz").is_file()
    assert [p.name for p in (tmp_path / "data" / "crawl").iterdir()] == [Path(first.path).name]


def test_bad_config_is_refused_in_one_line():
    for bad, message in [
        ({"seeds": ("ftp://example.com/",)}, "not an http"),
        ({"seeds": ()}, "at least one seed"),
        ({"seeds": ("http://e.com/",), "max_pages": 0}, "max_pages"),
        ({"seeds": ("http://e.com/",), "allowed_domains": ("other.org",)}, "outside"),
        ({"seeds": ("http://e.com/",), "allowed_domains": ("http://e.com/",)}, "host name"),
        ({"seeds": ("http://e.com/",), "content_types": ("html",)}, "media type"),
        ({"seeds": ("http://e.com/",), "max_wait": 3}, "max_wait"),
    ]:
        with pytest.raises(ValueError, match=message):
            CrawlConfig(**bad)
    result = subprocess.run(
        [sys.executable, "-m", "ray_jobs.crawl", "--config", json.dumps({"seeds": ["ftp://x"]})],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert "seeds" in result.stderr and "Traceback" not in result.stderr

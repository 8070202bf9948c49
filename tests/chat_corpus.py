"""A tiny documentation site for post-training tests: Sphinx-like pages in a crawl WARC
(one of which curation "dropped"), a curate step over the surviving pages plus a text-only
book, and a tiny chat model standing in for the pretrained base."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, run_step
from serving.tiny import build_tiny_chat_model

SITE = "http://docs.test"

JSON_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8">
<title>json — JSON encoder and decoder — Python 3.11 documentation</title></head>
<body>
<div class="sphinxsidebar"><h3>Navigation</h3><ul><li>index</li></ul></div>
<div class="body" role="main">
<section id="module-json">
<h1><code>json</code> — JSON encoder and decoder<a class="headerlink" href="#module-json">¶</a></h1>
<p><strong>Source code:</strong> Lib/json/__init__.py</p>
<p>JSON is a lightweight data interchange format inspired by JavaScript object literal
syntax. Questions about it go to docs@python.org.</p>
<section id="basic-usage">
<h2>Basic Usage<a class="headerlink" href="#basic-usage">¶</a></h2>
<p>The json module exposes an API familiar to users of the marshal and pickle modules.</p>
<dl class="py function">
<dt class="sig sig-object py" id="json.dumps"><span class="sig-prename">json.</span><span
class="sig-name">dumps</span>(<em>obj</em>, <em>*</em>, <em>indent=None</em>)<a
class="headerlink" href="#json.dumps">¶</a></dt>
<dd><p>Serialize <em>obj</em> to a JSON formatted <code>str</code> using this conversion
table.</p>
<p>Keys in key/value pairs of JSON are always of the type str.</p>
<div class="highlight"><pre>json.dumps([1, 2])</pre></div>
<p>This paragraph comes after the example and is not part of the answer.</p>
</dd></dl>
<dl class="py function">
<dt class="sig sig-object py" id="json.loads"><span class="sig-prename">json.</span><span
class="sig-name">loads</span>(<em>s</em>)<a class="headerlink" href="#json.loads">¶</a></dt>
<dd><p>Deserialize <em>s</em>, a str or bytes instance containing a JSON document, to a
Python object.</p></dd></dl>
</section>
<section id="exceptions">
<h2>Exceptions<a class="headerlink" href="#exceptions">¶</a></h2>
<p>Errors raised while decoding a document are described in this section of the page.</p>
<dl class="py exception">
<dt class="sig sig-object py" id="json.JSONDecodeError"><em class="property">exception
</em><span class="sig-prename">json.</span><span class="sig-name">JSONDecodeError</span>(<em
>msg</em>, <em>doc</em>, <em>pos</em>)</dt>
<dd><p>Subclass of ValueError with the following additional attributes.</p>
<dl class="py attribute">
<dt class="sig sig-object py" id="json.JSONDecodeError.msg"><span
class="sig-name">msg</span></dt>
<dd><p>The unformatted error message of the failed decoding.</p></dd></dl>
</dd></dl>
<dl class="py class">
<dt class="sig sig-object py" id="json.JSONEncoder"><em class="property">class </em><span
class="sig-prename">json.</span><span class="sig-name">JSONEncoder</span>(<em>*</em>, <em
>skipkeys=False</em>)</dt>
<dd><p>Extensible JSON encoder for Python data structures, with a default conversion.</p>
<dl class="py method">
<dt class="sig sig-object py" id="json.JSONEncoder.encode"><span
class="sig-name">encode</span>(<em>o</em>)</dt>
<dd><p>Return a JSON string representation of a Python data structure, <em>o</em>.</p></dd>
</dl></dd></dl>
</section>
</section>
</div></body></html>
"""

WRAP_PAGE = """<html><head><meta charset="utf-8"><title>textwrap</title></head><body>
<div role="main"><section id="module-textwrap">
<h1>textwrap — Text wrapping and filling<a class="headerlink" href="#m">¶</a></h1>
<p>The textwrap module provides some convenience functions for wrapping text nicely.</p>
<dl class="py function"><dt id="textwrap.wrap">textwrap.wrap(<em>text</em>, <em
>width=70</em>)</dt>
<dd><p>Wraps the single paragraph in text so every line is at most width characters long.
Returns a list of output lines, without final newlines.</p></dd></dl>
<dl class="py function"><dt id="textwrap.dedent">textwrap.dedent(<em>text</em>)</dt>
<dd><p>Remove any common leading whitespace from every line in text.</p></dd></dl>
</section></div></body></html>
"""

HANDBOOK_PAGE = """<html><head><title>Orchard handbook</title></head><body>
<nav><h3>Menu</h3><ul><li>Home</li></ul></nav>
<h1>Orchard handbook</h1>
<p>This handbook collects what the orchard team learned about growing apples and pears.</p>
<h2>Pruning</h2>
<p>Prune apple trees in late winter while they are dormant, cutting crossing branches first.</p>
<h2>Harvest</h2>
<p>Pick apples when the seeds have turned brown and the fruit comes away with a twist.</p>
</body></html>
"""

DROPPED_PAGE = """<html><body><div role="main"><section id="module-secret">
<h1>secret — Dropped by curation</h1><p>This page did not survive curation, so nothing here
may be asked.</p>
<dl class="py function"><dt id="secret.reveal">secret.reveal()</dt>
<dd><p>Reveal the secret that curation dropped from the corpus.</p></dd></dl>
</section></div></body></html>
"""

PAGES = {
    f"{SITE}/library/json.html": JSON_PAGE,
    f"{SITE}/library/textwrap.html": WRAP_PAGE,
    f"{SITE}/handbook.html": HANDBOOK_PAGE,
    f"{SITE}/library/secret.html": DROPPED_PAGE,
}
BOOK = {
    "id": "book-1",
    "text": "Growing Pears\nPear trees prefer deep, well-drained soil and a sunny position "
    "sheltered from the wind.\nshort line",
    "metadata": {"source": "books"},
}


class Fixture(StepConfig):
    label: str


def crawl_body(ctx: StepContext) -> StepOutput:
    with (ctx.out / "crawl-00000.warc.gz").open("wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for url, page in PAGES.items():
            body = page.encode()
            http = StatusAndHeaders(
                "200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1"
            )
            writer.write_record(
                writer.create_warc_record(
                    url, "response", payload=io.BytesIO(body), length=len(body), http_headers=http
                )
            )
    return StepOutput()


def curate_body(ctx: StepContext) -> StepOutput:
    """The curated text of the surviving pages (secret.html was dropped) and one book."""
    docs = [
        {"id": f"doc-{i}", "text": f"Curated text of {url}.", "metadata": {"url": url}}
        for i, url in enumerate(PAGES)
        if "secret" not in url
    ]
    (ctx.out / "documents").mkdir()
    with gzip.open(ctx.out / "documents" / "00000.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps(doc) + "\n" for doc in [*docs, BOOK])
    return StepOutput(counts={"documents": len(docs) + 1})


def tiny_model(ctx: StepContext) -> StepOutput:
    build_tiny_chat_model(ctx.out / "hf", seed=3, max_context=256)
    return StepOutput()


def upstream(root: Path) -> Manifest:
    crawl = run_step(
        step="crawl", name="web", config=Fixture(label="c"), data_root=root, body=crawl_body
    )
    return run_step(
        step="curate",
        name="corpus",
        config=Fixture(label="c"),
        data_root=root,
        body=curate_body,
        inputs=[crawl],
    )


def tiny_base(root: Path) -> Manifest:
    """A `pretrain` step whose hf/ is a tiny random chat model, on top of `upstream`."""
    return run_step(
        step="pretrain",
        name="tiny",
        config=Fixture(label="m"),
        data_root=root,
        body=tiny_model,
        inputs=[upstream(root)],
    )

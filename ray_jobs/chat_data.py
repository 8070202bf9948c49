"""The chat_data step: instruction and preference data grounded in the curated corpus.

Inputs: one or more `curate` manifests (required) and at most one model (any step with an
`hf/` directory, e.g. `pretrain`) whose own greedy answers become hard negatives.

Entries. The raw HTML behind the curated documents is found by following each curate
manifest's inputs back to the crawl/import outputs (`*.warc.gz`); only pages whose URL
survived curation are parsed. Every entry has a reference answer in the page's own words
(PII replaced as curate does, Sphinx "¶" permalinks removed):
- a Sphinx object (`<dl class="py function|class|method|...">`, also the C domain): `dt[id]`
  is its qualified name, `dt`'s text its signature, the first paragraph(s) of its `dd`
  (at most `answer_chars`, cut at a sentence end) its answer; it is asked what it does,
  its signature (callables) and which module provides it;
- a section (an h1/h2/h3 and the paragraphs that follow it, also on non-Sphinx pages):
  "What does the <module/page> documentation say about <heading>?";
- a document without HTML (or whose HTML gives no entry): its title line and first
  paragraph, when it has them.
Question templates are picked by a seeded hash; a question asked twice is kept once.

Splits. Entries (not questions) are held out by a seeded hash (`heldout_fraction`, at
least one entry when there are two or more): every question of a held-out entry is held
out, and no held-out entry reaches a training file, not even as another row's negative.
Refusals of `orchard.safety.TRAIN` and uploaded conversations (`uploads`, JSONL rows
`{"messages": [{"role", "content"}, ...]}`) are training data only.

Outputs (rows in a fixed order: the same inputs give byte-identical files):
- `sft/train.jsonl`, `sft/heldout.jsonl`: `{"id", "messages", "source", "entry"}`;
- `preference/train.jsonl`, `preference/heldout.jsonl`: TRL's conversational preference
  format `{"id", "prompt", "chosen", "rejected", "negative"}`, the negative being another
  answer from the same module/page (`same_module`), the answer cut short (`truncated`)
  or the base model's own greedy answer (`base_sample`, when a model is an input);
- `data_docs/sft/`, `data_docs/preference/` and `validation.json`: the Great Expectations
  suites both sets must pass (a failure fails the step and keeps the report under
  `<data_root>/chat_data/failed-<key>/`).

    python -m ray_jobs.chat_data --config '{"uploads": ["extra.jsonl"]}' \\
        --input curate/manifest.json [--input pretrain/manifest.json]
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd
from pydantic import Field, model_validator

from orchard.documents import DOCUMENTS, document_shards, iter_documents
from orchard.errors import OrchardError
from orchard.expectations import failure_message, keep_report, run_suite
from orchard.pii import EMAIL, PHONE_NUMBER, replace_phone_numbers
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, StepSpec, ancestors

log = logging.getLogger("orchard.chat_data")

NEGATIVES = ("same_module", "truncated", "base_sample")
ROLES = ("system", "user", "assistant")
SPLITS = ("train", "heldout")
# Sphinx object kinds whose description says what a call does.
CALLABLE = {
    "function",
    "method",
    "classmethod",
    "staticmethod",
    "abstractmethod",
    "coroutinefunction",
    "coroutinemethod",
    "decorator",
    "decoratormethod",
    "macro",
}
DESCRIBE = {
    "callable": (
        "What does `{name}` do?",
        "What does {name}() do?",
        "Explain what `{name}` does.",
        "What is {name} used for?",
    ),
    "class": (
        "What is the `{name}` class?",
        "What does the class {name} represent?",
        "Describe the `{name}` class.",
    ),
    "exception": (
        "What is the `{name}` exception?",
        "What does the exception {name} signal?",
        "Describe the `{name}` exception.",
    ),
    "other": ("What is `{name}`?", "What does `{name}` mean?", "Describe {name}."),
}
SIGNATURE = (
    "What is the signature of {name}?",
    "How is `{name}` called?",
    "What arguments does {name} take?",
)
MODULE = (
    "Which module provides `{name}`?",
    "Which module is {name} in?",
    "Where does {name} come from?",
)
PAGE = ("What is {title} about?", "What does the page {title} cover?")
SECTION = (
    "What does the {page} documentation say about {heading}?",
    "In the {page} documentation, what is said about {heading}?",
)
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_SECTION_NUMBER = re.compile(r"^(?:\d+\.)+\d*\s+")
_MAIN = ('//*[@role="main"]', "//main", "//article", '//div[@class="body"]', "//body")


class ChatDataConfig(StepConfig):
    heldout_fraction: float = Field(
        0.1, gt=0, le=0.5, description="Share of entries held out (at least one of two)."
    )
    seed: int = Field(0, description="Seed of the split and of the question templates.")
    answer_chars: int = Field(
        600, ge=80, description="Longest reference answer taken from a page, in characters."
    )
    min_answer_chars: int = Field(
        20, ge=1, description="Shorter descriptions are not made into entries."
    )
    questions_per_entry: int = Field(
        3, ge=1, le=3, description="Questions per entry: what it is, signature, module."
    )
    system_prompt: str | None = Field(None, description="A system turn opening every row.")
    safety: bool = Field(True, description="Add refusals of orchard.safety.TRAIN.")
    uploads: list[str] = Field(
        default_factory=list, description="JSONL files of conversations added to training."
    )
    uploads_sha256: str | None = Field(
        None, description="Content hash of the uploads (filled in by run())."
    )
    negatives: tuple[Literal[NEGATIVES], ...] = Field(  # type: ignore[valid-type]
        NEGATIVES, description="Kinds of rejected answers in the preference pairs."
    )
    base_samples: int = Field(64, ge=0, description="Questions the base model answers.")
    max_new_tokens: int = Field(64, ge=1, le=1024, description="Base answer length cap.")
    batch_size: int = Field(16, ge=1, description="Base answers generated together.")
    max_chars: int = Field(
        8000, ge=1, description="Validation: longest assistant answer, in characters."
    )
    sample_failures: int = Field(20, ge=0, description="Failing examples kept per rule.")
    not_in_key: ClassVar[frozenset[str]] = frozenset({"sample_failures"})

    @model_validator(mode="after")
    def _bounds(self) -> ChatDataConfig:
        if self.min_answer_chars > self.max_chars:
            raise ValueError(f"min_answer_chars {self.min_answer_chars} > max_chars")
        return self


@dataclass
class Entry:
    """One thing the corpus documents, with its reference answer in its own words."""

    id: str
    source: str  # sphinx | section | text
    group: str  # the page: same_module negatives come from the same group
    kind: str
    name: str
    answer: str
    page: str  # how a question names the page: `module` or “title”
    level: int = 0
    signature: str | None = None
    module: str | None = None


# -- text --------------------------------------------------------------------------------


class Cleaner:
    """Page text as curate leaves it: NFC, one space, no permalinks, PII replaced."""

    def __init__(self) -> None:
        from datatrove.pipeline.formatters import PIIFormatter

        self._pii = PIIFormatter()  # cycles through its placeholders: one per run

    def __call__(self, text: str) -> str:
        text = unicodedata.normalize("NFC", text.replace("¶", ""))
        text = " ".join(text.split())
        return replace_phone_numbers(self._pii.format(text))


def _hash(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8])


def _pick(options: Sequence[str], *parts: object) -> str:
    return options[_hash(*parts) % len(options)]


def cut(paragraphs: Iterable[str], limit: int) -> str:
    """The first paragraph(s), at most `limit` characters, ending at a sentence end; a
    closing paragraph that only introduces what follows it ("...as follows:") goes."""
    kept: list[str] = []
    for paragraph in paragraphs:
        if len("\n\n".join([*kept, paragraph])) <= limit:
            kept.append(paragraph)
            continue
        if not kept:
            ends = [m.end() for m in _SENTENCE_END.finditer(paragraph, 0, limit)]
            if ends and ends[-1] >= limit // 4:
                kept.append(paragraph[: ends[-1]])
            else:
                kept.append(paragraph[:limit].rsplit(" ", 1)[0] + "…")
        break
    while kept and kept[-1].endswith(":"):
        kept.pop()
    return "\n\n".join(kept)


def first_sentence(text: str) -> str:
    found = _SENTENCE_END.search(text)
    return text[: found.end()] if found else text


# -- HTML --------------------------------------------------------------------------------


def _classes(element) -> list[str]:
    return (element.get("class") or "").split()


def _has_heading(element) -> bool:
    return element.tag in _HEADINGS or bool(element.xpath(".//h1|.//h2|.//h3|.//h4|.//h5|.//h6"))


def _paragraphs(elements: Iterable, clean: Cleaner, min_chars: int) -> Iterator[str]:
    """The leading paragraphs among `elements` (siblings after a heading, children of a
    `dd`): what comes before them (a version note, a rule) is skipped; a heading, an
    object description or anything else after them ends them."""
    started = False
    for element in elements:
        if not isinstance(element.tag, str):  # comments, processing instructions
            continue
        if _has_heading(element) or element.tag == "dl":
            return
        if element.tag == "p":
            text = clean(element.text_content())
            if len(text) < min_chars or text.startswith("Source code:"):
                if started:
                    return
                continue
            started = True
            yield text
        elif element.tag == "div" and not _classes(element) and element.xpath("./p"):
            yield from _paragraphs(element, clean, min_chars)
            return
        elif started:
            return


def _quote(title: str) -> str:
    return title if any(mark in title for mark in '“”"') else f"“{title}”"


def _page_module(root, title: str) -> str | None:
    """The module a Sphinx page documents: `module-<name>` with a title naming it (a
    section about "Module contents" has the id module-contents too)."""
    for ident in root.xpath('//*[starts-with(@id, "module-")]/@id'):
        name = ident.removeprefix("module-")
        if name and re.split(r"\s|—|–", title, maxsplit=1)[0] == name:
            return name
    return None


def parse_page(data: str, url: str, config: ChatDataConfig, clean: Cleaner) -> list[Entry]:
    """Entries of one HTML page, in document order: Sphinx objects, then sections."""
    from lxml import etree
    from lxml import html as lhtml

    data = re.sub(r"^\s*<\?xml[^>]*\?>", "", data)
    try:
        root = lhtml.document_fromstring(data)
    except (ValueError, etree.ParserError) as error:
        log.warning("skipped %s: not parsable as HTML (%s)", url, error)
        return []
    for junk in root.xpath('//script|//style|//a[contains(@class, "headerlink")]'):
        junk.drop_tree()
    main = next((found[0] for path in _MAIN if (found := root.xpath(path))), root)
    h1 = main.xpath(".//h1")
    title = clean(h1[0].text_content()) if h1 else ""
    if not title:
        titles = root.xpath("//title")
        title = clean(titles[0].text_content()).split(" — ")[0] if titles else url
    title = _SECTION_NUMBER.sub("", title) or url
    module = _page_module(main, title)
    page = f"`{module}`" if module else _quote(title)
    entries: list[Entry] = []

    for dl in main.xpath(".//dl"):
        classes = _classes(dl)
        if not classes or classes[0] not in ("py", "c") or not dl.xpath("./dt[@id]|./dd"):
            continue
        kind = classes[1] if len(classes) > 1 else "object"
        dts, dds = dl.xpath("./dt[@id]"), dl.xpath("./dd")
        if not dts or not dds:
            continue
        name = dts[0].get("id")
        if classes[0] == "c":
            name = name.removeprefix("c.")
        answer = cut(_paragraphs(dds[0], clean, 1), config.answer_chars)
        if len(answer) < config.min_answer_chars:
            continue
        entries.append(
            Entry(
                id=name,
                source="sphinx",
                group=url,
                kind=kind,
                name=name,
                answer=answer,
                page=page,
                signature=clean(dts[0].text_content()),
                module=module if module and name.startswith(f"{module}.") else None,
            )
        )

    for heading in main.xpath(".//h1|.//h2|.//h3"):
        text = _SECTION_NUMBER.sub("", clean(heading.text_content()))
        if not text:
            continue
        answer = cut(
            _paragraphs(heading.itersiblings(), clean, config.min_answer_chars),
            config.answer_chars,
        )
        if len(answer) < config.min_answer_chars:
            continue
        parent = heading.getparent()
        section = parent.get("id") if parent is not None and parent.tag == "section" else None
        anchor = section or heading.get("id") or re.sub(r"\W+", "-", text.lower()).strip("-")
        entries.append(
            Entry(
                id=f"{url}#{anchor}",
                source="section",
                group=url,
                kind="page" if heading.tag == "h1" else "section",
                name=text,
                answer=answer,
                page=page,
                level=int(heading.tag[1]),
            )
        )
    return entries


def text_entry(doc: dict, config: ChatDataConfig, clean: Cleaner) -> Entry | None:
    """A document without HTML: its title (metadata, or a short first line) and its first
    paragraph; None when it has neither."""
    lines = [line.strip() for line in doc["text"].splitlines() if line.strip()]
    title = doc["metadata"].get("title")
    if not isinstance(title, str) or not title.strip():
        if len(lines) < 2 or len(lines[0]) > 100 or lines[0][-1] in ".!?:;,":
            return None
        title, lines = lines[0], lines[1:]
    paragraphs: list[str] = []
    for line in lines:
        good = len(line) >= 40 and "|" not in line and line != title
        if good:
            paragraphs.append(clean(line))
        elif paragraphs:
            break
    answer = cut(paragraphs, config.answer_chars)
    title = clean(title)
    if len(answer) < config.min_answer_chars or not title:
        return None
    ident = f"{doc['metadata'].get('url') or doc['id']}#text"
    return Entry(
        id=ident, source="text", group=ident, kind="text", name=title, answer=answer, page=title
    )


# -- inputs ------------------------------------------------------------------------------


def _roles(inputs: Sequence[Manifest]) -> tuple[list[Manifest], Manifest | None]:
    corpora = [m for m in inputs if m.step == "curate"]
    models = [m for m in inputs if m.step != "curate"]
    if not corpora or len(models) > 1:
        raise OrchardError(
            "chat_data takes one or more curate manifests and at most one model (a step "
            f"with hf/, e.g. pretrain); got {[m.step for m in inputs] or 'no input'}"
        )
    for model in models:
        if not (Path(model.path) / "hf" / "config.json").is_file():
            raise OrchardError(
                f"{model.path} ({model.step}) has no hf/ model directory: pass a pretrain "
                "(or sft) manifest whose model was exported, or no model at all"
            )
    return corpora, (models[0] if models else None)


def load_documents(corpus: Path) -> list[dict]:
    """The curated documents of the step output `corpus`, as {id, text, metadata}."""
    if not document_shards(corpus):
        raise OrchardError(
            f"no curated documents under {corpus / DOCUMENTS}: rebuild the curate step"
        )
    return [
        {"id": str(doc.record.get("id", "")), "text": doc.text, "metadata": doc.metadata}
        for doc in iter_documents(corpus)
    ]


def raw_html(corpus: Manifest, urls: set[str]) -> dict[str, str]:
    """URL -> decoded HTML of the pages behind `corpus` whose URL is in `urls` (the first
    copy of a URL wins), from the `*.warc.gz` of the steps it was curated from."""
    from warcio.archiveiterator import ArchiveIterator

    found: dict[str, str] = {}
    for upstream in ancestors([corpus])[1:]:
        root = Path(upstream.path)
        if not root.is_dir():
            continue
        for warc in sorted(root.rglob("*.warc.gz")):
            try:
                with warc.open("rb") as handle:
                    for record in ArchiveIterator(handle):
                        if record.rec_type != "response":
                            continue
                        uri = record.rec_headers.get_header("WARC-Target-URI")
                        if uri not in urls or uri in found:
                            continue
                        http = record.http_headers
                        if http is not None and not http.get_statuscode().startswith("2"):
                            continue
                        media = (
                            (http.get_header("Content-Type") if http is not None else None)
                            or record.rec_headers.get_header("Content-Type")
                            or ""
                        )
                        payload = record.rec_headers.get_header("WARC-Identified-Payload-Type")
                        if "html" not in (payload or media).lower():
                            continue
                        found[uri] = _decode(record.content_stream().read(), media)
            except Exception as error:  # noqa: BLE001 - one bad WARC loses its pages only
                log.warning("stopped reading %s: %s (its pages fall back to text)", warc, error)
    return found


def _decode(data: bytes, media: str) -> str:
    charset = re.search(r"charset=[\"']?([\w.:-]+)", media or "", re.IGNORECASE)
    for encoding in (charset.group(1) if charset else None, "utf-8"):
        if encoding:
            try:
                return data.decode(encoding)
            except (LookupError, UnicodeDecodeError):
                continue
    return data.decode("cp1252", errors="replace")


def read_uploads(paths: Sequence[str]) -> list[tuple[str, list[dict]]]:
    """(row id, messages) of every uploaded conversation; a bad row is an OrchardError
    naming file:line and what is wrong with it."""
    rows = []
    shape = '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", ...}]}'
    for index, name in enumerate(paths):
        path = Path(name)
        try:
            lines = path.read_bytes().splitlines()
        except OSError as error:
            raise OrchardError(f"cannot read upload {name}: {error.strerror or error}") from None
        for number, raw in enumerate(lines, 1):
            where = f"{name}:{number}"
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise OrchardError(f"{where}: not a JSON line ({error}); want {shape}") from None
            problem = conversation_problem(row)
            if problem:
                raise OrchardError(f"{where}: {problem}; each line must be {shape}")
            messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
            rows.append((f"upload-{index}-{path.stem}-{number}", messages))
    return rows


def conversation_problem(row: Any) -> str | None:
    """What is wrong with one row of the common chat format, or None."""
    if not isinstance(row, dict) or "messages" not in row:
        return 'the row has no "messages"'
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        return '"messages" is not a non-empty list'
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"message {i} is not an object"
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return f"message {i} has role {role!r}, not one of {', '.join(ROLES)}"
        if not isinstance(content, str) or not content.strip():
            return f"message {i} ({role}) has no text content (a non-empty string)"
    if messages[-1]["role"] != "assistant":
        return f"the last message is {messages[-1]['role']!r}, not the assistant's answer"
    if not any(m["role"] == "user" for m in messages):
        return "no message is the user's"
    return None


def uploads_sha256(paths: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for name in paths:
        try:
            digest.update(hashlib.sha256(Path(name).read_bytes()).digest())
        except OSError as error:
            raise OrchardError(
                f"cannot read upload {name}: {error.strerror or error}: pass existing "
                "JSONL files in uploads"
            ) from None
    return digest.hexdigest()


# -- questions, splits, pairs -----------------------------------------------------------


def questions(entry: Entry, config: ChatDataConfig) -> list[tuple[str, str, str]]:
    """(question kind, question, reference answer) of one entry."""
    seed, name = config.seed, entry.name
    if entry.source == "sphinx":
        bucket = (
            "callable"
            if entry.kind in CALLABLE
            else entry.kind
            if entry.kind in ("class", "exception")
            else "other"
        )
        asked = [("describe", _pick(DESCRIBE[bucket], seed, entry.id, "d"), entry.answer)]
        if entry.signature and "(" in entry.signature and entry.signature != name:
            asked.append(("signature", _pick(SIGNATURE, seed, entry.id, "s"), entry.signature))
        if entry.module:
            answer = (
                f"The `{entry.module}` module provides `{name}`: {first_sentence(entry.answer)}"
            )
            asked.append(("module", _pick(MODULE, seed, entry.id, "m"), answer))
        asked = asked[: config.questions_per_entry]
        return [(kind, q.format(name=name), a) for kind, q, a in asked]
    if entry.source == "section" and entry.level > 1:
        heading = name.rstrip("?") or name  # "...say about Can I delete Python?"
        question = _pick(SECTION, seed, entry.id).format(page=entry.page, heading=heading)
    else:
        question = _pick(PAGE, seed, entry.id).format(title=_quote(name))
    return [(entry.kind, question, entry.answer)]


def heldout_entries(entries: Sequence[Entry], config: ChatDataConfig) -> set[str]:
    """Entries held out by a seeded hash; at least one (and one kept) of two or more."""
    ranked = sorted(entries, key=lambda e: (_hash(config.seed, "split", e.id), e.id))
    scale = 2**64
    held = {
        e.id for e in ranked if _hash(config.seed, "split", e.id) / scale < config.heldout_fraction
    }
    if len(ranked) >= 2 and not held:
        held = {ranked[0].id}
    if len(ranked) >= 2 and len(held) == len(ranked):
        held.discard(ranked[-1].id)
    return held


def truncate(answer: str, key: str, seed: int) -> str | None:
    """The first 30-50% of the answer's words, without a closing stop: clearly unfinished."""
    words = answer.split()
    if len(words) < 8:
        return None
    share = 0.3 + (_hash(seed, "cut", key) % 21) / 100
    return " ".join(words[: max(3, round(len(words) * share))]).rstrip(".,;:!?")


def _fallback(kind: str, other: Entry) -> str | None:
    """What another entry answers to a kind of question it was not asked: its reference
    answer, except for signature and module questions (a description is no signature)."""
    return None if kind in ("signature", "module") else other.answer


def _messages(config: ChatDataConfig, question: str, answer: str) -> list[dict]:
    system = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
    return [
        *system,
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]


def greedy_answers(hf_dir: Path, prompts: list[list[dict]], config: ChatDataConfig) -> list[str]:
    """The model's own greedy answers, generated in batches with left padding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    if not tokenizer.chat_template:
        raise OrchardError(f"{hf_dir} has no chat template: its tokenizer cannot ask questions")
    tokenizer.padding_side = tokenizer.truncation_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    context = getattr(model.config, "max_position_embeddings", 2048)
    limit = max(8, context - config.max_new_tokens)
    texts = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))  # less padding
    answers: dict[int, str] = {}
    for start in range(0, len(order), config.batch_size):
        batch = order[start : start + config.batch_size]
        encoded = tokenizer(
            [texts[i] for i in batch],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=limit,
            add_special_tokens=False,
        )
        with torch.inference_mode():
            out = model.generate(
                **encoded,
                max_new_tokens=config.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        decoded = tokenizer.batch_decode(
            out[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True
        )
        answers |= {i: text.strip() for i, text in zip(batch, decoded, strict=True)}
    return [answers[i] for i in range(len(texts))]


# -- validation --------------------------------------------------------------------------


def sft_frame(rows: dict[str, list[dict]], held: set[str]) -> pd.DataFrame:
    records = [
        {
            "id": row["id"],
            "split": split,
            "source": row["source"],
            "last_role": row["messages"][-1]["role"],
            "n_answer_chars": len(row["messages"][-1]["content"].strip()),
            "text": "\n".join(m["content"] for m in row["messages"]),
            "heldout_in_train": split == "train" and row["entry"] in held,
        }
        for split in SPLITS
        for row in rows[split]
    ]
    return pd.DataFrame.from_records(
        records,
        columns=[
            "id",
            "split",
            "source",
            "last_role",
            "n_answer_chars",
            "text",
            "heldout_in_train",
        ],
    )


def preference_frame(rows: dict[str, list[dict]]) -> pd.DataFrame:
    records = [
        {
            "id": row["id"],
            "split": split,
            "negative": row["negative"],
            "n_chosen_chars": len(row["chosen"][-1]["content"].strip()),
            "n_rejected_chars": len(row["rejected"][-1]["content"].strip()),
            "chosen_is_rejected": row["chosen"][-1]["content"].strip()
            == row["rejected"][-1]["content"].strip(),
            "heldout_in_train": bool(row.pop("_leak")),
        }
        for split in SPLITS
        for row in rows[split]
    ]
    columns = ["id", "split", "negative", "n_chosen_chars", "n_rejected_chars"]
    return pd.DataFrame.from_records(
        records, columns=[*columns, "chosen_is_rejected", "heldout_in_train"]
    )


def sft_rules(config: ChatDataConfig) -> dict[str, Any]:
    import great_expectations as gx

    expect = gx.expectations
    return {
        "has_rows": expect.ExpectTableRowCountToBeBetween(min_value=1),
        "has_heldout": expect.ExpectColumnDistinctValuesToContainSet(
            column="split", value_set=["heldout"]
        ),
        "id_present": expect.ExpectColumnValuesToNotBeNull(column="id"),
        "id_unique": expect.ExpectColumnValuesToBeUnique(column="id"),
        "last_role_assistant": expect.ExpectColumnValuesToBeInSet(
            column="last_role", value_set=["assistant"]
        ),
        "answer_length": expect.ExpectColumnValuesToBeBetween(
            column="n_answer_chars", min_value=1, max_value=config.max_chars
        ),
        "no_heldout_in_train": expect.ExpectColumnValuesToBeInSet(
            column="heldout_in_train", value_set=[False]
        ),
        "no_email": expect.ExpectColumnValuesToNotMatchRegex(column="text", regex=EMAIL),
        "no_phone": expect.ExpectColumnValuesToNotMatchRegex(
            column="text", regex=PHONE_NUMBER.pattern
        ),
    }


def preference_rules(config: ChatDataConfig) -> dict[str, Any]:
    import great_expectations as gx

    expect = gx.expectations
    return {
        "has_rows": expect.ExpectTableRowCountToBeBetween(min_value=1),
        "id_present": expect.ExpectColumnValuesToNotBeNull(column="id"),
        "id_unique": expect.ExpectColumnValuesToBeUnique(column="id"),
        "negative_known": expect.ExpectColumnValuesToBeInSet(
            column="negative", value_set=list(NEGATIVES)
        ),
        "chosen_present": expect.ExpectColumnValuesToBeBetween(
            column="n_chosen_chars", min_value=1, max_value=config.max_chars
        ),
        "rejected_present": expect.ExpectColumnValuesToBeBetween(
            column="n_rejected_chars", min_value=1
        ),
        "chosen_differs": expect.ExpectColumnValuesToBeInSet(
            column="chosen_is_rejected", value_set=[False]
        ),
        "no_heldout_in_train": expect.ExpectColumnValuesToBeInSet(
            column="heldout_in_train", value_set=[False]
        ),
    }


# -- the step ----------------------------------------------------------------------------


def build_entries(
    corpora: Sequence[Manifest], config: ChatDataConfig, clean: Cleaner, counts: Counter
) -> list[Entry]:
    entries: list[Entry] = []
    seen: set[str] = set()
    for corpus in corpora:
        docs = sorted(
            load_documents(Path(corpus.path)),
            key=lambda d: (str(d["metadata"].get("url") or ""), d["id"]),
        )
        counts["documents"] += len(docs)
        urls = {d["metadata"]["url"] for d in docs if isinstance(d["metadata"].get("url"), str)}
        pages = raw_html(corpus, urls)
        counts["pages_html"] += len(pages)
        for doc in docs:
            url = doc["metadata"].get("url")
            found = parse_page(pages[url], url, config, clean) if url in pages else []
            if not found:
                entry = text_entry(doc, config, clean)
                found = [entry] if entry else []
                counts["documents_text_only" if url not in pages else "pages_without_entries"] += 1
            for entry in found:
                if entry.id not in seen:
                    seen.add(entry.id)
                    entries.append(entry)
    return entries


def chat_data(config: ChatDataConfig, inputs: Sequence[Manifest], ctx: StepContext) -> StepOutput:
    """The step body: entries -> SFT and preference sets in `ctx.out`, validated."""
    corpora, model = _roles(inputs)
    counts: Counter[str] = Counter()
    entries = build_entries(corpora, config, Cleaner(), counts)
    held = heldout_entries(entries, config)
    by_id = {e.id: e for e in entries}
    log.info(
        "%d entries (%d held out) from %d documents", len(entries), len(held), counts["documents"]
    )

    sft: dict[str, list[dict]] = {split: [] for split in SPLITS}
    asked: set[str] = set()
    answers_of: dict[str, dict[str, str]] = {}  # entry -> question kind -> answer
    kinds: dict[tuple[str, str], str] = {}  # (entry, question) -> question kind
    for entry in entries:
        split = "heldout" if entry.id in held else "train"
        counts[f"entries.{entry.source}"] += 1
        asks = questions(entry, config)
        answers_of[entry.id] = {kind: answer for kind, _, answer in asks}
        for kind, question, answer in asks:
            normal = " ".join(question.casefold().split())
            if normal in asked:
                counts["questions_deduplicated"] += 1
                continue
            asked.add(normal)
            kinds[entry.id, question] = kind
            row_id = (
                f"{entry.source}-{hashlib.sha1(f'{entry.id}|{kind}'.encode()).hexdigest()[:16]}"
            )
            sft[split].append(
                {
                    "id": row_id,
                    "messages": _messages(config, question, answer),
                    "source": entry.source,
                    "entry": entry.id,
                }
            )
    corpus_rows = [(split, row) for split in SPLITS for row in sft[split]]
    if config.safety:
        from orchard.safety import REFUSAL, TRAIN

        for i, prompt in enumerate(TRAIN):
            sft["train"].append(
                {
                    "id": f"safety-{i}",
                    "messages": _messages(config, prompt, REFUSAL),
                    "source": "safety",
                    "entry": None,
                }
            )
    for row_id, messages in read_uploads(config.uploads):
        sft["train"].append({"id": row_id, "messages": messages, "source": "upload", "entry": None})

    # Preference pairs over the corpus questions.
    base: dict[str, str] = {}
    if model is not None and "base_sample" in config.negatives and config.base_samples:
        chosen = sorted(
            corpus_rows, key=lambda pair: (_hash(config.seed, "base", pair[1]["id"]), pair[1]["id"])
        )
        chosen = chosen[: config.base_samples]
        prompts = [row["messages"][:-1] for _, row in chosen]
        log.info("sampling %d base answers from %s", len(prompts), model.path)
        samples = greedy_answers(Path(model.path) / "hf", prompts, config)
        base = {row["id"]: text for (_, row), text in zip(chosen, samples, strict=True)}
        counts["base_samples"] = len(base)
    by_group: dict[str, list[Entry]] = {}
    for entry in entries:
        by_group.setdefault(entry.group, []).append(entry)
    preference: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for split, row in corpus_rows:
        entry = by_id[row["entry"]]
        answer = row["messages"][-1]["content"]
        rejected: list[tuple[str, str, bool]] = []  # negative, text, leaks held-out
        if "same_module" in config.negatives:
            # Another entry of the page answering the same kind of question: its
            # description, its signature, the module sentence of another object.
            kind = kinds[entry.id, row["messages"][-2]["content"]]
            others = [
                (other, text)
                for other in by_group[entry.group]
                if other.id != entry.id
                and (split == "heldout" or other.id not in held)
                and (text := answers_of[other.id].get(kind, _fallback(kind, other)))
                and text.strip() != answer.strip()
            ]
            if others:
                other, text = others[_hash(config.seed, "neg", row["id"]) % len(others)]
                rejected.append(("same_module", text, split == "train" and other.id in held))
        if "truncated" in config.negatives and (short := truncate(answer, row["id"], config.seed)):
            rejected.append(("truncated", short, False))
        sample = base.get(row["id"])
        if sample is not None:
            if sample and sample.strip() != answer.strip():
                rejected.append(("base_sample", sample, False))
            else:
                counts["base_samples_skipped"] += 1
        for negative, text, leak in rejected:
            preference[split].append(
                {
                    "id": f"{row['id']}-{negative}",
                    "prompt": row["messages"][:-1],
                    "chosen": [{"role": "assistant", "content": answer}],
                    "rejected": [{"role": "assistant", "content": text}],
                    "negative": negative,
                    "_leak": leak or (split == "train" and entry.id in held),
                }
            )
            counts[f"preference_{split}.{negative}"] += 1

    for split in SPLITS:
        counts[f"sft_{split}"] = len(sft[split])
        for row in sft[split]:
            counts[f"sft_{split}.{row['source']}"] += 1
    summaries = {
        "sft": validate_set(config, "sft", sft_rules(config), sft_frame(sft, held), ctx),
        "preference": validate_set(
            config, "preference", preference_rules(config), preference_frame(preference), ctx
        ),
    }
    (ctx.out / "validation.json").write_text(json.dumps(summaries, indent=2, default=str))
    report = ctx.out.parent / f"failed-{ctx.key}"
    failed = [name for name, summary in summaries.items() if not summary["success"]]
    if failed:
        keep_report(ctx.out, report)
        raise OrchardError(
            " ".join(
                failure_message(summaries[name], report, subject=f"the chat data's {name} set")
                for name in failed
            )
        )
    shutil.rmtree(report, ignore_errors=True)  # an older failure of the same key is stale

    for folder, sets in (("sft", sft), ("preference", preference)):
        (ctx.out / folder).mkdir()
        for split in SPLITS:
            with (ctx.out / folder / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
                for row in sets[split]:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts |= {
        "entries": len(entries),
        "entries_heldout": len(held),
        "preference_train": len(preference["train"]),
        "preference_heldout": len(preference["heldout"]),
    }
    answers = [row["messages"][-1]["content"] for split in SPLITS for row in sft[split]]
    metrics = {
        "entries": float(len(entries)),
        "heldout_entry_fraction": len(held) / len(entries) if entries else 0.0,
        "mean_answer_chars": sum(map(len, answers)) / len(answers) if answers else 0.0,
        **{
            f"rule.{s}.{r['rule']}": float(r["success"])
            for s, v in summaries.items()
            for r in v["rules"]
        },
    }
    return StepOutput(counts=dict(sorted(counts.items())), metrics=metrics, artifacts=["data_docs"])


def validate_set(
    config: ChatDataConfig, name: str, rules: dict[str, Any], frame: pd.DataFrame, ctx: StepContext
) -> dict[str, Any]:
    docs = ctx.out / "data_docs" / name
    summary = run_suite(
        f"chat-{name}", rules, frame, docs, config.sample_failures, config.model_dump(mode="json")
    )
    if not (docs / "index.html").is_file():
        raise OrchardError(f"Great Expectations built no Data Docs in {docs}")
    return summary


STEP = StepSpec("chat_data", ChatDataConfig, default_name="demo", doc=__doc__)


def run(
    config: ChatDataConfig,
    inputs: Manifest | Sequence[Manifest],
    settings: Settings,
    name: str = STEP.default_name,
    force: bool = False,
) -> Manifest:
    """Build the chat data of the curate manifest(s) in `inputs` (plus an optional model
    for base-sample negatives); return the chat_data manifest."""
    inputs = [inputs] if isinstance(inputs, Manifest) else list(inputs)
    _roles(inputs)
    if config.uploads:  # the uploads' content, not only their names, is in the key
        config = config.model_copy(update={"uploads_sha256": uploads_sha256(config.uploads)})
    return STEP.run(
        settings, config, lambda ctx: chat_data(config, inputs, ctx), inputs, name, force
    )


def main(argv: list[str] | None = None) -> int:
    return STEP.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())

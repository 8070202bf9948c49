"""The UI's generated client agrees with the platform API it talks to.

ui/src/api/openapi.json is committed; ui/src/api/schema.d.ts (the types openapi-fetch checks
every call against) and ui/src/api/limits.ts are generated from it by `make ui-client`.
A route, a field or a bound changed in platform_api/ without regenerating fails here, before
the UI could send or read a shape the API no longer has.
"""

import difflib
import hashlib
import re
from pathlib import Path

from platform_api.openapi import DEFAULT_PATH, openapi_document, render

API_DIR = Path(__file__).resolve().parents[2] / "ui" / "src" / "api"
REGENERATE = "run `make ui-client` and commit ui/src/api/"


def test_committed_openapi_json_is_what_the_live_app_describes(clean_env):
    assert DEFAULT_PATH == API_DIR / "openapi.json"
    committed = DEFAULT_PATH.read_text(encoding="utf-8")
    live = render(openapi_document())
    if committed != live:
        diff = difflib.unified_diff(
            committed.splitlines(),
            live.splitlines(),
            "ui/src/api/openapi.json (committed)",
            "the live app",
            lineterm="",
        )
        shown = "\n".join(list(diff)[:60])
        raise AssertionError(
            f"the UI's client is stale: the platform API's OpenAPI schema changed: {REGENERATE}\n"
            f"{shown}"
        )


def test_generated_sources_come_from_the_committed_openapi_json():
    digest = hashlib.sha256(DEFAULT_PATH.read_bytes()).hexdigest()
    for name in ("schema.d.ts", "limits.ts"):
        first = (API_DIR / name).read_text(encoding="utf-8").split("\n", 1)[0]
        found = re.search(r"openapi\.json \(sha256 ([0-9a-f]{64})\)", first)
        assert found, f"ui/src/api/{name} has no generator stamp on its first line: {REGENERATE}"
        assert found.group(1) == digest, (
            f"ui/src/api/{name} was generated from another openapi.json: {REGENERATE}"
        )

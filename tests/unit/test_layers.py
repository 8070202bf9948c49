"""The import rules of the layers, read from the source (every import statement, also the
lazy ones inside functions), so they stay true:

- model/ never orchestrates: nothing under model/ reaches orchard.steps or
  orchard.settings, not even through another first-party module;
- a step never imports another step: no ray_jobs module imports a ray_jobs module
  (what steps share lives in orchard/ or model/);
- bench/ never imports tests/ (whose conftest changes the environment on import): what
  both use lives in testkit/, and testkit/ never imports tests/ either;
- a platform_api route never imports another route module: what routes share is a service
  module beside them (platform_api/chats.py, second_factor.py, usage.py, ...).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("orchard", "dags", "ray_jobs", "model", "serving", "platform_api")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(path): path for path in sorted((REPO / package).rglob("*.py"))}


@cache
def imports(path: Path) -> frozenset[str]:
    """Every module `path` imports, by absolute name (`from a import b` counts as `a`
    and as `a.b`, which may be a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return frozenset(found)


def first_party_path(module: str) -> Path | None:
    if module.split(".")[0] not in FIRST_PARTY:
        return None
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def reaches(path: Path) -> set[str]:
    """The first-party modules `path` imports, directly or through others."""
    seen: set[str] = set()
    queue = [path]
    while queue:
        for module in imports(queue.pop()):
            target = first_party_path(module)
            if target is not None and module not in seen:
                seen.add(module)
                queue.append(target)
    return seen


def test_model_never_reaches_the_step_plumbing_or_the_settings():
    forbidden = {"orchard.steps", "orchard.settings"}
    found = {
        name: sorted(reaches(path) & forbidden)
        for name, path in modules("model").items()
        if reaches(path) & forbidden
    }
    assert not found, f"model/ must not orchestrate; move the step code to orchard/: {found}"


def test_no_step_imports_another_step():
    found = {
        name: sorted(m for m in imports(path) if m.split(".")[0] == "ray_jobs" and m != name)
        for name, path in modules("ray_jobs").items()
    }
    found = {name: hits for name, hits in found.items() if hits}
    assert not found, f"a ray_jobs module imports another (share through orchard/): {found}"


def test_benchmarks_and_testkit_never_import_the_tests():
    found = {
        name: sorted(m for m in imports(path) if m.split(".")[0] == "tests")
        for package in ("bench", "testkit")
        for name, path in modules(package).items()
    }
    found = {name: hits for name, hits in found.items() if hits}
    assert not found, f"bench/ and testkit/ must not import tests/ (move it to testkit/): {found}"


def route_imports(routes: dict[str, Path]) -> dict[str, list[str]]:
    """The route modules each route module imports (the package `platform_api.routes`
    itself too: `from platform_api.routes import chats` names it and `...routes.chats`)."""
    found = {
        name: sorted(
            m
            for m in imports(path)
            if m.startswith("platform_api.routes.") and m != name and m in routes
        )
        for name, path in routes.items()
    }
    return {name: hits for name, hits in found.items() if hits}


def test_no_route_imports_another_route():
    routes = modules("platform_api/routes")
    assert len(routes) > 10, "the scan found no route modules: has platform_api/routes moved?"
    found = route_imports(routes)
    assert not found, (
        f"a platform_api route imports another route module (move what they share to a "
        f"service module in platform_api/): {found}"
    )


def test_the_route_rule_sees_a_route_importing_a_route(tmp_path, monkeypatch):
    routes = tmp_path / "platform_api" / "routes"
    routes.mkdir(parents=True)
    (tmp_path / "platform_api" / "__init__.py").write_text("")
    (routes / "__init__.py").write_text("")
    (routes / "a.py").write_text("from platform_api.chats import owned_chat\n")
    (routes / "b.py").write_text("from platform_api.routes.a import helper\n")
    (routes / "c.py").write_text("def f():\n    from . import a\n")
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    found = route_imports(modules("platform_api/routes"))
    assert found == {
        "platform_api.routes.b": ["platform_api.routes.a"],
        "platform_api.routes.c": ["platform_api.routes.a"],
    }


def test_the_scan_sees_lazy_relative_and_from_imports(tmp_path, monkeypatch):
    """The rules above can fail: each kind of import they must see is seen."""
    package = tmp_path / "ray_jobs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "def f():\n    from ray_jobs.b import x\n    from . import c\n    import orchard.steps\n"
    )
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    assert {"ray_jobs.b", "ray_jobs.c", "orchard.steps"} <= imports(package / "a.py")

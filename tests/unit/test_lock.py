"""requirements.lock installs on any Linux machine: exact pins PyPI serves, no local labels.

A local version label (`torch==2.13.0+cpu`) names a build that only another index (or a
wheel lying on one machine's disk) has: `make install` elsewhere stops at pip. `make lock`
drops the labels; this test catches a lock edited or generated without it.
"""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
# Installed with --no-deps after the lock (Makefile): pinned the same way.
NODEPS = ROOT / "requirements-nodeps.txt"


def lock_problems(text: str, name: str = "requirements.lock") -> list[str]:
    """One line per entry of a lock file that is not an exact pin of a public version."""
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        where = f"{name}:{number}"
        try:
            requirement = Requirement(entry)
        except InvalidRequirement as error:
            problems.append(f"{where}: {entry!r} is not a requirement ({error})")
            continue
        specs = list(requirement.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            problems.append(f"{where}: {entry!r} is not an exact pin (name==version)")
            continue
        version = Version(specs[0].version)
        if version.local is not None:
            public = f"{requirement.name}=={version.public}"
            problems.append(
                f"{where}: {entry!r} pins the local version label '+{version.local}', which "
                f"PyPI does not host: pin {public} (see the README's install notes)"
            )
    return problems


def test_the_lock_pins_only_public_versions():
    assert lock_problems(LOCK.read_text()) == []


def test_the_no_deps_packages_are_pinned_and_not_in_the_lock():
    assert lock_problems(NODEPS.read_text(), NODEPS.name) == []
    names = {line.split("==")[0].lower() for line in LOCK.read_text().splitlines()}
    for line in NODEPS.read_text().splitlines():
        entry = line.split("#", 1)[0].strip()
        assert not entry or Requirement(entry).name.lower() not in names, entry


def test_a_local_version_label_or_a_loose_pin_is_refused_with_the_fix():
    problems = lock_problems("# comment\nnumpy==2.4.0\ntorch==2.13.0+cpu\nray>=2.60\n")
    assert problems == [
        "requirements.lock:3: 'torch==2.13.0+cpu' pins the local version label '+cpu', "
        "which PyPI does not host: pin torch==2.13.0 (see the README's install notes)",
        "requirements.lock:4: 'ray>=2.60' is not an exact pin (name==version)",
    ]

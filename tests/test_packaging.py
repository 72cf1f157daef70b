"""What `pip install` may resolve to: no dependency floor admits a release with a published
security advisory that affects how Flywheel uses it."""

from __future__ import annotations

import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from conftest import REPO

# package -> (first release without the advisories, why)
SAFE_FROM = {
    "jinja2": ("3.1.6", "CVE-2025-27516, sandbox escape through |attr; prompt files are Jinja templates"),
    "aiohttp": ("3.14.4", "advisories through 3.14.3 (HTTP parser, request smuggling, cookie handling); "
                          "it serves /slack/events and the playground"),
}


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}


@pytest.mark.parametrize("package", sorted(SAFE_FROM))
def test_no_dependency_floor_admits_a_release_with_a_known_advisory(package: str):
    requirement = declared()[package]
    safe, why = SAFE_FROM[package]
    floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
    assert floors and max(floors) >= Version(safe), f"{requirement} admits releases before {safe}: {why}"

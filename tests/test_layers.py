"""Packages import one way: the contract and shared plumbing at the bottom, the services and the SDK above,
the page above the SDK, the demo and the synthetic pictures on top. Read from the source, not run."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What each package may import of the project's own: itself and what lies below it.
MAY_IMPORT = {
    "imagesearch": {"imagesearch"},
    "encoder_service": {"imagesearch", "encoder_service"},
    "search_service": {"imagesearch", "search_service"},
    "client": {"imagesearch", "client"},
    "web": {"imagesearch", "client", "web"},
    "synthetic": {"imagesearch", "client", "synthetic"},
    "demo": {"imagesearch", "client", "synthetic", "demo"},
}


def imported_packages(source: Path) -> set[str]:
    """The project's packages that `source` imports, at any depth of its code."""
    tree = ast.parse(source.read_text(), str(source))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {name.split(".")[0] for name in names} & MAY_IMPORT.keys()


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_a_package_imports_nothing_above_it(package: str) -> None:
    wrong = {
        str(source.relative_to(ROOT)): sorted(imported_packages(source) - MAY_IMPORT[package])
        for source in (ROOT / package).rglob("*.py")
    }
    assert {path: names for path, names in wrong.items() if names} == {}


def test_every_package_has_a_place() -> None:
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert packages == MAY_IMPORT.keys()

"""The package list in pyproject.toml names every package folder: an editable install finds a
folder missing from the list anyway, a regular install (a wheel) would silently leave it out."""
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = config["package-dir"]  # import name -> folder
    found = set()
    for name, folder in roots.items():
        base = REPO / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    assert found == set(config["packages"]), (
        f"missing from pyproject packages: {sorted(found - set(config['packages']))}; "
        f"listed but absent: {sorted(set(config['packages']) - found)}")

"""The package layout: dsc's own code uses only the current import paths, and the paths from
before the `src/dsc/` layout still import the very same modules (plugins written against them)."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dsc._moved import MOVED, new_name

REPO = Path(__file__).resolve().parents[1]


def test_every_moved_target_exists():
    for old, new in MOVED.items():
        assert importlib.import_module(new).__name__ == new, old


@pytest.mark.parametrize("old,attr", [
    ("dsc.compiler.formats", "register_format"),
    ("dsc.compiler.transforms.filters", "FILTERS"),
    ("dsc.compiler.transforms.convert", "CONVERTERS"),
    ("dsc.compiler.transforms.negatives", "RULES"),
    ("dsc.compiler.registry", "Registry"),
    ("dsc.compiler.errors", "SpecError"),
    ("dsc.compiler.build", "build"),
])
def test_old_plugin_paths_are_the_same_objects(old, attr):
    # run in a fresh interpreter: the old name imported first, before anything loaded the new one
    code = (f"import importlib; o = importlib.import_module({old!r}); "
            f"n = importlib.import_module({new_name(old)!r}); "
            f"assert o is n and getattr(o, {attr!r}) is getattr(n, {attr!r}); print(o.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == new_name(old)


def test_unmoved_names_are_left_alone():
    assert new_name("dsc.compiler.record") is None
    assert new_name("dsc.compiler.dialects.react") is None
    assert new_name("dsc.compiler.formatsx") is None  # a prefix, not a package of it
    assert new_name("dsc.compiler.transforms.filters") == "dsc.compiler.stages.transforms.filters"


def test_own_code_uses_current_paths():
    old = re.compile(r"(?<![\w.])(" + "|".join(re.escape(m) for m in sorted(MOVED, key=len, reverse=True)) + r")(?![\w])")
    skip = {REPO / "src" / "dsc" / "_moved.py", Path(__file__).resolve()}
    offenders = []
    for folder in ("src", "tests", "bench", "experiments", "specs"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path in skip:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if old.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "old import paths:\n" + "\n".join(offenders)


def test_the_spec_package_offers_the_old_module_names():
    # `dsc.compiler.spec` was one module; it is a package now, and its public names still import
    from dsc.compiler.spec import LoadedSpec, Spec, load_spec
    from dsc.compiler.spec import model

    assert (Spec, LoadedSpec, load_spec) == (model.Spec, model.LoadedSpec, model.load_spec)
    with pytest.raises(ImportError):
        from dsc.compiler.spec import no_such_name  # noqa: F401

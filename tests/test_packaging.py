"""A regular install (a wheel) holds every module, built-in template and report asset under src/dsc: an
editable install finds a folder without `__init__.py` anyway, a wheel would silently leave it out."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_every_module_and_template(tmp_path):
    # Built from a clean copy: an egg-info left by the editable install would list files itself.
    project = tmp_path / "project"
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, project / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(project), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    wheel, = tmp_path.glob("dsc-*.whl")
    packed = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("dsc/")}
    src = REPO / "src"
    expected = {p.relative_to(src).as_posix() for p in src.joinpath("dsc").rglob("*")
                if p.suffix in (".py", ".jinja", ".css", ".js") and "__pycache__" not in p.parts}
    assert expected - packed == set(), f"missing from the wheel: {sorted(expected - packed)}"
    folders = {p.parent for p in src.joinpath("dsc").rglob("*.py")}
    assert [f for f in folders if not (f / "__init__.py").exists()] == []

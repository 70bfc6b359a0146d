"""Every `dsc` command the README and docs/ show runs as written (exit 0), in a copy of the
repository's specs/ and examples/, in the order a reader meets them. Commands with a placeholder
(`<...>`, `...`, `path/or/hub-id`, `[optional]`) are templates, not commands; `--rev` needs a git
history of artifacts (tests/ops/test_diff.py covers it). `specs/agent.yaml` and `old-build/`
are the user project that docs/VERSIONING.md walks through, made here from a bundled spec."""
from __future__ import annotations

import os
import re
import shutil
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|path/or/|\[[^\]]*\]")


def doc_commands() -> list[tuple[str, str]]:
    """(page, command) for each command where it first appears."""
    out = []
    seen: set[str] = set()
    for page in PAGES:
        text = (REPO / page).read_text(encoding="utf-8")
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S):
            for line in block.splitlines():
                command = line.split(" #")[0].strip()
                if command.startswith("dsc ") and command not in seen:
                    seen.add(command)
                    out.append((page, command))
    return out


def _runnable(command: str) -> bool:
    return not PLACEHOLDER.search(command) and "--rev" not in command


def test_the_docs_show_commands_and_most_run():
    commands = doc_commands()
    assert len(commands) >= 14
    assert sum(map(_runnable, (c for _, c in commands))) >= 10


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("docs")
    for name in ("specs", "examples"):
        shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("build", "dsc.lock"))
    agent = (work / "specs" / "agent-flan.yaml").read_text()
    (work / "specs" / "agent.yaml").write_text(re.sub(r"(?m)^name: .*$", "name: agent", agent))
    env = {**os.environ, "DSC_NO_PROGRESS": "1"}
    dsc = [sys.executable, "-m", "dsc"]
    # What the reader has done before: `make demo`'s build, and an older build of the agent spec.
    for args in (["build", "examples/nat-miniature/spec.yaml", "--out", "build/demo"],
                 ["build", "specs/agent.yaml", "--out", "old-build/agent"]):
        subprocess.run(dsc + args, cwd=work, env=env, check=True, capture_output=True)
    return work


@pytest.mark.parametrize("page,command", [pc for pc in doc_commands() if _runnable(pc[1])],
                         ids=lambda v: v if isinstance(v, str) and v.startswith("dsc") else None)
def test_a_doc_command_runs_as_written(workdir, page, command):
    env = {**os.environ, "DSC_NO_PROGRESS": "1"}
    args = shlex.split(command)[1:]
    if "--locked" in args:  # a lock to check against: the page builds the spec (and commits its lock) first
        subprocess.run([sys.executable, "-m", "dsc", "build", args[1]], cwd=workdir, env=env, check=True,
                       capture_output=True)
    r = subprocess.run([sys.executable, "-m", "dsc", *args], cwd=workdir, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{page}: {command}\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}"

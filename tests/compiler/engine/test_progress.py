"""Progress on the long commands: what each one reports (stages, totals, running notes), and the
rich bar itself (quiet when not a terminal)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

from artifact_helpers import REPO, make_project
from rich.console import Console

from dsc.compiler.engine.driver import build
from dsc.ops.diff import diff_artifacts
from dsc.ops.plan import plan
from dsc.spec.runtime import EvalTask
from dsc.runtime.evaluation import run_task
from dsc.runtime.prompting import PromptBuilder
from dsc.runtime.train import progress_callback


class Recorder:
    """The build's progress interface (plus `note`), recording every call."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, int | None]] = []
        self.advanced: dict[str, int] = {}
        self.notes: list[str] = []
        self.finished = 0

    def start(self, stage, total=None):
        self.stages.append((stage, total))
        self.advanced[stage] = 0

    def advance(self, n=1):
        self.advanced[self.stages[-1][0]] += n

    def note(self, text):
        self.notes.append(text)

    def done(self):
        self.finished += 1


def test_diff_and_plan_report_rows_read(tmp_path):
    spec = make_project(tmp_path, rows=30)
    a = build(spec, tmp_path / "a").out_dir
    rec = Recorder()
    diff_artifacts(a, a, progress=rec)
    rows = sum(json.loads((Path(a) / "manifest.json").read_text())["counts"]["written"].values())
    assert rows == 30
    assert rec.stages == [("read A", rows), ("read B", rows)]
    assert rec.advanced == {"read A": rows, "read B": rows} and rec.finished == 2
    rec = Recorder()
    plan(spec, progress=rec)
    assert [s for s, _ in rec.stages][:4] == ["scan inputs", "read + normalise", "select", "render + tokenise"]
    assert rec.advanced["read + normalise"] == 30


def test_build_reports_the_write_phase_in_rows_routed_then_shards_written(tmp_path):
    spec = make_project(tmp_path, rows=30, extra="output: {shard_rows: 9}\n")
    rec = Recorder()
    build(spec, tmp_path / "out", workers=2, cache=False, progress=rec)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    rows, shards = sum(manifest["counts"]["written"].values()), len(manifest["files"])
    assert rows == 30 and shards > 1
    assert rec.stages[-3:] == [("route rows", rows), ("write shards", shards), ("write manifest and card", None)]
    assert rec.advanced["route rows"] == rows and rec.advanced["write shards"] == shards
    assert rec.finished == len(rec.stages)


def test_train_callback_reports_steps_loss_and_tokens_per_second():
    rec = Recorder()
    cb = progress_callback(rec)
    state = SimpleNamespace(is_world_process_zero=True, global_step=4, max_steps=10, num_input_tokens_seen=400)
    cb.on_train_begin(None, state, None)
    assert rec.stages == [("train", 10)] and rec.advanced["train"] == 4  # a resumed run starts at its step
    for step in range(5, 11):
        state.global_step, state.num_input_tokens_seen = step, 100 * step
        cb.on_step_end(None, state, None)
    cb.on_log(None, state, None, logs={"loss": 1.23456})
    cb.on_train_end(None, state, None)
    assert rec.advanced["train"] == 10 and rec.finished == 1
    assert rec.notes[-1].startswith("loss 1.2346 · ") and rec.notes[-1].endswith(" tokens/s")
    other = SimpleNamespace(**{**vars(state), "is_world_process_zero": False})
    cb.on_step_end(None, other, None)  # other processes stay silent
    assert rec.advanced["train"] == 10


class FixedGenerator:
    def generate(self, prompts, *, stop, max_new_tokens):
        return ["Thought: easy.\nAction: finish[7]" for _ in prompts]


def test_eval_reports_items_and_a_running_score(tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n"
                            for q, a in [("3+4?", "7"), ("4+4?", "8"), ("5+2?", "7"), ("1+1?", "2")]))
    source = (REPO / "src" / "dsc" / "chat" / "templates" / "chatml.jinja").read_text()
    builder = PromptBuilder.from_source(source, [{"role": "user", "content": "{{ question }}"}])
    rec = Recorder()
    eps = run_task("sum", EvalTask(data=str(data), scorers=["em"]), generator=FixedGenerator(), builder=builder,
                   base_dir=tmp_path, progress=rec, stage="m: sum")
    assert [e.prediction for e in eps] == ["7"] * 4
    assert rec.stages == [("m: sum", 4)] and rec.advanced["m: sum"] == 4
    assert rec.notes[-1] == "em 0.500 (4/4)"


def test_rich_bar_is_quiet_off_a_terminal_and_shows_notes_on_one(monkeypatch):
    import dsc.cli.root as cli

    assert not cli.RichProgress().enabled  # the suite: DSC_NO_PROGRESS, and no terminal
    monkeypatch.delenv("DSC_NO_PROGRESS", raising=False)
    buf = io.StringIO()
    monkeypatch.setattr(cli, "err_console", Console(file=buf, force_terminal=True, width=140))
    bar = cli.RichProgress()
    assert bar.enabled
    bar.start("train", 10)
    bar.advance(5)
    bar.note("loss 0.5000 · 900 tokens/s")
    bar.close()
    out = buf.getvalue()
    assert "5/10" in out and "loss 0.5000 · 900 tokens/s" in out and "eta" in out
    monkeypatch.setattr(cli, "err_console", Console(file=io.StringIO(), force_terminal=False))
    assert not cli.RichProgress().enabled

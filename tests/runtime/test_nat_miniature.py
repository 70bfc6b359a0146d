"""The miniature NAT experiment (experiments/nat_miniature): its data is labelled by the scorer,
and the reduced run — one seed, 20 steps, 30 test questions — goes spec → build → train → eval
for all five arms (DPO and KTO: 10 SFT warm-up steps, then 10 preference steps) and writes its
numbers (not their size: that is RESULTS.md's business)."""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "nat_miniature"
sys.path.insert(0, str(EXPERIMENT))

import task as nat_task  # noqa: E402


def test_attempts_are_labelled_by_the_scorer_not_by_the_policy(tmp_path):
    stats = nat_task.generate(tmp_path, seed=3, sizes=nat_task.DataSizes(train_questions=80, test_questions=20))
    records = json.loads((tmp_path / "trajectories.json").read_text())
    answers = {json.loads(x)["id"]: json.loads(x)["answer"] for x in (tmp_path / "questions.jsonl").read_text().splitlines()}
    for r in records:
        last = r["conversations"][-1]["content"]
        finished = last.rsplit("Action: ", 1)[-1]
        pred = finished[len("finish["):-1] if finished.startswith("finish[") else None
        assert r["info"]["reward"] == (pred == answers[r["id"]]), r
    # noisy attempts that still reach the answer are positives, clean-looking failures exist too
    assert any(r["info"]["reward"] and r["info"]["mistakes"] for r in records)
    assert stats["successes"] and stats["failures"]
    # observations are the real calculator's output, malformed actions get the loop's refusal
    obs = [m["content"] for r in records for m in r["conversations"] if m["role"] == "user"]
    assert any(o.startswith("Observation: Invalid action") for o in obs)
    test_q = {json.loads(x)["question"] for x in (tmp_path / "test.jsonl").read_text().splitlines()}
    train_q = {json.loads(x)["question"] for x in (tmp_path / "questions.jsonl").read_text().splitlines()}
    assert not test_q & train_q


def test_trajectories_use_the_real_tool():
    p = nat_task.make_problem(random.Random(5))
    turns, mistakes = nat_task.sample_trajectory(p, random.Random(0), 0.0, dict(nat_task.DataSizes().weights))
    messages, prediction = nat_task.execute(turns)
    assert not mistakes and prediction == p.answer
    assert [m["content"] for m in messages if m["role"] == "user"] == [f"Observation: {v}" for v in p.values]


def _experiment_module():
    """The experiment's run.py, by its path (a bare `import run` could meet bench/run.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nat_miniature_run", EXPERIMENT / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_reduced_experiment_runs_end_to_end(tmp_path):
    experiment = _experiment_module()

    result = experiment.run(experiment.quick_settings(tmp_path / "work", tmp_path / "out"))
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["summary"] == result["summary"]
    assert [r["arm"] for r in saved["runs"]] == list(experiment.ARMS)
    for r in saved["runs"]:  # the same step budget: the preference arms' warm-up counts in it
        assert r["n"] == 30 and r["steps"] + (r["warmup"]["steps"] if r["warmup"] else 0) == 20, r
        assert (r["warmup"] is not None) == (r["arm"] in experiment.PREFERENCE_ARMS)
    for r in saved["runs"]:
        assert 0.0 <= r["success"] <= 1.0 and r["ci95"] is not None
    assert set(saved["summary"]["arms"]) == set(experiment.ARMS) and "met" in saved["summary"]["goal"]
    # the arms differ only where the recipe does
    arts = saved["artifacts"]
    assert len({a["version"] for a in arts.values()}) == 5
    assert set(arts["positives"]["per_label"]) == {"success"}
    assert set(arts["nut"]["per_label"]) == set(arts["nat"]["per_label"]) == {"success", "failure"}
    assert arts["nat"]["inference"]["messages"] == [{"role": "user", "content": "{{ question }} [Correct]"}]
    assert arts["nut"]["inference"]["messages"] == [{"role": "user", "content": "{{ question }}"}]
    # the preference arms pair the attempts NUT/NAT train on, within a question; KTO takes both sides
    assert arts["dpo"]["preference"]["pairs"] == arts["kto"]["preference"]["pairs"] > 0
    assert arts["kto"]["preference"]["kto_classes"]["desirable"]["train"] > 0
    # NAT's eval prompts carry the success string (the probe's the failure string); the others' neither
    for arm, where, string in (("nat", "eval", " [Correct]<|im_end|>"), ("nat", "probe", " [Incorrect]<|im_end|>"),
                               ("nut", "eval", None), ("positives", "eval", None), ("dpo", "eval", None),
                               ("kto", "eval", None)):
        items = (tmp_path / "work" / where / f"{arm}-s0" / f"{arm}-s0" / "arithmetic.jsonl").read_text().splitlines()
        prompts = [json.loads(x)["prompt"] for x in items]
        assert len(prompts) == 30 and all(p.startswith("<|im_start|>user\n") for p in prompts)
        assert all(string in p for p in prompts) if string else not any("Correct]" in p for p in prompts)
    probe = {r["arm"]: r["success_with_failure_string"] for r in saved["runs"]}
    assert 0.0 <= probe.pop("nat") <= 1.0 and set(probe.values()) == {None}
    md = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "| NAT (+ negatives, conditioned) |" in md and saved["artifacts"]["nat"]["version"] in md
    assert "| DPO (SFT warm-up, then pairs) |" in md and "KTO − NAT:" in md and "| warm-up | 0 |" in md
    assert set(saved["summary"]["preference"]) == {"dpo_minus_nat", "kto_minus_nat", "dpo_vs_nat", "kto_vs_nat"}
    assert (tmp_path / "out" / "success.png").read_bytes()[:4] == b"\x89PNG"

"""`dsc eval`: generate with a trained model on eval tasks and score with the recipes' metrics.

    dsc eval runs/fireact --tasks eval.yaml                 # tasks from a file
    dsc eval runs/fireact --artifact build/fireact          # tasks from the spec's eval: block
    dsc eval runs/a runs/b --tasks eval.yaml                # several models, one table
    dsc eval --predictions preds.jsonl --scorers em,f1      # score a file, no model

Outputs under --out: `<model>/<task>.jsonl` (one line per item: id, question, prompt, trajectory,
prediction, answer, scores) and `results.json` (per model and task: metric means with a seeded
bootstrap 95% confidence interval, the model, artifact version and template sha256).
"""
from __future__ import annotations

import csv
import json
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from dsc.artifact.reader import Artifact
from dsc.core.builds import spec_of
from dsc.core.errors import SpecError
from dsc.dialects.base import Dialect
from dsc.dialects.react import ReactDialect
from dsc.runtime.agent import AgentSettings, Episode, Generator, dialect_for, run_agent, run_direct, start_episodes
from dsc.runtime.artifact import load_artifact
from dsc.runtime.prompting import PromptBuilder, fill
from dsc.runtime.scorers import get_scorer
from dsc.runtime.tools import build_tools
from dsc.spec.runtime import EvalConfig, EvalTask, Layer, copy_layer, override_layer, resolve, yaml_layer

log = logging.getLogger("dsc.runtime")

RESULTS_FILE = "results.json"


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class EvalPlan:
    config: EvalConfig
    base_dir: Path  # relative data / corpus paths resolve against this


def resolve_eval_config(tasks_file: str | Path | None, artifact: Artifact | None,
                        overrides: Sequence[str] = ()) -> EvalPlan:
    """Tasks from `--tasks FILE`, else from the artifact's spec `eval:` block; key=value overrides
    apply to every task (`seed=` and `bootstrap=` to the run)."""
    layers: list[Layer] = []
    if tasks_file is not None:
        layers.append(yaml_layer(tasks_file))
        base = Path(tasks_file).resolve().parent
    elif artifact is not None and artifact.spec.get("eval"):
        layers.append(copy_layer("the spec's eval: block (manifest.json)", artifact.spec["eval"]))
        base = spec_dir_of(artifact, artifact.spec["eval"])
    else:
        raise SpecError("no eval tasks: pass --tasks FILE, or --artifact for a spec with an eval: block")
    if overrides:
        run_keys = set(EvalConfig.model_fields) - {"tasks"}
        names = list((layers[0].data or {}).get("tasks") or {})
        top, per_task = [], []
        for item in overrides:
            (top if item.split("=", 1)[0].split(".", 1)[0] in run_keys else per_task).append(item)
        layers.append(override_layer(top + [f"tasks.{n}.{item}" for n in names for item in per_task]))
    return EvalPlan(resolve(EvalConfig, layers, "eval"), base)


def spec_dir_of(artifact: Artifact, block: dict[str, Any]) -> Path:
    """Where the spec's relative eval paths resolve: its directory, which the manifest does not
    record (a path would make the artifact depend on where it was built). This machine's build
    index knows it (`dsc.core.builds`); for an artifact built elsewhere it is the nearest
    directory, going up from the artifact (the default output is `<spec dir>/build/<name>`), then
    the working directory, where every task's `data` file exists; the working directory when
    none is found (the missing file is then reported as such)."""
    spec = spec_of(artifact.manifest.version, artifact.manifest.spec_sha256)
    if spec is not None:
        return spec.parent
    tasks = block.get("tasks") if isinstance(block.get("tasks"), dict) else {}
    files = [str(t["data"]) for t in tasks.values() if isinstance(t, dict) and isinstance(t.get("data"), str)]
    candidates = [*Path(artifact.path).resolve().parents, Path.cwd()]
    for d in candidates:
        if files and all((d / f).is_file() for f in files):
            return d
    return Path.cwd()


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def read_records(path: Path, fmt: str = "auto") -> list[dict[str, Any]]:
    """jsonl, json (a list of objects, or {"data": [...]}) or csv (header row)."""
    if not path.is_file():
        raise SpecError(f"eval data file not found: {path}")
    if fmt == "auto":
        fmt = {".jsonl": "jsonl", ".json": "json", ".csv": "csv"}.get(path.suffix.lower(), "")
        if not fmt:
            raise SpecError(f"{path}: cannot tell the format from the extension; set format: jsonl|json|csv")
    try:
        if fmt == "csv":
            with path.open(encoding="utf-8", newline="") as f:
                return [dict(r) for r in csv.DictReader(f)]
        if fmt == "jsonl":
            rows = []
            with path.open(encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            raise SpecError(f"invalid JSON: {e.msg}", str(path), n, e.colno) from None
            return rows
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text ({e})") from None
    except json.JSONDecodeError as e:
        raise SpecError(f"invalid JSON: {e.msg}", str(path), e.lineno, e.colno) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise SpecError(f"{path}: expected a JSON list of objects")
    return data


def subset_indices(n: int, seed: int | None, size: int | None, start: int = 0) -> list[int]:
    """FireAct's selection: `random.Random(seed).shuffle(range(n))`, then `[start:start+size]`."""
    idx = list(range(n))
    if seed is not None:
        random.Random(seed).shuffle(idx)
    end = None if size is None else start + size
    return idx[start:end]


def load_items(task: EvalTask, base_dir: Path, name: str) -> list[dict[str, Any]]:
    """Items {"id", "question", "answer", "fields"} of one task, subset applied."""
    path = Path(task.data) if Path(task.data).is_absolute() else base_dir / task.data
    records = read_records(path, task.format)
    subset = task.subset
    picked = subset_indices(len(records), subset.seed if subset else None, subset.n if subset else None,
                            subset.start if subset else 0)
    items = []
    for i in picked:
        row = records[i]
        if not isinstance(row, dict):
            raise SpecError(f"task {name}: item {i} of {path} is not an object")
        for key in filter(None, [task.answer_field, None if task.question_template else task.question_field,
                                 task.id_field]):
            if key not in row:
                raise SpecError(f"task {name}: item {i} of {path} has no field '{key}' "
                                f"(it has: {', '.join(sorted(map(str, row)))})")
        question = fill(task.question_template, row, f"task {name}: question_template") \
            if task.question_template else str(row[task.question_field])
        items.append({"id": str(row[task.id_field]) if task.id_field else str(i), "question": question,
                      "answer": row[task.answer_field], "fields": row})
    return items


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def score(predictions: Sequence[str], answers: Sequence[Any], scorers: Sequence[str]) -> dict[str, list[float]]:
    fns = {name: get_scorer(name) for name in scorers}
    return {name: [float(fn(p or "", a)) for p, a in zip(predictions, answers)] for name, fn in fns.items()}


def bootstrap_ci(values: Sequence[float], resamples: int, seed: int) -> list[float] | None:
    """Percentile 95% interval of the mean over `resamples` seeded resamples."""
    import numpy as np

    if not values or resamples <= 0:
        return None
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [round(float(lo), 6), round(float(hi), 6)]


def summarize(scores: dict[str, list[float]], resamples: int, seed: int) -> dict[str, Any]:
    out = {}
    for name, values in scores.items():
        mean = sum(values) / len(values) if values else None
        out[name] = {"mean": round(mean, 6) if mean is not None else None,
                     "ci95": bootstrap_ci(values, resamples, seed)}
    return out


def harness_metrics(scores: dict[str, list[float]]) -> dict[str, float | None]:
    """One task's scores in lm-evaluation-harness's result shape: `"metric,filter"` keys (the filter
    is `none`), the mean and its standard error (sample standard deviation / sqrt(n), as the
    harness's `mean_stderr`), metric names as `dsc export lm-eval` names them."""
    import math

    from dsc.runtime.scorers import FILTER, metric_name

    out: dict[str, float | None] = {}
    for scorer, values in scores.items():
        name, n = metric_name(scorer), len(values)
        mean = sum(values) / n if n else None
        stderr = None
        if n > 1 and mean is not None:
            stderr = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)
        out[f"{name},{FILTER}"] = round(mean, 6) if mean is not None else None
        out[f"{name}_stderr,{FILTER}"] = round(stderr, 6) if stderr is not None else None
    return out


def harness_blocks(models: list[dict[str, Any]]) -> dict[str, Any]:
    """`results`, `versions` and `n-samples` as lm-eval writes them, keyed by task (by
    `<model>/<task>` when several models were evaluated)."""
    results: dict[str, Any] = {}
    versions: dict[str, Any] = {}
    samples: dict[str, Any] = {}
    for m in models:
        for task, res in m["tasks"].items():
            key = task if len(models) == 1 else f"{m['label']}/{task}"
            results[key] = {"alias": key, **res.get("harness", {})}
            versions[key] = 1.0
            samples[key] = {"original": res["n"], "effective": res["n"]}
    return {"results": results, "versions": versions, "n-samples": samples}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def observation_style(task: EvalTask, artifact: Artifact | None) -> str:
    """`auto`: inline when the artifact's assistant turns carry their own observations (FireAct's
    alpaca rows), else one turn per observation."""
    if task.observation != "auto":
        return task.observation
    if artifact is None or "train" not in artifact.splits:
        return "turn"
    table = artifact.table("train")
    # SFT rows carry `messages`; preference rows their assistant turns in chosen/rejected/completion
    columns = [c for c in ("messages", "chosen", "rejected", "completion") if c in table.column_names]
    for messages in (x for c in columns for x in table.column(c).slice(0, 200).to_pylist()):
        for m in messages or []:
            if m.get("role") == "assistant" and f"\n{task.observation_prefix.strip()}" in (m.get("content") or ""):
                return "inline"
    return "turn"


def run_task(name: str, task: EvalTask, *, generator: Generator, builder: PromptBuilder, base_dir: Path,
             artifact: Artifact | None = None, progress: Any = None, stage: str | None = None,
             trained_dialect: dict[str, Any] | None = None) -> list[Episode]:
    """Generate (direct or agent loop) for every item of one task.

    `progress` (the build's interface: start / advance / done) is told the items done, under
    `stage` (default: the task's name)."""
    items = load_items(task, base_dir, name)
    for s in task.scorers:
        get_scorer(s)  # unknown scorer names fail before any generation
    if task.prompt is not None:
        builder = PromptBuilder(builder.template, [m.model_dump() for m in task.prompt])
    on_done = None
    live: list[Episode] = []
    if progress is not None:
        progress.start(stage or name, len(items))

        def on_done(n: int) -> None:
            progress.advance(n)
            _note_score(progress, live, task.scorers[0])
    episodes = _run_items(items, task, generator, builder, base_dir, artifact, on_done, live.extend, trained_dialect)
    if progress is not None:
        _note_score(progress, live, task.scorers[0])
        progress.done()
    return episodes


def running_score(episodes: Sequence[Episode], scorer: str) -> str | None:
    """`em 0.412 (17/40)`: the first scorer's mean over the episodes finished so far."""
    done = [e for e in episodes if e.finished]
    if not done:
        return None
    fn = get_scorer(scorer)
    mean = sum(float(fn(e.prediction or "", e.answer)) for e in done) / len(done)
    return f"{scorer} {mean:.3f} ({len(done)}/{len(episodes)})"


def _note_score(progress: Any, episodes: Sequence[Episode], scorer: str) -> None:
    note = getattr(progress, "note", None)
    text = running_score(episodes, scorer)
    if note is not None and text is not None:
        note(text)


def with_tools_prompt(messages: list[dict[str, str]], tools_prompt: str) -> list[dict[str, str]]:
    """The messages with `tools_prompt` closing the system turn (a new system turn when none):
    where `to_dialect` puts it in the training rows."""
    from dsc.dialects.base import system_with

    # the messages are Jinja over the item; the listing is plain text (a description may hold "{{")
    return system_with(messages, "{% raw %}" + tools_prompt + "{% endraw %}")


def agent_dialect(task: EvalTask, trained: dict[str, Any]) -> Dialect:
    """The dialect a task's generations are parsed in: the task's `dialect:`, else the one the
    artifact was built in (`inference.dialect` of its manifest), else the task's `actions`."""
    return dialect_for(task.actions, task.dialect, trained.get("name"))


def _run_items(items: list[dict[str, Any]], task: EvalTask, generator: Generator, builder: PromptBuilder,
               base_dir: Path, artifact: Artifact | None,
               on_done: Callable[[int], None] | None,
               on_start: Callable[[list[Episode]], None] | None = None,
               trained_dialect: dict[str, Any] | None = None) -> list[Episode]:
    """`on_start(episodes)`: the episodes, before any generation (for a running score)."""
    if task.mode == "direct":
        episodes = start_episodes(items, builder)
        if on_start is not None:
            on_start(episodes)
        extract = re.compile(task.extract, re.DOTALL) if task.extract else None
        run_direct(episodes, generator, stop=task.stop or [], max_new_tokens=task.max_new_tokens, extract=extract,
                   on_done=on_done)
        return episodes
    tools = build_tools(task.tools, base_dir)
    style = observation_style(task, artifact)
    trained = trained_dialect if trained_dialect is not None else (
        artifact.inference.get("dialect") if artifact is not None else None) or {}
    dialect = agent_dialect(task, trained)
    if isinstance(dialect, ReactDialect):  # the task's observation prefix (FireAct's "Observation: ")
        default_stop = [f"\n{task.observation_prefix.strip()}"]
    else:
        default_stop = list(dialect.stop)
    settings = AgentSettings(max_steps=task.max_steps, max_new_tokens=task.max_new_tokens, observation=style,
                             observation_role=task.observation_role, observation_prefix=task.observation_prefix,
                             actions=task.actions, stop=tuple(task.stop if task.stop is not None else default_stop),
                             step_prefix=task.step_prefix, dialect=dialect.name)
    schemas = [t.schema() for t in tools.values()] if not dialect.text else None
    if trained.get("name") == dialect.name and trained.get("tools_in_system") and task.prompt is None:
        # trained with the tools listed in the system turn in the dialect's words: the eval tools, the same way
        builder = PromptBuilder(builder.template, with_tools_prompt(
            builder.messages, dialect.tools_prompt([t.schema() for t in tools.values()])))
    episodes = start_episodes(items, builder, schemas)
    if on_start is not None:
        on_start(episodes)
    run_agent(episodes, generator, builder, tools, settings, on_done=on_done)
    return episodes


def task_result(name: str, task: EvalTask, episodes: list[Episode], config: EvalConfig,
                out_file: Path | None) -> dict[str, Any]:
    scores = score([e.prediction for e in episodes], [e.answer for e in episodes], task.scorers)
    if out_file is not None:
        _write_jsonl(out_file, [
            {"id": e.id, "question": e.question, "prompt": e.prompt, "trajectory": e.trajectory(),
             "prediction": e.prediction, "answer": e.answer, "finished": e.finished,
             "scores": {k: v[i] for k, v in scores.items()}}
            for i, e in enumerate(episodes)])
    return {"n": len(episodes), "finished": sum(e.finished for e in episodes), "mode": task.mode,
            "metrics": summarize(scores, config.bootstrap, config.seed), "harness": harness_metrics(scores),
            "items_file": str(out_file) if out_file else None}


def evaluate_model(model: Any, plan: EvalPlan, out_dir: Path | None, progress: Any = None) -> dict[str, Any]:
    """All tasks for one loaded model (`generation.EvalModel`); `progress` as for `run_task`."""
    builder = PromptBuilder.from_source(model.template_source, model.inference["messages"], ref=model.template_ref)
    tasks: dict[str, Any] = {}
    for name, task in plan.config.tasks.items():
        model.generator.batch_size = task.batch_size
        model.generator.temperature = task.temperature
        episodes = run_task(name, task, generator=model.generator, builder=builder, base_dir=plan.base_dir,
                            artifact=model.artifact, progress=progress, stage=f"{model.label}: {name}",
                            trained_dialect=model.inference.get("dialect"))
        tasks[name] = task_result(name, task, episodes, plan.config,
                                  out_dir / model.label / f"{name}.jsonl" if out_dir else None)
    return {"model": model.ref, "label": model.label, "base_model": model.base_model,
            "artifact_version": model.artifact_version, "template_ref": model.template_ref,
            "template_sha256": model.template_sha256, "inference_label": model.inference.get("label"),
            "tasks": tasks}


def evaluate(models: Sequence[str], *, tasks_file: str | Path | None = None, artifact_dir: str | Path | None = None,
             out: str | Path | None = None, overrides: Sequence[str] = (), device: str = "auto",
             progress: Any = None) -> dict[str, Any]:
    """Evaluate each model on the tasks; writes per-item JSONL and results.json under `out`.

    `progress` (the CLI plugs a rich bar in; the library stays silent) is told the items done,
    one stage per model and task."""
    from dsc.runtime.generation import load_for_eval

    if not models:
        raise SpecError("no model to evaluate (or pass --predictions FILE)")
    artifact = load_artifact(artifact_dir) if artifact_dir is not None else None
    out_dir = Path(out) if out is not None else Path("eval_results")
    loaded_first = None
    if artifact is None and tasks_file is None:
        # The spec's eval: block of the artifact the (first) model was trained on.
        loaded_first = load_for_eval(models[0], device=device)
        artifact = loaded_first.artifact
    plan = resolve_eval_config(tasks_file, artifact, overrides)
    results = []
    labels: set[str] = set()
    for i, ref in enumerate(models):
        if loaded_first is not None:
            model, loaded_first = loaded_first, None  # drop the reference: one model in memory at a time
        else:
            model = load_for_eval(ref, artifact=artifact, device=device, seed=plan.config.seed)
        while model.label in labels:  # two models with the same directory name
            model.label = f"{model.label}-{i}"
        labels.add(model.label)
        results.append(evaluate_model(model, plan, out_dir, progress))
        model = None
    record = {"dsc_eval": 1, "models": results, **harness_blocks(results),
              "config": plan.config.model_dump(mode="json"), "base_dir": str(plan.base_dir)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RESULTS_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n",
                                        encoding="utf-8")
    return record


def score_predictions(path: str | Path, scorers: Sequence[str], *, out: str | Path | None = None,
                      seed: int = 0, bootstrap: int = 1000) -> dict[str, Any]:
    """Score a JSONL of {id, prediction, answer} without a model."""
    p = Path(path)
    rows = read_records(p, "jsonl" if p.suffix.lower() != ".json" else "json")
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or "prediction" not in row or "answer" not in row:
            raise SpecError("each prediction needs 'prediction' and 'answer' (and an 'id')", str(p), n)
    preds = [r["prediction"] if r["prediction"] is not None else "" for r in rows]
    scores = score([str(x) for x in preds], [r["answer"] for r in rows], scorers)
    task = {"n": len(rows), "finished": len(rows), "mode": "predictions",
            "metrics": summarize(scores, bootstrap, seed), "harness": harness_metrics(scores), "items_file": None}
    record = {"dsc_eval": 1, "models": [{"model": None, "label": p.stem, "predictions": str(p), "base_model": None,
                                         "artifact_version": None, "template_ref": None, "template_sha256": None,
                                         "inference_label": None, "tasks": {p.stem: task}}],
              "config": {"scorers": list(scorers), "seed": seed, "bootstrap": bootstrap}}
    record.update(harness_blocks(record["models"]))
    if out is not None:
        out_dir = Path(out)
        task["items_file"] = str(out_dir / f"{p.stem}.scored.jsonl")
        _write_jsonl(out_dir / f"{p.stem}.scored.jsonl",
                     [{**r, "scores": {k: v[i] for k, v in scores.items()}} for i, r in enumerate(rows)])
        (out_dir / RESULTS_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n",
                                            encoding="utf-8")
    return record


def results_table(record: dict[str, Any]):
    """One rich table: a row per model, a column per task/metric (mean and 95% CI)."""
    from rich.table import Table

    columns: list[tuple[str, str]] = []
    for m in record["models"]:
        for task, res in m["tasks"].items():
            for metric in res["metrics"]:
                if (task, metric) not in columns:
                    columns.append((task, metric))
    table = Table(title="dsc eval")
    table.add_column("model")
    table.add_column("artifact")
    for task, metric in columns:
        table.add_column(f"{task}\n{metric}", justify="right")
    for m in record["models"]:
        cells = []
        for task, metric in columns:
            res = m["tasks"].get(task, {}).get("metrics", {}).get(metric)
            cells.append(_cell(res, m["tasks"].get(task, {}).get("n")))
        table.add_row(m["label"], (m.get("artifact_version") or "-")[:12], *cells)
    return table


def _cell(res: dict[str, Any] | None, n: int | None) -> str:
    if not res or res.get("mean") is None:
        return "-"
    text = f"{100 * res['mean']:.1f}"
    if res.get("ci95"):
        lo, hi = res["ci95"]
        text += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return text + (f"  n={n}" if n is not None else "")

"""`dsc export lm-eval`: an lm-evaluation-harness task that prompts exactly as `dsc eval` does.

    dsc export lm-eval build/nat --split test --out lm_eval_tasks/nat      # items from the artifact's rows
    dsc export lm-eval build/nat --tasks eval.yaml --task strategyqa --out lm_eval_tasks/sqa
    lm_eval --model hf --model_args pretrained=runs/nat --include_path lm_eval_tasks/nat --tasks <name>

The export writes three files into DIR: `<name>.yaml` (the task), `<name>.jsonl` (one item per
line: the fully rendered prompt, the target, the gold answer as JSON) and `<module>.py` (loads the
data beside it and scores with dsc's own scorers, so the harness's numbers are dsc's numbers).
Each prompt is the artifact's inference-time conversation (its conditioning string included)
rendered with the artifact's chat template up to the model's turn, so run lm_eval *without*
`--apply_chat_template` (the template is already applied).

Items come from an eval task (`--tasks FILE` or the spec's `eval:` block; direct mode only: the
harness makes one generation per item) or, with `--split`, from the artifact's own rows: each
row's messages before its first supervised assistant turn, with the row's conditioning string
replaced by the inference-time one; the answer is a field of the row (`--answer meta.extra.gt`)
or, by default, the `finish[...]` answer (else the text) of its last supervised turn, for rows
not labelled as failures.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsc.artifact.reader import Artifact
from dsc.core.errors import SpecError, did_you_mean
from dsc.record import MISSING, Conversation, walk
from dsc.runtime.agent import extract_prediction
from dsc.runtime.artifact import load_artifact
from dsc.runtime.evaluation import load_items, resolve_eval_config
from dsc.runtime.prompting import PromptBuilder
from dsc.runtime.scorers import get_scorer, metric_name


@dataclass
class Item:
    id: str
    question: str
    prompt: str
    answer: Any


@dataclass
class Export:
    name: str
    artifact: Artifact
    out_dir: Path
    yaml_path: Path
    data_path: Path
    module_path: Path
    items: int
    skipped: int
    scorers: list[str]


def _slug(text: str) -> str:
    s = re.sub(r"[^0-9A-Za-z_]+", "_", text).strip("_").lower()
    return s if s and not s[0].isdigit() else f"t_{s}"


def _supervised(message: dict[str, Any], loss_policy: str) -> bool:
    if loss_policy == "all":
        return True
    return message.get("role") == "assistant" and message.get("loss") is not False


def row_item(row: dict[str, Any], art: Artifact, builder: PromptBuilder, answer_path: str | None
             ) -> Item | None:
    """One eval item from an artifact row, or None when the row has no usable answer (a failure
    trajectory without an `--answer` field)."""
    conv = Conversation.from_dict(row)
    messages = conv.template_messages()
    loss = str(art.spec.get("loss") or "assistant")
    first = next((i for i, m in enumerate(conv.messages) if m.role == "assistant"
                  and _supervised(m.to_dict(), "assistant" if loss == "all" else loss)), None)
    if first is None or first == 0:
        return None
    prompt_messages = messages[:first]
    # The row was trained with its own class's string; at inference the prompt carries the
    # inference class's string.
    cond = art.spec.get("condition") or {}
    own = (cond.get("strings") or {}).get(conv.meta.label or "")
    condition = art.manifest.inference.condition
    inference = condition.string if condition is not None else None
    if own and inference and own != inference:
        for m in prompt_messages:
            if own in (m.get("content") or ""):
                m["content"] = m["content"].replace(own, inference, 1)
                break
    if answer_path is not None:
        record = {**row, "meta": {**(row.get("meta") or {}), "extra": conv.meta.extra}}
        answer = walk(record, answer_path.split("."))
        if answer is MISSING or answer is None:
            return None
    else:
        if conv.meta.success is False:
            return None
        last = [m for m in conv.messages[first:] if m.role == "assistant" and _supervised(m.to_dict(), "assistant")]
        text = last[-1].content if last else ""
        answer = extract_prediction(text, None)  # the answer as `dsc eval` reads a reply
        if not answer:
            return None
    question = next((m.get("content") or "" for m in reversed(prompt_messages) if m.get("role") == "user"), "")
    prompt = builder.render(prompt_messages, conv.tools)
    return Item(id=conv.id, question=question, prompt=prompt, answer=answer)


def split_items(art: Artifact, split: str, answer_path: str | None) -> tuple[list[Item], int]:
    if split not in art.splits:
        raise SpecError(f"the artifact has no split '{split}'{did_you_mean(split, art.splits)}; "
                        f"splits: {', '.join(art.splits)}")
    builder = PromptBuilder.from_source(art.template_source, art.inference["messages"], ref=art.template_ref)
    items, skipped, prompts = [], 0, set()
    for row in art.table(split).to_pylist():
        item = row_item(row, art, builder, answer_path)
        if item is None:
            skipped += 1
        elif item.prompt not in prompts:  # several trajectories of one question: one item
            prompts.add(item.prompt)
            items.append(item)
    return items, skipped


def _yaml_scalar(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON scalar is a YAML scalar


MODULE = '''"""Written by `dsc export lm-eval` (dsc {version}) for task {name!r}, artifact {artifact} version {art_version}.

lm-eval loads the items beside this file and scores them with dsc's own scorers, so its numbers
are the numbers `dsc eval` reports for the same predictions."""
import json
import re
from pathlib import Path

import datasets

DATA = Path(__file__).resolve().parent / {data!r}
SCORERS = {scorers!r}  # dsc scorer -> lm-eval metric name
EXTRACT = {extract!r}  # a regex whose first group is the prediction; None: finish[x], else the text


def load(**kwargs):
    with DATA.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return datasets.DatasetDict({{"test": datasets.Dataset.from_list(rows)}})


def process_results(doc, results):
    from dsc.runtime.agent import extract_prediction
    from dsc.runtime.scorers import get_scorer

    prediction = extract_prediction(results[0], re.compile(EXTRACT, re.DOTALL) if EXTRACT else None)
    answer = json.loads(doc["answer_json"])
    return {{metric: float(get_scorer(scorer)(prediction, answer)) for scorer, metric in SCORERS.items()}}
'''


def write_task(out_dir: Path, name: str, items: list[Item], *, art: Artifact, scorers: list[str],
               until: list[str], max_new_tokens: int, extract: str | None, skipped: int) -> Export:
    from dsc import __version__

    for s in scorers:
        get_scorer(s)  # unknown names fail before anything is written
    if not items:
        raise SpecError(f"no items to export for task '{name}' ({skipped} rows without an answer; "
                        "give --answer FIELD for rows that carry their gold answer)")
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = _slug(name)
    data_path, module_path, yaml_path = out_dir / f"{name}.jsonl", out_dir / f"{slug}_dsc.py", out_dir / f"{name}.yaml"
    with data_path.open("w", encoding="utf-8") as f:
        for it in items:
            target = it.answer if isinstance(it.answer, str) else json.dumps(it.answer, ensure_ascii=False)
            f.write(json.dumps({"id": it.id, "question": it.question, "prompt": it.prompt, "target": target,
                                "answer_json": json.dumps(it.answer, ensure_ascii=False)}, ensure_ascii=False) + "\n")
    module_path.write_text(MODULE.format(version=__version__, name=name, artifact=art.name, art_version=art.version,
                                         data=data_path.name, scorers={s: metric_name(s) for s in scorers},
                                         extract=extract), encoding="utf-8")
    metrics = "".join(f"  - metric: {metric_name(s)}\n    aggregation: mean\n    higher_is_better: true\n"
                      for s in scorers)
    yaml_path.write_text(
        f"# Written by `dsc export lm-eval` from artifact {art.name} version {art.version}\n"
        f"# (template {art.template_ref}, sha256 {art.template_sha256[:12]}...). The prompts are already\n"
        f"# rendered with the artifact's chat template: run lm_eval without --apply_chat_template.\n"
        f"task: {_yaml_scalar(name)}\n"
        f"custom_dataset: !function {slug}_dsc.load\n"
        f"test_split: test\n"
        f"output_type: generate_until\n"
        f"doc_to_text: \"{{{{prompt}}}}\"\n"
        f"doc_to_target: \"{{{{target}}}}\"\n"
        f"target_delimiter: \"\"\n"
        f"num_fewshot: 0\n"
        f"generation_kwargs:\n"
        f"  until: {_yaml_scalar(until)}\n"
        f"  max_gen_toks: {int(max_new_tokens)}\n"
        f"  do_sample: false\n"
        f"  temperature: 0.0\n"
        f"process_results: !function {slug}_dsc.process_results\n"
        f"metric_list:\n{metrics}"
        f"metadata:\n  version: 1.0\n  dsc_artifact_version: {_yaml_scalar(art.version)}\n"
        f"  dsc_template_sha256: {_yaml_scalar(art.template_sha256)}\n",
        encoding="utf-8")
    return Export(name=name, artifact=art, out_dir=out_dir, yaml_path=yaml_path, data_path=data_path, module_path=module_path,
                  items=len(items), skipped=skipped, scorers=list(scorers))


def export_lm_eval(artifact: str | Path, out: str | Path, *, split: str | None = None,
                   tasks_file: str | Path | None = None, task: str | None = None, name: str | None = None,
                   scorers: list[str] | None = None, answer: str | None = None,
                   max_new_tokens: int | None = None) -> Export:
    """Write an lm-eval task for `artifact` into `out` (see the module docstring)."""
    art = load_artifact(artifact)
    until = list(art.end_of_turn)
    if split is not None or (tasks_file is None and not art.spec.get("eval")):
        split = split or "test"
        items, skipped = split_items(art, split, answer)
        return write_task(Path(out), name or _slug(f"{art.name}_{split}"), items, art=art,
                          scorers=scorers or ["em", "f1"], until=until, max_new_tokens=max_new_tokens or 256,
                          extract=None, skipped=skipped)
    plan = resolve_eval_config(tasks_file, art)
    names = list(plan.config.tasks)
    if task is None:
        if len(names) != 1:
            raise SpecError(f"the eval config has {len(names)} tasks ({', '.join(names)}): choose one with --task")
        task = names[0]
    if task not in plan.config.tasks:
        raise SpecError(f"no eval task '{task}'{did_you_mean(task, names)}; tasks: {', '.join(names)}")
    t = plan.config.tasks[task]
    if t.mode != "direct":
        raise SpecError(f"task '{task}' is an agent task: lm-eval makes one generation per item, so only "
                        "direct tasks can be exported")
    messages = [m.model_dump() for m in t.prompt] if t.prompt is not None else art.inference["messages"]
    builder = PromptBuilder.from_source(art.template_source, messages, ref=art.template_ref)
    items = [Item(id=it["id"], question=it["question"],
                  prompt=builder.render(builder.conversation(it["question"], it["fields"])), answer=it["answer"])
             for it in load_items(t, plan.base_dir, task)]
    return write_task(Path(out), name or _slug(task), items, art=art, scorers=scorers or list(t.scorers),
                      until=until + list(t.stop or []), max_new_tokens=max_new_tokens or t.max_new_tokens,
                      extract=t.extract, skipped=0)

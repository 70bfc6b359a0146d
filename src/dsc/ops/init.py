"""`dsc init DATA_FILE...`: a first spec for data files, written from what their rows show.

For each file, its rows (the whole file up to `MAX_ROWS`, and the comments say how much was read)
are read with the build's own readers and tried against every built-in format (with the field
names the rows actually use); the format that normalises the most rows wins, and the same
normalisation tells how many rows would be quarantined. A question table whose ids the
trajectories share becomes a `lookup:` source; a file of a few prompt messages (NAT's prompt
files) becomes `assemble:` turns read from it.
The rows are also searched for label fields (a reward, success or F1-like value) and for tool
use (tool calls, offered tools, ReAct actions). The spec is written with ruamel.yaml, each
detected choice commented with the evidence, and the usual next steps (conditioning, negatives,
mix, splits, tokenisation) as commented-out blocks. It builds as it is.
"""
from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

from dsc.compiler.stages.read.sources import iter_raw_rows
from dsc.compiler.stages.transforms.label import parse_bool, parse_score
from dsc.core.errors import SpecError
from dsc.record import BadRow
from dsc.spec.registries import get_format
from dsc.spec.sources import SourceSpec

MAX_ROWS = 20_000  # rows read per file: the whole file when it is smaller
ROLE_KEYS = ("role", "from", "speaker")
CONTENT_KEYS = ("content", "value", "text")
# Field names that carry a trajectory's outcome, most telling first.
LABEL_NAMES = ("reward", "success", "correct", "is_correct", "acc", "accuracy", "label", "f1", "score", "em")
QUESTION_KEYS = ("instruction", "question", "prompt", "query", "input")
ANSWER_KEYS = ("output", "answer", "response", "completion", "target")
REACT_LINE = re.compile(r"^(Thought|Action|Observation)\s*\d*\s*:", re.M)
REWARD_TEXT = re.compile(r"reward\s*=\s*(True|False|[01])\b")
ACTION = re.compile(r"^Action\s*\d*\s*:\s*([A-Za-z_]\w*)\s*[\[(]", re.M)


@dataclass
class Candidate:
    format: str
    fields: dict[str, str] = field(default_factory=dict)
    why: str = ""


@dataclass
class Sniffed:
    path: Path
    name: str
    format: str
    fields: dict[str, str]
    why: str
    sampled: int
    complete: bool  # the whole file was read
    bad: Counter[str]
    label: str | None  # a raw field path with boolean-like values
    label_note: str | None
    tool_note: str | None
    id_field: str | None
    ids: set[str] = field(default_factory=set)  # the id field's values (to find the tables they join)
    tools: bool = False  # rows offer tools or make tool calls

    def read_note(self) -> str:
        return f"{self.sampled} rows (the whole file)" if self.complete else f"the first {self.sampled} rows"

    def summary(self) -> str:
        label = f", label {self.label}" if self.label else ""
        return f"{self.path}: {self.format}{label} ({self.why}; read {self.read_note()})"


@dataclass
class Table:
    """A file of questions (and answers), not trajectories: a `lookup:` source when the
    trajectories' ids are its keys."""

    path: Path
    name: str
    keys: dict[str, set[str]]  # candidate key column → its values
    columns: list[str]

    def summary(self) -> str:
        return f"{self.path}: a question table, a `lookup:` source joined to the trajectories by their ids"


@dataclass
class PromptFile:
    """A few prompt messages (NAT's prompt files: a JSON list of from/value turns)."""

    path: Path
    turns: list[tuple[str, str]]  # (role, field path of the text)

    def summary(self) -> str:
        return f"{self.path}: {len(self.turns)} prompt turns, read into `assemble: prepend` by field"


def read_sample(path: Path, n: int = MAX_ROWS) -> list[dict[str, Any]]:
    """The first `n` rows of a data file (all of a smaller one), through the build's readers
    (unparseable rows skipped)."""
    from pydantic import ValidationError

    rows: list[dict[str, Any]] = []
    try:
        spec = SourceSpec(path=str(path.resolve()), format="openai")
    except ValidationError:
        raise SpecError(f"{path}: not a data file dsc reads (by extension: .jsonl, .json, .csv, .parquet)") from None
    try:
        for raw in iter_raw_rows("init", spec, path.parent):
            if raw.data is not None:
                rows.append(raw.data)
            if len(rows) > n:  # one more than kept: tells a longer file from one of exactly n rows
                break
    except SpecError as e:
        raise SpecError(f"{path}: not a data file dsc reads ({e.message})") from None
    except (OSError, ValueError) as e:
        raise SpecError(f"{path}: cannot read rows: {e}") from None
    return rows


def _list_of_dicts(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def candidates(rows: list[dict[str, Any]]) -> list[Candidate]:
    """Every (format, fields) the rows could be, from their keys."""
    keys = Counter(k for r in rows for k in r)
    out: list[Candidate] = []
    for key in keys:
        lists = [r[key] for r in rows if _list_of_dicts(r.get(key))]
        if not lists:
            continue
        inner = Counter(k for msgs in lists for m in msgs for k in m)
        role = next((k for k in ROLE_KEYS if k in inner), None)
        content = next((k for k in CONTENT_KEYS if k in inner), None)
        if role is None or content is None:
            continue
        shape = f"`{key}` holds messages of {role}/{content}"
        roles = {str(m.get(role)) for msgs in lists for m in msgs}
        if roles & {"user", "assistant", "system", "tool"}:
            if key == "conversations" or "info" in keys:
                out.append(Candidate("nat", _fields({"messages": key, "role": role, "content": content},
                                                   get_format("nat").fields), f"{shape}, NAT's trajectory shape"))
            if key == "conversation":
                out.append(Candidate("agent_flan", {}, f"{shape}, Agent-FLAN's shape"))
            out.append(Candidate("openai", _fields({"messages": key, "role": role, "content": content},
                                                   get_format("openai").fields), f"{shape} (OpenAI chat messages)"))
        if roles & {"human", "gpt", "function_call", "observation"}:
            out.append(Candidate("sharegpt", _fields({"messages": key, "role": role, "content": content},
                                                     get_format("sharegpt").fields), f"{shape} (ShareGPT)"))
    strings = {k for k in keys if all(isinstance(r.get(k), str) for r in rows if k in r)}
    question = _named(QUESTION_KEYS[:-1], strings)
    answer = _named(ANSWER_KEYS, strings)
    if question and answer:
        qa = {"instruction": question, "output": answer}
        if "input" in strings and question != "input":
            qa["input"] = "input"
        else:
            qa["input"] = ""
        alpaca_fields = _fields(qa, get_format("alpaca").fields)
        react_rows = sum(1 for r in rows if len(REACT_LINE.findall(str(r.get(answer) or ""))) >= 2)
        if react_rows:
            out.append(Candidate("react", _fields({"instruction": question, "output": answer, "input": qa["input"]},
                                                  get_format("react").fields),
                                 f"`{answer}` is ReAct text (Thought/Action/Observation) in {react_rows} of "
                                 f"{len(rows)} sampled rows"))
        out.append(Candidate("alpaca", alpaca_fields, f"`{question}` → user, `{answer}` → assistant (alpaca)"))
    return out


def _named(names: tuple[str, ...], keys: set[str]) -> str | None:
    """The first of `names` among `keys`, ignoring case (CSV headers are often `Question`)."""
    lower = {k.lower(): k for k in sorted(keys)}
    return next((lower[n] for n in names if n in lower), None)


def _fields(wanted: dict[str, str], defaults: Any) -> dict[str, str]:
    """Only the overrides a spec needs: the fields whose raw name differs from the format's default."""
    return {k: v for k, v in wanted.items() if k in defaults and defaults[k] != v}


def trial(cand: Candidate, rows: list[dict[str, Any]]) -> tuple[int, Counter[str]]:
    """How many rows the format normalises, and the reasons of those it cannot."""
    fmt = get_format(cand.format)
    ok, bad = 0, Counter()
    for r in rows:
        try:
            norm = fmt(r, cand.fields)
            if not norm.messages:
                raise BadRow("empty conversation")
            ok += 1
        except BadRow as e:
            bad[str(e).split(":")[0]] += 1
        except Exception as e:  # noqa: BLE001 - a format that chokes on a shape is just not this format
            bad[f"{type(e).__name__}"] += 1
    return ok, bad


def _walk_scalars(value: Any, prefix: str = "", depth: int = 0):
    if isinstance(value, dict) and depth < 2:
        for k, v in value.items():
            yield from _walk_scalars(v, f"{prefix}{k}.", depth + 1)
    elif not isinstance(value, (dict, list)):
        yield prefix[:-1], value


def find_label(rows: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """A field every sampled row has with boolean-like values (`label: {field: ...}`), else a note
    on a score-like field (for `bins:`)."""
    seen: dict[str, list[Any]] = {}
    for r in rows:
        for path, v in _walk_scalars(r):
            seen.setdefault(path, []).append(v)
    def rank(path: str) -> int:
        leaf = path.rsplit(".", 1)[-1].lower()
        return LABEL_NAMES.index(leaf) if leaf in LABEL_NAMES else len(LABEL_NAMES)
    for path in sorted(seen, key=lambda p: (rank(p), p)):
        if rank(path) == len(LABEL_NAMES):
            break
        values = seen[path]
        if len(values) < len(rows):
            continue
        bools = [parse_bool(v) for v in values]
        if all(b is not None for b in bools):
            return path, f"`{path}` is true in {sum(bools)} and false in {len(bools) - sum(bools)} sampled rows"
        scores = [parse_score(v) for v in values]
        if all(s is not None for s in scores):
            return None, (f"`{path}` holds scores ({min(scores):g}–{max(scores):g}); label by bins, e.g. "
                          f"label: {{field: {path}, bins: [{{class: failure, lt: 0.5}}, {{class: success, ge: 0.5}}]}}")
    return None, None


def tool_note(rows: list[dict[str, Any]], fmt: str, fields: dict[str, str]) -> str | None:
    norm_fmt = get_format(fmt)
    calls, offered, actions = 0, 0, Counter()
    for r in rows:
        try:
            norm = norm_fmt(r, fields)
        except Exception:  # noqa: BLE001 - bad rows are counted elsewhere
            continue
        if norm.tools:
            offered += 1
        if any(m.tool_calls for m in norm.messages):
            calls += 1
        for m in norm.messages:
            if m.role == "assistant":
                actions.update(ACTION.findall(m.content or ""))
    parts = []
    if calls:
        parts.append(f"{calls} of {len(rows)} sampled rows make tool calls")
    if offered:
        parts.append(f"{offered} offer tools")
    if actions:
        parts.append("ReAct actions " + ", ".join(f"{a} ({n})" for a, n in actions.most_common(6)))
    return "; ".join(parts) or None


def find_id(rows: list[dict[str, Any]]) -> str | None:
    for key in ID_KEYS:
        if all(isinstance(r.get(key), (str, int)) and not isinstance(r.get(key), bool) for r in rows):
            return key
    return None


DATA_SUFFIXES = (".gz", ".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".pq")


def source_name(path: Path) -> str:
    """A source name from a file name: all of it but the data extensions (so that
    `strategyqa_gpt-3.5_positive.json` and `strategyqa_gpt-3.5_negative.json` stay apart)."""
    name = path.name
    while name.lower().endswith(DATA_SUFFIXES):
        name = name[: name.rfind(".")]
    return _slug(name)


def _slug(text: str) -> str:
    s = re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")
    return s or "data"


ID_KEYS = ("id", "qid", "question_id", "idx", "_id", "key")
PROMPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _prompt_file(path: Path, rows: list[dict[str, Any]]) -> PromptFile | None:
    """A handful of rows that are single messages, not trajectories (NAT's prompt JSON)."""
    if not 0 < len(rows) <= 8:
        return None
    turns = []
    for i, r in enumerate(rows):
        role_key = next((k for k in ROLE_KEYS if k in r), None)
        text_key = next((k for k in CONTENT_KEYS if isinstance(r.get(k), str)), None)
        if role_key is None or text_key is None or set(r) - {role_key, text_key, "loss"}:
            return None
        role = PROMPT_ROLES.get(str(r[role_key]).lower())
        if role is None:
            return None
        turns.append((role, f"{i}.{text_key}"))
    return PromptFile(path, turns)


def _table(path: Path, name: str, rows: list[dict[str, Any]]) -> Table | None:
    """Rows of scalar fields with a question-like column: a table, not trajectories."""
    keys = {k for r in rows for k in r}
    if _named(QUESTION_KEYS, keys) is None or any(isinstance(v, (list, dict)) for r in rows for v in r.values()):
        return None
    candidates_ = {k: {str(r[k]) for r in rows if isinstance(r.get(k), (str, int)) and not isinstance(r.get(k), bool)}
                   for k in sorted(keys) if k.lower() in ID_KEYS}
    return Table(path, name, {k: v for k, v in candidates_.items() if v}, sorted(keys))


def sniff(path: Path, name: str) -> Sniffed | Table | PromptFile:
    rows = read_sample(path)
    complete = len(rows) <= MAX_ROWS
    rows = rows[:MAX_ROWS]
    prompt = _prompt_file(path, rows)
    if prompt is not None:
        return prompt
    if not rows:
        raise SpecError(f"{path}: no rows could be read (is it empty, or not JSON lines / JSON / CSV / parquet?)")
    scored = []
    for i, cand in enumerate(candidates(rows)):
        ok, bad = trial(cand, rows)
        scored.append((ok, -i, cand, bad))
    if not scored or max(s[0] for s in scored) == 0:
        table = _table(path, name, rows)
        if table is not None:
            return table
        keys = sorted({k for r in rows[:3] for k in r})
        tried = "; ".join(f"{c.format}: {sum(b.values())} bad rows" for _, _, c, b in scored) or "no format fits"
        all_keys = {k for r in rows for k in r}
        if _named(QUESTION_KEYS, all_keys) and _named(ANSWER_KEYS, all_keys):
            tried += "; it looks like a question/answer table: an eval file (`dsc eval --tasks`) or a `lookup:` source"
        raise SpecError(
            f"{path}: cannot tell the format of these rows; the first rows have keys {keys} ({tried}). "
            "dsc reads openai (`messages` of role/content), sharegpt (`conversations` of from/value), alpaca "
            "(`instruction`/`output`), react (a question and ReAct text), nat (`conversations` + `info`), "
            "agent_flan (`conversation`); write the source by hand with `format:` and `fields:` "
            "(a question/answer file belongs under `eval:` or is a `lookup:` source)")
    ok, _, best, bad = max(scored, key=lambda s: (s[0], s[1]))
    label, label_note = find_label(rows)
    if label is None and label_note is None and any(REWARD_TEXT.search(str(r)) for r in rows):
        label_note = ("trajectories end with `reward = ...`: label them with "
                      'label: {field: messages.-1.content, pattern: "reward = (\\w+)"}')
    id_field = find_id(rows)
    tools = tool_note(rows, best.format, best.fields)
    return Sniffed(path=path, name=name, format=best.format, fields=best.fields, why=best.why, sampled=len(rows),
                   complete=complete, bad=bad, label=label, label_note=label_note, tool_note=tools,
                   id_field=id_field, ids={str(r[id_field]) for r in rows} if id_field else set(),
                   tools=bool(tools) and ("tool calls" in tools or "offer tools" in tools))


NEXT_STEPS = """\
Common next steps (uncomment and adapt; `dsc validate` checks them, docs/SPEC.md explains them):

filters: [non_empty, {finished: "finish\\\\[.+\\\\]"}, valid_actions: true]

condition:                      # NAT: tell the model which trajectories succeed (needs `label:`)
  turn: first_user              # or system, last_user, an assembled turn's id
  position: suffix              # or prefix
  strings: {success: " Solve the question **correctly**.", failure: " Solve the question **incorrectly**."}
  inference: success

negatives:                      # Agent-FLAN: teach when not to call tools
  - {rule: irrelevant_tools, pool: tools.json, k: 2}
  - {rule: no_tools, response: "I cannot call a tool for this; here is what I know."}

mix:                            # rows per source (a bucket without `where` is the source of its name)
  SOURCE: {count: 500}          # or {rate: 0.5}, {ratio: 2.0, of: OTHER, per_group_max: 3}, {proportion: 0.7}

split: {validation: 0.05, test: 0.05, by: group}
tokenize: {tokenizer: path/to/tokenizer, max_length: 4096, overflow: drop}
template: llama-3               # chatml, llama-2, llama-3, qwen2.5, mistral, alpaca, a .jinja file, tokenizer:<dir>
"""


def _flow(d: dict[str, Any]) -> Any:
    from ruamel.yaml.comments import CommentedMap

    m = CommentedMap(d)
    m.fa.set_flow_style()
    return m


def build_spec(files: list[Path], out: Path) -> tuple[str, list[Sniffed | Table | PromptFile]]:
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    if not files:
        raise SpecError("give at least one data file")
    names: list[str] = []
    found: list[Sniffed | Table | PromptFile] = []
    for f in files:
        if not f.is_file():
            raise SpecError(f"data file not found: {f}")
        base = source_name(f)
        name = base
        k = 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
        found.append(sniff(f, name))
    sniffed = [s for s in found if isinstance(s, Sniffed)]
    tables = [s for s in found if isinstance(s, Table)]
    prompts = [s for s in found if isinstance(s, PromptFile)]
    if not sniffed:
        what = "; ".join(f"{s.path} looks like a question/answer table" if isinstance(s, Table)
                         else f"{s.path} holds prompt turns" for s in found)
        raise SpecError(f"none of the files holds trajectories or conversations ({what}): a question/answer table "
                        "is a `lookup:` source joined to trajectories by their ids (give those files too) or eval "
                        "data (`dsc eval --tasks`)")
    joins = {t.name: _join(t, sniffed) for t in tables}
    for t_ in tables:
        if joins[t_.name] is None:
            raise SpecError(f"{t_.path}: a question table (columns {t_.columns}) whose ids no trajectory file "
                            "shares; give the trajectories it belongs to, or put it under `eval:` as test data")
    spec = CommentedMap()
    spec["dsc"] = 1
    spec["name"] = sniffed[0].name.replace("_", "-")
    spec.yaml_set_start_comment(f"Written by `dsc init` from {len(files)} data file(s); check every choice, then "
                                "`dsc build` this file.")
    spec["seed"] = 0
    sources = CommentedMap()
    total_bad, total_rows = 0, 0
    labels = []
    for s in sniffed:
        notes: list[str] = []
        src = CommentedMap()
        rel = os.path.relpath(s.path.resolve(), out.resolve().parent)
        src["path"] = rel if not rel.startswith("..") else str(s.path.resolve())  # beside or below the spec: relative
        src["format"] = s.format
        src.yaml_add_eol_comment(f"{s.why}; normalises {s.sampled - sum(s.bad.values())} of {s.read_note()}",
                                 "format")
        if s.fields:
            src["fields"] = _flow(s.fields)
        if s.id_field:
            src["id"] = s.id_field
            src.yaml_add_eol_comment("rows sharing it form one group: one split, one cap", "id")
        else:
            notes.append("group: rows with the same prompt (the turns before the first assistant turn) form one "
                         "group, so a question's trajectories share a split; `group: <field path>` names another key")
        if s.bad:
            notes.append("bad sampled rows (quarantined by a build): "
                         + ", ".join(f"{r} ({n})" for r, n in s.bad.most_common(3)))
        if s.tool_note:
            notes.append(f"tools: {s.tool_note}")
        if s.label_note and not s.label:
            notes.append(f"label: {s.label_note}")
        sources[s.name] = src
        if notes:
            sources.yaml_set_comment_before_after_key(s.name, before="\n".join(notes), indent=2)
        total_bad += sum(s.bad.values())
        total_rows += s.sampled
        if s.label:
            labels.append(s)
    for t_ in tables:
        key, shared = joins[t_.name]  # type: ignore[misc]
        rel = os.path.relpath(t_.path.resolve(), out.resolve().parent)
        sources[t_.name] = _flow({"path": rel if not rel.startswith("..") else str(t_.path.resolve()), "lookup": key})
        sources.yaml_add_eol_comment(f"joined, not emitted: {shared} trajectory ids are its `{key}`s; its columns "
                                     f"({', '.join(t_.columns)}) are `lookup.{t_.name}.<column>` in assemble:",
                                     t_.name)
    spec["sources"] = sources
    if prompts or tables:
        spec["assemble"] = _assemble(prompts, tables, out)
        spec.yaml_add_eol_comment("the prompt before each trajectory (check its order and text)", "assemble")
    if labels and len({s.label for s in labels}) == 1:
        spec["label"] = _flow({"field": labels[0].label})
        spec.yaml_add_eol_comment(f"{labels[0].label_note} (success / failure classes)", "label")
    if any(s.tools for s in sniffed):
        spec["template"] = "qwen2.5"
        spec.yaml_add_eol_comment("the rows use tools: a template that renders tool specs and calls (chatml "
                                  "refuses them)", "template")
    else:
        spec["template"] = "chatml"
    spec["loss"] = "assistant"
    spec.yaml_add_eol_comment("supervise assistant turns; `all` trains on the whole text (FireAct)", "loss")
    if total_bad:
        share = math.ceil(100 * total_bad / max(total_rows, 1)) + 1
        spec["max_bad_rows"] = f"{share}%"
        spec.yaml_add_eol_comment(f"{total_bad} of {total_rows} rows read cannot be normalised", "max_bad_rows")
    spec["split"] = _flow({"validation": 0.0})
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 110
    buf = StringIO()
    yaml.dump(spec, buf)
    steps = NEXT_STEPS.replace("SOURCE", sniffed[0].name).replace("OTHER", sniffed[-1].name)
    text = buf.getvalue() + "\n" + "".join(f"# {line}".rstrip() + "\n" for line in steps.splitlines())
    return text, found


def _join(table: Table, sniffed: list[Sniffed]) -> tuple[str, int] | None:
    """(the table's key column, how many trajectory ids it holds) for the best-matching key."""
    ids = set().union(*(s.ids for s in sniffed))
    best = max(((len(ids & values), key) for key, values in table.keys.items()), default=(0, ""))
    return (best[1], best[0]) if best[0] else None


def _assemble(prompts: list[PromptFile], tables: list[Table], out: Path) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    turns = CommentedSeq()
    for p in prompts:
        rel = os.path.relpath(p.path.resolve(), out.resolve().parent)
        for role, path in p.turns:
            turns.append(_flow({"role": role, "file": rel if not rel.startswith("..") else str(p.path.resolve()),
                                "field": path, "loss": False}))
    block = CommentedMap()
    if tables:
        t_ = tables[0]
        question = _named(QUESTION_KEYS, set(t_.columns))
        turns.append(_flow({"id": "question", "role": "user", "content": f"{{{{ lookup.{t_.name}.{question} }}}}",
                            "loss": False}))
        block["question"] = f"lookup.{t_.name}.{question}"
    block["prepend"] = turns
    return block


def write_init(files: list[Path], out: Path, *, force: bool = False) -> tuple[Path, list[Sniffed | Table | PromptFile]]:
    if out.exists() and not force:
        raise SpecError(f"{out} exists; choose another --out or pass --force")
    text, sniffed = build_spec(files, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out, sniffed

"""Local tools for the agent loop; a registry where users add their own.

A tool takes one string argument (ReAct `search[query]`, or the single parameter of a JSON tool
call) and returns the observation text. Each tool's settings come from the eval task's `tools:`
block and are validated by the tool's own pydantic model (unknown keys are errors).

- `search`: BM25 (the `bm25s` library) over a local corpus file (jsonl of {"title"?, "text"}).
- `calculate`: arithmetic on numbers with + - * / // % ** and parentheses, parsed with `ast`
  and evaluated node by node (never `eval`), with limits on size.
- `finish`: ends the episode; its argument is the prediction (handled by the loop).
"""
from __future__ import annotations

import ast
import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from dsc.core.errors import SpecError, allowed_list, did_you_mean
from dsc.core.strict import StrictSettings
from dsc.spec.registries import TOOLS, register_tool

FINISH = "finish"


@dataclass
class Tool:
    name: str
    description: str
    parameter: str  # the argument's name in a JSON tool call
    run: Callable[[str], str]

    def __call__(self, argument: str) -> str:
        return self.run(argument)

    def schema(self) -> dict[str, Any]:
        """OpenAI-style function spec (what chat templates render under `tools`)."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": {"type": "object", "properties": {self.parameter: {"type": "string"}},
                           "required": [self.parameter]}}}


ToolFactory = Callable[[dict[str, Any], Path], Tool]



def tool_names() -> list[str]:
    return TOOLS.names()


def get_tool_factory(name: str) -> ToolFactory:
    try:
        return TOOLS.get(name).fn
    except ValueError as e:  # unknown (did-you-mean), or an entry-point plugin that fails
        raise SpecError(str(e)) from None


def build_tools(settings: dict[str, dict[str, Any]], base_dir: Path) -> dict[str, Tool]:
    """The task's tools by name, `finish` always included."""
    tools: dict[str, Tool] = {}
    for name in [*settings, *([FINISH] if FINISH not in settings else [])]:
        tools[name] = get_tool_factory(name)(dict(settings.get(name) or {}), base_dir)
    return tools


def _settings(model: type[BaseModel], tool: str, data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = list(model.model_fields)
            raise SpecError(f"tools.{tool}: unknown setting '{key}'{did_you_mean(key, allowed)}; "
                            f"allowed: {allowed_list(allowed)}") from None
        raise SpecError(f"tools.{tool}.{key}: {err['msg']}") from None


# --- finish ------------------------------------------------------------------------------------


class _NoSettings(StrictSettings):
    pass  # a tool without settings: any key is unknown


@register_tool(FINISH)
def _finish(settings: dict[str, Any], base_dir: Path) -> Tool:
    _settings(_NoSettings, FINISH, settings)
    return Tool(FINISH, "Return the final answer and finish the task.", "answer", lambda arg: "Episode finished")


# --- search: BM25 over a local corpus ----------------------------------------------------------------


class SearchSettings(StrictSettings):
    corpus: str  # jsonl of {"title"?: str, "text": str}; relative to the eval config
    k: int = Field(1, ge=1)  # passages per observation (FireAct's Google tool returned one snippet)
    max_chars: int = Field(1000, ge=1)  # per passage
    text_field: str = "text"
    title_field: str = "title"


class BM25Search:
    def __init__(self, passages: list[tuple[str | None, str]], k: int = 1, max_chars: int = 1000):
        import bm25s

        if not passages:
            raise SpecError("tools.search: the corpus is empty")
        self.passages = passages
        self.k = min(k, len(passages))
        self.max_chars = max_chars
        self._bm25s = bm25s
        docs = [f"{title}\n{text}" if title else text for title, text in passages]
        self.index = bm25s.BM25()
        self.index.index(bm25s.tokenize(docs, stopwords="en", show_progress=False), show_progress=False)

    @classmethod
    def from_file(cls, path: Path, settings: SearchSettings) -> "BM25Search":
        if not path.is_file():
            raise SpecError(f"tools.search: corpus file not found: {path}")
        passages: list[tuple[str | None, str]] = []
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    text = row[settings.text_field]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise SpecError(f"tools.search: {path}:{line_no}: expected a JSON object with a "
                                    f"'{settings.text_field}' field") from None
                title = row.get(settings.title_field)
                passages.append((str(title) if title else None, str(text)))
        return cls(passages, k=settings.k, max_chars=settings.max_chars)

    def search(self, query: str) -> list[tuple[str | None, str, float]]:
        # Tokenised as plain strings (no ids) so the query maps onto the corpus vocabulary.
        tokens = self._bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)
        if not tokens[0]:
            return []
        ids, scores = self.index.retrieve(tokens, k=self.k, show_progress=False, n_threads=1)
        hits = []
        for doc, score in zip(ids[0].tolist(), scores[0].tolist()):
            if score > 0:
                title, text = self.passages[int(doc)]
                hits.append((title, text, float(score)))
        return hits

    def __call__(self, query: str) -> str:
        hits = self.search(query)
        if not hits:
            return f"No results found for '{query.strip()}'."
        parts = [(f"{title}: {text}" if title else text)[: self.max_chars] for title, text, _ in hits]
        return parts[0] if len(parts) == 1 else " ".join(f"#{i}: {p}" for i, p in enumerate(parts, 1))


@register_tool("search")
def _search(settings: dict[str, Any], base_dir: Path) -> Tool:
    s = _settings(SearchSettings, "search", settings)
    path = Path(s.corpus) if Path(s.corpus).is_absolute() else base_dir / s.corpus
    engine = BM25Search.from_file(path, s)
    return Tool("search", "Search a local corpus and return the best matching passage.", "query", engine)


# --- calculate: safe arithmetic ------------------------------------------------------------------------

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_MAX_CHARS = 500
_MAX_MAGNITUDE = 1e100
_MAX_EXPONENT = 1000


class CalcError(ValueError):
    pass


def _check(value: Any) -> Any:
    if isinstance(value, complex) or (isinstance(value, float) and not math.isfinite(value)):
        raise CalcError("the result is not a finite real number")
    if abs(value) > _MAX_MAGNITUDE:
        raise CalcError("the result is too large")
    return value


def _eval_node(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _check(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _check(_UNARY[type(node.op)](_eval_node(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise CalcError("the exponent is too large")
        try:
            return _check(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise CalcError("division by zero") from None
        except OverflowError:
            raise CalcError("the result is too large") from None
    raise CalcError(f"unsupported expression element: {type(node).__name__}")


def format_number(value: int | float) -> str:
    """Integers exactly; other values to 10 significant digits (as NAT's calculator prints floats)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return format(value, ".10g")


def calculate(expression: str) -> str:
    """Evaluate arithmetic safely; errors come back as an observation, not an exception."""
    text = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    text = text.replace(",", "")  # thousands separators: 1,000 → 1000
    if text.endswith("="):
        text = text[:-1]
    if not text:
        return "Error: empty expression"
    if len(text) > _MAX_CHARS:
        return "Error: expression too long"
    try:
        tree = ast.parse(text, mode="eval")
        return format_number(_eval_node(tree))
    except SyntaxError:
        return f"Error: cannot parse '{expression.strip()}'"
    except CalcError as e:
        return f"Error: {e}"


@register_tool("calculate")
def _calculate(settings: dict[str, Any], base_dir: Path) -> Tool:
    _settings(_NoSettings, "calculate", settings)
    return Tool("calculate", "Evaluate an arithmetic expression and return the result.", "expression", calculate)

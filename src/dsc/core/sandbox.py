"""The Jinja sandbox every template runs in (chat templates and the spec's text templates), with
limits on what one render may cost.

Jinja's `ImmutableSandboxedEnvironment` already refuses Python internals (`__class__`,
`__globals__`, ... are undefined or a SecurityError), mutation of lists and dicts, and `range`s
over `MAX_RANGE` items; its formatter applies the same rules inside `'{0.x}'.format(...)`. What it
does not bound is cost: `'x' * 10**10`, `10 ** 10 ** 9`, a macro that doubles a string forty
times, `'%099999999d' | format(1)`, nested loops that never end, or endless recursion. Every render
here runs under these limits (documented in docs/RELIABILITY.md); a render that hits
one raises `TemplateLimitError`, which stops the build with one message (a template that runs away
on one row is the template's fault, and would on every row).
"""
from __future__ import annotations

import operator
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Annotated, Any

import jinja2
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import Concat
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment, safe_range
from pydantic import AfterValidator

from dsc.core.errors import BuildError

MAX_RENDER_CHARS = 64 << 20  # characters one render may produce (a 50 MB row still renders)
MAX_RENDER_SECONDS = 10.0  # wall time of one render (the built-ins take milliseconds per row)
MAX_TEMPLATE_INT = 10_000  # largest number passed to a call or filter (`center`, `indent`, ...); range: MAX_RANGE
MAX_POWER_BITS = 4096  # largest result of `**`, in bits
MAX_RECURSION = 200  # nested macro calls
MAX_RENDER_BLOCKS = 1_000_000  # output pieces of one render (each costs memory beyond its characters)
__all__ = ["MAX_RANGE", "MAX_RENDER_CHARS", "MAX_RENDER_SECONDS", "MAX_TEMPLATE_INT", "MAX_POWER_BITS",
           "MAX_RECURSION", "MAX_RENDER_BLOCKS", "BoundedSandbox", "JinjaText", "TemplateLimitError", "bounded_render",
           "compile_text", "text_environment"]

_WIDTH_RE = re.compile(r"\d+")


class TemplateLimitError(BuildError):
    """A template went past one of the render limits (exit 1: the build stops)."""


class _RenderState(threading.local):
    deadline: float | None = None
    depth: int = 0


def _limit(what: str) -> TemplateLimitError:
    return TemplateLimitError(f"template stopped: {what} (dsc's template limits: docs/RELIABILITY.md)")


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict)) else 0


def _predicted_size(name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """An upper bound of the result size of the few string operations whose result can be far
    larger than their inputs, computed before running them (0 when not one of them)."""
    if not isinstance(value, str):
        return 0
    biggest = max((_size(a) for a in (*args, *kwargs.values())), default=0)
    if name == "replace" and len(args) >= 2:
        return len(value) + value.count(str(args[0]) or " ") * _size(args[1])
    if name == "join" and args:
        items = args[0] if isinstance(args[0], (list, tuple)) else ()
        return sum(len(str(x)) for x in items) + len(value) * len(items)
    if name in ("format", "format_map"):  # every placeholder may be the largest argument
        return len(value) + (value.count("%") + value.count("{")) * biggest
    if name == "indent":
        width = next((a for a in (*args, *kwargs.values()) if isinstance(a, int)), 4)
        return len(value) + (value.count("\n") + 1) * max(0, width)
    return 0


class _BoundedCodeGenerator(CodeGenerator):
    """`a ~ b` (Concat) checked like `a + b`: Jinja does not route it through the environment."""

    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        self.write("environment.checked_size(")
        super().visit_Concat(node, frame)
        self.write(")")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox plus cost limits on operators, calls, filters and output."""

    intercepted_binops = frozenset({"*", "**", "+"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._state = _RenderState()
        self.filters = {name: self.bounded_filter(name, f) for name, f in self.filters.items()}
        # `lipsum(n)` writes n paragraphs: an amplifier no chat or prompt template needs.
        self.globals.pop("lipsum", None)

    # -- what Jinja routes through the environment ----------------------------------------------

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        self.check_time()
        if operator_ == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
                if right * max(1, abs(left).bit_length()) > MAX_POWER_BITS:
                    raise _limit(f"{left} ** {right} is larger than {MAX_POWER_BITS} bits")
            return operator.pow(left, right)
        if operator_ == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(n, int) and _size(seq) and _size(seq) * n > MAX_RENDER_CHARS:
                    raise _limit(f"repeating a value of length {_size(seq)} {n} times is over "
                                 f"{MAX_RENDER_CHARS:,} items")
            return operator.mul(left, right)
        result = operator.add(left, right)
        if _size(result) > MAX_RENDER_CHARS:
            raise _limit(f"a value of {_size(result):,} characters/items is over {MAX_RENDER_CHARS:,}")
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's
        self = __self
        self.check_time()
        name = getattr(__obj, "__name__", type(__obj).__name__)
        if __obj is not safe_range:  # range has its own cap (MAX_RANGE items)
            self._check_arguments(args, kwargs, name)
        self._check_predicted(name, getattr(__obj, "__self__", None), args, kwargs)
        state = self._state
        state.depth += 1
        try:
            if state.depth > MAX_RECURSION:
                raise _limit(f"calls nested more than {MAX_RECURSION} deep (a macro calling itself?)")
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            state.depth -= 1
        if _size(result) > MAX_RENDER_CHARS:
            raise _limit(f"a call returned {_size(result):,} characters/items (over {MAX_RENDER_CHARS:,})")
        return result

    def wrap_str_format(self, value: Any) -> Any:
        """`'...'.format(...)`: Jinja's sandboxed formatter, after the width and size checks."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            self._check_format(fmt)
            mapping = args[0] if value.__name__ == "format_map" and args else {}
            self._check_predicted("format", fmt, args, {**kwargs, **(mapping if isinstance(mapping, dict) else {})})
            return wrapped(*args, **kwargs)

        return checked

    def getattr(self, obj: Any, attribute: str) -> Any:
        return self.checked_size(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        return self.checked_size(super().getitem(obj, argument))

    def checked_size(self, value: Any) -> Any:
        if _size(value) > MAX_RENDER_CHARS:
            raise _limit(f"a value of {_size(value):,} characters/items is over {MAX_RENDER_CHARS:,}")
        return value

    # -- checks ---------------------------------------------------------------------------------

    def check_time(self) -> None:
        deadline = self._state.deadline
        if deadline is not None and time.monotonic() > deadline:
            raise _limit(f"the render took over {MAX_RENDER_SECONDS:g} s")

    def _check_arguments(self, args: Iterable[Any], kwargs: dict[str, Any], what: str) -> None:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_TEMPLATE_INT:
                raise _limit(f"{what}() was given {value}, over the limit of {MAX_TEMPLATE_INT:,} for a number "
                             "passed to a call or filter")
            if _size(value) > MAX_RENDER_CHARS:
                raise _limit(f"{what}() was given a value of {_size(value):,} characters/items")

    def _check_predicted(self, name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        predicted = _predicted_size(name, value, args, kwargs)
        if predicted > MAX_RENDER_CHARS:
            raise _limit(f"{name} would make up to {predicted:,} characters (over {MAX_RENDER_CHARS:,})")

    def _check_format(self, fmt: Any) -> None:
        if isinstance(fmt, str):
            for m in _WIDTH_RE.finditer(fmt):
                if len(m.group()) > 7 or int(m.group()) > MAX_TEMPLATE_INT:
                    raise _limit(f"the format string {fmt[:40]!r} asks for a width over {MAX_TEMPLATE_INT:,}")

    def bounded_filter(self, name: str, f: Any) -> Any:
        """`f` checked like every filter of this environment (for filters added later)."""
        if getattr(f, "_dsc_bounded", False):
            return f
        pass_arg = jinja2.utils._PassArg.from_obj(f)  # Jinja passes context/env to these filters

        def bounded(*args: Any, **kwargs: Any) -> Any:
            self.check_time()
            offset = 1 if pass_arg is not None else 0  # the context/environment argument
            value, rest = args[offset] if len(args) > offset else None, args[offset + 1:]
            self._check_arguments(rest, kwargs, f"filter {name}")
            if name == "format" and isinstance(value, str):
                self._check_format(value)
            if name == "join" and isinstance(value, (list, tuple)):  # `items | join(sep)`
                self._check_predicted("join", str(rest[0]) if rest else "", (value,), {})
            else:
                self._check_predicted(name, value, rest, kwargs)
            result = f(*args, **kwargs)
            if _size(result) > MAX_RENDER_CHARS:
                raise _limit(f"filter {name} returned {_size(result):,} characters (over {MAX_RENDER_CHARS:,})")
            return result

        if pass_arg is not None:
            bounded.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
        bounded._dsc_bounded = True  # type: ignore[attr-defined]
        bounded.__name__ = getattr(f, "__name__", name)
        return bounded

    @contextmanager
    def limited(self) -> Iterator[None]:
        """One render's time limit (re-entrant: an inner render keeps the outer deadline)."""
        state = self._state
        outer = state.deadline
        if outer is None:
            state.deadline = time.monotonic() + MAX_RENDER_SECONDS
        try:
            yield
        finally:
            state.deadline = outer


def bounded_render(env: BoundedSandbox, blocks: Iterator[str], out: list[str]) -> None:
    """Collect a template's output blocks into `out` under the output and time limits.
    Python's own limits (recursion, memory) become the same clear error."""
    total = 0
    try:
        with env.limited():
            for n, block in enumerate(blocks, 1):
                total += len(block)
                if total > MAX_RENDER_CHARS:
                    raise _limit(f"the output passed {MAX_RENDER_CHARS:,} characters")
                if n > MAX_RENDER_BLOCKS:
                    raise _limit(f"the output passed {MAX_RENDER_BLOCKS:,} pieces")
                env.check_time()
                out.append(block)
    except RecursionError:
        raise _limit("recursion too deep") from None
    except OverflowError as e:  # Jinja's own range cap (MAX_RANGE), a float too large
        raise _limit(str(e)) from None
    except MemoryError:
        raise _limit("out of memory while rendering") from None


# ---------------------------------------------------------------------------------------------
# Text templates (prompt turns, responses): sandboxed Jinja, undefined names are errors
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def text_environment() -> BoundedSandbox:
    # Jinja's default drops one trailing newline: a prompt file's final newline is not part of
    # the turn (an editor adds one), the same as for inline text.
    return BoundedSandbox(undefined=jinja2.StrictUndefined, autoescape=False)


@lru_cache(maxsize=256)
def compile_text(source: str) -> jinja2.Template:
    """Compile a text template (ValueError with the Jinja message when it does not parse)."""
    try:
        return text_environment().from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"template does not parse: {e.message} (template line {e.lineno})") from None


def _compiles(source: str) -> str:
    compile_text(source)
    return source


# A spec string that is a Jinja text template: it must parse at `dsc validate`, not per row.
JinjaText = Annotated[str, AfterValidator(_compiles)]

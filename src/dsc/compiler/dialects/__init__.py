"""Tool-call dialects: one module each, a writer and a parser between the canonical record's
tool calls and the dialect's text (see `base`). Import the grammar from here:

    from dsc.compiler.dialects import get_dialect, DIALECTS, register_dialect
    from dsc.compiler.dialects.react import parse_action, format_action   # the ReAct grammar
"""
from __future__ import annotations

from .base import DIALECTS, Dialect, Turn, get_dialect, register_dialect
from . import agent_flan, hermes, openai, qwen_agent, react  # noqa: F401  (built-ins register)

__all__ = ["DIALECTS", "Dialect", "Turn", "get_dialect", "register_dialect"]

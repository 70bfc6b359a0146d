"""The one public module for plugin authors: everything a plugin registers with, and the types
its functions take and return. Other dsc modules may move between versions; these names stay.

    from dsc.plugins import FILTERS, Message, Normalised, register_format, require_str

| name | for |
|---|---|
| `register_format`, `FORMATS`, `Normalised`, `require_str`, `optional_str`, `without`, `kind` | input formats: `fn(row, fields) -> Normalised` |
| `FILTERS` | quality filters: `@FILTERS.register("name", ArgType)` on `fn(conv, arg) -> reason or None` |
| `CONVERTERS`, `NEGATIVE_RULES`, `Strict` | convert steps and negative rules with a `Strict` options model |
| `SCORERS`, `register_scorer`, `TOOLS`, `register_tool` | the eval's scorers and tools |
| `DIALECTS`, `register_dialect`, `Dialect`, `ToolDef` | tool-call dialects and the declared tools they take |
| `Conversation`, `Message`, `ToolCall`, `BadRow` | the canonical record, and the error that sends a row to the quarantine |
"""
from dsc.compiler.stages.read.formats.common import Normalised, kind, optional_str, require_str, without
from dsc.core.strict import Strict
from dsc.dialects.base import Dialect
from dsc.dialects.tools import ToolDef
from dsc.record import BadRow, Conversation, Message, ToolCall
from dsc.spec.registries import (
                                 CONVERTERS,
                                 DIALECTS,
                                 FILTERS,
                                 FORMATS,
                                 NEGATIVE_RULES,
                                 SCORERS,
                                 TOOLS,
                                 register_dialect,
                                 register_format,
                                 register_scorer,
                                 register_tool,
)

__all__ = ["BadRow", "CONVERTERS", "Conversation", "DIALECTS", "Dialect", "FILTERS", "FORMATS", "Message",
           "NEGATIVE_RULES", "Normalised", "SCORERS", "Strict", "TOOLS", "ToolCall", "ToolDef", "kind",
           "optional_str", "register_dialect", "register_format", "register_scorer", "register_tool",
           "require_str", "without"]

"""Helpers shared by the format functions (and by user-written formats).

Everything here either returns a value or raises `BadRow` with a reason precise enough that
the quarantine tells the user what to fix: which message, which key, what was found and what
was expected.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dsc.core.canonical import compact_json
from dsc.core.errors import allowed_list
from dsc.record import MISSING, BadRow, Message, ToolCall, get_path

__all__ = [
    "CALL",
    "Normalised",
    "kind",
    "messages_of",
    "optional_str",
    "parse_arguments",
    "parse_messages",
    "parse_tool_call",
    "parse_tools",
    "require_str",
    "without",
]


@dataclass
class Normalised:
    """What a format function returns: the conversation, the tools offered, and the raw row's
    fields the format did not consume (kept in `meta.extra` for labels and lookups)."""

    messages: list[Message]
    tools: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# Pseudo-role of a ShareGPT `function_call` turn: an assistant turn whose value is a JSON call.
CALL = "<call>"


def kind(value: Any) -> str:
    """A JSON-ish name for the type of `value`, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def without(row: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """A copy of `row` minus the consumed field paths (nested paths remove only their leaf;
    a parent object left empty is removed too). The input row is never modified."""
    out = dict(row)
    for path in paths:
        if not path:
            continue
        if path in out:
            del out[path]
            continue
        _drop_nested(out, path.split("."))
    return out


def _drop_nested(obj: dict[str, Any], parts: list[str]) -> None:
    head, rest = parts[0], parts[1:]
    child = obj.get(head)
    if not rest:
        obj.pop(head, None)
        return
    if isinstance(child, Mapping):
        copy = dict(child)  # copy on the way down: the raw row stays untouched
        _drop_nested(copy, rest)
        if copy:
            obj[head] = copy
        else:
            del obj[head]


def require_str(row: Mapping[str, Any], path: str, *, allow_empty: bool = False) -> str:
    value = get_path(row, path)
    if value is MISSING:
        raise BadRow(f"missing field '{path}'")
    if not isinstance(value, str):
        raise BadRow(f"field '{path}' is {kind(value)}, expected a string")
    if not allow_empty and not value.strip():
        raise BadRow(f"field '{path}' is empty")
    return value


def optional_str(row: Mapping[str, Any], path: str) -> str | None:
    """A string field that may be absent or null (absent, null and "" all give None)."""
    value = get_path(row, path)
    if value is MISSING or value is None:
        return None
    if not isinstance(value, str):
        raise BadRow(f"field '{path}' is {kind(value)}, expected a string")
    return value or None


# ---------------------------------------------------------------------------------------------
# Tool calls and tools
# ---------------------------------------------------------------------------------------------


def parse_arguments(args: Any, where: str) -> str:
    """Tool-call arguments → compact JSON string of an object, keys in the order written.

    Accepts an object, a JSON string of an object, or absent/null/"" (no arguments)."""
    if args is None or args is MISSING or (isinstance(args, str) and not args.strip()):
        return "{}"
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as e:
            raise BadRow(f"{where}: arguments are not valid JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(args, Mapping):
        raise BadRow(f"{where}: arguments must be a JSON object, got {kind(args)}")
    return compact_json(args)


def parse_tool_call(obj: Any, where: str) -> ToolCall:
    """One call in OpenAI shape (`{id, type, function: {name, arguments}}`) or flat
    (`{name, arguments, id?}`, the shape ShareGPT and dsc's own records use)."""
    if not isinstance(obj, Mapping):
        raise BadRow(f"{where} is {kind(obj)}, expected an object")
    fn = obj.get("function")
    if fn is None:
        fn = obj
    elif not isinstance(fn, Mapping):
        raise BadRow(f"{where}: 'function' is {kind(fn)}, expected an object")
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BadRow(f"{where}: missing tool name" if name is None else
                     f"{where}: tool name is {kind(name) if not isinstance(name, str) else 'empty'}")
    call_id = obj.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise BadRow(f"{where}: 'id' is {kind(call_id)}, expected a string")
    return ToolCall(name=name, arguments=parse_arguments(fn.get("arguments"), f"{where} ('{name}')"), id=call_id)


def parse_tools(value: Any, path: str) -> list[dict[str, Any]] | None:
    """The tools offered to the model, as a list of OpenAI tool specs
    (`{"type": "function", "function": {name, description, parameters}}`).

    Accepts a list or a JSON string of one (ShareGPT keeps tools as a string); bare function
    specs (`{name, parameters}`) are wrapped. Absent, null, "" and [] all mean no tools."""
    if value is MISSING or value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise BadRow(f"field '{path}' is not valid JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(value, list):
        raise BadRow(f"field '{path}' is {kind(value)}, expected a list of tool specs")
    tools: list[dict[str, Any]] = []
    for i, tool in enumerate(value):
        where = f"field '{path}', tool {i}"
        if not isinstance(tool, Mapping):
            raise BadRow(f"{where} is {kind(tool)}, expected an object")
        fn = tool.get("function")
        if fn is not None:
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise BadRow(f"{where}: 'function' must be an object with a string 'name'")
            tools.append(dict(tool))
        elif isinstance(tool.get("name"), str) and tool["name"]:
            tools.append({"type": "function", "function": dict(tool)})
        else:
            raise BadRow(f"{where} has neither 'name' nor 'function.name'")
    return tools or None


# ---------------------------------------------------------------------------------------------
# Message lists (openai, sharegpt, nat, agent_flan)
# ---------------------------------------------------------------------------------------------


def _content_text(value: Any, where: str, role: str) -> str | None:
    """Message content → text. Lists of OpenAI content parts are joined when all are text;
    a tool result given as an object is kept as compact JSON, keys in their order."""
    if value is MISSING or value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                what = f"of type '{part.get('type')}'" if isinstance(part, Mapping) else kind(part)
                raise BadRow(f"{where}: content part {j} {what} is not supported (text only)")
        return "".join(texts)
    if role == "tool" and isinstance(value, Mapping):
        return compact_json(value)
    raise BadRow(f"{where}: content is {kind(value)}, expected a string")


def _loss(m: Mapping[str, Any], loss_key: str, weight_key: str | None, where: str) -> bool | None:
    value = get_path(m, loss_key)
    if value is MISSING or value is None:
        if weight_key is None or weight_key not in m:
            return None  # the spec's loss policy decides
        value = m[weight_key]
        # OpenAI's fine-tuning format marks untrained assistant turns with weight 0.
        if value in (0, 1) and not isinstance(value, bool):
            return bool(value)
        raise BadRow(f"{where}: '{weight_key}' is {value!r}, expected 0 or 1")
    if isinstance(value, bool):
        return value
    raise BadRow(f"{where}: '{loss_key}' is {kind(value)}, expected true, false or null")


def _optional_key(m: Mapping[str, Any], key: str, where: str) -> str | None:
    value = m.get(key)
    if value is None or isinstance(value, str):
        return value
    raise BadRow(f"{where}: '{key}' is {kind(value)}, expected a string")


def _call_value(value: Any, where: str) -> list[ToolCall]:
    """A ShareGPT `function_call` turn: its value is a JSON `{"name", "arguments"}` (or a list
    of them for parallel calls)."""
    if value is MISSING or value is None:
        raise BadRow(f"{where}: value is missing or null (expected a JSON call)")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise BadRow(f"{where}: value is not valid JSON: {e.msg} at column {e.colno}"
                         " (expected {\"name\": ..., \"arguments\": ...})") from None
    items = value if isinstance(value, list) else [value]
    if not items:
        raise BadRow(f"{where}: empty list of calls")
    return [parse_tool_call(c, f"{where}, call {j}" if len(items) > 1 else where) for j, c in enumerate(items)]


def parse_messages(
    items: Any,
    container: str,
    *,
    role_key: str,
    content_key: str,
    loss_key: str,
    roles: Mapping[str, str],
    alternate_keys: tuple[str, str] | None = None,
    weight_key: str | None = None,
) -> list[Message]:
    """A list of message objects → `Message`s.

    `roles` maps raw role names (compared lower-cased) to canonical roles, or to `CALL` for a
    ShareGPT function-call turn. `alternate_keys` is a (role, content) key pair tried when a
    message lacks `role_key` (NAT accepts role/content and ShareGPT from/value alike).
    OpenAI keys `tool_calls`, legacy `function_call`, `name` and `tool_call_id` are read when present."""
    if items is MISSING:
        raise BadRow(f"missing field '{container}'")
    if not isinstance(items, list):
        raise BadRow(f"field '{container}' is {kind(items)}, expected a list of messages")
    if not items:
        raise BadRow(f"empty conversation: field '{container}' is an empty list")
    messages = []
    for i, m in enumerate(items):
        where = f"message {i}"
        if not isinstance(m, Mapping):
            raise BadRow(f"{where} is {kind(m)}, expected an object")
        rkey, ckey = role_key, content_key
        if alternate_keys is not None and get_path(m, rkey) is MISSING and alternate_keys[0] in m:
            rkey, ckey = alternate_keys
        raw_role = get_path(m, rkey)
        if raw_role is MISSING:
            raise BadRow(f"{where} has no '{rkey}' key")
        if not isinstance(raw_role, str):
            raise BadRow(f"{where}: '{rkey}' is {kind(raw_role)}, expected a string")
        role = roles.get(raw_role.strip().lower())
        if role is None:
            raise BadRow(f"{where}: unknown role '{raw_role}' (allowed: {allowed_list(roles)})")
        where = f"message {i} ({raw_role})"
        loss = _loss(m, loss_key, weight_key, where)
        content = get_path(m, ckey)
        if role == CALL:
            messages.append(Message("assistant", "", tool_calls=_call_value(content, where), loss=loss))
            continue
        text = _content_text(content, where, role)
        calls: list[ToolCall] | None = None
        if role == "assistant":
            raw_calls = m.get("tool_calls")
            if raw_calls is not None:
                if not isinstance(raw_calls, list):
                    raise BadRow(f"{where}: 'tool_calls' is {kind(raw_calls)}, expected a list")
                calls = [parse_tool_call(c, f"{where}, tool call {j}") for j, c in enumerate(raw_calls)] or None
            legacy = m.get("function_call")
            if legacy is not None:
                if calls:
                    raise BadRow(f"{where}: has both 'tool_calls' and 'function_call'")
                calls = [parse_tool_call(legacy, f"{where}, function_call")]
        if text is None:
            if not calls:
                raise BadRow(f"{where}: content is missing or null")
            text = ""
        name = _optional_key(m, "name", where)
        call_id = _optional_key(m, "tool_call_id", where) if role == "tool" else None
        messages.append(Message(role, text, tool_calls=calls, name=name, tool_call_id=call_id, loss=loss))
    return messages


# Raw role names accepted by each message-list format (compared lower-cased).
OPENAI_ROLES: dict[str, str] = {
    "system": "system",
    "developer": "system",  # OpenAI's newer name for the system role
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",  # legacy function-result role
}
SHAREGPT_ROLES: dict[str, str] = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "function_call": CALL,
    "observation": "tool",
    "function": "tool",
    "tool": "tool",
}

# NAT and Agent-FLAN store role/content(/loss) lists and also accept ShareGPT names.
CHAT_ROLES: dict[str, str] = {**SHAREGPT_ROLES, **OPENAI_ROLES}


def messages_of(row: Mapping[str, Any], fields: Mapping[str, str], roles: Mapping[str, str],
                **options: Any) -> list[Message]:
    """`parse_messages` of the row's `fields["messages"]` list, read with the format's `role`,
    `content` and `loss` field names (`options`: alternate_keys, weight_key)."""
    return parse_messages(get_path(row, fields["messages"]), fields["messages"], role_key=fields["role"],
                          content_key=fields["content"], loss_key=fields["loss"], roles=roles, **options)


def role_content_list(row: Mapping[str, Any], fields: Mapping[str, str]) -> Normalised:
    """The body shared by `nat` and `agent_flan`: a role/content/loss list (from/value accepted
    per message); every other raw field is kept in `extra`."""
    messages = messages_of(row, fields, CHAT_ROLES, alternate_keys=("from", "value"))
    return Normalised(messages, None, without(row, [fields["messages"]]))

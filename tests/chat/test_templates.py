"""Chat templates: rendering identical to transformers, built-ins faithful to the originals,
loading and its errors."""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import jinja2.meta
import pytest

from dsc.core.errors import SpecError
from dsc.record import BadRow, Conversation, Message, Meta, Provenance, ToolCall
from dsc.core.canonical import canonical_json
from dsc.chat.render import render, render_prompt
from dsc.spec.sections import LossPolicy
from dsc.chat.templating import (
    _COMPILED,
    BUILTIN_TEMPLATES,
    NAMED_SPECIAL_TOKENS,
    ChatTemplate,
    TemplateRenderError,
    _new_environment,
    load_template,
)

HERE = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# Helpers shared with test_render.py / test_tokenize.py
# ---------------------------------------------------------------------------------------------


def make_conv(messages: list[dict], tools: list[dict] | None = None, cid: str = "c") -> Conversation:
    """A Conversation from OpenAI-style dicts (tool-call arguments given as objects)."""
    out = []
    for m in messages:
        calls = m.get("tool_calls")
        out.append(Message(
            role=m["role"], content=m.get("content") or "",
            tool_calls=[ToolCall(name=c["function"]["name"], arguments=canonical_json(c["function"]["arguments"]),
                                 id=c.get("id")) for c in calls] if calls else None,
            name=m.get("name"), tool_call_id=m.get("tool_call_id"), loss=m.get("loss"),
        ))
    return Conversation(id=cid, group=cid, messages=out, tools=tools,
                        meta=Meta(source="test", provenance=Provenance(file="t.jsonl", file_sha256="0", row=0)))


@lru_cache(maxsize=2)
def fireact_messages(path: str) -> tuple[list[dict], ...]:
    with open(path, encoding="utf-8") as f:
        return tuple(json.loads(line)["messages"] for line in f if line.strip())


@pytest.fixture(scope="session")
def fireact_gpt(fireact_dir) -> tuple[list[dict], ...]:
    rows = fireact_messages(str(fireact_dir / "gpt_format__multitask.jsonl"))
    assert len(rows) == 1344
    return rows


@pytest.fixture(scope="session")
def hf_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def hf_render(tok, messages, source, tools=None, **kwargs) -> tuple[str, list[tuple[int, int]]]:
    """transformers' own rendering: the text (apply_chat_template) and the character spans of the
    generation blocks that its return_assistant_tokens_mask is built from."""
    from transformers.utils.chat_template_utils import render_jinja_template

    text = tok.apply_chat_template(messages, tools=tools, tokenize=False, chat_template=source, **kwargs)
    (text2,), (indices,) = render_jinja_template(
        conversations=[messages], tools=tools, chat_template=source, return_assistant_tokens_mask=True,
        **{**tok.special_tokens_map, **kwargs})
    assert text2 == text
    return text, [tuple(ix) for ix in indices]


# Hand-made tool conversations (OpenAI shape).
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "the city"}},
                   "required": ["city"]}}}
SEARCH_TOOL = {"type": "function", "function": {
    "name": "search", "description": "Search the web",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}


def tool_conversations() -> list[tuple[list[dict], list[dict] | None]]:
    call = {"type": "function", "id": "abc123XYZ", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    call2 = {"type": "function", "id": "def456UVW", "function": {"name": "search", "arguments": {"query": "é \"q\""}}}
    return [
        ([{"role": "user", "content": "Weather in Paris?"},
          {"role": "assistant", "content": "", "tool_calls": [call]},
          {"role": "tool", "content": "22 C, sunny", "tool_call_id": "abc123XYZ"},
          {"role": "assistant", "content": "It is 22 C and sunny in Paris."}], [WEATHER_TOOL]),
        ([{"role": "system", "content": "You are terse."},
          {"role": "user", "content": "Weather and news?"},
          {"role": "assistant", "content": "Let me check both.", "tool_calls": [call, call2]},
          {"role": "tool", "content": "22 C", "tool_call_id": "abc123XYZ"},
          {"role": "tool", "content": "{\"hits\": 3}", "tool_call_id": "def456UVW"},
          {"role": "assistant", "content": "22 C; 3 hits."},
          {"role": "user", "content": "Thanks"},
          {"role": "assistant", "content": "You're welcome."}], [WEATHER_TOOL, SEARCH_TOOL]),
        # tools offered but not used (Agent-FLAN's "irrelevant tools" negatives)
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], [SEARCH_TOOL]),
        # no tools at all
        ([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
          {"role": "assistant", "content": "A"}], None),
    ]


# ---------------------------------------------------------------------------------------------
# Byte-identical to transformers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_TEMPLATES)
def test_builtin_matches_transformers_on_fireact(name, fireact_gpt, hf_tokenizer):
    """Every built-in, every FireAct row: same text as apply_chat_template, and the assistant
    spans are exactly transformers' generation indices."""
    tpl = load_template(name, HERE)
    for i, messages in enumerate(fireact_gpt):
        conv = make_conv(messages)
        assert conv.template_messages() == messages  # nothing lost on the way in
        got = render(conv, tpl, LossPolicy.assistant)
        text, indices = hf_render(hf_tokenizer, messages, tpl.source)
        assert got.text == text, f"row {i}"
        assert got.spans == indices, f"row {i}"  # FireAct spans never touch: merging changes nothing
        assert len(indices) == sum(m["role"] == "assistant" for m in messages)


@pytest.mark.parametrize("name", ["qwen2.5", "mistral"])
def test_tool_templates_match_transformers(name, hf_tokenizer):
    tpl = load_template(name, HERE)
    for messages, tools in tool_conversations():
        got = render(make_conv(messages, tools), tpl, LossPolicy.assistant)
        text, indices = hf_render(hf_tokenizer, messages, tpl.source, tools=tools)
        assert got.text == text
        assert got.spans == indices
        for a, b in got.spans:
            assert got.text[a:b].endswith(tpl.end_of_turn)
        prompt = render_prompt(messages[:1], tpl, tools=tools)
        assert prompt == hf_tokenizer.apply_chat_template(messages[:1], tools=tools, tokenize=False,
                                                           chat_template=tpl.source, add_generation_prompt=True)


def test_tokenizer_template_gets_special_token_variables(tmp_path, hf_tokenizer):
    """A tokenizer's template that uses bos_token/eos_token renders as transformers renders it."""
    from tiny import make_tokenizer

    source = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }}: "
              "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + eos_token }}{% endgeneration %}"
              "{% else %}{{ m['content'] }}{% endif %}\n{% endfor %}")
    d = make_tokenizer(tmp_path / "tok", chat_template=source)
    tpl = load_template(f"tokenizer:{d.name}", tmp_path)
    assert tpl.has_generation_tags and tpl.variables
    assert {"<s>", "<|im_end|>", "<|im_start|>", "<pad>"} <= set(tpl.special_tokens)
    assert tpl.end_of_turn == "<|im_end|>"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    got = render(make_conv(messages), tpl, LossPolicy.assistant)
    text, indices = hf_render(hf_tokenizer, messages, source)
    assert got.text == text == "<s>user: hiassistant: yo<|im_end|>"  # trim_blocks ate the newlines
    assert got.spans == indices


def test_tokenizer_config_chat_template(tmp_path):
    """No chat_template.jinja: the template comes from tokenizer_config.json (string or list)."""
    d = tmp_path / "tok"
    d.mkdir()
    src = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ '<call>' }}{% endfor %}"
    (d / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": src}],
        "eos_token": {"content": "</s>", "special": True},
        "added_tokens_decoder": {"5": {"content": "<call>", "special": False},
                                 "6": {"content": "<other>", "special": False},
                                 "7": {"content": "<|sp|>", "special": True}}}))
    tpl = load_template("tokenizer:tok", tmp_path)
    assert tpl.source == src
    assert dict(tpl.variables) == {"eos_token": "</s>"}
    # special added tokens, and the other added tokens the template writes itself
    assert set(tpl.special_tokens) == {"</s>", "<|sp|>", "<call>"}
    assert tpl.render_text([{"role": "user", "content": "a"}]) == "[user]a<call>"


# ---------------------------------------------------------------------------------------------
# Built-ins are faithful to the original templates
# ---------------------------------------------------------------------------------------------

# The originals as published in the models' tokenizer_config.json (the built-ins write the special
# tokens literally instead; the originals get them as variables below).
LLAMA2_ORIGINAL = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
LLAMA3_ORIGINAL = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML_ORIGINAL = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QWEN25_ORIGINAL = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""
# Mistral-7B-Instruct-v0.3 (tool-call turns and the system message as the Hub template has them).
MISTRAL_V03_ORIGINAL = r"""{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
        {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\n\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] [" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""

FAITHFUL = {
    # built-in: (original source, the special-token variables the model's tokenizer passes)
    "llama-2": (LLAMA2_ORIGINAL, {"bos_token": "<s>", "eos_token": "</s>"}),
    "llama-3": (LLAMA3_ORIGINAL, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    "chatml": (CHATML_ORIGINAL, {}),
    "qwen2.5": (QWEN25_ORIGINAL, {}),
    "mistral": (MISTRAL_V03_ORIGINAL, {"bos_token": "<s>", "eos_token": "</s>"}),
}


def _faithfulness_cases(fireact_gpt) -> list[tuple[list[dict], list[dict] | None]]:
    cases = [(m, None) for m in fireact_gpt[::50]]
    cases.append(([{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Q1 "},
                   {"role": "assistant", "content": " A1"}, {"role": "user", "content": "Q2"}], None))
    cases.append(([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], None))
    return cases


@pytest.mark.parametrize("name", sorted(FAITHFUL))
def test_builtin_equals_original_template(name, fireact_gpt, hf_tokenizer):
    original, variables = FAITHFUL[name]
    tpl = load_template(name, HERE)
    cases = _faithfulness_cases(fireact_gpt)
    if name == "qwen2.5":
        cases += tool_conversations()
    if name == "mistral":  # only where the documented differences do not apply: ids of 9, no tool results
        call = {"type": "function", "id": "abc123XYZ", "function": {"name": "get_weather",
                                                                     "arguments": {"city": "Paris"}}}
        cases += [([{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": [call]}],
                   [WEATHER_TOOL, SEARCH_TOOL]),
                  ([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Weather?"}],
                   [WEATHER_TOOL])]
    for messages, tools in cases:
        for gen in (False, True):
            ours = render_prompt(messages, tpl, tools=tools, add_generation_prompt=gen)
            theirs = hf_tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, chat_template=original,
                                                      add_generation_prompt=gen, **variables)
            assert ours == theirs, (name, messages)


def test_mistral_documented_differences():
    tpl = load_template("mistral", HERE)
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]},
                {"role": "tool", "content": "say \"hi\""},
                {"role": "assistant", "content": "done"}]
    text = render_prompt(messages, tpl, tools=[SEARCH_TOOL], add_generation_prompt=False)
    assert text == (
        '<s>[AVAILABLE_TOOLS] [{"type": "function", "function": ' + json.dumps(SEARCH_TOOL["function"])
        + '}][/AVAILABLE_TOOLS][INST] S\n\nQ[/INST][TOOL_CALLS] [{"name": "f", "arguments": {"x": 1}}]</s>'
        '[TOOL_RESULTS] {"content": "say \\"hi\\""}[/TOOL_RESULTS] done</s>')


def _split_react_output(output: str) -> list[dict]:
    """FireAct alpaca `output` → turns: observations are user turns, the rest assistant turns.
    (A test-local splitter: it only cuts at newlines, so joining the turns gives the output back.)"""
    turns: list[dict] = []
    for line in output[:-1].split("\n"):
        role = "user" if line.startswith("Observation:") else "assistant"
        continues = turns and (turns[-1]["role"] == role or (turns[-1]["role"] == "user" and not re.match(
            r"(Thought|Action)\b", line)))
        if continues:
            turns[-1]["content"] += "\n" + line
        else:
            turns.append({"role": role, "content": line})
    return turns


ALPACA_PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
                 "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def test_alpaca_equals_fireact_prompt_plus_output(fireact_dir, fireact_gpt):
    """FireAct's Llama fine-tuning text is alpaca prompt + output; rendering the trajectory
    through the alpaca built-in gives exactly that text — from the alpaca rows themselves, and
    from the gpt-format rows of the same trajectories."""
    tpl = load_template("alpaca", HERE)
    alpaca = json.loads((fireact_dir / "alpaca_format__multitask.json").read_text(encoding="utf-8"))
    assert len(alpaca) == 1344 and not any(r["input"] for r in alpaca)
    by_text: dict[str, str] = {}
    for r in alpaca:
        expected = ALPACA_PROMPT.format(instruction=r["instruction"]) + r["output"]
        assert r["output"].endswith("\n")
        messages = [{"role": "user", "content": r["instruction"]}] + _split_react_output(r["output"])
        got = render(make_conv(messages), tpl, LossPolicy.assistant)
        assert got.text == expected
        for a, b in got.spans:  # assistant turns: Thought/Action lines, never an observation
            assert not got.text[a:b].startswith("Observation:") and got.text[b - 1] == "\n"
        by_text[expected] = r["instruction"]
    # gpt-format rows of the same trajectories (the files differ in whitespace and MMLU option
    # placement for ~490 rows; the rest must match exactly)
    same = 0
    for messages in fireact_gpt:
        text = render(make_conv(messages), tpl, LossPolicy.assistant).text
        same += text in by_text
    assert same >= 850


def test_alpaca_prompt_and_system():
    tpl = load_template("alpaca", HERE)
    assert tpl.end_of_turn is None
    q = [{"role": "user", "content": "Who?"}]
    assert render_prompt(q, tpl) == ALPACA_PROMPT.format(instruction="Who?")
    assert render_prompt(q, tpl) == render_prompt(q, tpl, add_generation_prompt=False)
    text = render_prompt([{"role": "system", "content": "Answer."}] + q, tpl)
    assert text == "Answer.\n\n### Instruction:\nWho?\n\n### Response:\n"
    with pytest.raises(TemplateRenderError, match="user instruction first"):
        render_prompt([{"role": "assistant", "content": "x"}], tpl)


# ---------------------------------------------------------------------------------------------
# Template properties
# ---------------------------------------------------------------------------------------------


def test_builtin_properties():
    expected_eot = {"chatml": "<|im_end|>", "qwen2.5": "<|im_end|>", "llama-2": " </s>", "llama-3": "<|eot_id|>",
                    "mistral": "</s>", "alpaca": None, "llama-3.1": "<|eot_id|>", "llama-3.2": "<|eot_id|>",
                    "qwen3": "<|im_end|>", "hermes": "<|im_end|>", "qwen3-coder": "<|im_end|>"}
    assert set(BUILTIN_TEMPLATES) == set(expected_eot)
    for name in BUILTIN_TEMPLATES:
        tpl = load_template(name, HERE)
        assert tpl.ref == name and tpl.has_generation_tags
        assert tpl.end_of_turn == expected_eot[name]
        assert len(tpl.sha256) == 64 and tpl.special_tokens
        # special tokens are literal: the only inputs are the conversation and the flags
        used = jinja2.meta.find_undeclared_variables(_new_environment().parse(tpl.source))
        assert not used & set(NAMED_SPECIAL_TOKENS), used
    assert "<|im_start|>" in load_template("chatml", HERE).special_tokens
    assert "[INST]" in load_template("llama-2", HERE).special_tokens


def test_inferred_special_tokens_and_cache():
    src = "{% for m in messages %}<|user|>{{ m.content }}{{ '<|end|>' }}{% endfor %}"
    a = ChatTemplate.from_source(src)
    b = ChatTemplate.from_source(src, ref="again")
    assert set(a.special_tokens) == {"<|user|>", "<|end|>"}
    assert a.sha256 == b.sha256 and a.sha256 in _COMPILED
    assert not a.has_generation_tags and a.end_of_turn == "<|end|>"
    declared = ChatTemplate.from_source('{# dsc: special_tokens = ["<<X>>"] #}' + src)
    assert declared.special_tokens == ("<<X>>",)
    with pytest.raises(SpecError, match="special_tokens"):
        ChatTemplate.from_source('{# dsc: special_tokens = [1] #}' + src)


def test_sandbox_and_transformers_globals():
    tpl = ChatTemplate.from_source(
        "{{ messages | tojson }}|{% set ns = namespace(a=1) %}{{ ns.a }}|{{ dict(x=1) | tojson }}"
        "{% for m in messages %}{% if loop.first %}{% continue %}{% endif %}{{ m.content }}{% endfor %}")
    out = tpl.render_text([{"role": "user", "content": "é<b>"}, {"role": "user", "content": "second"}])
    assert out == '[{"role": "user", "content": "é<b>"}, {"role": "user", "content": "second"}]|1|{"x": 1}second'
    evil = ChatTemplate.from_source("{{ messages.__class__.__mro__ }}")
    with pytest.raises(TemplateRenderError):
        evil.render_text([{"role": "user", "content": "x"}])
    with pytest.raises(TemplateRenderError, match="boom"):
        ChatTemplate.from_source("{{ raise_exception('boom') }}").render_text([])


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_unknown_builtin_did_you_mean():
    with pytest.raises(SpecError) as e:
        load_template("chatm", HERE)
    msg = str(e.value)
    assert "unknown built-in template 'chatm'" in msg and "did you mean 'chatml'" in msg
    for name in BUILTIN_TEMPLATES:
        assert f"'{name}'" in msg
    assert e.value.line is None  # the spec loader attaches the spec's own location


def test_missing_template_file(tmp_path):
    with pytest.raises(SpecError, match=r"chat template file not found: templates/nope\.jinja"):
        load_template("templates/nope.jinja", tmp_path)


def test_syntax_error_names_file_and_line(tmp_path):
    (tmp_path / "t").mkdir()
    bad = tmp_path / "t" / "bad.jinja"
    bad.write_text("{% for m in messages %}\n{{ m.content }}\n{% if x %}\n{% endfor %}\n")
    with pytest.raises(SpecError) as e:
        load_template("t/bad.jinja", tmp_path)
    assert e.value.file == str(bad) and e.value.line == 4
    assert str(e.value).startswith(f"{bad}:4:1: chat template syntax error")
    with pytest.raises(SpecError) as e:
        ChatTemplate.from_source("ok\n{{ 1 + }}", ref="inline-spec")
    assert e.value.file == "inline-spec" and e.value.line == 2
    with pytest.raises(SpecError, match="unknown tag 'generations'"):
        ChatTemplate.from_source("{% generations %}x{% endgenerations %}")


def test_file_template_relative_to_base(tmp_path):
    (tmp_path / "my.jinja").write_text((HERE.parent / "src" / "dsc" / "chat" / "templates" / "chatml.jinja").read_text())
    tpl = load_template("my.jinja", tmp_path)
    assert tpl.ref == "my.jinja" and tpl.sha256 == load_template("chatml", HERE).sha256


def test_tokenizer_dir_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "tokenizer_config.json").write_text("{}")
    with pytest.raises(SpecError, match="has no chat template"):
        load_template("tokenizer:empty", tmp_path)
    with pytest.raises(SpecError, match="tokenizer directory not found"):
        load_template("tokenizer:./missing", tmp_path)
    with pytest.raises(SpecError, match="not in the Hugging Face cache|could not be fetched"):
        load_template("tokenizer:no-such-org/no-such-model-xyz", tmp_path)


def test_template_refusal_is_a_bad_row():
    conv = make_conv([{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                      {"role": "assistant", "content": "c"}])
    with pytest.raises(BadRow, match="alternate"):
        render(conv, load_template("llama-2", HERE), LossPolicy.assistant)
    with pytest.raises(BadRow, match="no place for tools"):
        render(make_conv([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                         tools=[SEARCH_TOOL]), load_template("chatml", HERE), LossPolicy.assistant)

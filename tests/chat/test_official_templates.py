"""The tool-calling built-ins (llama-3.1, llama-3.2, qwen3, hermes) against the official templates
as published with the models (tests/data/official_templates/, see its README): on generated and
hand-written conversations — tools, tool calls, tool results, several turns, with and without a
system message, Qwen3 thinking content in the history — dsc's rendering of the built-in (with its
generation tags) is the exact text transformers renders from the official template, and the
generation spans are exactly the assistant output the official template writes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsc.chat.render import render
from dsc.spec.sections import LossPolicy
from dsc.chat.templating import TemplateRenderError, load_template
from test_templates import SEARCH_TOOL, WEATHER_TOOL, make_conv, tool_conversations

HERE = Path(__file__).resolve().parents[1]
OFFICIAL_DIR = HERE / "data" / "official_templates"
BOS = "<|begin_of_text|>"
FIXED_DATE = "26 Jul 2024"  # Llama's Today Date: the official 3.2 template writes today's date unless given one


class Official:
    """How transformers renders one model's official template(s)."""

    def __init__(self, tool_use: str, default: str | None = None, *, generation_prompt: str, end_of_turn: str,
                 single_call: bool = False):
        self.tool_use = (OFFICIAL_DIR / tool_use).read_text(encoding="utf-8")
        self.default = (OFFICIAL_DIR / default).read_text(encoding="utf-8") if default else self.tool_use
        self.generation_prompt = generation_prompt
        self.end_of_turn = end_of_turn
        self.single_call = single_call  # the model accepts one tool call per message

    def source(self, tools: list | None) -> str:
        # transformers picks a tokenizer's `tool_use` template when tools are given, else `default`
        return self.tool_use if tools is not None else self.default

    def render(self, messages: list[dict], tools: list | None, add_generation_prompt: bool = False) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        (text,), _ = render_jinja_template(
            conversations=[messages], tools=tools, chat_template=self.source(tools),
            add_generation_prompt=add_generation_prompt, bos_token=BOS, eos_token="<|eot_id|>",
            date_string=FIXED_DATE)
        return text


OFFICIAL = {
    "llama-3.1": Official("meta-llama-Llama-3.1-8B-Instruct.jinja", generation_prompt=(
        "<|start_header_id|>assistant<|end_header_id|>\n\n"), end_of_turn="<|eot_id|>", single_call=True),
    "llama-3.2": Official("meta-llama-Llama-3.2-3B-Instruct.jinja", generation_prompt=(
        "<|start_header_id|>assistant<|end_header_id|>\n\n"), end_of_turn="<|eot_id|>", single_call=True),
    "qwen3": Official("Qwen-Qwen3-0.6B.jinja", generation_prompt="<|im_start|>assistant\n", end_of_turn="<|im_end|>"),
    "hermes": Official("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", "NousResearch-Hermes-default.jinja",
                       generation_prompt="<|im_start|>assistant\n", end_of_turn="<|im_end|>"),
    "qwen3-coder": Official("Qwen-Qwen3-Coder.jinja", generation_prompt="<|im_start|>assistant\n",
                            end_of_turn="<|im_end|>"),
}


def _last_query(messages: list[dict]) -> int:
    """Qwen3's `last_query_index`: the last user message that is not a wrapped tool response."""
    for i in range(len(messages) - 1, -1, -1):
        c = messages[i]["content"]
        if messages[i]["role"] == "user" and not (c.startswith("<tool_response>") and c.endswith("</tool_response>")):
            return i
    return len(messages) - 1


def _prefix_consistent(name: str, messages: list[dict], i: int) -> bool:
    """Whether the official template renders the text before assistant message i exactly as its
    serving prompt (messages[:i] + generation prompt). Two official templates are not prefix
    consistent everywhere: Qwen3 drops the reasoning of turns before the last user query (so the
    history before an earlier turn renders differently once a later query exists), and Hermes
    writes a last tool result as "</tool_response><|im_end|>" but one followed by the assistant as
    "</tool_response>\\n<|im_end|>"."""
    if name == "qwen3":
        return i > _last_query(messages)
    if name == "hermes":
        return not (i > 0 and messages[i - 1]["role"] == "tool")
    return True


def check_against_official(name: str, messages: list[dict], tools: list | None) -> str:
    """Same text (or both refuse); each span is the assistant output after the generation prompt,
    ends with the end of turn, is transformers' own generation span of the built-in, and is the
    text the model is asked to continue at serving time. Returns 'refused' or 'ok'."""
    from transformers.utils.chat_template_utils import render_jinja_template

    official, tpl = OFFICIAL[name], load_template(name, HERE)
    try:
        theirs = official.render(messages, tools)
    except Exception as e:  # noqa: BLE001 - the official template refuses (raise_exception, bad input)
        with pytest.raises(TemplateRenderError):
            tpl.render(messages, tools=tools)
        return f"refused: {e}"
    ours, spans = tpl.render(messages, tools=tools)
    assert ours == theirs
    # generation prompts too (Qwen3: with and without thinking)
    for extra in ({}, {"enable_thinking": False}) if name == "qwen3" else ({},):
        (prompt,), _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=official.source(tools),
                                             add_generation_prompt=True, bos_token=BOS, date_string=FIXED_DATE,
                                             **extra)
        assert tpl.render_text(messages, tools=tools, add_generation_prompt=True, **extra) == prompt
    # the spans: transformers' own generation indices of the built-in, one per assistant message
    (_,), (indices,) = render_jinja_template(conversations=[messages], tools=tools, chat_template=tpl.source,
                                             return_assistant_tokens_mask=True)
    assert spans == [tuple(ix) for ix in indices]
    positions = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    assert len(spans) == len(positions)
    for i, (a, b) in zip(positions, spans):
        assert ours[:a].endswith(official.generation_prompt)
        assert ours[a:b].endswith(official.end_of_turn)
        assert official.generation_prompt not in ours[a:b] and official.end_of_turn not in ours[a:b - len(
            official.end_of_turn)]
        if _prefix_consistent(name, messages, i):
            assert official.render(messages[:i], tools, add_generation_prompt=True) == ours[:a]
    # through the row renderer: the supervised spans are these spans
    got = render(make_conv(messages, tools), tpl, LossPolicy.assistant)
    assert got.text == ours and got.spans == [s for s in spans if s[1] > s[0]]
    return "ok"


# ---------------------------------------------------------------------------------------------
# Hand-written conversations
# ---------------------------------------------------------------------------------------------


def _call(name: str, args: dict, cid: str = "call_1") -> dict:
    return {"type": "function", "id": cid, "function": {"name": name, "arguments": args}}


def thinking_conversations() -> list[tuple[list[dict], list[dict] | None]]:
    """Qwen3 history with reasoning: before and after the last query, with and without think
    blocks, reasoning around tool calls."""
    return [
        ([{"role": "user", "content": "2+2?"},
          {"role": "assistant", "content": "<think>\nsmall sum\n</think>\n\n4"},
          {"role": "user", "content": "and 3+3?"},
          {"role": "assistant", "content": "<think>\nagain\n</think>\n\n6"}], None),
        ([{"role": "system", "content": "Think first."}, {"role": "user", "content": "Weather?"},
          {"role": "assistant", "content": "<think>\nI need the tool.\n</think>\n\n",
           "tool_calls": [_call("get_weather", {"city": "Oslo"})]},
          {"role": "tool", "content": "-3 C"},
          {"role": "assistant", "content": "No think here, an intermediate turn.",
           "tool_calls": [_call("get_weather", {"city": "Bergen"})]},
          {"role": "tool", "content": "4 C"},
          {"role": "assistant", "content": "<think>\nboth known\n</think>\n\nOslo -3 C, Bergen 4 C."}],
         [WEATHER_TOOL]),
        # a turn without reasoning after the last query, not the last message: no empty think block
        ([{"role": "user", "content": "Search it"},
          {"role": "assistant", "content": "Searching.", "tool_calls": [_call("search", {"query": "x"})]},
          {"role": "tool", "content": "hit"},
          {"role": "assistant", "content": "Found: hit"}], [SEARCH_TOOL]),
        # think tags without newlines, and a user turn that wraps a tool response itself
        ([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>r</think>A"},
          {"role": "user", "content": "<tool_response>\nraw\n</tool_response>"},
          {"role": "assistant", "content": "<think>\n\nr2\n\n</think>\n\n\nB"}], None),
    ]


HAND_WRITTEN = tool_conversations() + thinking_conversations() + [
    ([{"role": "user", "content": " padded question \n"}, {"role": "assistant", "content": "\n padded answer "}], None),
    ([{"role": "system", "content": "S"}, {"role": "user", "content": "Call two tools"},
      {"role": "assistant", "content": "", "tool_calls": [_call("search", {"query": "a"}),
                                                          _call("get_weather", {"city": "b"}, "call_2")]},
      {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"},
      {"role": "assistant", "content": "done"}], [SEARCH_TOOL, WEATHER_TOOL]),
]


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_hand_written_conversations_match_official(name):
    outcomes = [check_against_official(name, m, t) for m, t in HAND_WRITTEN]
    # the Llama models refuse parallel calls (as their originals do); everything else renders
    refused = [o for o in outcomes if o != "ok"]
    assert len(refused) == (2 if OFFICIAL[name].single_call else 0), refused


def test_qwen3_thinking_history():
    """Reasoning before the last query is dropped; after it, a turn's reasoning is kept; no empty
    think block goes into a non-last turn without reasoning; the last turn always has one."""
    tpl = load_template("qwen3", HERE)
    messages, tools = thinking_conversations()[0]
    text, spans = tpl.render(messages)
    assert [text[a:b] for a, b in spans] == ["4<|im_end|>", "<think>\nagain\n</think>\n\n6<|im_end|>"]
    messages, tools = thinking_conversations()[1]
    text, spans = tpl.render(messages, tools=tools)
    outputs = [text[a:b] for a, b in spans]
    assert outputs[0].startswith("<think>\nI need the tool.\n</think>\n\n<tool_call>")
    assert outputs[1].startswith("No think here") and "<think>" not in outputs[1]
    assert outputs[2] == "<think>\nboth known\n</think>\n\nOslo -3 C, Bergen 4 C.<|im_end|>"
    messages, tools = thinking_conversations()[2]
    text, spans = tpl.render(messages, tools=tools)
    assert [text[a:b][:12] for a, b in spans] == ["Searching.\n<", "<think>\n\n</t"]
    assert text.count("<think>") == 1


def test_llama_date_is_fixed():
    """The built-ins never write the build's date: llama-3.2's original would (strftime_now)."""
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    for name in ("llama-3.1", "llama-3.2"):
        assert f"Today Date: {FIXED_DATE}\n\n" in load_template(name, HERE).render_text(messages)
    from transformers.utils.chat_template_utils import render_jinja_template

    (today,), _ = render_jinja_template(conversations=[messages], chat_template=OFFICIAL["llama-3.2"].tool_use,
                                        bos_token=BOS)
    assert "Today Date: " in today  # (whatever the day is; the built-in does not follow it)


# ---------------------------------------------------------------------------------------------
# Generated conversations
# ---------------------------------------------------------------------------------------------

# Text without the templates' control tokens; newlines, padding, quotes, braces and non-ASCII.
_TEXT = st.text(alphabet=st.sampled_from(list("ab Z09\n\t\"'{}[]:,.é中🙂\\")), min_size=0, max_size=12)
_WORD = st.text(alphabet=st.sampled_from(list("abcxyz_")), min_size=1, max_size=6)
_JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | _TEXT,
                           lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_WORD, inner, max_size=2),
                           max_leaves=4)


@st.composite
def _tool(draw) -> dict:
    props = draw(st.dictionaries(_WORD, st.fixed_dictionaries({
        "type": st.sampled_from(["string", "integer", "number", "boolean", "array", "object"]),
        "description": _TEXT}), max_size=3))
    return {"type": "function", "function": {"name": draw(_WORD), "description": draw(_TEXT),
                                             "parameters": {"type": "object", "properties": props,
                                                            "required": sorted(props)[:1]}}}


@st.composite
def _assistant_content(draw, thinking: bool) -> str:
    content = draw(_TEXT)
    if thinking and draw(st.booleans()):
        sep = draw(st.sampled_from(["\n\n", "\n", ""]))
        content = "<think>" + draw(st.sampled_from(["\n", ""])) + draw(_TEXT) + "</think>" + sep + content
    return content


@st.composite
def conversations(draw, single_call: bool, thinking: bool) -> tuple[list[dict], list[dict] | None]:
    tools = draw(st.none() | st.lists(_tool(), min_size=1, max_size=2))
    messages: list[dict] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(_TEXT)})
    ncall = 0
    for _ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(_TEXT)})
        for _ in range(draw(st.integers(0, 2)) if tools else 0):  # tool-calling steps
            k = 1 if single_call else draw(st.integers(1, 2))
            calls = []
            for _ in range(k):
                ncall += 1
                calls.append(_call(draw(st.sampled_from([t["function"]["name"] for t in tools])),
                                   draw(st.dictionaries(_WORD, _JSON_VALUE, max_size=2)), f"call_{ncall}"))
            messages.append({"role": "assistant", "content": draw(_assistant_content(thinking)), "tool_calls": calls})
            messages += [{"role": "tool", "content": draw(_TEXT), "tool_call_id": c["id"]} for c in calls]
        messages.append({"role": "assistant", "content": draw(_assistant_content(thinking))})
    return messages, tools


def _normalised(messages: list[dict]) -> list[dict]:
    """As the record stores them: arguments round-trip through canonical JSON."""
    return make_conv(messages).template_messages()


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_generated_conversations_match_official(name):
    official = OFFICIAL[name]
    seen: dict[str, int] = {}

    @settings(max_examples=120, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(conversations(official.single_call, thinking=name == "qwen3"))
    def check(case):
        messages, tools = case
        outcome = check_against_official(name, _normalised(messages), tools)
        seen[outcome.split(":")[0]] = seen.get(outcome.split(":")[0], 0) + 1

    check()
    assert seen.get("ok", 0) >= 100, seen  # the comparison ran on rendered text, not only on refusals


def test_qwen3_coder_builtin_is_the_published_text_with_generation_marks():
    """The built-in is the vendored file, byte for byte, but for its header comment and the
    generation marks (and the two lines of the tool-call branch they move a newline across)."""
    import re

    ours = load_template("qwen3-coder", HERE).source
    official = (OFFICIAL_DIR / "Qwen-Qwen3-Coder.jinja").read_text(encoding="utf-8")
    body = ours[ours.index("-#}", ours.index("dsc: special_tokens")) + len("-#}\n"):]
    marks = re.compile(r"\n *\{%- (?:end)?generation %\}")
    moved = {  # the tool-call branch: the newline after "assistant", and before the first call
        "{{- '<|im_start|>' + message.role + '\\n' }}": "{{- '<|im_start|>' + message.role }}",
        "{{- message.content | trim + '\\n' }}": "{{- '\\n' + message.content | trim + '\\n' }}",
        "{{- ('\\n' if has_content or not loop.first else '') + '<tool_call>": "{{- '\\n<tool_call>",
    }
    restored = marks.sub("", body)
    restored = re.sub(r"\n *\{%- set has_content = [^\n]*%\}", "", restored)
    restored = restored.replace("{%- if has_content %}", "{%- if message.content is defined and message.content is "
                                "string and message.content | trim | length > 0 %}")
    for new, old in moved.items():
        restored = restored.replace(new, old, 1)
    restored = restored.replace("""        {{- '<|im_end|>' }}
        {{- '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {{- message.content + '<|im_end|>' }}
        {{- '\\n' }}
    {%- elif message.role == "user" or message.role == "system" %}""", """        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "user" or message.role == "system" or message.role == "assistant" %}""")
    assert restored == official


def test_official_fixtures_are_the_published_text():
    """Guard against edits to the fixtures: their sha256 as taken from the vendored copies."""
    import hashlib

    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in sorted(OFFICIAL_DIR.glob("*.jinja"))}
    assert digests == json.loads((OFFICIAL_DIR / "sha256.json").read_text())

"""The tool-call dialects of current models, each against its public source: what the published
template writes (gpt-oss, Qwen3-Coder: rendered by transformers from the vendored official text),
what the model card, guide or reference code shows the model generating (Harmony docs, Kimi-K2's
tool-call guide, Llama's prompt-format docs, DeepSeek/GLM as vLLM's and SGLang's parsers read
them), and Qwen-Agent's own prompt code (tests/data/qwen_agent/). A model's generation is read
leniently: a cut-short or trailing text parses, or is a BadRow, never another error."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest

from dsc.dialects.base import get_dialect
from dsc.dialects.tools import ToolDef
from dsc.record import BadRow, Conversation, Message, Meta, Provenance, ToolCall
from dsc.spec.registries import DIALECTS

DATA = Path(__file__).resolve().parents[1] / "data"
OFFICIAL = DATA / "official_templates"
NEW = ["harmony", "qwen3_coder", "glm45", "deepseek_v31", "kimi_k2", "pythonic", "qwen_agent_parallel"]

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "The city."},
        "days": {"type": "integer"},
        "metric": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
        "detailed": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["city"]}}}
DEFS = {"get_weather": ToolDef(name="get_weather", parameters=WEATHER["function"]["parameters"])}


def _args(call: ToolCall) -> dict[str, Any]:
    return json.loads(call.arguments)


def _render(template: str, messages: list[dict], tools: list | None, **kwargs: Any) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    (text,), _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=template, **kwargs)
    return text


# ---------------------------------------------------------------------------------------------
# Every new dialect: registered, and a generation cut anywhere or followed by text never crashes
# ---------------------------------------------------------------------------------------------


def test_the_new_dialects_are_registered():
    assert set(NEW) <= set(DIALECTS)


@pytest.mark.parametrize("name", NEW)
def test_a_cut_or_trailing_generation_parses_or_is_a_bad_row(name):
    dialect = get_dialect(name)
    calls = [ToolCall("get_weather", json.dumps({"city": "Paris", "days": 2, "tags": ["a", "b"]}))]
    if dialect.parallel:
        calls.append(ToolCall("get_weather", json.dumps({"city": "Rome\nItaly", "detailed": True})))
    written = dialect.write_turn("Let me check.", calls, DEFS)
    for text in [written[:n] for n in range(len(written) + 1)] + [written + " and more text\n"]:
        try:
            turn = dialect.parse_turn(text, DEFS, lenient=True)
        except BadRow:
            continue
        assert all(c.name == "get_weather" for c in turn.calls), (text, turn)
    full = dialect.parse_turn(written + "\nsome trailing words", DEFS, lenient=True)
    assert [_args(c) for c in full.calls] == [_args(c) for c in calls]


@pytest.mark.parametrize("name", NEW)
def test_tool_errors_and_empty_results_come_back(name):
    dialect = get_dialect(name)
    results = ["Error: city 'Atlantis' not found.", ""] if dialect.parallel else ["Error: timeout"]
    calls = [ToolCall("get_weather", "{}", id=f"functions.get_weather:{i}") for i in range(len(results))]
    assert dialect.parse_observations(dialect.write_observations(results, calls)) == results


# ---------------------------------------------------------------------------------------------
# gpt-oss Harmony — openai/gpt-oss-20b's chat template (vendored), openai/harmony docs/format.md
# ---------------------------------------------------------------------------------------------

GPT_OSS = (OFFICIAL / "openai-gpt-oss-20b.jinja").read_text(encoding="utf-8")


def test_harmony_writes_what_the_gpt_oss_template_writes():
    """A tool-call turn (reasoning, no later answer) and the tool result, through transformers."""
    harmony = get_dialect("harmony")
    call = ToolCall("get_weather", json.dumps({"city": "Paris", "days": 2}))
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "thinking": "I need the weather.", "tool_calls": [
                    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
                {"role": "tool", "content": "Sunny, 24°C"}]
    text = _render(GPT_OSS, messages, [WEATHER], add_generation_prompt=True)
    turn = harmony.write_turn("I need the weather.", [call], DEFS)
    result = harmony.write_observations(["Sunny, 24°C"], [call])
    assert "<|start|>user<|message|>Weather in Paris?<|end|><|start|>assistant" + turn + result \
           + "<|start|>assistant" == text[text.index("<|start|>user"):]
    # the tool listing is the developer message's `# Tools` part
    assert "<|start|>developer<|message|>" + harmony.tools_prompt([WEATHER]) + "<|end|>" in text
    assert harmony.parse_turn(turn, DEFS).calls == [ToolCall("get_weather", '{"city":"Paris","days":2}')]


def test_harmony_answer_is_the_template_s_last_training_turn():
    harmony = get_dialect("harmony")
    messages = [{"role": "user", "content": "Hi"},
                {"role": "assistant", "thinking": "Greet back.", "content": "Hello!"}]
    text = _render(GPT_OSS, messages, None)
    assert text.endswith("<|start|>assistant" + harmony.write_turn("<think>Greet back.</think>Hello!", [], {}))
    assert harmony.parse_turn(text.split("<|start|>assistant", 1)[1], {}).content == "<think>Greet back.</think>Hello!"


def test_harmony_reads_every_header_harmony_knows():
    """openai/harmony docs/format.md: the recipient in the role or the channel part, `<|constrain|>json`
    with or without a space (the template writes plain `json`)."""
    harmony = get_dialect("harmony")
    variants = [
        ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Tokyo"}<|call|>',
        ' to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{"city": "Tokyo"}<|call|>',
        '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Tokyo"}<|call|>',
        '<|channel|>commentary to=functions.get_weather<|constrain|>json<|message|>{"city":"Tokyo"}',
        ('<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary '
         'to=functions.get_weather <|constrain|>json<|message|>{"city":"Tokyo"} trailing'),
    ]
    for text in variants:
        turn = harmony.parse_turn(text, DEFS, lenient=True)
        assert [(c.name, _args(c)) for c in turn.calls] == [("get_weather", {"city": "Tokyo"})], text
    # the model's answer, and a result the model made up itself after its call (dropped)
    answer = "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>42"
    assert harmony.parse_turn(answer, {}, lenient=True) == harmony.parse_turn(answer + "<|end|>", {}, lenient=True)
    assert harmony.parse_turn(answer, {}, lenient=True).content == "42"
    made_up = variants[0][:-len("<|call|>")] + "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>x"
    assert len(harmony.parse_turn(made_up, DEFS, lenient=True).calls) == 1
    with pytest.raises(BadRow):  # strict: only what the template writes
        harmony.parse_turn(variants[2], DEFS)


def _conv(messages: list[Message], extra: dict | None = None) -> Conversation:
    return Conversation("s:1", "g", messages, Meta("s", Provenance("f", "h", 0), extra=extra or {}), tools=[WEATHER])


def _trajectory() -> list[Message]:
    c1 = ToolCall("get_weather", '{"city":"Paris"}', id="a")
    c2 = ToolCall("get_weather", '{"city":"Rome"}', id="b")
    return [Message("system", "Be brief."), Message("user", "Paris, then Rome?"),
            Message("assistant", "First Paris.", tool_calls=[c1]), Message("tool", "Sunny", tool_call_id="a"),
            Message("assistant", "Now Rome.", tool_calls=[c2]), Message("tool", "Rain", tool_call_id="b"),
            Message("assistant", "<think>Compare.</think>Paris is sunny, Rome rainy.")]


def _to_dialect(conv: Conversation, **options: Any) -> Conversation:
    from dsc.compiler.stages.transforms.convert import apply_steps, prepare_steps
    from dsc.spec.steps import ConvertStep

    steps = [ConvertStep.model_validate({"step": "to_dialect", **options})]
    return apply_steps(conv, steps, prepare_steps(steps, Path(".")))


def test_harmony_analysis_option_official_keep_drop():
    """The template keeps a tool-call turn's reasoning only when no answer follows, and the last answer's."""
    def analyses(**options: Any) -> list[str]:
        conv = _to_dialect(_conv(_trajectory()), dialect="harmony", **options)
        return [m.content.split("<|message|>", 1)[1].split("<|end|>")[0] for m in conv.messages
                if m.role == "assistant" and m.content.startswith("<|channel|>analysis")]

    assert analyses() == analyses(analysis="official") == ["Compare."]
    assert analyses(analysis="keep") == ["First Paris.", "Now Rome.", "Compare."]
    assert analyses(analysis="drop") == []
    # without a final answer yet (a trajectory cut after a call), the call's reasoning stays
    cut = _to_dialect(_conv(_trajectory()[:4]), dialect="harmony")
    assert cut.messages[2].content.startswith("<|channel|>analysis<|message|>First Paris.<|end|>")
    # results come from the tool that was called
    assert cut.messages[3].content == ('<|start|>functions.get_weather to=assistant<|channel|>commentary'
                                       '<|message|>"Sunny"<|end|>')


def test_harmony_reasoning_effort_per_spec_and_per_row():
    conv = _to_dialect(_conv(_trajectory()), dialect="harmony", reasoning_effort="high")
    assert conv.messages[0].content.startswith("Be brief.\n\nReasoning: high\n\n# Tools\n\n## functions")
    row = _to_dialect(_conv(_trajectory(), {"reasoning_effort": "low"}), dialect="harmony", reasoning_effort="high")
    assert "Reasoning: low\n\n" in row.messages[0].content


def test_harmony_options_belong_to_harmony_and_leave_other_dumps_alone():
    from dsc.compiler.stages.transforms.convert import DialectOptions

    with pytest.raises(ValueError, match="options of the harmony dialect"):
        DialectOptions(dialect="hermes", analysis="keep")
    assert set(DialectOptions(dialect="hermes").model_dump()) == {
        "dialect", "tools", "unknown_tools", "tools_in_system", "observation_role"}


def test_harmony_parallel_calls_are_quarantined():
    calls = [ToolCall("get_weather", '{"city":"Paris"}', id="a"), ToolCall("get_weather", '{"city":"Rome"}', id="b")]
    conv = _conv([Message("user", "?"), Message("assistant", "", tool_calls=calls)])
    with pytest.raises(BadRow, match="one call per turn"):
        _to_dialect(conv, dialect="harmony")


# ---------------------------------------------------------------------------------------------
# Qwen3-Coder — its chat template (vendored), vLLM qwen3coder_tool_parser.py
# ---------------------------------------------------------------------------------------------

QWEN3_CODER = (OFFICIAL / "Qwen-Qwen3-Coder.jinja").read_text(encoding="utf-8")


def test_qwen3_coder_writes_what_its_template_writes():
    coder = get_dialect("qwen3_coder")
    args1 = {"city": "Paris\nFrance", "days": 2, "detailed": True, "tags": ["a", "é"]}
    args2 = {"city": "Rome"}
    calls = [ToolCall("get_weather", json.dumps(args1)), ToolCall("get_weather", json.dumps(args2))]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [
                    {"type": "function", "function": {"name": "get_weather", "arguments": a}} for a in (args1, args2)]},
                {"role": "tool", "content": "Sunny"}, {"role": "tool", "content": "Rain"}]
    text = _render(QWEN3_CODER, messages, [WEATHER])
    assert text.startswith("<|im_start|>system\nBe brief.\n\n" + coder.tools_prompt([WEATHER]) + "<|im_end|>\n")
    turn = coder.write_turn("Let me check.", calls, DEFS)
    assert "<|im_start|>assistant\n" + turn + "<|im_end|>\n" in text
    assert "<|im_start|>user\n" + coder.write_observations(["Sunny", "Rain"]) + "\n<|im_end|>\n" in text
    back = coder.parse_turn(turn, DEFS)
    assert back.content == "Let me check." and [_args(c) for c in back.calls] == [args1, args2]


def test_qwen3_coder_types_values_back_from_the_schema():
    """vLLM's `_convert_param_value`: the tool's JSON schema types the text of each parameter."""
    coder = get_dialect("qwen3_coder")
    text = ("<tool_call>\n<function=get_weather>\n<parameter=city>\n42\n</parameter>\n<parameter=days>\n3\n"
            "</parameter>\n<parameter=detailed>\nFalse\n</parameter>\n<parameter=tags>\n[\"x\"]\n</parameter>\n"
            "<parameter=extra>\nNone\n</parameter>\n</function>\n</tool_call>")
    [call] = coder.parse_turn(text, DEFS).calls
    assert _args(call) == {"city": "42", "days": 3, "detailed": False, "tags": ["x"], "extra": None}
    # lenient: missing closing tags (vLLM), the back-off without <tool_call>
    cut = "I'll look.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n<parameter=days>\n2"
    [call] = coder.parse_turn(cut, DEFS, lenient=True).calls
    assert _args(call) == {"city": "Paris", "days": 2}
    bare = "<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>"
    assert _args(coder.parse_turn(bare, DEFS, lenient=True).calls[0]) == {"city": "Paris"}
    # an untyped "7" that must stay a string is written quoted, and comes back a string
    untyped = coder.write_turn("", [ToolCall("f", '{"x":"7","y":7}')], {})
    assert "<parameter=x>\n\"7\"\n" in untyped and _args(coder.parse_turn(untyped, {}).calls[0]) == {"x": "7", "y": 7}


# ---------------------------------------------------------------------------------------------
# GLM-4.5 / 4.6 — the template's call layout (rendered), vLLM glm4_moe_tool_parser.py
# ---------------------------------------------------------------------------------------------


def test_glm_reads_its_template_s_calls():
    glm = get_dialect("glm45")
    # as GLM's template renders an assistant turn after `<|assistant|>\n<think></think>\n`
    text = ("Let me check.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
            "<arg_key>days</arg_key>\n<arg_value>2</arg_value>\n<arg_key>tags</arg_key>\n<arg_value>[\"a\", \"é\"]"
            "</arg_value>\n<arg_key>detailed</arg_key>\n<arg_value>true</arg_value>\n</tool_call>\n"
            "<tool_call>get_weather\n</tool_call>")
    turn = glm.parse_turn(text, DEFS)
    assert turn.content == "Let me check."
    assert [_args(c) for c in turn.calls] == [{"city": "Paris", "days": 2, "tags": ["a", "é"], "detailed": True}, {}]
    assert glm.write_turn(turn.content, turn.calls, DEFS) == text
    # generation: the model stops at <|observation|>; a last </tool_call> cut short is tolerated
    cut = glm.parse_turn(text[: -len("</tool_call>")], DEFS, lenient=True)
    assert len(cut.calls) == 2
    assert glm.write_observations(["r1", "r2"]) == "<tool_response>\nr1\n</tool_response>\n<tool_response>\nr2\n" \
                                                  "</tool_response>"


# ---------------------------------------------------------------------------------------------
# DeepSeek-V3.1 — the model card's format, vLLM deepseekv31_tool_parser.py
# ---------------------------------------------------------------------------------------------


def test_deepseek_v31_reads_the_model_card_format():
    ds = get_dialect("deepseek_v31")
    text = ("Checking.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Tokyo\"}"
            "<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\"}<｜tool▁call▁end｜>"
            "<｜tool▁calls▁end｜>")
    turn = ds.parse_turn(text, DEFS)
    assert turn.content == "Checking." and [_args(c)["city"] for c in turn.calls] == ["Tokyo", "Paris"]
    assert ds.write_turn(turn.content, turn.calls, DEFS) == text
    # pretty-printed arguments over several lines (vLLM 0.34's fix), the section's end missing
    pretty = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\n  \"city\": \"Oslo\"\n}"
    assert _args(ds.parse_turn(pretty, DEFS, lenient=True).calls[0]) == {"city": "Oslo"}
    assert "｜" in ds.stop[0] and "|" not in ds.stop[0]  # fullwidth, as the tokenizer spells them
    assert ds.write_observations(["a", "b"]) == "<｜tool▁output▁begin｜>a<｜tool▁output▁end｜>" \
                                                "<｜tool▁output▁begin｜>b<｜tool▁output▁end｜>"


# ---------------------------------------------------------------------------------------------
# Kimi-K2 — MoonshotAI/Kimi-K2 docs/tool_call_guidance.md, vLLM kimi_k2_tool_parser.py
# ---------------------------------------------------------------------------------------------


def test_kimi_reads_the_guide_s_format_and_counts_calls_across_the_conversation():
    kimi = get_dialect("kimi_k2")
    text = ("<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
            "{\"city\": \"Beijing\"}<|tool_call_end|><|tool_call_begin|>functions.web.search:1"
            "<|tool_call_argument_begin|>{\"q\": \"x\"}<|tool_call_end|><|tool_calls_section_end|>")
    turn = kimi.parse_turn(text, DEFS)
    assert [(c.name, c.id) for c in turn.calls] == [("get_weather", "functions.get_weather:0"),
                                                     ("web.search", "functions.web.search:1")]
    assert kimi.write_turn("", turn.calls, DEFS) == text
    conv = _to_dialect(_conv(_trajectory()), dialect="kimi_k2")
    turns = [m.content for m in conv.messages]
    assert "functions.get_weather:0<|tool_call_argument_begin|>" in turns[2]
    assert turns[3] == "## Return of functions.get_weather:0\nSunny"
    assert "functions.get_weather:1<|tool_call_argument_begin|>" in turns[4]  # conversation-wide counter
    assert turns[5] == "## Return of functions.get_weather:1\nRain"
    with pytest.raises(BadRow, match="not a call id"):
        kimi.parse_turn("<|tool_calls_section_begin|><|tool_call_begin|>get_weather<|tool_call_argument_begin|>{}"
                        "<|tool_call_end|><|tool_calls_section_end|>", DEFS)


# ---------------------------------------------------------------------------------------------
# Pythonic — meta-llama/llama-models prompt-format docs (3.2, 4), vLLM pythonic_tool_parser.py
# ---------------------------------------------------------------------------------------------


def test_pythonic_reads_the_llama_docs_examples():
    py = get_dialect("pythonic")
    llama32 = "[get_weather(city='San Francisco', metric='celsius'), get_weather(city='Seattle', metric='celsius')]"
    llama4 = '<|python_start|>[get_weather(city="San Francisco"), get_weather(city="Seattle")]<|python_end|>'
    for text in (llama32, llama4):
        turn = py.parse_turn(text, DEFS, lenient=True)
        assert [_args(c)["city"] for c in turn.calls] == ["San Francisco", "Seattle"]
    assert py.parse_turn(llama32, DEFS).calls == py.parse_turn(llama32, DEFS, lenient=True).calls
    written = py.write_turn("", [ToolCall("get_weather", json.dumps({"city": "O'Hare \"x\"\n", "days": -1,
                                                                      "tags": None, "detailed": True}))], DEFS)
    assert written == "[get_weather(city='O\\'Hare \"x\"\\n', days=-1, tags=None, detailed=True)]"
    assert _args(py.parse_turn(written, DEFS).calls[0])["city"] == "O'Hare \"x\"\n"


def test_pythonic_never_evaluates():
    py = get_dialect("pythonic")
    for text in ("[get_weather(city=__import__('os').system('true'))]", "[get_weather('Paris')]",
                 "[get_weather(**{'city': 'x'})]"):
        with pytest.raises(BadRow):
            py.parse_turn(text, DEFS, lenient=True)
    assert py.parse_turn("[os.system(cmd='x')]", DEFS, lenient=True).calls == []  # not a tool name: text
    with pytest.raises(BadRow, match="cannot be written"):
        py.write_turn("", [ToolCall("convert", '{"from":"USD"}')], {})
    assert py.parse_turn("The answer is [1, 2].", DEFS, lenient=True).calls == []


# ---------------------------------------------------------------------------------------------
# Qwen-Agent — pinned to QwenLM/Qwen-Agent's qwen_fncall_prompt.py (excerpt in tests/data/qwen_agent)
# ---------------------------------------------------------------------------------------------


def _qwen_agent_reference() -> dict[str, Any]:
    source = (DATA / "qwen_agent" / "qwen_fncall_prompt_excerpt.py.txt").read_text(encoding="utf-8")
    namespace: dict[str, Any] = {"json": json, "Dict": dict, "Literal": Literal}
    exec(compile(source, "qwen_fncall_prompt_excerpt.py", "exec"), namespace)  # noqa: S102 - the vendored reference
    return namespace


CODE_TOOL = {"name": "code_interpreter", "description": "Python code sandbox.",
             "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}


def test_qwen_agent_prompts_are_qwen_agent_s():
    ref = _qwen_agent_reference()
    fns = [WEATHER["function"], CODE_TOOL]
    descs = "\n\n".join(ref["get_function_description"](f, "en") for f in fns)
    names = ",".join(f["name"] for f in fns)
    for dialect, key in (("qwen_agent", "en"), ("qwen_agent_parallel", "en_parallel")):
        expected = ref["FN_CALL_TEMPLATE"][key].format(tool_descs=descs, tool_names=names)
        assert get_dialect(dialect).tools_prompt(fns) == expected, dialect
    from dsc.dialects import qwen_agent

    assert (qwen_agent.FN_NAME, qwen_agent.FN_ARGS, qwen_agent.FN_RESULT, qwen_agent.FN_EXIT) == (
        ref["FN_NAME"], ref["FN_ARGS"], ref["FN_RESULT"], ref["FN_EXIT"])
    assert get_dialect("qwen_agent_parallel").stop[0] == ref["FN_STOP_WORDS"][0]


def test_qwen_agent_parallel_calls_and_code_interpreter_as_qwen_agent_writes_them():
    """preprocess_fncall_messages: `✿FUNCTION✿: name\\n✿ARGS✿: args` per call, a code block after a newline."""
    ref = _qwen_agent_reference()
    qa = get_dialect("qwen_agent_parallel")
    code = "import math\nprint(math.pi)"
    calls = [ToolCall("get_weather", json.dumps({"city": "Paris"})), ToolCall("code_interpreter", json.dumps({"code": code}))]
    fenced = f"```py\n{code}\n```"
    expected = "Let me check.\n" + "\n".join(
        f"{ref['FN_NAME']}: {n}\n{ref['FN_ARGS']}: {a}"
        for n, a in (("get_weather", '{"city": "Paris"}'), ("code_interpreter", "\n" + fenced)))
    written = qa.write_turn("Let me check.", calls, {})
    assert written == expected
    assert [_args(c) for c in qa.parse_turn(written, {}).calls] == [{"city": "Paris"}, {"code": code}]
    # a generation's trailing comment is trimmed as remove_trailing_comment_of_fn_args trims it
    generated = written + "\n<!-- done -->"
    trimmed = ref["remove_trailing_comment_of_fn_args"](generated.split(ref["FN_ARGS"] + ":")[-1])
    assert trimmed == fenced
    assert [_args(c) for c in qa.parse_turn(generated, {}, lenient=True).calls] == [{"city": "Paris"}, {"code": code}]
    json_args = ref["remove_trailing_comment_of_fn_args"]('{"city": "Paris"} <!-- comment -->')
    turn = qa.parse_turn(f"{ref['FN_NAME']}: get_weather\n{ref['FN_ARGS']}: {json_args} <!-- comment -->", {},
                         lenient=True)
    assert _args(turn.calls[0]) == json.loads(json_args)

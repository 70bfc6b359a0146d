"""Agent-FLAN's conversation format (the ToolBench/AgentInstruct rows it is built from): ReAct
with a JSON input (`Thought: …\\nAction: name\\nAction Input: {json}`), each observation a user
turn `Observation: …`, the tools and the format instructions in the system prompt
(`Tools:\\n- name: description Input: {properties}` … `Finish with Action: finish …`)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dsc.dialects.react import ReactJson, react_tools_prompt
from dsc.spec.registries import register_dialect


@register_dialect
class AgentFlan(ReactJson):
    name = "agent_flan"
    shape = "Thought: …\\nAction: tool\\nAction Input: {json}   ·   user: Observation: …"

    def tools_prompt(self, tools: Sequence[Mapping[str, Any]]) -> str:
        return react_tools_prompt(tools, "action_input", ensure_ascii=True,
                                  repeats="Thought/Action/Action Input/Observation",
                                  ending='\nFinish with Action: finish and Action Input: {"answer": "your final answer"}.')

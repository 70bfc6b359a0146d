"""Agent-FLAN's conversation format (the ToolBench/AgentInstruct rows it is built from): ReAct
with a JSON input (`Thought: …\\nAction: name\\nAction Input: {json}`), each observation a user
turn `Observation: …`, the tools and the format instructions in the system prompt
(`Tools:\\n- name: description Input: {properties}` … `Finish with Action: finish …`)."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .base import function_of, register_dialect
from .react import ReactJson


@register_dialect
class AgentFlan(ReactJson):
    name = "agent_flan"
    shape = "Thought: …\\nAction: tool\\nAction Input: {json}   ·   user: Observation: …"

    def tools_prompt(self, tools: Sequence[Mapping[str, Any]]) -> str:
        fns = [function_of(t) for t in tools]
        listing = "\n".join(f"- {f['name']}: {f.get('description', '')} Input: "
                            f"{json.dumps((f.get('parameters') or {}).get('properties', {}))}" for f in fns)
        return ("Tools:\n" + listing + "\n\nUse the following format:\nThought: think about what to do\n"
                "Action: the tool to use, one of " + ", ".join(f["name"] for f in fns)
                + "\nAction Input: the input to the tool, as a JSON object\nObservation: the result of the tool\n"
                  "... (Thought/Action/Action Input/Observation can repeat)\n"
                  "Finish with Action: finish and Action Input: {\"answer\": \"your final answer\"}.")

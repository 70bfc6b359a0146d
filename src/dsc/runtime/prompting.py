"""Inference-time prompts: the artifact's conditioning messages, rendered with its exact template.

The manifest's `inference.messages` are Jinja strings over the question (NAT: "Question: {{ question
}}. Generate ... **correctly**."); each is filled in with the item and the whole conversation goes
through the compiler's own renderer (`dsc.chat.render.render_prompt`), so eval prompts are
byte-for-byte what the training rows looked like up to the generation prompt.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jinja2

from dsc.chat.render import render_prompt
from dsc.chat.templating import ChatTemplate
from dsc.core.errors import SpecError
from dsc.core.sandbox import BoundedSandbox, bounded_render

# Message contents are plain text: no block trimming, keep a trailing newline if written.
_ENV = BoundedSandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def fill(text: str, variables: dict[str, Any], what: str) -> str:
    try:
        out: list[str] = []
        bounded_render(_ENV, _ENV.from_string(text).generate(**variables), out)
        return "".join(out)
    except jinja2.TemplateError as e:
        raise SpecError(f"{what}: cannot fill in {text!r}: {e}") from None


@dataclass
class PromptBuilder:
    template: ChatTemplate
    messages: list[dict[str, str]]  # role + content (Jinja over `question` and the item's fields)

    @classmethod
    def from_source(cls, source: str, messages: list[dict[str, str]], ref: str = "chat_template.jinja"
                    ) -> "PromptBuilder":
        return cls(ChatTemplate.from_source(source, ref=ref), [dict(m) for m in messages])

    def conversation(self, question: str, item: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The opening messages for one item (before any model turn)."""
        variables = {**(item or {}), "question": question}
        return [{"role": m["role"], "content": fill(m["content"], variables, "inference prompt")}
                for m in self.messages]

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt text ending in the template's generation prompt (the model's turn)."""
        return render_prompt(messages, self.template, tools=tools, add_generation_prompt=True)

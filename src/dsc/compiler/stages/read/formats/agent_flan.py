"""`agent_flan`: Agent-FLAN rows, `{"conversation": [{"role", "content", "loss"}...], "id"}`.

A message without `loss` keeps `loss=None`, so the spec's loss policy decides (Agent-FLAN's
maintainers train assistant turns without `loss`); an explicit `loss: false` on an assistant
turn is kept as written.
"""
from __future__ import annotations

from typing import Any

from dsc.compiler.stages.read.formats.common import Normalised, role_content_list
from dsc.spec.registries import register_format


@register_format("agent_flan",
                 fields={"messages": "conversation", "role": "role", "content": "content", "loss": "loss"})
def agent_flan(row: dict[str, Any], fields: dict[str, str]) -> Normalised:
    """Agent-FLAN conversation of role/content/loss; a missing loss stays None."""
    return role_content_list(row, fields)

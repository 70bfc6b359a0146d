"""`nat`: NAT ("Learning From Failure") trajectory records.

`{"conversations": [{"role", "content", "loss"}...], "info": {"reward", ...}, "id", "source"}`.
`conversations` holds only the trajectory, so it starts with an assistant turn (the
instruction and question are prepended later by `assemble`, joined by `id`): that is valid
here. ShareGPT `from`/`value` messages are accepted too, as NAT's own loader does. `info`,
`id`, `source` and any other field stay in `meta.extra`; an empty `conversations` list (NAT's
negative files have some) is a bad row.
"""
from __future__ import annotations

from typing import Any

from dsc.compiler.stages.read.formats.common import Normalised, role_content_list
from dsc.spec.registries import register_format


@register_format("nat", fields={"messages": "conversations", "role": "role", "content": "content", "loss": "loss"})
def nat(row: dict[str, Any], fields: dict[str, str]) -> Normalised:
    """NAT trajectories: conversations of role/content/loss (+ info, id, source kept in extra)."""
    return role_content_list(row, fields)

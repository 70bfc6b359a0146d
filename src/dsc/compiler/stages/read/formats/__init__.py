"""Input formats: each turns one raw row (a dict) into the canonical messages.

A format is a function `fn(row, fields) -> Normalised` registered under a name. `fields` maps
each canonical field the format reads to the raw field path it reads it from: the format's
declared defaults, overridden by the spec's `fields:` (so `sharegpt` can read `turns/speaker/
text` instead of `conversations/from/value`). A few declared fields are settings rather than
paths (e.g. `react`'s `observation_role`); those declare their allowed values in `choices`,
which the spec checks before any row is read. Paths may be dotted (`info.reward`); an empty
path switches an optional field off.

A row that cannot be normalised raises `BadRow(reason)`; the build quarantines it with the
reason, so make the reason say where and what (`message 3: unknown role 'bot' (allowed: ...)`).

Built-in formats: `openai`, `sharegpt`, `alpaca`, `nat`, `agent_flan`, `react` (one module each).

Adding your own format
----------------------
Register it before the spec is loaded::

    from dsc.plugins import Message, Normalised, register_format, require_str, without

    @register_format("qa_pairs", fields={"question": "q", "answer": "a"})
    def qa_pairs(row: dict, fields: dict[str, str]) -> Normalised:
        \"\"\"One question/answer pair per row.\"\"\"
        q, a = require_str(row, fields["question"]), require_str(row, fields["answer"])
        return Normalised(messages=[Message("user", q), Message("assistant", a)],
                          extra=without(row, [fields["question"], fields["answer"]]))

then name the module under the spec's `plugins:` (`plugins: [my_formats.py]`) and use
`format: qa_pairs` in a source. To make it available without naming it, expose the module as an
entry point of your package; dsc imports entry points of group `dsc.formats` the first time a
format is looked up (`dsc.core.registry` has the rules every registry shares)::

    [project.entry-points."dsc.formats"]
    qa_pairs = "mypackage.formats"

Format functions must be pure (the same row and fields always give the same result): the
build runs them in worker processes and relies on that for byte-identical artifacts.
"""

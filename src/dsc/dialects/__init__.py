"""Tool-call dialects: one module each, a writer and a parser between the canonical record's
tool calls and the dialect's text (`base.Dialect`); `tools` holds the declared tools (`ToolDef`)
and their argument parsing. Dialects register in `dsc.spec.registries.DIALECTS`."""

"""The spec layer stays light: reading and validating a spec (every section the stages' heavy code
reads: tokenize, mix, loss weights) imports no array or tokenizer library and none of the layers
above it (built-in names are checked against the registries without importing their code).
Checked in a fresh interpreter, where nothing else has imported them first. Which layer may
import which is import-linter's contract (pyproject.toml); this checks what actually loads."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Modules (and packages: their submodules too) that `load_spec` must not import.
FORBIDDEN = ("numpy", "pyarrow", "tokenizers", "torch", "transformers", "dsc.compiler", "dsc.chat",
             "dsc.dialects", "dsc.artifact", "dsc.runtime", "dsc.ops", "dsc.cli")

SPEC = """\
dsc: 1
name: light
sources:
  chat: {path: data.jsonl, format: openai}
loss:
  mode: assistant
  weights: [{pattern: "Action:", weight: 2.0}]
tokenize: {tokenizer: tok, max_length: 64}
split: {validation: 0.1}
mix:
  chat: {rate: 1.0, where: {source: chat}}
"""


def test_reading_a_spec_imports_no_layer_above_it_nor_array_code(tmp_path):
    (tmp_path / "data.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text("{}")
    (tmp_path / "spec.yaml").write_text(SPEC)
    code = textwrap.dedent(f"""
        import json, sys
        import dsc.spec.model as model
        loaded = model.read_spec({str(tmp_path / "spec.yaml")!r})
        assert loaded.spec.tokenize.max_length == 64 and loaded.spec.mix["chat"].rate == 1.0
        print(json.dumps(sorted(sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, f"loading a spec imported {bad}"

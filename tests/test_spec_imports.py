"""The spec model stays light: loading and validating a spec (every section the stages' heavy code
reads: tokenize, mix, loss weights) imports no build engine, no array or tokenizer library, and
none of the stage code that needs them. Checked in a fresh interpreter, where nothing else has
imported them first."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Modules (and packages: their submodules too) that `load_spec` must not import.
FORBIDDEN = ("numpy", "pyarrow", "tokenizers", "torch", "transformers", "dsc.compiler.engine",
             "dsc.compiler.stages.select", "dsc.compiler.stages.tokenize", "dsc.compiler.stages.write",
             "dsc.compiler.stages.render.render", "dsc.compiler.stages.render.weights")

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


def test_loading_a_spec_imports_no_stage_engine_or_array_code(tmp_path):
    (tmp_path / "data.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text("{}")
    (tmp_path / "spec.yaml").write_text(SPEC)
    code = textwrap.dedent(f"""
        import json, sys
        import dsc.compiler.spec.model as model
        loaded = model.load_spec({str(tmp_path / "spec.yaml")!r})
        assert loaded.spec.tokenize.max_length == 64 and loaded.spec.mix["chat"].rate == 1.0
        print(json.dumps(sorted(sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, f"loading a spec imported {bad}"


def test_the_section_models_import_no_stage():
    import ast

    import dsc.compiler.spec.sections as sections

    tree = ast.parse(open(sections.__file__, encoding="utf-8").read())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert imported and not [m for m in imported if m.startswith(("dsc.compiler.stages", "dsc.compiler.engine"))]

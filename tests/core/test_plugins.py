"""User plugins: the spec's `plugins:` key, the one registry type (duplicates, entry points,
did-you-mean) and plugin code in the cache key, the artifact version and dsc.lock."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.core.errors import SpecError
from dsc.spec.registries import FORMATS, register_format
from dsc.compiler.engine.fingerprints import manifest_plugins
from dsc.core.registry import DuplicateNameError, PluginLoadError, Registry
from dsc.compiler.engine.validation import load_spec
from dsc.spec.registries import CONVERTERS
from dsc.spec.registries import FILTERS
from dsc.spec.registries import NEGATIVE_RULES
from dsc.spec.registries import SCORERS, register_scorer
from dsc.spec.registries import TOOLS, register_tool

runner = CliRunner()

PLUGIN = '''\
from dsc.plugins import FILTERS, Message, Normalised, register_format, require_str


@register_format("qa_pairs", fields={"question": "q", "answer": "a"})
def qa_pairs(row, fields):
    """One question/answer pair per row."""
    return Normalised([Message("user", require_str(row, fields["question"])),
                       Message("assistant", require_str(row, fields["answer"]))])


@FILTERS.register("short_answer", int)
def short_answer(conv, limit):
    answer = conv.messages[-1].content
    return f"answer of {len(answer)} chars" if len(answer) > limit else None
'''

SCORER_PLUGIN = '''\
from dsc.plugins import register_scorer


@register_scorer("answer_length")
def answer_length(prediction, answer):
    return float(len(prediction) == len(str(answer)))
'''

SPEC = """\
dsc: 1
name: p
plugins: [myplugin.py, myscorer.py]
sources:
  qa:
    path: qa.jsonl
    format: qa_pairs
  chat:
    path: chat.jsonl
    format: openai
template: chatml
filters:
  - short_answer: 40
eval:
  tasks:
    t: {data: eval.jsonl, scorers: [answer_length, em]}
"""


def _chat(i: int) -> str:
    return json.dumps({"messages": [{"role": "user", "content": f"hello {i}"},
                                    {"role": "assistant", "content": f"hi there, number {i}"}]})


def make_project(root: Path, spec: str = SPEC) -> Path:
    (root / "myplugin.py").write_text(PLUGIN)
    (root / "myscorer.py").write_text(SCORER_PLUGIN)
    (root / "qa.jsonl").write_text("".join(json.dumps({"q": f"what is {i}+{i}?", "a": str(2 * i)}) + "\n"
                                           for i in range(12)))
    (root / "chat.jsonl").write_text("".join(_chat(i) + "\n" for i in range(12)))
    (root / "eval.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    (root / "spec.yaml").write_text(spec)
    return root / "spec.yaml"


def build(*args: str):
    return runner.invoke(app, ["build", *map(str, args)])


def version_of(output: str) -> str:
    return re.search(r"version ([0-9a-f]{16})", output).group(1)


def cache_line(output: str) -> str:
    return re.search(r"cache: (\d+ of \d+ sources and \d+ of \d+ rendered rows) reused", output).group(1)


def lock_plugins(root: Path) -> dict[str, str]:
    entry = json.loads((root / "dsc.lock").read_text())["specs"]["spec.yaml"]
    return {p["module"]: p["sha256"] for p in entry["plugins"]}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_plugin_round_trip_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("DSC_CACHE_DIR", str(tmp_path / "cache"))
    spec = make_project(tmp_path)
    plugin = tmp_path / "myplugin.py"
    r = build(spec)
    assert r.exit_code == 0, r.output
    v1 = version_of(r.output)
    manifest = json.loads((tmp_path / "build" / "p" / "manifest.json").read_text())
    assert manifest["plugins"] == [
        {"module": "myplugin", "path": "myplugin.py", "sha256": sha(plugin)},
        {"module": "myscorer", "path": "myscorer.py", "sha256": sha(tmp_path / "myscorer.py")}]
    assert manifest["counts"]["written"]["train"] == 24 and manifest["spec"]["plugins"] == ["myplugin.py", "myscorer.py"]
    assert lock_plugins(tmp_path) == {"myplugin": sha(plugin), "myscorer": sha(tmp_path / "myscorer.py")}
    old_lock = (tmp_path / "dsc.lock").read_bytes()

    r = build(spec)  # unchanged: every stage from the cache, the same version
    assert r.exit_code == 0, r.output
    assert (cache_line(r.output), version_of(r.output)) == ("2 of 2 sources and 24 of 24 rendered rows", v1)

    # Edit the filter's body: it now drops the long chat answers.
    plugin.write_text(PLUGIN.replace("len(answer) > limit", "len(answer) > limit // 4"))
    r = build(spec, "--locked")
    assert r.exit_code == 1
    assert re.search(r"plugin 'myplugin' \(myplugin\.py\) changed: sha256 [0-9a-f]{12}… → [0-9a-f]{12}…", r.output)
    assert (tmp_path / "dsc.lock").read_bytes() == old_lock

    r = build(spec)
    assert r.exit_code == 0, r.output
    # The filter runs in stage 1 of every source: both segments (and so their renders) missed.
    assert cache_line(r.output) == "0 of 2 sources and 0 of 12 rendered rows"
    v2 = version_of(r.output)
    assert v2 != v1
    assert lock_plugins(tmp_path) == {"myplugin": sha(plugin), "myscorer": sha(tmp_path / "myscorer.py")}
    assert (tmp_path / "dsc.lock").read_bytes() != old_lock

    # Edit the scorer: no build stage runs it (all from the cache), but the artifact records it.
    (tmp_path / "myscorer.py").write_text(SCORER_PLUGIN.replace("float(", "1.0 * float("))
    r = build(spec)
    assert r.exit_code == 0, r.output
    assert cache_line(r.output) == "2 of 2 sources and 12 of 12 rendered rows"
    assert version_of(r.output) not in (v1, v2)

    # Back to the first plugin source: the first version again (the cache still has it).
    plugin.write_text(PLUGIN)
    (tmp_path / "myscorer.py").write_text(SCORER_PLUGIN)
    r = build(spec)
    assert (cache_line(r.output), version_of(r.output)) == ("2 of 2 sources and 24 of 24 rendered rows", v1)


def stage1_keys(spec_path: Path) -> dict[str, str]:
    from dsc.compiler.stages.read.ranges import resolve_inputs
    from dsc.compiler.engine.cache import normalised_key

    loaded = load_spec(spec_path)
    inputs = resolve_inputs(loaded).entries
    return {name: normalised_key(loaded.spec, name, inputs, loaded.base_dir, template=None, tokenizer=None)
            for name in loaded.spec.sources}


def test_a_format_plugin_is_in_the_key_of_only_the_source_that_reads_it(tmp_path):
    spec = make_project(tmp_path, SPEC.replace("filters:\n  - short_answer: 40\n", ""))
    before = stage1_keys(spec)
    assert stage1_keys(spec) == before
    (tmp_path / "myplugin.py").write_text(PLUGIN.replace('"""One question', '"""Edited: one question'))
    after = stage1_keys(spec)
    assert after["qa"] != before["qa"] and after["chat"] == before["chat"]


def test_loading_a_spec_again_in_one_process_is_no_duplicate(tmp_path):
    spec = make_project(tmp_path)
    load_spec(spec)
    again = load_spec(spec)  # `dsc validate` then `dsc build`: no duplicate-name error
    assert FORMATS.get("qa_pairs").fn is again.plugins[0].module.qa_pairs
    # An edit that renames the function behind a name: its old definition goes, no duplicate.
    (tmp_path / "myplugin.py").write_text(PLUGIN.replace("def short_answer(", "def answer_is_short("))
    assert load_spec(spec).plugins[0].module.answer_is_short is FILTERS.get("short_answer").fn
    (tmp_path / "myplugin.py").write_text(PLUGIN)
    again = load_spec(spec)
    # A byte-identical copy of the plugin in another project: the same code, no duplicate either;
    # each spec's manifest names its own file.
    copy = tmp_path / "copy"
    copy.mkdir()
    other = load_spec(make_project(copy))
    assert other.plugins[0].file != again.plugins[0].file
    mine = manifest_plugins(again.spec, again.plugins, again.base_dir)
    assert [m.path for m in mine] == ["myplugin.py", "myscorer.py"]
    # A different definition under the same name from another file is a duplicate.
    (copy / "myplugin.py").write_text(PLUGIN.replace("len(answer) > limit", "len(answer) >= limit"))
    load_spec(copy / "spec.yaml")  # its own edit: no duplicate
    with pytest.raises(SpecError, match=r"plugins\[0\]: cannot import 'myplugin.py': DuplicateNameError: format "
                                        r"'qa_pairs' is defined twice: by \S+ \(\S+/copy/myplugin.py:\d+\) and by "):
        load_spec(spec)


def test_a_dotted_module_on_sys_path(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "acme_dsc_plugins"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "quality.py").write_text(PLUGIN.replace("qa_pairs", "acme_qa").replace("short_answer", "acme_short"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = make_project(tmp_path, SPEC.replace("[myplugin.py, myscorer.py]", "[acme_dsc_plugins.quality]")
                        .replace("qa_pairs", "acme_qa").replace("short_answer", "acme_short")
                        .replace("answer_length, ", ""))
    try:
        loaded = load_spec(spec)
        assert loaded.spec.sources["qa"].format == "acme_qa"
        assert manifest_plugins(loaded.spec, loaded.plugins, loaded.base_dir)[0].to_dict() == {
            "module": "acme_dsc_plugins.quality", "path": "acme_dsc_plugins/quality.py", "sha256": sha(pkg / "quality.py")}
    finally:
        FORMATS.defs.pop("acme_qa", None)
        FILTERS.defs.pop("acme_short", None)
        sys.modules.pop("acme_dsc_plugins.quality", None)
        sys.modules.pop("acme_dsc_plugins", None)


def test_the_manifest_names_the_module_of_a_used_callable_the_spec_does_not_list(tmp_path, monkeypatch):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "acme_scoring.py").write_text(SCORER_PLUGIN.replace("answer_length", "acme_len"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = make_project(tmp_path, SPEC.replace("[myplugin.py, myscorer.py]", "[myplugin.py]")
                        .replace("answer_length", "acme_len"))
    try:
        import acme_scoring  # noqa: F401 - as an entry point would: registered, not named by the spec
        loaded = load_spec(spec)
        assert [m.to_dict() for m in manifest_plugins(loaded.spec, loaded.plugins, loaded.base_dir)] == [
            {"module": "acme_scoring", "path": "acme_scoring.py", "sha256": sha(tmp_path / "site" / "acme_scoring.py")},
            {"module": "myplugin", "path": "myplugin.py", "sha256": sha(tmp_path / "myplugin.py")}]
    finally:
        SCORERS.defs.pop("acme_len", None)
        sys.modules.pop("acme_scoring", None)


@pytest.mark.parametrize("plugins,line,message", [
    ("[myplugin.py, nope.py]", 3, r"plugins\[1\]: cannot import 'nope\.py': no such file .*nope\.py"),
    ("[no_such_module_xyz]", 3, r"plugins\[0\]: cannot import 'no_such_module_xyz': no module named "
                                r"'no_such_module_xyz' on sys.path"),
    ("\n  - myplugin.py\n  - broken.py", 5, r"plugins\[1\]: cannot import 'broken\.py': RuntimeError: boom"),
    ("[myplugin.py, twin.py]", 3, r"plugins\[1\]: cannot import 'twin\.py': DuplicateNameError: filter "
                                  r"'short_answer' is defined twice: by dsc_plugin_myplugin_\w+:short_answer "
                                  r"\(\S*/myplugin\.py:\d+\) and by dsc_plugin_twin_\w+:other \(\S*/twin\.py:\d+\)"),
])
def test_plugin_import_errors_are_located(tmp_path, plugins, line, message):
    spec = make_project(tmp_path, SPEC.replace("[myplugin.py, myscorer.py]", plugins))
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "twin.py").write_text("from dsc.plugins import FILTERS\n\n\n"
                                      "@FILTERS.register('short_answer')\ndef other(conv, arg):\n    return None\n")
    r = runner.invoke(app, ["validate", str(spec)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert re.search(rf"spec\.yaml:{line}:\d+: {message}", " ".join(r.output.split())), r.output


def test_an_unknown_name_lists_the_plugins_names_with_a_did_you_mean(tmp_path):
    spec = make_project(tmp_path, SPEC.replace("format: qa_pairs", "format: qa_pair"))
    with pytest.raises(SpecError) as e:
        load_spec(spec)
    assert e.value.line == 7 and "unknown format 'qa_pair' (did you mean 'qa_pairs'?)" in e.value.message
    assert "'openai'" in e.value.message
    spec = make_project(tmp_path, SPEC.replace("short_answer: 40", "short_answr: 40"))
    with pytest.raises(SpecError, match=r"unknown filter 'short_answr' \(did you mean 'short_answer'\?\)"):
        load_spec(spec)


def test_eval_imports_plugins_for_their_scorers(tmp_path, monkeypatch):
    make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "preds.jsonl").write_text(json.dumps({"id": "1", "prediction": "12", "answer": "34"}) + "\n")
    r = runner.invoke(app, ["eval", "--predictions", "preds.jsonl", "--scorers", "answer_length,em", "--out", "ev"])
    assert r.exit_code == 2 and "unknown scorer 'answer_length'" in r.output
    r = runner.invoke(app, ["eval", "--predictions", "preds.jsonl", "--scorers", "answer_length,em", "--out", "ev",
                            "--plugin", "myscorer.py"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "ev" / "results.json").read_text())["models"][0]["tasks"]["preds"]["metrics"]
    assert (metrics["answer_length"]["mean"], metrics["em"]["mean"]) == (1.0, 0.0)
    r = runner.invoke(app, ["eval", "--predictions", "preds.jsonl", "--plugin", "nope.py"])
    assert r.exit_code == 2 and "--plugin: cannot import 'nope.py': no such file" in r.output


def test_diff_names_a_plugin_that_moved():
    from dsc.ops.diff import _notes
    from dsc.artifact.manifest import Manifest, PluginInfo, TemplateInfo

    def manifest(plugins: list[dict[str, str]]) -> Manifest:  # only what _notes reads
        return Manifest.model_construct(template=TemplateInfo(ref="t", sha256="0" * 64, end_of_turn=None),
                                        tokenizer=None, inputs=[], dsc_version="1",
                                        plugins=[PluginInfo(**p) for p in plugins])

    a = manifest([{"module": "myplugin", "path": "myplugin.py", "sha256": "a" * 64}])
    b = manifest([{"module": "myplugin", "path": "myplugin.py", "sha256": "b" * 64},
                  {"module": "more", "path": "more.py", "sha256": "c" * 64}])
    assert _notes(a, b) == ["plugin more (more.py) newly used", "plugin myplugin (myplugin.py) changed "
                            "(aaaaaaaaaaaa → bbbbbbbbbbbb)"]


# ---------------------------------------------------------------------------------------------
# The one registry type, for every kind
# ---------------------------------------------------------------------------------------------


def _options():
    from dsc.core.strict import Strict
    return Strict


KINDS = {  # registry, a built-in name, how a user registers a function under a name
    "format": (FORMATS, "openai", lambda name: register_format(name)),
    "filter": (FILTERS, "non_empty", lambda name: FILTERS.register(name)),
    "convert step": (CONVERTERS, "tag", lambda name: CONVERTERS.register(name, _options())),
    "negative rule": (NEGATIVE_RULES, "no_tools", lambda name: NEGATIVE_RULES.register(name, _options())),
    "scorer": (SCORERS, "em", lambda name: register_scorer(name)),
    "tool": (TOOLS, "search", lambda name: register_tool(name)),
}


def user_fn(*args):
    return None


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_user_definition_named_like_a_builtin_is_an_error_naming_both(kind):
    registry, builtin, register = KINDS[kind]
    before = registry.get(builtin)
    with pytest.raises(DuplicateNameError) as e:
        register(builtin)(user_fn)
    msg = str(e.value)
    first = re.escape(f"{kind} '{builtin}' is defined twice: by dsc.")
    assert re.match(first + r"[\w.]+:\w+ \(/\S+\.py:\d+\) and by test_plugins:user_fn \(\S+test_plugins\.py:\d+\)",
                    msg), msg
    assert registry.get(builtin) is before  # the built-in stays


@pytest.mark.parametrize("kind", list(KINDS))
def test_entry_points_are_discovered_for_every_registry(kind, tmp_path, monkeypatch):
    registry, builtin, _ = KINDS[kind]
    register_line = {
        "format": "from dsc.plugins import register_format as r\nreg = r",
        "filter": "from dsc.plugins import FILTERS\nreg = FILTERS.register",
        "convert step": "from dsc.plugins import CONVERTERS, Strict\nreg = lambda n: CONVERTERS.register(n, Strict)",
        "negative rule": "from dsc.plugins import NEGATIVE_RULES, Strict\nreg = lambda n: NEGATIVE_RULES.register(n, Strict)",
        "scorer": "from dsc.plugins import register_scorer\nreg = register_scorer",
        "tool": "from dsc.plugins import register_tool\nreg = register_tool",
    }[kind]
    module = f"dsc_ep_{registry.group.split('.')[1]}"
    (tmp_path / f"{module}.py").write_text(f"{register_line}\n\n@reg('ep_thing')\ndef thing(*a):\n    return None\n")
    (tmp_path / f"{module}_clash.py").write_text(f"{register_line}\n\n@reg({builtin!r})\ndef thing(*a):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def entry_points_of(value: str):
        ep = importlib.metadata.EntryPoint(name="acme", value=value, group=registry.group)
        return lambda **kw: [ep] if kw.get("group") == registry.group else []

    try:
        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points_of(module))
        monkeypatch.setattr(registry, "entry_points_loaded", False)
        assert "ep_thing" not in registry.defs  # lazily: not before the registry is looked up
        assert registry.get("ep_thing").fn.__module__ == module
        assert "ep_thing" in registry.names()
        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points_of(f"{module}_clash"))
        monkeypatch.setattr(registry, "entry_points_loaded", False)
        with pytest.raises(DuplicateNameError, match=rf"{kind} plugin 'acme' \({module}_clash\): {kind} "
                                                     rf"'{builtin}' is defined twice: by dsc\..* and by {module}_clash"):
            registry.get("anything")
        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points_of("dsc_ep_not_installed"))
        monkeypatch.setattr(registry, "entry_points_loaded", False)
        with pytest.raises(PluginLoadError, match=rf"cannot load {kind} plugin 'acme' \(dsc_ep_not_installed\) of "
                                                  rf"entry-point group '{registry.group}': ModuleNotFoundError"):
            registry.get("anything")
    finally:
        registry.defs.pop("ep_thing", None)
        for m in (module, f"{module}_clash"):
            sys.modules.pop(m, None)


def test_registering_the_same_place_again_replaces_and_unknown_names_suggest():
    reg: Registry = Registry("widget")
    reg.add("a", FILTERS.get("non_empty"))
    reg.add("a", FILTERS.get("non_empty"))  # the same definition again
    with pytest.raises(DuplicateNameError, match="widget 'a' is defined twice"):
        reg.add("a", FILTERS.get("success"))
    reg.add("a", FILTERS.get("success"), replace=True)
    assert reg.get("a") is FILTERS.get("success")
    with pytest.raises(ValueError, match=r"unknown widget 'b'; registered: 'a'"):
        reg.get("b")
    with pytest.raises(ValueError, match=r"unknown widget 'aa' \(did you mean 'a'\?\)"):
        reg.get("aa")


def test_the_runtime_imports_no_compiler_stage_for_its_registries():
    code = ("import sys; import dsc.runtime.scorers, dsc.runtime.tools; "
            "print(sorted(m for m in sys.modules if m.startswith('dsc.compiler')))")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture(autouse=True)
def _forget_test_plugins():
    """Definitions the plugins of these tests register go with the test (the names are reused)."""
    yield
    for registry, name in [(FORMATS, "qa_pairs"), (FILTERS, "short_answer"), (SCORERS, "answer_length")]:
        registry.defs.pop(name, None)


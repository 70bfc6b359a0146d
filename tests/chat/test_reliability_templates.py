"""Reliability, hostile templates: chat templates, prompt/assemble texts and eval prompts run in
dsc's bounded Jinja sandbox (dsc.core.sandbox). Internals are refused, nothing executes, and
every cost bomb stops fast with TemplateLimitError. See docs/RELIABILITY.md."""
from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.core import sandbox
from dsc.record import BadRow
from dsc.core.sandbox import TemplateLimitError
from dsc.chat.templating import ChatTemplate, TemplateRenderError
from dsc.compiler.stages.transforms.common import render_text
from dsc.runtime.prompting import fill

MESSAGES = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]

# `{marker}` is a file the template would create if it could run code.
INTERNALS = [
    "{{ messages.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.system('touch {marker}') }}",
    "{{ joiner.__init__.__globals__.os.system('touch {marker}') }}",
    "{{ namespace.__init__.__globals__['os'].system('touch {marker}') }}",
    "{{ raise_exception.__globals__['os'].system('touch {marker}') }}",
    "{{ dict.__call__.__globals__['os'].system('touch {marker}') }}",
    "{{ '{0.__class__.__mro__}'.format(messages) }}",
    "{{ '{0.__init__.__globals__}'.format(cycler) }}",
    "{{ ('%s' | format(cycler.__init__.__globals__)) }}",
    "{{ messages.append(1) }}{{ messages }}",
    "{% set ns = namespace() %}{% set ns._secret = 1 %}",
]

COST_BOMBS = [
    "{{ 'x' * 10**10 }}",
    "{{ [0] * 10**9 }}",
    "{{ 10 ** 100000000 }}",
    "{% for i in range(10**9) %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",  # time
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",  # output
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s }}{% endif %}{% endmacro %}{{ d('x', 40) }}",
    "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
    "{% set s = 'x' * 1000000 %}{{ ([s] * 1000) | join }}",
    "{% set s = 'x' * 1000000 %}{{ ''.join([s] * 1000) }}",
    "{% set s = 'x' * 10000 %}{{ s | replace('x', s) }}",
    "{% set s = 'x' * 10000 %}{{ s.replace('x', s) }}",
    "{{ ('{0}' * 100000).format('x' * 10000) }}",
    "{{ ('%(a)s' * 100000) | format(a='x' * 10000) }}",
    "{{ 'x' | center(10**9) }}",
    "{{ ('x\n' * 100000) | indent(10000) }}",
    "{{ '%0999999999d' | format(1) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ messages | tojson(indent=10**9) }}",
    "{{ lipsum(10**6) }}",
]


@pytest.fixture
def fast_limits(monkeypatch):
    """The same limits, smaller, so that the time and output bombs stop in a fraction of a second."""
    monkeypatch.setattr(sandbox, "MAX_RENDER_SECONDS", 0.5)
    monkeypatch.setattr(sandbox, "MAX_RENDER_CHARS", 4 << 20)


@pytest.mark.parametrize("source", INTERNALS)
def test_chat_templates_cannot_reach_python_internals(source, tmp_path):
    marker = tmp_path / "pwned"
    tpl = ChatTemplate.from_source(source.replace("{marker}", str(marker)), "hostile")
    try:
        text = tpl.render_text(MESSAGES)
    except TemplateRenderError as e:
        assert "unsafe" in str(e) or "cannot" in str(e) or "immutable" in str(e), e
    else:
        assert "<class" not in text and "function" not in text and "module" not in text, text
    assert not marker.exists()


@pytest.mark.parametrize("source", INTERNALS)
def test_text_templates_cannot_reach_python_internals(source, tmp_path):
    marker = tmp_path / "pwned"
    src = source.replace("{marker}", str(marker)).replace("messages", "row")
    try:
        text = render_text(src, {"row": [1], "cycler": None}, "assemble turn")
    except BadRow as e:
        assert "unsafe" in str(e) or "undefined" in str(e) or "cannot" in str(e), e
    else:
        assert "<class" not in text and "function" not in text, text
    assert not marker.exists()


@pytest.mark.parametrize("source", COST_BOMBS)
def test_cost_bombs_stop_fast_with_bounded_memory(source, fast_limits):
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with pytest.raises((TemplateLimitError, TemplateRenderError)) as e:  # at load (its probe render) or row
        ChatTemplate.from_source(source, "hostile").render_text(MESSAGES)
    assert time.monotonic() - start < 5
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 400, f"peak RSS grew {grown_mb:.0f} MB"
    if e.type is TemplateRenderError:  # only Jinja's own refusals (e.g. lipsum is not offered)
        assert "undefined" in str(e.value)


@pytest.mark.parametrize("source", COST_BOMBS[:3] + COST_BOMBS[6:9])
def test_the_same_limits_hold_in_assemble_texts_and_eval_prompts(source, fast_limits):
    with pytest.raises(TemplateLimitError):
        render_text(source, {"messages": MESSAGES}, "assemble turn")
    with pytest.raises(TemplateLimitError):
        fill(source, {"messages": MESSAGES}, "eval prompt")


def test_default_limits_let_a_50_mb_row_render():
    big = "y" * (50 << 20)
    tpl = ChatTemplate.from_source("{% for m in messages %}{{ m.content }}{% endfor %}", "plain")
    assert len(tpl.render_text([{"role": "user", "content": big}])) == len(big)


def test_a_hostile_template_stops_the_build_with_one_message(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n')
    (tmp_path / "bomb.jinja").write_text("{{ 'x' * 10**12 }}")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"dsc: 1\nname: t\nsources:\n  s: {{path: {data.name}, format: openai}}\n"
                    "template: bomb.jinja\n")
    result = CliRunner().invoke(app, ["build", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "template stopped: repeating a value" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()

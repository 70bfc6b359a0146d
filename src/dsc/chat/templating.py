"""Chat templates: load, compile and render them exactly as transformers does, with loss spans.

The build must not import transformers, yet a template must render to the same bytes here as in
`tokenizer.apply_chat_template(...)` at training and inference time. So this module rebuilds the
environment of `transformers.utils.chat_template_utils._cached_compile_jinja_template` (v5):
an `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with the `loopcontrols`
extension, transformers' `tojson` filter (no HTML escaping), the `raise_exception`/`strftime_now`
globals and its restricted `dict`/`namespace` globals; and it calls templates with the same
variables (`messages`, `tools`, `documents=None`, `add_generation_prompt`, plus the tokenizer's
named special tokens for `tokenizer:<dir>` templates). `tests/chat/test_templates.py` checks the
equality on real data for every built-in. The sandbox is `dsc.core.sandbox.BoundedSandbox`
(that environment plus limits on what one render may cost, and without `lipsum`), so a hostile
template stops with one error instead of running away.

`{% generation %}...{% endgeneration %}` blocks (transformers' `AssistantTracker` tag) are
recorded as character spans of the rendered text; `dsc.chat.render` turns them into loss spans.

Special-token declaration: a template may say which strings are its control tokens with a comment
`{# dsc: special_tokens = ["<|im_start|>", "<|im_end|>"] #}` (a JSON list). The built-ins do;
for other templates they are inferred (see `_infer_special_tokens`).
"""
from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.exceptions
import jinja2.ext
import jinja2.nodes
import jinja2.utils

from dsc.core.errors import DscError, SpecError, allowed_list, did_you_mean
from dsc.core.hashing import sha256_text
from dsc.core.sandbox import BoundedSandbox, bounded_render

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
BUILTIN_TEMPLATES: tuple[str, ...] = tuple(sorted(p.stem for p in TEMPLATES_DIR.glob("*.jinja")))
TOKENIZER_PREFIX = "tokenizer:"

# transformers passes these named special tokens of the loaded tokenizer into every template
# (`PreTrainedTokenizerBase.special_tokens_map`, v5: named tokens only).
NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

_GENERATION_TAG_RE = re.compile(r"\{%-?\s*generation\s*-?%\}")  # the check transformers uses
_DECLARATION_RE = re.compile(r"\{#-?\s*dsc:\s*special_tokens\s*=\s*(\[.*?\])\s*-?#\}", re.DOTALL)
# Fallback inference of control tokens for templates that do not declare them: the common
# spellings of chat control tokens in the template's literal text.
_INFERRED_SPECIAL_RE = re.compile(r"<\|[^\s|<>]{1,64}\|>|</?s>|\[/?INST\]|<</?SYS>>")
# A string that no template produces by itself; used to probe a template's end-of-turn text.
_PROBE = "\u2063dsc-probe\u2063"


class TemplateRenderError(DscError):
    """A template refused (raise_exception) or failed to render a conversation."""

    exit_code = 1


# ---------------------------------------------------------------------------------------------
# The Jinja environment (mirrors transformers' _cached_compile_jinja_template)
# ---------------------------------------------------------------------------------------------


class GenerationTracker(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`: renders its body unchanged and, while a tracked
    render is active, records the body's character span in the output.

    Like transformers' AssistantTracker, the start offset is the length of the top-level output
    produced so far, so a generation block inside a macro or `{% set %}` block is not located
    correctly (the same limitation as transformers). State is thread-local: one compiled template
    may render in several threads."""

    tags = {"generation"}

    def __init__(self, environment: jinja2.Environment):
        super().__init__(environment)
        self._state = threading.local()

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    def _generation_support(self, caller: Callable[[], str]) -> str:
        rv = caller()
        state = self._state
        blocks = getattr(state, "blocks", None)
        if blocks is not None:
            # the output length so far, counted incrementally (long chats have many blocks)
            state.length += sum(len(b) for b in blocks[state.counted:])
            state.counted = len(blocks)
            state.spans.append((state.length, state.length + len(rv)))
        return rv

    @contextmanager
    def tracking(self, blocks: list[str], spans: list[tuple[int, int]]) -> Iterator[None]:
        state = self._state
        if getattr(state, "blocks", None) is not None:
            raise RuntimeError("generation tracker is already active in this thread")
        state.blocks, state.spans, state.length, state.counted = blocks, spans, 0, 0
        try:
            yield
        finally:
            state.blocks = state.spans = None


def _raise_exception(message: Any) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # transformers overrides Jinja's tojson: no HTML escaping, and these options exposed.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:  # noqa: A002 - the name templates use
    # Wall-clock time makes the text time-dependent; built-ins never call it.
    return datetime.now().strftime(format)


class _TemplateDict:
    """`dict(...)` for templates without exposing the real type (as transformers does)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """A namespace that refuses underscore-prefixed attributes (as transformers does)."""

    def __init__(*args: Any, **kwargs: Any):  # noqa: N805 - Jinja's Namespace signature trick
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}. "
                "Please rename the attribute."
            )


def _new_environment() -> BoundedSandbox:
    env = BoundedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = env.bounded_filter("tojson", _tojson)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


@dataclass(frozen=True)
class _Compiled:
    template: jinja2.Template
    tracker: GenerationTracker


_COMPILED: dict[str, _Compiled] = {}
_COMPILED_LOCK = threading.Lock()


def _compile(source: str, sha256: str, where: str) -> _Compiled:
    """Compile once per source (keyed by its sha256); one environment per template, like transformers."""
    hit = _COMPILED.get(sha256)
    if hit is not None:
        return hit
    env = _new_environment()
    try:
        template = env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise SpecError(f"chat template syntax error: {e.message}", where, e.lineno, 1) from None  # Jinja gives no column
    tracker = next(ext for ext in env.extensions.values() if isinstance(ext, GenerationTracker))
    compiled = _Compiled(template, tracker)
    with _COMPILED_LOCK:
        _COMPILED.setdefault(sha256, compiled)
    return _COMPILED[sha256]


# ---------------------------------------------------------------------------------------------
# ChatTemplate
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatTemplate:
    ref: str  # what the spec said
    source: str
    sha256: str
    special_tokens: tuple[str, ...]  # control strings a message must not contain
    end_of_turn: str | None  # the text that ends an assistant turn (probed), None when nothing does
    has_generation_tags: bool
    # Extra template variables: the tokenizer's named special tokens for `tokenizer:<dir>`
    # templates (transformers passes them; templates such as Llama-2's use `bos_token`).
    variables: tuple[tuple[str, str], ...] = ()
    where: str = field(default="", compare=False)  # file used in error messages

    @classmethod
    def from_source(cls, source: str, ref: str = "inline", *, where: str | None = None,
                    variables: Mapping[str, str] | None = None,
                    extra_special_tokens: tuple[str, ...] = ()) -> "ChatTemplate":
        where = where or ref
        sha = sha256_text(source)
        _compile(source, sha, where)  # syntax errors surface at load time
        specials = _declared_special_tokens(source, where)
        if specials is None:
            specials = _infer_special_tokens(source)
        specials = tuple(sorted(set(specials) | set(extra_special_tokens), key=lambda s: (-len(s), s)))
        tpl = cls(
            ref=ref,
            source=source,
            sha256=sha,
            special_tokens=specials,
            end_of_turn=None,
            has_generation_tags=bool(_GENERATION_TAG_RE.search(source)),
            variables=tuple(sorted((variables or {}).items())),
            where=where,
        )
        object.__setattr__(tpl, "end_of_turn", _probe_end_of_turn(tpl))
        return tpl

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
               add_generation_prompt: bool = False, **kwargs: Any) -> tuple[str, list[tuple[int, int]]]:
        """The rendered text and the character spans of its generation blocks, in order.

        Raises TemplateRenderError when the template refuses or fails on this input."""
        compiled = _compile(self.source, self.sha256, self.where or self.ref)
        # transformers drops keys whose value is None before rendering (many templates test
        # `is defined` rather than `is not none`).
        messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
        variables = {**dict(self.variables), **kwargs}
        blocks: list[str] = []
        spans: list[tuple[int, int]] = []
        try:
            with compiled.tracker.tracking(blocks, spans):
                bounded_render(compiled.template.environment, compiled.template.generate(
                    messages=messages, tools=tools, documents=None,
                    add_generation_prompt=add_generation_prompt, **variables,
                ), blocks)
        except jinja2.exceptions.TemplateError as e:
            raise TemplateRenderError(f"chat template {self.ref!r} refused the conversation: {e}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
            raise TemplateRenderError(
                f"chat template {self.ref!r} failed on the conversation: {type(e).__name__}: {e}") from None
        return "".join(blocks), spans

    def render_text(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                    add_generation_prompt: bool = False, **kwargs: Any) -> str:
        return self.render(messages, tools, add_generation_prompt, **kwargs)[0]


def _declared_special_tokens(source: str, where: str) -> tuple[str, ...] | None:
    m = _DECLARATION_RE.search(source)
    if m is None:
        return None
    try:
        value = json.loads(m.group(1))
    except json.JSONDecodeError as e:
        line = source.count("\n", 0, m.start()) + 1
        raise SpecError(f"bad `dsc: special_tokens` declaration in chat template: {e}", where, line) from None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        line = source.count("\n", 0, m.start()) + 1
        raise SpecError("`dsc: special_tokens` must be a JSON list of non-empty strings", where, line)
    return tuple(value)


def _infer_special_tokens(source: str) -> tuple[str, ...]:
    """Control-token-looking strings in the template's literal text (template data and string
    constants, as transformers' `_get_template_literal_text` collects them). Misses tokens a
    template assembles from pieces (`'<|' + role + '|>'`): declare those instead."""
    env = _new_environment()
    ast = env.parse(source)
    literals = [n.data for n in ast.find_all(jinja2.nodes.TemplateData)]
    literals += [n.value for n in ast.find_all(jinja2.nodes.Const) if isinstance(n.value, str)]
    return tuple(sorted({m.group(0) for lit in literals for m in _INFERRED_SPECIAL_RE.finditer(lit)}))


def _probe_end_of_turn(tpl: ChatTemplate) -> str | None:
    """What follows an assistant message's content: render [user, assistant <probe>] and take the
    text after the probe, right-stripped. None when nothing follows (e.g. alpaca) or the template
    accepts neither probe conversation."""
    probes = (
        [{"role": "user", "content": "u"}, {"role": "assistant", "content": _PROBE}],
        [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
         {"role": "assistant", "content": _PROBE}],
    )
    for messages in probes:
        try:
            text = tpl.render_text(messages)
        except TemplateRenderError:
            continue
        at = text.rfind(_PROBE)
        if at < 0:
            continue
        tail = text[at + len(_PROBE):].rstrip()
        return tail or None
    return None


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_template(ref: str, base_dir: Path) -> ChatTemplate:
    """A built-in name, a path to a .jinja file (relative to `base_dir`), or `tokenizer:<dir>`.

    Not cached (a file may change between two builds of one process); compilation is cached by
    the source's sha256."""
    base = Path(base_dir)
    if not isinstance(ref, str) or not ref.strip():
        raise SpecError("template must be a built-in name, a .jinja file or tokenizer:<dir>; built-ins: "
                        + allowed_list(BUILTIN_TEMPLATES))
    if ref.startswith(TOKENIZER_PREFIX):
        return _load_tokenizer_template(ref, ref[len(TOKENIZER_PREFIX):].strip(), base)
    if ref in BUILTIN_TEMPLATES:
        path = TEMPLATES_DIR / f"{ref}.jinja"
        return ChatTemplate.from_source(path.read_text(encoding="utf-8"), ref, where=f"<built-in {ref}>")
    looks_like_path = (ref.endswith((".jinja", ".j2", ".jinja2", ".txt")) or "/" in ref or "\\" in ref
                       or (base / ref).is_file())
    if not looks_like_path:
        raise SpecError(f"unknown built-in template {ref!r}{did_you_mean(ref, BUILTIN_TEMPLATES)}; built-ins: "
                        f"{allowed_list(BUILTIN_TEMPLATES)} (or a path to a .jinja file, or tokenizer:<dir>)")
    path = Path(ref) if Path(ref).is_absolute() else base / ref
    if not path.is_file():
        raise SpecError(f"chat template file not found: {ref} (looked at {path})")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read chat template {ref}: {e}") from None
    return ChatTemplate.from_source(source, ref, where=str(path))


def _load_tokenizer_template(ref: str, tok_ref: str, base: Path) -> ChatTemplate:
    if not tok_ref:
        raise SpecError("tokenizer:<dir> needs a directory, e.g. tokenizer:models/my-tokenizer")
    jinja_file = resolve_tokenizer_file(tok_ref, base, "chat_template.jinja", required=False)
    config_file = resolve_tokenizer_file(tok_ref, base, "tokenizer_config.json", required=False)
    tok_json = resolve_tokenizer_file(tok_ref, base, "tokenizer.json", required=False)
    config: dict[str, Any] = {}
    if config_file is not None:
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SpecError(f"cannot read {config_file}: {e}") from None
    if jinja_file is not None:
        source, where = jinja_file.read_text(encoding="utf-8"), str(jinja_file)
    else:
        source = config.get("chat_template")
        if isinstance(source, list):  # [{"name": ..., "template": ...}, ...]: the default one
            by_name = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
            source = by_name.get("default")
        where = f"{config_file} (chat_template)"
    if not isinstance(source, str) or not source:
        raise SpecError(f"tokenizer {tok_ref!r} has no chat template (no chat_template.jinja and no "
                        f"chat_template in tokenizer_config.json)")
    variables: dict[str, str] = {}
    for name in NAMED_SPECIAL_TOKENS:
        value = config.get(name)
        if isinstance(value, dict):  # a serialised AddedToken
            value = value.get("content")
        if isinstance(value, str):
            variables[name] = value
    # Control tokens: the tokenizer's special added tokens, plus its other added tokens that the
    # template writes itself (e.g. Qwen's <tool_call>), as transformers' sanitize_control_tokens.
    added = [t for t in (config.get("added_tokens_decoder") or {}).values() if isinstance(t, dict)]
    if tok_json is not None:
        try:
            added += json.loads(tok_json.read_text(encoding="utf-8")).get("added_tokens") or []
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
            raise SpecError(f"cannot read {tok_json}: {e}") from None
    specials = set(variables.values())
    for t in added:
        content = t.get("content") if isinstance(t, dict) else None
        if isinstance(content, str) and content and (t.get("special") or content in source):
            specials.add(content)
    return ChatTemplate.from_source(source, ref, where=where, variables=variables,
                                    extra_special_tokens=tuple(sorted(specials)))


def resolve_tokenizer_file(ref: str, base_dir: Path, filename: str, *, required: bool) -> Path | None:
    """`filename` of a tokenizer given as a local directory (relative to `base_dir`) or a Hugging
    Face hub id (from the local cache when offline). None when the file does not exist and is not
    required; SpecError when the tokenizer itself cannot be found."""
    local = Path(ref).expanduser()
    local = local if local.is_absolute() else Path(base_dir) / local
    if local.is_dir():
        path = local / filename
        if path.is_file():
            return path
        if required:
            raise SpecError(f"tokenizer directory {ref!r} has no {filename} (looked at {path})")
        return None
    if ref.startswith((".", "/", "~")) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", ref):
        raise SpecError(f"tokenizer directory not found: {ref} (looked at {local})")
    return _hub_file(ref, filename, required=required)


def _hub_file(repo_id: str, filename: str, *, required: bool) -> Path | None:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with datasets
        raise SpecError(f"tokenizer {repo_id!r} is not a local directory and huggingface_hub is not installed"
                        ) from None
    try:
        return Path(hf_hub_download(repo_id, filename))
    except LocalEntryNotFoundError as e:  # (a subclass of EntryNotFoundError: first)
        if not required and _hub_repo_cached(repo_id):
            return None  # the repo is cached, this optional file is just not part of it
        raise SpecError(f"tokenizer {repo_id!r} is not a local directory and is not in the Hugging Face cache "
                        f"(offline or not reachable: {e})") from None
    except EntryNotFoundError:
        if required:
            raise SpecError(f"tokenizer {repo_id!r} on the Hugging Face hub has no {filename}") from None
        return None
    except Exception as e:  # noqa: BLE001 - network, auth, bad id: all mean "cannot get it"
        raise SpecError(f"tokenizer {repo_id!r} is not a local directory and could not be fetched from the "
                        f"Hugging Face hub: {type(e).__name__}: {e}") from None


def _hub_repo_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "tokenizer_config.json"), str) or isinstance(
            try_to_load_from_cache(repo_id, "tokenizer.json"), str)
    except Exception:  # noqa: BLE001
        return False

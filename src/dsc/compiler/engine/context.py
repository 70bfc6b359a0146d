"""The build context: what the per-row stages need (spec, template, tokenizer, transforms),
loaded once per process and read by stage functions through `executors.worker_context()`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dsc.chat.templating import ChatTemplate, load_template
from dsc.compiler.stages.transforms.pipeline import RowPipeline, build_pipeline, weights_dialect
from dsc.spec.model import LoadedSpec, Spec, is_weighted

if TYPE_CHECKING:
    from dsc.chat.tokenize import RowTokenizer
    from dsc.dialects.base import Dialect


@dataclass
class BuildContext:
    """Everything a worker needs; inherited by forked workers, never mutated."""

    spec: Spec
    base_dir: Path
    template: ChatTemplate
    pipeline: RowPipeline  # the per-row steps (label/filters/convert/...; none: rows pass as read)
    tokenizer: RowTokenizer | None = None  # when the spec tokenises
    # whose turns the `part` weight rules read (None: ReAct's labels over the supervised text)
    parts_dialect: Dialect | None = None

    @property
    def weighted(self) -> bool:
        """The spec has loss weight rules: rows get `loss_weights` (and `weights` when tokenised)."""
        return is_weighted(self.spec)


def load_template_and_tokenizer(loaded: LoadedSpec) -> tuple[ChatTemplate, RowTokenizer | None]:
    """The spec's chat template and tokenizer (None when it does not tokenise), loaded as a build
    loads them, errors located at their keys (`dsc.lock` pins their hashes from these)."""
    spec, base = loaded.spec, loaded.base_dir
    with loaded.at("template"):
        template = load_template(spec.template, base)
    tokenizer = None
    if spec.tokenize is not None:
        from dsc.chat.tokenize import RowTokenizer

        with loaded.at("tokenize", "tokenizer"):
            tokenizer = RowTokenizer.load(spec.tokenize, base)
    return template, tokenizer


def build_context(loaded: LoadedSpec) -> BuildContext:
    """What the per-row stages need: the template, the tokenizer and the transforms, loaded once
    per process (the driver; a Ray actor rebuilds it the same way from the spec)."""
    spec, base = loaded.spec, loaded.base_dir
    template, tokenizer = load_template_and_tokenizer(loaded)
    with loaded.at():  # prompt/tool files are checked by load_spec; this names any left (exit 2)
        pipeline = build_pipeline(spec, base, template=template, tokenizer=tokenizer)
    with loaded.at("loss"):
        dialect = weights_dialect(spec)
    return BuildContext(spec=spec, base_dir=base, template=template, tokenizer=tokenizer, pipeline=pipeline,
                        parts_dialect=dialect)

"""Artifact rows → (input_ids, labels) for training, pinned to the artifact's rendering.

The artifact stores the fully rendered `text` and the supervised character spans `loss_spans`
(and, when the build was given a tokenizer, `input_ids`/`labels`). The stored ids are used only
when they were produced by the same tokenizer as the model's (same sha256); otherwise the text
is re-tokenised with the model's tokenizer and a token is supervised iff its character span
overlaps a loss span. Either way the text is the artifact's, never re-rendered here.

An artifact built with loss weights also gives each row `loss_weights` (float per token, 0 where
the label is -100): the stored `weights` column with stored ids, else the weights of its
`loss_weights` pieces mapped onto the model's tokens by the build's rule
(`dsc.compiler.stages.render.weights.token_weights`).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from .artifact import Artifact, ArtifactError

log = logging.getLogger("dsc.runtime")

IGNORE = -100
WEIGHTS = "loss_weights"  # the per-token weight feature (and batch key) of a weighted artifact


def tokenizer_sha256(tokenizer_ref: str | Path | None) -> str | None:
    """The tokenizer's identity exactly as the compiler records it in manifest["tokenizer"]["sha256"]
    (`RowTokenizer.sha256`: tokenizer.json + tokenizer_config.json); None when it cannot be read."""
    if tokenizer_ref is None:
        return None
    from dsc.compiler.core.errors import DscError
    from dsc.compiler.stages.tokenize.tokenize import RowTokenizer

    try:
        return RowTokenizer.load(str(tokenizer_ref), Path.cwd()).sha256
    except DscError:
        return None


def encode(tokenizer: Any, texts: list[str], spans: list[list[list[int]]],
           weighted_spans: list[list[dict[str, Any]]] | None = None
           ) -> tuple[list[list[int]], list[list[int]], list[list[float]] | None]:
    """Re-tokenise rendered texts and derive labels from their loss spans with the build's own rule
    (`dsc.compiler.stages.tokenize.tokenize.supervised_mask`: a token is supervised iff its characters overlap a
    span, so a token straddling a span edge, e.g. a merged end-of-turn piece, is trained), and
    per-token weights from `weighted_spans` (the artifact's `loss_weights`) when given."""
    import numpy as np

    from dsc.compiler.stages.render.render import merge_spans
    from dsc.compiler.stages.tokenize.tokenize import supervised_mask
    from dsc.compiler.stages.render.weights import token_weights

    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    all_ids, all_labels, all_weights = [], [], []
    for i, (ids, offsets, row_spans) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], spans)):
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        mask = supervised_mask(offsets, merge_spans(row_spans or []))
        all_ids.append(list(ids))
        all_labels.append([t if m else IGNORE for t, m in zip(ids, mask)])
        if weighted_spans is not None:
            pieces = weighted_spans[i] or []
            bounds = np.array([[p["start"], p["end"]] for p in pieces], dtype=np.int64).reshape(-1, 2)
            values = np.array([p["weight"] for p in pieces], dtype=np.float32)
            all_weights.append(token_weights(offsets, bounds, values).tolist())
    return all_ids, all_labels, (all_weights if weighted_spans is not None else None)


@dataclass
class FeatureStats:
    split: str
    source: str  # "artifact" (stored input_ids/labels) or "retokenized"
    rows: int = 0
    kept: int = 0
    truncated: int = 0
    dropped_unsupervised: int = 0  # rows left with no supervised token (after truncation)
    tokens: int = 0
    supervised_tokens: int = 0
    weighted: bool = False  # rows carry loss weights
    weight_sum: float = 0.0  # sum of the kept tokens' loss weights

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def use_stored_tokens(artifact: Artifact, split: str, model_tokenizer_sha: str | None) -> tuple[bool, str]:
    """Whether the artifact's own input_ids/labels fit this model, and why (for run.json)."""
    tok = artifact.manifest.tokenizer
    if not artifact.has_column(split, "input_ids") or not artifact.has_column(split, "labels"):
        return False, "the artifact is not tokenised"
    if tok is None:
        return False, "the artifact does not record its tokenizer"
    if model_tokenizer_sha is None:
        return False, "the model's tokenizer has no tokenizer.json to compare"
    if tok.sha256 != model_tokenizer_sha:
        return False, f"the artifact was tokenised with {tok.ref} (different sha256)"
    return True, "the artifact was tokenised with the model's tokenizer"


def build_features(artifact: Artifact, split: str, tokenizer: Any, *, max_length: int,
                   use_stored: bool) -> tuple["datasets.Dataset", FeatureStats]:  # noqa: F821
    """One split as a Dataset of input_ids/labels (truncated to max_length; unsupervised rows dropped)."""
    import datasets

    table = artifact.table(split)
    for column in ("text", "loss_spans"):
        if column not in table.column_names:
            raise ArtifactError(f"artifact split '{split}' has no '{column}' column")
    weighted = "loss_weights" in table.column_names
    stats = FeatureStats(split=split, source="artifact" if use_stored else "retokenized", rows=table.num_rows,
                         weighted=weighted)
    weights_list: list[Any] | None = None
    if use_stored:
        ids_list = table.column("input_ids").to_pylist()
        labels_list = table.column("labels").to_pylist()
        if weighted:
            if "weights" not in table.column_names:
                raise ArtifactError(f"artifact split '{split}' has loss_weights but its tokens have no 'weights'")
            weights_list = table.column("weights").to_pylist()
    else:
        ids_list, labels_list, weights_list = encode(
            tokenizer, table.column("text").to_pylist(), table.column("loss_spans").to_pylist(),
            table.column("loss_weights").to_pylist() if weighted else None)
    vocab = len(tokenizer)
    out_ids, out_labels, out_weights = [], [], []
    for i, (ids, labels) in enumerate(zip(ids_list, labels_list)):
        weights = weights_list[i] if weights_list is not None else None
        if len(ids) > max_length:
            ids, labels = ids[:max_length], labels[:max_length]
            weights = weights[:max_length] if weights is not None else None
            stats.truncated += 1
        supervised = sum(1 for label in labels if label != IGNORE)
        if supervised == 0:
            stats.dropped_unsupervised += 1
            continue
        if ids and max(ids) >= vocab:
            raise ArtifactError(f"artifact split '{split}' holds token id {max(ids)} beyond the tokenizer's "
                                f"vocabulary ({vocab}): it was not tokenised with this tokenizer")
        out_ids.append(ids)
        out_labels.append(labels)
        if weights is not None:
            out_weights.append(weights)
            stats.weight_sum += float(sum(weights))
        stats.tokens += len(ids)
        stats.supervised_tokens += supervised
    stats.kept = len(out_ids)
    if stats.truncated:
        log.warning("%s: %d of %d rows were longer than max_length=%d tokens and were truncated",
                    split, stats.truncated, stats.rows, max_length)
    if stats.dropped_unsupervised:
        log.warning("%s: %d rows had no supervised token left and were dropped", split, stats.dropped_unsupervised)
    columns: dict[str, Any] = {"input_ids": out_ids, "labels": out_labels}
    types = {"input_ids": datasets.Sequence(datasets.Value("int32")),
             "labels": datasets.Sequence(datasets.Value("int32"))}
    if weighted:
        columns[WEIGHTS] = out_weights
        types[WEIGHTS] = datasets.Sequence(datasets.Value("float32"))
    features = datasets.Dataset.from_dict(columns, features=datasets.Features(types))
    return features, stats


class PadCollator:
    """Right-pads a batch: input_ids with the pad id, labels with -100, loss weights (when the
    rows have them) with 0, and an attention mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        weighted = WEIGHTS in features[0]
        weights = torch.zeros((len(features), width), dtype=torch.float32) if weighted else None
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            labels[i, :n] = torch.as_tensor(f["labels"], dtype=torch.long)
            mask[i, :n] = 1
            if weights is not None:
                weights[i, :n] = torch.as_tensor(f[WEIGHTS], dtype=torch.float32)
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        if weights is not None:
            batch[WEIGHTS] = weights
        return batch


def pack_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit-decreasing: the row indices of each bin, every bin at most `capacity` tokens.

    Rows are taken longest first (ties by index, so the result depends only on the lengths), each
    into the first bin it fits; a row longer than `capacity` gets a bin of its own."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])  # negative for an over-long row: nothing else fits
    return bins


@dataclass(frozen=True)
class PackingCollator:
    """Packs a batch's rows into bins of at most `pack_length` tokens (`pack_bins`; None: the
    batch's longest row), one sequence per bin, the bins right-padded to the longest bin.

    Each bin is flattened by transformers' `DataCollatorWithFlattening`: position_ids restart at
    every row and the label of each row's first token is -100 (the previous row's last token must
    not predict it; unpacked, that label is never predicted either). No attention_mask is
    returned, on purpose: given position_ids and no 2-D mask (and no cache), transformers'
    `masking_utils` builds the block-diagonal causal mask itself (`find_packed_sequence_indices`,
    for eager and sdpa), and flash-attention reads the same boundaries as varlen sequence lengths;
    a 2-D padding mask would switch that detection off and let rows attend to each other. The
    padding after a bin's rows is one more segment (positions from 0 again, labels -100, loss
    weight 0), so it is attended to by nothing and adds nothing to the loss.
    Loss weights, when the rows have them, are laid out alongside (0 on padding).

    `one_sequence` packs the whole batch into one bin, for flash-attention: it finds packed rows
    (varlen) only in a batch of one sequence, and there attention is computed per row, so one long
    bin costs nothing extra.
    """

    pad_id: int = 0  # written on bin padding; the tokenizer's pad id keeps it out of the Trainer's token count
    pack_length: int | None = None
    one_sequence: bool = False

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch
        from transformers import DataCollatorWithFlattening

        flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)
        lengths = [len(f["input_ids"]) for f in features]
        bins = pack_bins(lengths, sum(lengths) if self.one_sequence else self.pack_length or max(lengths))
        width = max(sum(lengths[i] for i in members) for members in bins)
        shape = (len(bins), width)
        batch = {"input_ids": torch.full(shape, self.pad_id, dtype=torch.long),
                 "labels": torch.full(shape, IGNORE, dtype=torch.long),
                 "position_ids": torch.zeros(shape, dtype=torch.long)}
        weighted = WEIGHTS in features[0]
        if weighted:
            batch[WEIGHTS] = torch.zeros(shape, dtype=torch.float32)
        for row, members in enumerate(bins):
            flat = flatten([{"input_ids": features[i]["input_ids"], "labels": features[i]["labels"]}
                            for i in members])
            n = sum(lengths[i] for i in members)
            for key in ("input_ids", "labels", "position_ids"):
                batch[key][row, :n] = flat[key][0]
            batch["position_ids"][row, n:] = torch.arange(width - n)
            if weighted:
                batch[WEIGHTS][row, :n] = torch.tensor([w for i in members for w in features[i][WEIGHTS]])
        return batch


packing_collator = PackingCollator  # the earlier name

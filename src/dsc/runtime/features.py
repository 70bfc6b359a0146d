"""Artifact rows → (input_ids, labels) for training, pinned to the artifact's rendering.

The artifact stores the fully rendered `text` and the supervised character spans `loss_spans`
(and, when the build was given a tokenizer, `input_ids`/`labels`). The stored ids are used only
when they were produced by the same tokenizer as the model's (same sha256); otherwise the text
is re-tokenised with the model's tokenizer and a token is supervised iff its character span
overlaps a loss span. Either way the text is the artifact's, never re-rendered here.

An artifact built with loss weights also gives each row `loss_weights` (float per token, 0 where
the label is -100): the stored `weights` column with stored ids, else the weights of its
`loss_weights` pieces mapped onto the model's tokens by the build's rule
(`dsc.chat.weights.token_weights`).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from dsc.artifact.reader import Artifact
from dsc.core.errors import ArtifactError

log = logging.getLogger("dsc.runtime")

IGNORE = -100
WEIGHTS = "loss_weights"  # the per-token weight feature (and batch key) of a weighted artifact


def tokenizer_sha256(tokenizer_ref: str | Path | None) -> str | None:
    """The tokenizer's identity exactly as the compiler records it in manifest["tokenizer"]["sha256"]
    (`RowTokenizer.sha256`: tokenizer.json + tokenizer_config.json); None when it cannot be read."""
    if tokenizer_ref is None:
        return None
    from dsc.chat.tokenize import RowTokenizer
    from dsc.core.errors import DscError

    try:
        return RowTokenizer.load(str(tokenizer_ref), Path.cwd()).sha256
    except DscError:
        return None


def encode(tokenizer: Any, texts: list[str], spans: list[list[list[int]]],
           weighted_spans: list[list[dict[str, Any]]] | None = None
           ) -> tuple[list[list[int]], list[list[int]], list[list[float]] | None]:
    """Re-tokenise rendered texts and derive labels from their loss spans with the build's own rule
    (`dsc.chat.tokenize.supervised_mask`: a token is supervised iff its characters overlap a
    span, so a token straddling a span edge, e.g. a merged end-of-turn piece, is trained), and
    per-token weights from `weighted_spans` (the artifact's `loss_weights`) when given."""
    import numpy as np

    from dsc.chat.render import merge_spans
    from dsc.chat.tokenize import supervised_mask
    from dsc.chat.weights import token_weights

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


def flatten_rows(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows as one packed sequence, by transformers' `DataCollatorWithFlattening`: position_ids
    restart at every row and the label of each row's first token is -100 (the previous row's last
    token must not predict it; unpacked, that label is never predicted either). Loss weights, when
    the rows have them, are laid out alongside."""
    from transformers import DataCollatorWithFlattening

    flat = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE, return_tensors="np")(
        [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    out = {key: flat[key][0].tolist() for key in ("input_ids", "labels", "position_ids")}
    if rows and WEIGHTS in rows[0]:
        out[WEIGHTS] = [float(w) for r in rows for w in r[WEIGHTS]]
    return out


def pad_sequences(sequences: Sequence[dict[str, list[Any]]], pad_id: int) -> dict[str, Any]:
    """Packed sequences (`flatten_rows`) as one batch, right-padded to the longest.

    No attention_mask, on purpose: given position_ids and no 2-D mask (and no cache),
    transformers' `masking_utils` builds the block-diagonal causal mask itself
    (`find_packed_sequence_indices`, for eager and sdpa), and flash-attention reads the same
    boundaries as varlen sequence lengths; a 2-D padding mask would switch that detection off and
    let rows attend to each other. The padding after a sequence is one more segment (positions
    from 0 again, labels -100, loss weight 0), so it is attended to by nothing and adds nothing to
    the loss."""
    import torch

    width = max(len(s["input_ids"]) for s in sequences)
    shape = (len(sequences), width)
    batch = {"input_ids": torch.full(shape, pad_id, dtype=torch.long),
             "labels": torch.full(shape, IGNORE, dtype=torch.long),
             "position_ids": torch.zeros(shape, dtype=torch.long)}
    weighted = WEIGHTS in sequences[0]
    if weighted:
        batch[WEIGHTS] = torch.zeros(shape, dtype=torch.float32)
    for row, seq in enumerate(sequences):
        n = len(seq["input_ids"])
        for key in ("input_ids", "labels", "position_ids"):
            batch[key][row, :n] = torch.as_tensor(seq[key], dtype=torch.long)
        batch["position_ids"][row, n:] = torch.arange(width - n)
        if weighted:
            batch[WEIGHTS][row, :n] = torch.as_tensor(seq[WEIGHTS], dtype=torch.float32)
    return batch


@dataclass(frozen=True)
class PackingCollator:
    """Packs a batch's rows into bins of at most `pack_length` tokens (`pack_bins`; None: the
    batch's longest row), one sequence per bin (`flatten_rows`), the bins right-padded to the
    longest bin (`pad_sequences`, which says why there is no attention_mask).

    `one_sequence` packs the whole batch into one bin, for flash-attention: it finds packed rows
    (varlen) only in a batch of one sequence, and there attention is computed per row, so one long
    bin costs nothing extra.
    """

    pad_id: int = 0  # written on bin padding; the tokenizer's pad id keeps it out of the Trainer's token count
    pack_length: int | None = None
    one_sequence: bool = False

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        lengths = [len(f["input_ids"]) for f in features]
        bins = pack_bins(lengths, sum(lengths) if self.one_sequence else self.pack_length or max(lengths))
        return pad_sequences([flatten_rows([features[i] for i in members]) for members in bins], self.pad_id)


# ---------------------------------------------------------------------------------------------
# Packing across the dataset (`packing: dataset`): the bins are made once, before training
# ---------------------------------------------------------------------------------------------

PACK_WINDOW = 1000  # rows per first-fit-decreasing window (bounds the time FFD takes; rows never split)


def pack_dataset_bins(lengths: Sequence[int], capacity: int, seed: int,
                      window: int = PACK_WINDOW) -> list[list[int]]:
    """The bins of a whole split: its rows in an order shuffled by `seed`, cut into windows of
    `window` rows, each window packed first-fit-decreasing (`pack_bins`) into bins of at most
    `capacity` tokens (a longer row alone). Every row is in exactly one bin; the result depends
    only on the lengths, the capacity, the seed and the window."""
    import random

    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    bins: list[list[int]] = []
    for start in range(0, len(order), window):
        rows = order[start:start + window]
        bins.extend([rows[i] for i in members] for members in pack_bins([lengths[r] for r in rows], capacity))
    return bins


@dataclass
class DatasetPacking:
    """What packing a split across its rows gave (for run.json)."""

    rows: int
    bins: int
    tokens: int  # the rows' tokens
    capacity_tokens: int  # bins x pack_length
    over_long_rows: int  # rows longer than pack_length, each alone in its bin

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_bin": round(self.rows / max(self.bins, 1), 3),
                "fill": round(self.tokens / max(self.capacity_tokens, 1), 4)}


def pack_dataset(rows: "datasets.Dataset", pack_length: int, seed: int  # noqa: F821
                 ) -> tuple["datasets.Dataset", DatasetPacking]:  # noqa: F821
    """A split's rows packed once into bins (`pack_dataset_bins`), each bin one packed sequence
    (`flatten_rows`: input_ids, labels, position_ids, and loss_weights when the rows have them),
    so a training step takes whole bins (`BinCollator`)."""
    import datasets

    lengths = [len(ids) for ids in rows["input_ids"]]
    bins = pack_dataset_bins(lengths, pack_length, seed)
    sequences = [flatten_rows([rows[i] for i in members]) for members in bins]
    keys = list(sequences[0]) if sequences else ["input_ids", "labels", "position_ids"]
    types = {key: datasets.Sequence(datasets.Value("float32" if key == WEIGHTS else "int32")) for key in keys}
    table = datasets.Dataset.from_dict({key: [s[key] for s in sequences] for key in keys},
                                       features=datasets.Features(types))
    info = DatasetPacking(rows=len(lengths), bins=len(bins), tokens=sum(lengths),
                          capacity_tokens=len(bins) * pack_length,
                          over_long_rows=sum(1 for n in lengths if n > pack_length))
    return table, info


@dataclass(frozen=True)
class BinCollator:
    """A batch of bins made by `pack_dataset`: one sequence per bin, right-padded to the longest
    (`pad_sequences`); `one_sequence` (flash-attention) joins the batch's bins into one sequence
    (their positions already restart at every row)."""

    pad_id: int = 0
    one_sequence: bool = False

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        sequences = [{key: list(f[key]) for key in f} for f in features]
        if self.one_sequence:
            sequences = [{key: [v for s in sequences for v in s[key]] for key in sequences[0]}]
        return pad_sequences(sequences, self.pad_id)

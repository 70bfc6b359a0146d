"""`dsc train packing=true`: first-fit-decreasing bins, the packed batch layout, the bin size rule,
and that a packed step gives the loss and the gradients of its rows run one by one (weighted or
not, sdpa and eager attention): packed rows do not see each other."""
from __future__ import annotations

import json
import random
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dsc.core.errors import SpecError
from dsc.runtime.artifact import load_artifact
from dsc.spec.runtime import TrainConfig
from dsc.runtime.features import (IGNORE, WEIGHTS, BinCollator, PackingCollator, PadCollator, build_features, flatten_rows,
                                  pack_bins, pack_dataset_bins)
from dsc.runtime.train import batch_collator, prepare_training, resolve_pack_length

from test_runtime_support import make_artifact


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return make_artifact(tmp_path_factory.mktemp("art") / "arith", n_train=16, n_validation=0)


# ---------------------------------------------------------------------------------------------
# Bins
# ---------------------------------------------------------------------------------------------


def test_pack_bins_is_first_fit_decreasing():
    # longest first: 8 -> bin 0, 7 -> bin 1, 5 -> bin 2, 3 -> bin 1 (first with room), 2 -> bin 0, 1 -> bin 2
    assert pack_bins([5, 3, 8, 2, 7, 1], 10) == [[2, 3], [4, 1], [0, 5]]
    # equal lengths keep their order; an over-long row is a bin of its own that nothing joins
    assert pack_bins([4, 4, 4], 8) == [[0, 1], [2]]
    assert pack_bins([12, 3, 4], 10) == [[0], [2, 1]]
    assert pack_bins([], 10) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 40), max_size=40), st.integers(1, 50))
def test_pack_bins_bounds(lengths, capacity):
    bins = pack_bins(lengths, capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))  # every row once
    loads = [sum(lengths[i] for i in b) for b in bins]
    for b, load in zip(bins, loads):
        assert load <= capacity or len(b) == 1  # within the bound, or one over-long row alone
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
    # first fit: no row of a later bin would have fitted into an earlier one
    for j, later in enumerate(bins):
        for i in range(j):
            assert all(loads[i] + lengths[r] > capacity for r in later)
    # deterministic, and the bins depend on the lengths only, not on the order they come in
    assert pack_bins(lengths, capacity) == bins
    shuffled = list(range(len(lengths)))
    random.Random(0).shuffle(shuffled)
    again = pack_bins([lengths[i] for i in shuffled], capacity)
    assert [[lengths[shuffled[i]] for i in b] for b in again] == [[lengths[i] for i in b] for b in bins]


def _row(n: int, first: int) -> dict:
    ids = list(range(first, first + n))
    return {"input_ids": ids, "labels": ids, WEIGHTS: [0.5] * n}


def test_packed_batch_layout():
    rows = [_row(3, 10), _row(5, 20), _row(2, 30), _row(4, 40), _row(9, 50)]
    batch = PackingCollator(pad_id=7, pack_length=8)(rows)
    assert "attention_mask" not in batch  # a 2-D mask would switch off transformers' packed-sequence masking
    # bins (FFD over 3, 5, 2, 4, 9 into 8): [9] (over-long, alone), [5, 3], [4, 2]; padded to 9
    assert batch["input_ids"].tolist() == [
        list(range(50, 59)),
        [20, 21, 22, 23, 24, 10, 11, 12, 7],
        [40, 41, 42, 43, 30, 31, 7, 7, 7]]
    assert batch["position_ids"].tolist() == [list(range(9)), [0, 1, 2, 3, 4, 0, 1, 2, 0],
                                              [0, 1, 2, 3, 0, 1, 0, 1, 2]]
    # each row's first label is masked (the previous row must not predict it), padding is -100
    assert batch["labels"].tolist() == [
        [IGNORE, *range(51, 59)],
        [IGNORE, 21, 22, 23, 24, IGNORE, 11, 12, IGNORE],
        [IGNORE, 41, 42, 43, IGNORE, 31, IGNORE, IGNORE, IGNORE]]
    assert batch[WEIGHTS].tolist() == [[0.5] * 9, [0.5] * 8 + [0.0], [0.5] * 6 + [0.0] * 3]
    # no pack_length: bins of the batch's longest row (9): [9], [5, 4], [3, 2]
    default = PackingCollator(pad_id=7)(rows)
    assert default["input_ids"].tolist() == [list(range(50, 59)), [*range(20, 25), *range(40, 44)],
                                             [10, 11, 12, 30, 31, 7, 7, 7, 7]]
    assert PackingCollator(pad_id=7, pack_length=8)(rows)["input_ids"].tolist() == batch["input_ids"].tolist()


def test_flash_attention_gets_the_batch_as_one_sequence():
    """flash-attention reads packed rows (varlen) only from a batch of one sequence; bins in a
    batch of several would be attended across, so there the whole batch is one bin."""
    from types import SimpleNamespace

    rows = [_row(3, 10), _row(5, 20), _row(2, 30)]
    tokenizer = SimpleNamespace(pad_token_id=7)

    def collator(attn):
        return batch_collator(TrainConfig(packing=True, pack_length=5), tokenizer,
                              SimpleNamespace(config=SimpleNamespace(_attn_implementation=attn)), 5)

    flash = collator("flash_attention_2")(rows)
    assert flash["input_ids"].tolist() == [[20, 21, 22, 23, 24, 10, 11, 12, 30, 31]]
    assert flash["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 0, 1]]
    assert collator("sdpa")(rows)["input_ids"].shape == (2, 5)  # masking_utils: bins of pack_length
    assert isinstance(batch_collator(TrainConfig(), tokenizer, None, None), PadCollator)
    # packing: dataset — the batch's bins (packed before training) joined into one sequence
    bins = [flatten_rows([rows[1], rows[0]]), flatten_rows([rows[2]])]
    flash_bins = batch_collator(TrainConfig(packing="dataset"), tokenizer,
                                SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2")), 5)
    assert {k: v.tolist() for k, v in flash_bins(bins).items()} == {k: v.tolist() for k, v in flash.items()}
    sdpa_bins = batch_collator(TrainConfig(packing="dataset"), tokenizer,
                               SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa")), 5)(bins)
    assert sdpa_bins["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2], [0, 1, 0, 1, 2, 3, 4, 5]]


# ---------------------------------------------------------------------------------------------
# The bin size rule and its setting
# ---------------------------------------------------------------------------------------------


def test_pack_length_rule_and_errors(artifact, tmp_path):
    with_max = tmp_path / "with-max"
    shutil.copytree(artifact, with_max)
    manifest = json.loads((with_max / "manifest.json").read_text())
    manifest["tokenizer"] = {"ref": "tok", "sha256": "0" * 64, "max_length": 300, "overflow": "drop"}
    (with_max / "manifest.json").write_text(json.dumps(manifest))

    packed = TrainConfig(packing=True)
    assert resolve_pack_length(load_artifact(with_max), packed) == 300  # the artifact's tokenize.max_length
    assert resolve_pack_length(load_artifact(artifact), packed) is None  # none: each batch's longest row
    assert resolve_pack_length(load_artifact(with_max), TrainConfig(packing=True, pack_length=64)) == 64

    with pytest.raises(SpecError, match="'pack_length': pack_length applies to packed batches only; "
                                        "set packing: true") as e:
        prepare_training(artifact, model="unused", out=tmp_path / "r1", overrides=["pack_length=64"])
    assert "(in command-line overrides)" in str(e.value)
    config = tmp_path / "train.yaml"
    config.write_text("epochs: 1\npack_length: 64\n")
    with pytest.raises(SpecError) as e:
        prepare_training(artifact, model="unused", out=tmp_path / "r1", config_file=config)
    assert (e.value.line, e.value.col) == (2, 1) and "set packing: true" in e.value.message
    with pytest.raises(SpecError, match="'pack_length': Input should be greater than or equal to 2"):
        prepare_training(artifact, model="unused", out=tmp_path / "r2", overrides=["packing=true", "pack_length=1"])
    with pytest.raises(SpecError, match="unknown train setting 'pack_len' \\(did you mean 'pack_length'"):
        prepare_training(artifact, model="unused", out=tmp_path / "r3", overrides=["pack_len=64"])


# ---------------------------------------------------------------------------------------------
# A packed step is its rows, one by one
# ---------------------------------------------------------------------------------------------


def _loss_and_grads(model, step):
    model.zero_grad(set_to_none=True)
    loss = step()
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _weigh(rows: list[dict], seed: int = 0) -> None:
    """Per-token loss weights, 0 where the label is -100 (as the artifact gives them)."""
    rng = random.Random(seed)
    for r in rows:
        r[WEIGHTS] = [rng.choice([0.0, 0.25, 1.0, 2.0]) if lab != IGNORE else 0.0 for lab in r["labels"]]


@pytest.mark.parametrize("attn, weighted, method, packing", [
    ("sdpa", True, "full=true", "true"), ("eager", False, "lora.dropout=0", "true"),  # LoRA: peft's wrapper
    ("sdpa", True, "full=true", "dataset")])
def test_packed_step_equals_its_rows_one_by_one(artifact, tiny_model_dir, tmp_path, attn, weighted, method, packing):
    session = prepare_training(artifact, model=str(tiny_model_dir), out=tmp_path / "run", overrides=[
        method, f"packing={packing}", "pack_length=250", "batch_size=16", f"attn_implementation={attn}",
        "eval_split=null"])
    trainer, model = session.trainer, session.model.train()
    collate = trainer.data_collator  # what the Trainer packs its batches with
    if packing == "dataset":  # the dataset holds the bins; their rows are cut back out of them
        assert isinstance(collate, BinCollator)
        bins = [dict(b) for b in trainer.train_dataset]
        if weighted:
            _weigh(bins)
        batch = collate(bins)
        rows = [seg for b in bins for seg in _segments(b)]
    else:
        assert isinstance(collate, PackingCollator) and collate.pack_length == 250
        rows = [dict(trainer.train_dataset[i]) for i in range(len(trainer.train_dataset))]
        if weighted:
            _weigh(rows)
        batch = collate(rows)
    lengths = [len(r["input_ids"]) for r in rows]
    assert len(rows) == 16 and batch["input_ids"].shape[0] < len(rows)  # several rows (77-80 tokens) share a sequence ...
    assert (batch["labels"][:, -1] == IGNORE).any()  # ... and some bin is padded

    device = torch.device("cpu")
    singles = [PadCollator(session.tokenizer.pad_token_id)([r]) for r in rows]
    total = trainer._get_num_items_in_batch([batch], device)
    # the step's loss denominator is the same packed or not (sum of the rows' weights)
    assert float(total) == pytest.approx(float(trainer._get_num_items_in_batch(singles, device)), rel=1e-6)
    expected_total = sum(sum(w for w, lab in zip(r.get(WEIGHTS, [1.0] * n)[1:], r["labels"][1:]) if lab != IGNORE)
                         for r, n in zip(rows, lengths))
    assert float(total) == pytest.approx(expected_total, rel=1e-6)

    packed_loss, packed_grads = _loss_and_grads(
        model, lambda: trainer.compute_loss(model, dict(batch), num_items_in_batch=total))
    single_loss, single_grads = _loss_and_grads(
        model, lambda: sum(trainer.compute_loss(model, dict(b), num_items_in_batch=total) for b in singles))
    assert float(packed_loss) == pytest.approx(float(single_loss), rel=1e-5)
    assert packed_grads.keys() == single_grads.keys() and len(packed_grads) > 0
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, single_grads[name], rtol=1e-4, atol=1e-6, msg=name)


# ---------------------------------------------------------------------------------------------
# packing: dataset — the train split packed into bins once, a step of whole bins
# ---------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 30), max_size=60), st.integers(1, 40), st.integers(0, 3), st.integers(1, 25))
def test_dataset_bins_hold_every_row_once(lengths, capacity, seed, window):
    bins = pack_dataset_bins(lengths, capacity, seed, window)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))  # every row exactly once
    for b in bins:
        assert sum(lengths[i] for i in b) <= capacity or len(b) == 1  # within the bound, or one over-long row
    assert pack_dataset_bins(lengths, capacity, seed, window) == bins  # the same for the same seed
    # rows are shuffled by the seed, then packed first-fit-decreasing within windows of `window` rows
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    window_of = {row: pos // window for pos, row in enumerate(order)}
    assert all(len({window_of[i] for i in b}) == 1 for b in bins)
    first = order[:window]
    assert bins[:len(pack_bins([lengths[i] for i in first], capacity))] == [
        [first[i] for i in b] for b in pack_bins([lengths[i] for i in first], capacity)]


def _segments(seq: dict) -> list[dict]:
    """A packed sequence cut back into its rows (at every restart of position_ids)."""
    starts = [i for i, p in enumerate(seq["position_ids"]) if p == 0] + [len(seq["position_ids"])]
    return [{key: list(seq[key][a:b]) for key in seq if key != "position_ids"} for a, b in zip(starts, starts[1:])]


def test_dataset_packing_trains_every_row_once_an_epoch(artifact, tiny_model_dir, tmp_path):
    def session(seed):
        return prepare_training(artifact, model=str(tiny_model_dir), out=tmp_path / f"run{seed}-{random.random()}",
                                overrides=["full=true", "packing=dataset", "pack_length=250", "batch_size=2",
                                           f"seed={seed}", "eval_split=null"])

    s = session(1)
    trainer, bins = s.trainer, s.trainer.train_dataset
    assert isinstance(trainer.data_collator, BinCollator)
    rows = build_features(s.artifact, "train", s.tokenizer, max_length=s.config.max_length, use_stored=False)[0]
    expected = sorted(tuple(r) for r in rows["input_ids"])
    assert len(bins) < len(rows) and max(len(b) for b in bins["input_ids"]) <= 250  # bins of several rows
    # one epoch of the Trainer's own batches holds every row exactly once, whole
    seen = [tuple(seg["input_ids"]) for batch in trainer.get_train_dataloader()
            for seq in ({k: v[i].tolist() for k, v in batch.items()} for i in range(len(batch["input_ids"])))
            for seg in _segments(seq) if any(label != IGNORE for label in seg["labels"])]
    assert sorted(seen) == expected
    record = s._packing_record()
    assert record["mode"] == "dataset" and record["batch_size_counts"] == "bins"
    assert record["tokens_per_step_at_most"] == 2 * 250
    assert record["splits"]["train"]["rows"] == len(rows) and record["splits"]["train"]["bins"] == len(bins)
    # the same seed gives the same bins; another seed other bins of the same rows
    assert session(1).trainer.train_dataset["input_ids"] == bins["input_ids"]
    other = session(2).trainer.train_dataset
    assert other["input_ids"] != bins["input_ids"]
    assert sorted(tuple(seg["input_ids"]) for seq in other for seg in _segments(seq)) == expected


def test_packing_mode_errors(artifact, tmp_path):
    with pytest.raises(SpecError, match="train setting 'packing': 'datset' is not a packing mode "
                                        "\\(did you mean 'dataset'\\?\\); allowed: 'dataset', 'false', 'true'"):
        prepare_training(artifact, model="unused", out=tmp_path / "r", overrides=["packing=datset"])
    config = tmp_path / "train.yaml"
    config.write_text("epochs: 1\npacking: rows\n")
    with pytest.raises(SpecError) as e:
        prepare_training(artifact, model="unused", out=tmp_path / "r", config_file=config)
    assert (e.value.line, e.value.col) == (2, 1) and "allowed: 'dataset', 'false', 'true'" in e.value.message
    assert TrainConfig(packing="dataset", pack_length=64).packing == "dataset"
    assert resolve_pack_length(load_artifact(artifact), TrainConfig(packing="dataset")) == 2048  # max_length


def test_dataset_packing_run_with_validation(tiny_model_dir, tmp_path):
    """A whole `dsc train packing=dataset` run: the validation split is packed the same way (one
    collator serves both), and run.json says that batch_size counts bins."""
    art = make_artifact(tmp_path / "art", n_train=12, n_validation=6)
    result = prepare_training(art, model=str(tiny_model_dir), out=tmp_path / "run", overrides=[
        "full=true", "packing=dataset", "pack_length=240", "batch_size=2", "max_steps=2"]).run()
    run = json.loads((result.out_dir / "run.json").read_text())
    packing = run["packing"]
    assert packing["mode"] == "dataset" and packing["batch_size_counts"] == "bins" and packing["pack_length"] == 240
    assert packing["splits"]["train"]["rows"] == 12 and packing["splits"]["validation"]["rows"] == 6
    assert packing["splits"]["train"]["bins"] < 12 and 0 < packing["splits"]["train"]["fill"] <= 1
    assert run["metrics"]["global_step"] == 2 and run["metrics"]["eval_loss"] > 0
    assert "batch 2 bins" in (result.out_dir / "README.md").read_text()

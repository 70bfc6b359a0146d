"""Per-span loss weights: the `loss: {mode, weights}` schema and its errors, ReAct parts, weighted
pieces and token weights, the artifact columns and card, and `dsc train`'s weighted loss (weight 0
is exactly masking, all-ones is exactly the unweighted loss)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from artifact_helpers import make_project, tokenize_block
from dsc.compiler.engine.driver import build
from dsc.compiler.stages.write.card import write_card
from dsc.core.errors import SpecError
from dsc.chat.render import render
from dsc.spec.sections import LossPolicy, LossSpec
from dsc.spec.model import parse_spec
from dsc.compiler.engine.validation import load_spec
from dsc.chat.tokenize import supervised_mask
from dsc.chat.weights import token_weights, weigh
from dsc.spec.sections import WeightRule
from dsc.dialects.react import react_parts
from dsc.runtime.artifact import load_artifact
from dsc.runtime.features import IGNORE, WEIGHTS, PackingCollator, PadCollator, build_features
from dsc.runtime.loss import weighted_lm_loss, weighted_trainer_class
from test_templates import make_conv

HERE = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------------------------

SPEC_HEAD = "dsc: 1\nname: t\nsources:\n  a: {path: a.jsonl, format: openai}\n"


def _spec_error(tmp_path: Path, loss_yaml: str) -> SpecError:
    (tmp_path / "a.jsonl").write_text("")
    with pytest.raises(SpecError) as e:
        load_spec(_write(tmp_path, loss_yaml))
    return e.value


def _write(tmp_path: Path, loss_yaml: str) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(SPEC_HEAD + loss_yaml)
    return p


@pytest.mark.parametrize("loss_yaml, where, message", [
    ("loss:\n  weights:\n    - {part: thougt, weight: 0.5}\n", (7, 8),
     "'loss.weights.0.part': 'thougt' is not allowed (did you mean 'thought'?)"),
    ("loss:\n  weights:\n    - {part: thought, wieght: 0.5}\n", (7, 23),
     "unknown key 'wieght' in 'loss.weights.0' (did you mean 'weight'?)"),
    ("loss:\n  mode: al\n  weights: []\n", (6, 3), "'loss.mode': 'al' is not allowed (did you mean 'all'?)"),
    ("loss: {mod: all}\n", (5, 8), "unknown key 'mod' in 'loss' (did you mean 'mode'?)"),
    ("loss:\n  weights:\n    - {pattern: '(', weight: 1}\n", (7, 8), "is not a valid regular expression"),
    ("loss:\n  weights:\n    - {weight: 1}\n", (7, 7), "needs exactly one of 'pattern' (a regex) or 'part'"),
    ("loss:\n  weights:\n    - {part: action, pattern: x, weight: 1}\n", (7, 7), "needs exactly one of"),
    ("loss:\n  weights:\n    - {part: action, weight: -1}\n", (7, 22), "greater than or equal to 0"),
    ("loss:\n  weights:\n    - {part: action, weight: .nan}\n", (7, 22), "finite"),
    ("loss: alll\n", (5, 1), "'loss': 'alll' is not allowed (did you mean 'all'?)"),
])
def test_loss_spec_errors_are_located(tmp_path, loss_yaml, where, message):
    err = _spec_error(tmp_path, loss_yaml)
    assert message in err.message, err.message
    assert (err.line, err.col) == where, str(err)


def test_loss_forms():
    """The string form stays a mode (and dumps as before); the mapping is a LossSpec."""
    plain = parse_spec(SPEC_HEAD + "loss: all\n", Path("s.yaml")).spec
    assert plain.loss is LossPolicy.all and plain.model_dump(mode="json")["loss"] == "all"
    default = parse_spec(SPEC_HEAD, Path("s.yaml")).spec
    assert default.model_dump(mode="json")["loss"] == "assistant"
    spec = parse_spec(SPEC_HEAD + "loss: {mode: last, weights: [{pattern: 'x+', weight: 2}, {part: thought, "
                      "weight: 0}]}\n", Path("s.yaml")).spec
    assert isinstance(spec.loss, LossSpec) and spec.loss.mode is LossPolicy.last
    assert [(r.pattern, r.part, r.weight) for r in spec.loss.weights] == [("x+", None, 2.0), (None, "thought", 0.0)]


# ---------------------------------------------------------------------------------------------
# Parts and weighted pieces
# ---------------------------------------------------------------------------------------------

BRACKET = "Thought: I must search.\nAction: search[Paris weather]"
ACTION_INPUT = "Thought 2: call it\nAction: get_weather\nAction Input: {\"city\": \"Paris\"}"
FINAL = "Thought: I know it.\nFinal Answer: sunny"


def test_react_parts():
    text = "<|im_start|>assistant\n" + BRACKET + "<|im_end|>"
    parts = [(p, text[a:b]) for p, a, b in react_parts(text)]
    assert parts == [("thought", "Thought: I must search.\n"), ("action", "Action: search["),
                     ("action_input", "Paris weather"), ("action", "]<|im_end|>")]
    parts = [(p, ACTION_INPUT[a:b]) for p, a, b in react_parts(ACTION_INPUT)]
    assert parts == [("thought", "Thought 2: call it\n"), ("action", "Action: get_weather\n"),
                     ("action_input", "Action Input: {\"city\": \"Paris\"}")]
    text = "Observation: 22 C\n" + FINAL
    assert [p for p, *_ in react_parts(text)] == ["observation", "thought", "final_answer"]
    # a region that starts mid-line (Llama-2's "[/INST] Thought: ...") and one bounded inside the text
    text = "[INST] q [/INST] " + BRACKET + " </s>"
    a = text.index("Thought")
    assert [p for p, *_ in react_parts(text, a, len(text))] == ["thought", "action", "action_input", "action"]
    assert react_parts(text, 0, a) == []  # no label in the prompt part


def _row(messages, rules, mode=LossPolicy.assistant, template="chatml"):
    from dsc.chat.templating import load_template

    return render(make_conv(messages), load_template(template, HERE), LossSpec(mode=mode, weights=rules))


REACT_CHAT = [{"role": "user", "content": "Weather in Paris?"},
              {"role": "assistant", "content": BRACKET},
              {"role": "user", "content": "Observation: sunny"},
              {"role": "assistant", "content": FINAL}]


def test_weighted_pieces_cover_the_mask_and_later_rules_win():
    r = _row(REACT_CHAT, [WeightRule(part="thought", weight=0.5), WeightRule(part="action_input", weight=2),
                          WeightRule(pattern="Paris", weight=3), WeightRule(part="observation", weight=9)])
    assert [(w.start, w.end) for w in r.weights][0][0] == r.spans[0][0]
    # the pieces tile the supervised spans exactly
    covered = [(w.start, w.end) for w in r.weights]
    from dsc.chat.render import merge_spans

    assert merge_spans(covered) == r.spans and all(a < b for a, b in covered)
    assert all(x.end <= y.start for x, y in zip(r.weights, r.weights[1:]))
    by_text = [(r.text[w.start:w.end], w.weight) for w in r.weights]
    assert by_text[:5] == [("Thought: I must search.\n", 0.5), ("Action: search[", 1.0), ("Paris", 3.0),
                           (" weather", 2.0), ("]<|im_end|>", 1.0)]
    # the observation is a user turn: outside the mask, so its rule weighs nothing
    assert 9.0 not in {w.weight for w in r.weights}
    # loss: all supervises it, and then the rule applies
    r = _row(REACT_CHAT, [WeightRule(part="observation", weight=0)], mode=LossPolicy.all)
    zero = [r.text[w.start:w.end] for w in r.weights if w.weight == 0]
    assert zero == ["Observation: sunny<|im_end|>\n<|im_start|>assistant\n"]
    assert r.spans == [(0, len(r.text))]


def test_unweighted_rows_have_no_pieces():
    assert _row(REACT_CHAT, []).weights is None
    from dsc.chat.templating import load_template

    assert render(make_conv(REACT_CHAT), load_template("chatml", HERE), LossPolicy.assistant).weights is None


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(alphabet="ab\nT", min_size=1, max_size=40), st.data())
def test_weigh_property(text, data):
    """For any spans and regex rules: pieces tile the spans; each character's weight is the last
    matching rule's (1 when none)."""
    import re

    n = len(text)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, n), max_size=6))))
    spans = [(a, b) for a, b in zip(cuts[::2], cuts[1::2]) if b > a]
    rules = data.draw(st.lists(st.builds(WeightRule, pattern=st.sampled_from(["a+", "b", "\n", "T.", "ab"]),
                                         weight=st.sampled_from([0.0, 0.5, 2.0])), max_size=4))
    pieces = weigh(text, spans, rules)
    want = {}
    for a, b in spans:
        for i in range(a, b):
            want[i] = 1.0
            for rule in rules:
                if any(m.start() <= i < m.end() for m in re.finditer(rule.pattern, text)):
                    want[i] = rule.weight
    got = {i: w.weight for w in pieces for i in range(w.start, w.end)}
    assert got == want


def test_token_weights_is_the_mask_rule():
    """A token's weight is the largest of the pieces it touches; a zero-weight piece is exactly a
    piece removed from the mask (supervised_mask over the other pieces)."""
    offsets = np.array([[0, 2], [2, 5], [5, 6], [6, 6], [6, 9], [9, 12]], dtype=np.int64)
    pieces = np.array([[1, 3], [3, 7], [7, 10]], dtype=np.int64)
    w = token_weights(offsets, pieces, np.array([0.5, 0.0, 2.0], dtype=np.float32))
    assert w.dtype == np.float32 and w.tolist() == [0.5, 0.5, 0.0, 0.0, 2.0, 2.0]
    nonzero = pieces[[0, 2]]
    assert ((w > 0) == supervised_mask(offsets, nonzero)).all()


# ---------------------------------------------------------------------------------------------
# Artifacts
# ---------------------------------------------------------------------------------------------

WEIGHTS_BLOCK = ("loss:\n  mode: assistant\n  weights:\n    - {part: thought, weight: 0.5}\n"
                 "    - {part: action_input, weight: 2}\n    - {pattern: 'finish\\[', weight: 0}\n")


def _project(root: Path, extra: str, rows: int = 12) -> Path:
    spec = make_project(root, rows=rows, extra=extra)
    spec.write_text(spec.read_text().replace("loss: assistant\n", ""))
    return spec


def _table(out: Path, split: str = "train"):
    return pq.read_table(sorted((out / "data").glob(f"{split}-*.parquet")))


def test_unweighted_spec_writes_no_weight_columns(tmp_path, tiny_model_dir):
    spec = make_project(tmp_path / "p", rows=6, extra=tokenize_block(tiny_model_dir))
    build(spec, tmp_path / "out")
    names = _table(tmp_path / "out").column_names
    assert "weights" not in names and "loss_weights" not in names and "labels" in names
    assert "Loss weights" not in (tmp_path / "out" / "README.md").read_text()


def test_weighted_artifact_columns_and_card(tmp_path, tiny_model_dir):
    spec = _project(tmp_path / "p", WEIGHTS_BLOCK + tokenize_block(tiny_model_dir))
    build(spec, tmp_path / "out")
    table = _table(tmp_path / "out")
    assert str(table.schema.field("weights").type) == "list<element: float>"
    rows = table.to_pylist()
    seen = set()
    for row in rows:
        w, labels = np.asarray(row["weights"], np.float32), np.asarray(row["labels"])
        assert (w[labels == IGNORE] == 0).all()  # 0 outside supervision
        assert (w >= 0).all()
        seen |= set(w[labels != IGNORE].tolist())
        # the pieces tile loss_spans
        pieces = [(p["start"], p["end"]) for p in row["loss_weights"]]
        from dsc.chat.render import merge_spans

        assert merge_spans(pieces) == [tuple(s) for s in row["loss_spans"]]
        text = row["text"]
        for p in row["loss_weights"]:
            piece = text[p["start"]:p["end"]]
            if piece.startswith("Thought"):
                assert p["weight"] == 0.5
        assert all(p["weight"] == 0 for p in row["loss_weights"] if text[p["start"]:p["end"]] == "finish[")
    assert seen == {0.0, 0.5, 1.0, 2.0}
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Loss weights" in card and "| 0.5 |" in card and "weighted sum" in card
    # the card's counts are the artifact's: supervised tokens of weight 2 in train
    n2 = sum(int(((np.asarray(r["weights"]) == 2) & (np.asarray(r["labels"]) != IGNORE)).sum()) for r in rows)
    line = next(l for l in card.splitlines() if l.startswith("| 2 |"))
    assert int(line.split("|")[2]) == n2
    # untokenised: the pieces only, counted in characters
    spec2 = _project(tmp_path / "q", WEIGHTS_BLOCK)
    build(spec2, tmp_path / "out2")
    t2 = _table(tmp_path / "out2")
    assert "loss_weights" in t2.column_names and "weights" not in t2.column_names
    assert t2.column("loss_weights").to_pylist() == table.column("loss_weights").to_pylist()
    assert "Supervised chars by their loss weight" in (tmp_path / "out2" / "README.md").read_text()
    # the card counted while writing is the one the artifact gives when read back (dsc inspect,
    # dsc report and write_card without counts read the weights from the shards)
    for out in (tmp_path / "out", tmp_path / "out2"):
        manifest = json.loads((out / "manifest.json").read_text())
        copy = tmp_path / f"{out.name}-card"
        shutil.copytree(out, copy)
        write_card(copy, manifest)
        assert (copy / "README.md").read_text() == (out / "README.md").read_text()


def test_weighted_build_is_deterministic_across_workers(tmp_path, tiny_model_dir):
    spec = _project(tmp_path / "p", WEIGHTS_BLOCK + tokenize_block(tiny_model_dir), rows=6)
    a = build(spec, tmp_path / "a", workers=1)
    b = build(spec, tmp_path / "b", workers=2)
    assert a.manifest["version"] == b.manifest["version"]
    assert a.manifest["files"] == b.manifest["files"]


# ---------------------------------------------------------------------------------------------
# Training: the weighted loss
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weighted_artifact(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("weighted")
    spec = _project(root / "p", WEIGHTS_BLOCK + tokenize_block(tiny_model_dir))
    build(spec, root / "out")
    return root / "out"


@pytest.fixture(scope="module")
def batch_and_model(weighted_artifact, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ds, stats = build_features(load_artifact(weighted_artifact), "train", tok, max_length=384, use_stored=True)
    assert stats.weighted and stats.source == "artifact"
    batch = PadCollator(tok.pad_token_id or 0)([ds[i] for i in range(4)])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return batch, model


def _loss_and_grads(model, batch, labels, weights):
    model.zero_grad()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = weighted_lm_loss(logits, labels, weights)
    loss.backward()
    return loss.detach(), [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def test_weight_zero_is_exactly_masking(batch_and_model):
    batch, model = batch_and_model
    labels, weights = batch["labels"], batch[WEIGHTS]
    assert (weights == 0).logical_and(labels != IGNORE).any()  # the artifact has weight-0 tokens to test
    masked = labels.masked_fill(weights == 0, IGNORE)
    a, ga = _loss_and_grads(model, batch, labels, weights)
    b, gb = _loss_and_grads(model, batch, masked, weights)
    assert torch.equal(a, b)
    assert len(ga) == len(gb) and all(torch.equal(x, y) for x, y in zip(ga, gb))


def test_all_ones_is_exactly_the_unweighted_loss(batch_and_model):
    batch, model = batch_and_model
    labels = batch["labels"]
    ones = (labels != IGNORE).float()
    a, ga = _loss_and_grads(model, batch, labels, ones)
    b, gb = _loss_and_grads(model, batch, labels, None)  # an artifact without weights
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(ga, gb))
    # and that is transformers' causal-LM loss (up to the order of the float sums)
    with torch.no_grad():
        hf = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    assert float(a) == pytest.approx(float(hf), rel=1e-5)
    # the artifact's weights: sum(w·CE)/sum(w), against a float64 reference
    c, _ = _loss_and_grads(model, batch, labels, batch[WEIGHTS])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                           ignore_index=IGNORE, reduction="none")
    w = (batch[WEIGHTS][:, 1:] * (labels[:, 1:] != IGNORE)).reshape(-1).double()
    assert not torch.equal(c, a)
    assert float(c) == pytest.approx(float((ce * w).sum() / w.sum()), rel=1e-6)


def test_normalisation_over_the_accumulated_step(batch_and_model, tmp_path):
    """sum(w·CE) over all micro-batches of a step / sum(w) over them: the trainer's denominator
    is the step's total weight, so two micro-batches equal one batch of both."""
    from transformers import TrainingArguments

    batch, model = batch_and_model
    half = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=2)
    trainer = weighted_trainer_class()(model=model, args=args)
    total = trainer._get_num_items_in_batch(half, torch.device("cpu"))
    w = batch[WEIGHTS][:, 1:] * (batch["labels"][:, 1:] != IGNORE)
    assert float(total) == pytest.approx(float(w.sum()))
    with torch.no_grad():
        parts = sum(trainer.compute_loss(model, dict(h), num_items_in_batch=total) for h in half)
        whole = trainer.compute_loss(model, dict(batch))
    assert float(parts) == pytest.approx(float(whole), rel=1e-5)


def test_packed_weights_give_the_padded_loss(weighted_artifact, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ds, _ = build_features(load_artifact(weighted_artifact), "train", tok, max_length=256, use_stored=True)
    rows = [ds[i] for i in range(3)]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    padded, packed = PadCollator(tok.pad_token_id or 0)(rows), PackingCollator()(rows)
    assert packed[WEIGHTS].shape == packed["input_ids"].shape
    with torch.no_grad():
        a = weighted_lm_loss(model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits,
                             padded["labels"], padded[WEIGHTS])
        # (no cache: transformers isolates packed rows only without one)
        b = weighted_lm_loss(model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                                   use_cache=False).logits,
                             packed["labels"], packed[WEIGHTS])
    assert float(a) == pytest.approx(float(b), abs=1e-5)


def test_retokenised_weights_equal_stored(weighted_artifact, tiny_model_dir):
    """Without stored tokens the weights come from loss_weights by the build's rule: the same."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    art = load_artifact(weighted_artifact)
    stored, _ = build_features(art, "train", tok, max_length=10_000, use_stored=True)
    again, stats = build_features(art, "train", tok, max_length=10_000, use_stored=False)
    assert stats.source == "retokenized" and stats.weight_sum > 0
    assert stored[WEIGHTS] == again[WEIGHTS] and stored["labels"] == again["labels"]


def test_dsc_train_on_a_weighted_artifact(weighted_artifact, tiny_model_dir, tmp_path):
    from dsc.runtime.train import prepare_training

    session = prepare_training(weighted_artifact, model=str(tiny_model_dir), out=tmp_path / "run",
                               overrides=["max_steps=3", "batch_size=2", "grad_accum=2", "max_length=256",
                                          "logging_steps=1", "learning_rate=3e-3"])
    batch = next(iter(session.trainer.get_train_dataloader()))
    assert WEIGHTS in batch
    result = session.run()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["tokenization"]["splits"]["train"]["weighted"] is True
    assert result.metrics["global_step"] == 3 and np.isfinite(result.metrics["final_loss"])

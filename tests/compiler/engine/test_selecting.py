"""Selection as tasks over partitions (`engine.selecting`) against the definition, the keys of
all sources in one process (`engine.selected.select_rows`): the same rows, copies, splits and
output order, and the same report, for every step and however many partitions; a task run twice
changes nothing. The selected rows are read back from what the order step sent the render
blocks."""
import json
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsc.compiler.engine import exchange, selecting
from dsc.compiler.engine.executors.local import LocalExecutor
from dsc.compiler.engine.progress import Progress
from dsc.compiler.engine.selected import select_rows
from dsc.compiler.engine.exchange import SegmentBlocks
from dsc.compiler.engine.selecting import RENDER, SELECTED_SCHEMA, select_partitioned
from dsc.compiler.stages.select.mix import KeyTable, RowClass
from dsc.spec.model import SplitSpec
from dsc.spec.sections import CapabilitiesSpec, MixBucket

SOURCES = ("s0", "s1", "s2")


@dataclass
class KeysOnly:
    """A normalised segment as selection sees it: its classes and keys."""

    classes: list[RowClass]
    table: KeyTable
    rows: np.ndarray

    @property
    def live(self) -> int:
        return len(self.table)

    def keys(self):
        return self.table, self.rows


def segment(source: str, rows: list[tuple]) -> KeysOnly:
    """rows: (id, group or None, task, capability, dedup, chars, tokens)."""
    codes: dict[RowClass, int] = {}
    cls = [codes.setdefault(RowClass(source, task, None, cap, None, None, None, False), len(codes))
           for _, _, task, cap, *_ in rows]
    table = KeyTable(ids=pa.array([r[0] for r in rows], pa.string()), groups=pa.array([r[1] for r in rows], pa.string()),
                     cls=np.array(cls, np.int32), classes=list(codes), dedup=np.array([r[4] for r in rows], np.uint64),
                     chars=np.array([r[5] for r in rows], np.int64), tokens=np.array([r[6] for r in rows], np.float64))
    return KeysOnly(list(codes), table, np.arange(len(rows), dtype=np.int64) * 3 + 1)


def row_strategy():
    return st.tuples(st.integers(0, 60).map(lambda i: f"r{i:02d}"), st.sampled_from([None, "g0", "g1", "g2", "g3"]),
                     st.sampled_from(["a", "b", None]), st.sampled_from(["reasoning", "retrieval", None]),
                     st.integers(0, 25), st.integers(0, 500), st.sampled_from([float("nan"), 3.0, 17.0, 0.1, 0.7, 1.3]))  # float sums depend on order


def source_rows():
    # ids unique within a source (the read stage removes in-source id duplicates); shared across sources
    return st.lists(row_strategy(), max_size=40, unique_by=lambda r: r[0])


def spec_of(seed, dedup, mix, caps, split):
    return SimpleNamespace(seed=seed, dedup=dedup, mix={k: MixBucket.model_validate(v) for k, v in mix.items()} or None,
                           capabilities=CapabilitiesSpec.model_validate(
                               {"rules": [{"capability": "reasoning"}, {"capability": "retrieval"}], **caps})
                           if caps is not None else None,
                           split=SplitSpec.model_validate(split))


MIXES = [
    {},
    {"s0": {"count": 7}, "s1": {"ratio": 1.5, "of": "s0", "per_group_max": 2}},
    {"ta": {"where": {"task": "a"}, "rate": 1.7}, "s1": {"count": 50}},  # copies
    {"s0": {"proportion": 0.6}, "s1": {"proportion": 0.4, "per_group_max": 1}},
    {"s2": {"per_group_max": 1}},
]
CAPS = [None, {"rates": {"reasoning": 1.5, "retrieval": 0.5}},
        {"proportions": {"reasoning": 0.3, "retrieval": 0.7}, "measure": "chars"},
        {"rates": {"reasoning": 2.2, "retrieval": 0.6}, "measure": "tokens"}]
SPLITS = [{"validation": 0.2, "test": 0.1}, {"validation": 0.3, "by": "id"}, {}]


def run_both(tmp_path, spec, sources, workers=1, executor=LocalExecutor):
    read = SimpleNamespace(names=list(SOURCES[:len(sources)]),
                           segments=[segment(SOURCES[i], rows) for i, rows in enumerate(sources)])
    expected = select_rows(spec, read)
    def blocks(selected):  # blocks of about 5 selected rows (a segment row is 3k + 1)
        return SegmentBlocks.spread([3 * len(rows) + 1 for rows in sources], selected, [5] * len(sources))

    with executor(SimpleNamespace(spec=spec), workers) as ex, exchange.directory(tmp_path) as directory:
        chosen = select_partitioned(spec, read, directory, ex, Progress(), blocks)
        assert chosen.per_source == [int(sum(got == s)) for s in range(len(sources))
                                     for got in [np.concatenate([np.zeros(0, np.int32)] + [
                                         exchange.received(directory, chosen.files, (RENDER, b), SELECTED_SCHEMA, n)
                                         .column("src").to_numpy() for b, n in chosen.to_render.items()])]]
        # what is left in the exchange: the order step's files only (each step's go once read)
        assert sorted(p.name for p in directory.iterdir()) == sorted(chosen.files)
        got = sent_to_render(chosen)
    return expected, got


def sent_to_render(chosen):
    """The selected rows as the render blocks receive them, in output order (range, place in it)."""
    got = []
    for block, rows in chosen.to_render.items():
        t = exchange.received(chosen.directory, chosen.files, (RENDER, block), SELECTED_SCHEMA, rows)
        assert set(chosen.render_blocks.block(t.column("src").to_numpy(), t.column("seg").to_numpy())) == {block}
        got.append(t)
    t = pa.concat_tables(got) if got else SELECTED_SCHEMA.empty_table()
    t = t.take(pc.sort_indices(t, sort_keys=[("range", "ascending"), ("pos", "ascending")]))
    split_of = {r.part: r.split for r in chosen.ranges}
    sizes = {r.part: r.rows for r in chosen.ranges}
    ranges = t.column("range").to_numpy()
    assert sizes == dict(zip(*np.unique(ranges, return_counts=True))) if len(ranges) else sizes == {}
    return SimpleNamespace(src=t.column("src").to_numpy(), seg=t.column("seg").to_numpy(),
                           suffix=t.column("suffix").to_pylist(), cls=t.column("cls").to_numpy(),
                           split=np.array([split_of[r] for r in ranges.tolist()], np.int8),
                           classes=chosen.classes, report=chosen.report, rows=chosen.rows)


def assert_same(expected, got):
    o = expected.order
    assert got.rows == len(o)
    assert got.src.tolist() == expected.src[o].tolist()
    assert got.seg.tolist() == expected.seg[o].tolist()
    assert got.suffix == expected.suffixes(o).tolist()
    assert got.split.tolist() == expected.split[o].tolist()
    assert [got.classes[c] for c in got.cls] == [expected.classes[c] for c in expected.cls[o]]
    assert json.dumps(got.report) == json.dumps(expected.report)  # the same values, floats and key order


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sources=st.lists(source_rows(), min_size=1, max_size=3), seed=st.integers(0, 3), dedup=st.booleans(),
       mix=st.sampled_from(MIXES), caps=st.sampled_from(CAPS), split=st.sampled_from(SPLITS),
       task_rows=st.sampled_from([1, 3, 1 << 16]), rank_bits=st.sampled_from([1, 3, selecting.RANK_BITS]))
def test_partitioned_selection_is_the_one_process_selection(tmp_path, monkeypatch, sources, seed, dedup, mix, caps,
                                                            split, task_rows, rank_bits):
    if mix and any(k.startswith("s") and int(k[1]) >= len(sources) for k in mix):
        mix = {}  # a bucket named after a source needs that source
    monkeypatch.setattr(exchange, "PARTITION_ROWS", task_rows)  # 1: a partition per row, nearly
    monkeypatch.setattr(selecting, "RANK_BITS", rank_bits)  # 1: a mix take ends inside a bin of half its pool
    expected, got = run_both(tmp_path, spec_of(seed, dedup, mix, caps, split), sources)
    assert_same(expected, got)
    assert list(tmp_path.iterdir()) == []  # the exchange directory is gone


def some_sources():
    rng = np.random.default_rng(5)
    out = []
    for s in range(3):
        out.append([(f"r{i:03d}", f"g{rng.integers(0, 30)}" if rng.random() < 0.7 else None,
                     ["a", "b", None][rng.integers(0, 3)], ["reasoning", "retrieval", None][rng.integers(0, 3)],
                     int(rng.integers(0, 200)), int(rng.integers(0, 900)), round(float(rng.random()) * 5, 2))
                    for i in rng.permutation(400)[:250].tolist()])
    return out


@pytest.mark.parametrize("mix,caps", [(MIXES[1], CAPS[1]), (MIXES[2], CAPS[3])])
def test_in_a_process_pool(tmp_path, monkeypatch, mix, caps):
    """Also: weights in tokens that are not whole (sums of them depend on the order they are added in)."""
    monkeypatch.setattr(exchange, "PARTITION_ROWS", 50)
    monkeypatch.setattr(selecting, "RANK_BITS", 2)  # mix takes that end inside a bin of many rows
    expected, got = run_both(tmp_path, spec_of(1, True, mix, caps, SPLITS[0]), some_sources(), workers=2)
    assert_same(expected, got)
    assert got.rows > 50


class TwiceExecutor(LocalExecutor):
    """Runs every task twice (a retried or duplicated task), handing back the second result."""

    def map(self, fn, tasks):
        for t in tasks:
            fn(t)
            yield fn(t)


def test_a_task_run_twice_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(exchange, "PARTITION_ROWS", 40)
    monkeypatch.setattr(selecting, "RANK_BITS", 2)
    spec = spec_of(2, True, MIXES[2], CAPS[2], SPLITS[0])
    expected, got = run_both(tmp_path, spec, some_sources(), executor=TwiceExecutor)
    assert_same(expected, got)
    assert list(tmp_path.iterdir()) == []


def test_partitions_grow_with_the_rows():
    assert exchange.partitions(0, 4) == 1
    assert exchange.partitions(10, 2) == 4
    assert exchange.partitions(10 * exchange.PARTITION_ROWS, 2) == 10
    assert exchange.partitions(10 ** 12, 2) == 1024

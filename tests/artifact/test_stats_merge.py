"""ArtifactStats.merge: the build counts each shard where it is written and merges the counts in
artifact order; that must give exactly what one add_batch pass over the artifact's rows gives."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artifact_helpers import make_project
from dsc.artifact.inspection import ArtifactStats
from dsc.artifact.reader import split_sort_key
from dsc.compiler.engine.driver import build

WEIGHTED = "loss:\n  mode: assistant\n  weights: [{pattern: \"Action:\", weight: 2.0}]\n"


@pytest.fixture(scope="module")
def split_tables(tmp_path_factory) -> dict[str, pa.Table]:
    """Each split's rows (weighted: by_weight is counted too), in artifact order."""
    root = tmp_path_factory.mktemp("merge")
    spec = make_project(root, rows=60, validation=0.3, extra=WEIGHTED)
    spec.write_text(spec.read_text().replace("loss: assistant\n", ""))
    out = build(spec, root / "out", cache=False).out_dir
    tables = {}
    for path in sorted((out / "data").glob("*.parquet")):
        tables.setdefault(path.name.split("-")[0], []).append(pq.read_table(path))
    return {split: pa.concat_tables(parts) for split, parts in tables.items()}


def _cuts(data, n: int) -> list[int]:
    inner = data.draw(st.lists(st.integers(0, n), max_size=6))
    return [0, *sorted(inner), n]


def _key_order(stats: ArtifactStats) -> list:
    """What dict equality does not see: the order keys first appeared in."""
    return [list(stats.splits), list(stats.lengths), list(stats.by_weight),
            [(d, s, list(keys)) for d, splits in stats.by.items() for s, keys in splits.items()],
            [(s, list(w)) for s, w in stats.by_weight.items()]]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_merged_shard_counts_equal_one_pass(split_tables, data):
    assert len(split_tables) == 2
    serial, merged = ArtifactStats(tokenised=False), ArtifactStats(tokenised=False)
    for split in sorted(split_tables, key=split_sort_key):
        serial.start_split(split)
        merged.start_split(split)
    for split, table in split_tables.items():
        batch_cuts = _cuts(data, table.num_rows)
        batches = [b for a, z in zip(batch_cuts, batch_cuts[1:]) for b in table.slice(a, z - a).to_batches()]
        for batch in batches:
            serial.add_batch(split, batch)
        shard_cuts = _cuts(data, len(batches))  # shards: runs of consecutive batches, some empty
        for a, z in zip(shard_cuts, shard_cuts[1:]):
            shard = ArtifactStats(tokenised=False)
            for batch in batches[a:z]:
                shard.add_batch(split, batch)
            merged.merge(shard)
    assert merged == serial
    assert _key_order(merged) == _key_order(serial)
    assert merged.groups_per_split() == serial.groups_per_split() and serial.groups  # groups: compare=False
    assert merged.shared_groups() == serial.shared_groups()
    assert serial.by_weight  # the test covers it


def test_groups_per_split_and_shared_groups_over_many_batches():
    """Groups counted once per split however many batches (and compactions) they come in; a group
    with rows in two splits is shared, and named."""
    stats = ArtifactStats(tokenised=False)
    for split in ("train", "validation"):
        stats.start_split(split)
    for i in range(200):  # more batches than the compaction threshold
        stats._add_groups("train", [pa.array([f"g{i % 50}", f"g{(i + 1) % 50}"])])
    stats._add_groups("validation", [pa.array(["g7", "v1", "v1"]), pa.array(["g49", "v2"])])
    assert stats.groups_per_split() == {"train": 50, "validation": 4}
    assert stats.shared_groups() == ["g49", "g7"]
    other = ArtifactStats(tokenised=False)
    other._add_groups("validation", [pa.array(["g3"])])
    stats.merge(other)
    assert stats.shared_groups() == ["g3", "g49", "g7"] and stats.groups_per_split()["validation"] == 5

"""`LengthCounts` (row lengths as counts per distinct length) pinned to numpy over the lengths
themselves: the same percentiles ("lower"), histograms and merges."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dsc.artifact.inspection import LengthCounts, length_summary

lengths = st.lists(st.integers(0, 5000) | st.sampled_from([7, 7, 300]), max_size=300)


@settings(max_examples=200, deadline=None)
@given(a=lengths, b=lengths, q=st.floats(0, 100))
def test_counts_give_what_numpy_gives_over_the_lengths(a, b, q):
    merged = LengthCounts.of(a)
    merged.merge(LengthCounts.of(b))
    both = np.array(a + b, np.int64)
    assert merged == LengthCounts.of(both) and len(merged) == len(both)
    if not len(both):
        assert length_summary(merged) == {"min": 0, "median": 0, "p95": 0, "max": 0}
        return
    assert merged.lower_percentile(q) == int(np.percentile(both, q, method="lower"))
    assert length_summary(merged) == {"min": int(both.min()), "median": int(np.percentile(both, 50, method="lower")),
                                      "p95": int(np.percentile(both, 95, method="lower")), "max": int(both.max())}
    edges = np.histogram_bin_edges(both, bins=30)
    assert np.array_equal(np.histogram_bin_edges(merged.values, bins=30), edges)  # the card's bins
    assert np.array_equal(np.histogram(merged.values, edges, weights=merged.counts)[0], np.histogram(both, edges)[0])

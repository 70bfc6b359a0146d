"""How the build runs its tasks: one small interface, one module per backend.

Every phase over rows is a list of independent tasks (read: an input range → a segment piece;
render: a range of a segment's rows → a rendered part; write: rows routed to output buckets, then
a shard), each a module-level function that reads the build's `BuildContext` through
`worker_context()`, reads and writes files in storage every worker sees, and returns counts and
hashes. An `Executor` maps such a function over tasks and hands the results back **in task
order**, whatever order its workers finish in. The global steps (dedup, mix quotas, capability
ratios, group caps, splits, output order) run in the driver over per-row keys and exact counts
(`dsc.compiler.stages.select.mix`), never over arrival order.

Backends: `local` (this machine: inline, or a forked process pool) and `ray` (Ray Core tasks,
optional: `pip install dsc[ray]`). A new backend is a module here with an `Executor` subclass
(`base`) and a branch in `backends.open_executor`; nothing else in the build changes.
"""

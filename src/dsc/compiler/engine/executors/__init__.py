"""How the build runs its per-row stages: one small interface, one module per backend.

The per-row stages (stage 1: read → normalise → transforms; stage 3: render → tokenise) are
module-level functions of one task each (a chunk of raw rows; a range of a segment's rows) that
read the build's `BuildContext` through `worker_context()`. An `Executor` maps such a function
over tasks and hands the results back **in task order**, whatever order its workers finish in,
so that the driver writes segments and rendered parts exactly as a serial run would. The global
steps (dedup, mix quotas, capability ratios, group caps, splits, output order) run in the driver
over per-row keys and exact counts (`dsc.compiler.stages.select.mix`), never over arrival order.

Backends: `local` (this machine: inline, or a forked process pool) and `ray` (Ray Data actors,
optional: `pip install dsc[ray]`). A new backend is a module here with an `Executor` subclass
(`base`) and a branch in `backends.open_executor`; nothing else in the build changes.
"""

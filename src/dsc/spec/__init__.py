"""The spec: pure declarations of every section (`model`: the top-level `Spec` and YAML loading
with located errors; `sections`, `sources`, `steps`, `runtime`: the sections; `registries`: every
registry, built-ins declared by name)."""

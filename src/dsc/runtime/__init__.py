"""dsc.runtime: train and evaluate models from compiled artifacts (never from raw sources).

Modules (imported lazily; torch/transformers load only when training or generating):
- artifact:   load_artifact(dir) -> Artifact (manifest, template, splits)
- config:     TrainConfig, EvalConfig / EvalTask and layered loading (spec block < file < key=value)
- train:      train(artifact_dir, model=..., ...) / prepare_training(...) -> TrainSession
- evaluation: evaluate(models, tasks_file=..., ...), score_predictions(file, scorers), results_table
- agent:      the direct and ReAct / tool-call agent loops over a `Generator`
- tools:      register_tool; search (BM25), calculate, finish
- scorers:    register_scorer; em, f1, yesno, choice, gsm8k
"""

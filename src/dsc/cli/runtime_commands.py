"""`dsc train` and `dsc eval` (registered on the main typer app by `dsc.cli`).

Imports of torch/transformers happen inside the commands, so `dsc build --help` stays fast.
Multi-GPU: `accelerate launch -m dsc train ...` or `torchrun --nproc_per_node N -m dsc train ...`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List, Optional

import typer


class _ConsoleWarnings(logging.Handler):
    """The runtime's warnings as one `warning:` line each on stderr."""

    def __init__(self, console: Any) -> None:
        super().__init__(level=logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(f"[yellow]warning:[/] {record.getMessage()}", highlight=False, soft_wrap=True)


def _attach_warnings() -> None:
    from dsc.cli.root import err_console

    log = logging.getLogger("dsc.runtime")
    if not any(isinstance(h, _ConsoleWarnings) for h in log.handlers):
        log.addHandler(_ConsoleWarnings(err_console))
        log.propagate = False


def register(app: typer.Typer) -> None:
    app.command(name="train")(train_command)
    app.command(name="eval")(eval_command)
    export_app = typer.Typer(name="export", help="Write an artifact's eval items for other tools (lm-eval).",
                             no_args_is_help=True)
    export_app.command(name="lm-eval")(export_lm_eval_command)
    app.add_typer(export_app, name="export")


def export_lm_eval_command(
    artifact: Path = typer.Argument(..., help="The artifact directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the task YAML, its data and its module."),
    split: Optional[str] = typer.Option(None, "--split", "-s", help="Items from this split's rows (default when "
                                                                    "there are no eval tasks: test)."),
    tasks: Optional[Path] = typer.Option(None, "--tasks", "-t", help="Items from this eval tasks YAML (default: "
                                                                     "the spec's eval: block)."),
    task: Optional[str] = typer.Option(None, "--task", help="Which task of the eval config (when it has several)."),
    name: Optional[str] = typer.Option(None, "--name", help="The lm-eval task name (default: from the artifact "
                                                            "and split, or the eval task)."),
    scorers: Optional[str] = typer.Option(None, "--scorers", help="Metrics, comma separated (em, f1, yesno, "
                                                                  "choice, gsm8k; default: the task's, else em,f1)."),
    answer: Optional[str] = typer.Option(None, "--answer", help="With --split: the row field holding the gold "
                                                                "answer, e.g. meta.extra.answer (default: the "
                                                                "finish[...] answer of successful rows)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help="Generation limit."),
) -> None:
    """Write an lm-evaluation-harness task (YAML + data) that prompts as `dsc eval` does.

    Run it with `lm_eval --model hf --model_args pretrained=MODEL --include_path DIR --tasks NAME`
    (without --apply_chat_template: the prompts carry the artifact's chat template already)."""
    from dsc.cli.root import out_console, run_guarded

    def body() -> Any:
        from dsc.runtime.lmeval_export import export_lm_eval

        names = [s.strip() for s in scorers.split(",") if s.strip()] if scorers else None
        return export_lm_eval(artifact, out, split=split, tasks_file=tasks, task=task, name=name, scorers=names,
                              answer=answer, max_new_tokens=max_new_tokens)

    ex = run_guarded(body)
    skipped = f" ({ex.skipped} rows without an answer left out)" if ex.skipped else ""
    out_console.print(f"lm-eval task '{ex.name}': {ex.items} items{skipped}, metrics "
                      f"{', '.join(ex.scorers)} → {ex.yaml_path}", highlight=False, soft_wrap=True)
    out_console.print(f"run: lm_eval --model hf --model_args pretrained=MODEL --include_path {ex.out_dir} "
                      f"--tasks {ex.name}", highlight=False, soft_wrap=True)


def train_command(
    artifact: Path = typer.Argument(..., help="The artifact directory (from `dsc build`)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value settings, e.g. lora.r=16 epochs=2.",
                                                    show_default=False),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Base model: a local directory or a hub id."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="A YAML file of train settings."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: runs/<name>-<version>)."),
    resume: bool = typer.Option(False, "--resume", metavar="", help="Continue from the last checkpoint in --out."),
    method: Optional[str] = typer.Option(None, "--method", help="Objective: sft (default), dpo or kto (a preference "
                                                                "artifact, through TRL: pip install 'dsc[trl]')."),
) -> None:
    """Fine-tune a model on ARTIFACT (LoRA by default; full=true for full fine-tuning).

    Settings: the spec's train: block, then --config, then key=value overrides.
    Several GPUs: `accelerate launch -m dsc train ...` or `torchrun --nproc_per_node N -m dsc train ...`.
    """
    from dsc.cli.root import RichProgress, out_console, run_guarded

    _attach_warnings()
    progress = RichProgress()  # steps, loss, tokens/s, ETA; off when stderr is not a terminal

    def body() -> Any:
        from dsc.runtime.train import progress_callback, train

        callbacks = [progress_callback(progress)]  # a bar on a terminal, else a line per logged step
        try:
            return train(artifact, model=model, config_file=config, overrides=overrides or [], out=out,
                         resume=resume, callbacks=callbacks, method=method)
        finally:
            progress.close()

    result = run_guarded(body)
    if result is None:
        return
    m = result.metrics
    parts = [f"steps {m.get('global_step')}"]
    for key in ("first_loss", "final_loss", "eval_loss"):
        if isinstance(m.get(key), float):
            parts.append(f"{key.replace('_', ' ')} {m[key]:.4f}")
    if m.get("tokens_per_second"):
        parts.append(f"{m['tokens_per_second']:.0f} tokens/s")
    out_console.print(", ".join(parts), highlight=False)
    out_console.print(f"model: {result.out_dir}  (artifact {result.run['artifact']['version']})", highlight=False)


def _import_plugins(refs: List[str]) -> None:
    """`--plugin`: import each (files relative to the working directory), as a spec's `plugins:`."""
    from dsc.core.errors import SpecError
    from dsc.core.plugins import import_plugin_list

    import_plugin_list(refs, Path.cwd(), lambda _, ref, why: SpecError(f"--plugin: cannot import {ref!r}: {why}"))


def eval_command(
    models: Optional[List[str]] = typer.Argument(None, help="Model directories (training outputs) or hub ids; "
                                                            "key=value arguments override task settings.",
                                                 show_default=False),
    tasks: Optional[Path] = typer.Option(None, "--tasks", "-t", help="Eval tasks YAML (default: the spec's eval: "
                                                                     "block of the model's artifact)."),
    artifact: Optional[Path] = typer.Option(None, "--artifact", "-a", help="Artifact whose template, inference "
                                                                           "messages and eval: block to use."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", "-p", help="Score this JSONL of {id, "
                                                                                 "prediction, answer}; no model."),
    scorers: str = typer.Option("em,f1", "--scorers", help="Scorers for --predictions (comma separated)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: eval_results)."),
    device: str = typer.Option("auto", "--device", help="auto (GPU when present) or cpu."),
    plugins: Optional[List[str]] = typer.Option(None, "--plugin", help="Import this plugin first (a .py file or a "
                                                                        "dotted module) for its scorers and tools; "
                                                                        "repeatable."),
) -> None:
    """Evaluate MODELS on eval tasks (direct answers or an agent loop) and print one table."""
    from dsc.cli.root import RichProgress, out_console, run_guarded

    _attach_warnings()
    progress = RichProgress()  # off when stderr is not a terminal or DSC_NO_PROGRESS is set
    args = models or []
    overrides = [a for a in args if "=" in a and not Path(a).exists()]
    refs = [a for a in args if a not in overrides]

    def body() -> Any:
        from dsc.core.errors import SpecError
        from dsc.runtime.evaluation import evaluate, score_predictions

        if device not in ("auto", "cpu"):
            raise SpecError(f"--device must be auto or cpu, not '{device}'")
        _import_plugins(plugins or [])
        if predictions is not None:
            if refs:
                raise SpecError("--predictions scores a file without a model: give no MODEL")
            names = [s.strip() for s in scorers.split(",") if s.strip()]
            seed = bootstrap = None
            for o in overrides:
                key, _, value = o.partition("=")
                if key == "seed":
                    seed = int(value)
                elif key == "bootstrap":
                    bootstrap = int(value)
                else:
                    raise SpecError(f"--predictions takes only seed= and bootstrap= settings, not '{key}'")
            return score_predictions(predictions, names, out=out, seed=seed or 0,
                                     bootstrap=1000 if bootstrap is None else bootstrap)
        try:
            return evaluate(refs, tasks_file=tasks, artifact_dir=artifact, out=out, overrides=overrides,
                            device=device, progress=progress)
        finally:
            progress.close()

    record = run_guarded(body)
    if record is None:
        return
    from dsc.runtime.evaluation import results_table

    out_console.print(results_table(record))
    if out is not None or predictions is None:
        out_console.print(f"results: {(out or Path('eval_results')) / 'results.json'}", highlight=False)

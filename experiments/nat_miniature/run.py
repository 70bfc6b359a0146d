"""The NAT effect in miniature: spec -> `dsc build` -> `dsc train` -> `dsc eval`, five arms x seeds.

    make experiment-nat                                  # the full run (writes RESULTS.md, results.json)
    python experiments/nat_miniature/run.py --quick      # one seed, few steps (what CI runs)

Steps: generate the task data (`task.py`, seeded), train a tiny byte-level BPE tokenizer on the
training text, build the three specs in `specs/` with `dsc build` (Python entry point), then per
seed build a tiny Llama from code and, per arm, `dsc train` it (the spec's `train:` block, only
`seed=` overridden) and `dsc eval` it in agent mode with the real calculator on the held-out
questions (the spec's `eval:` block; NAT's prompt carries the success string from the manifest).
Success = exact match of the `finish[...]` answer. Runs niced, with one torch thread.

The preference arms (DPO, KTO; DESIGNS.md, design 6) spend the same step budget in two halves:
an SFT warm-up on the positives-only artifact (shared by both arms of a seed), then
`dsc train --method dpo|kto` from it on pairs of the same attempts NUT and NAT train on.
`--reuse results.json` takes the runs of arms not in `--arms` from an earlier run, only where
this run rebuilt their artifacts byte-identically (the same artifact version).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import task as nat_task  # noqa: E402

ARMS = ("positives", "nut", "nat", "dpo", "kto")
ARM_TITLES = {"positives": "positives only", "nut": "NUT (+ negatives, no condition)",
              "nat": "NAT (+ negatives, conditioned)", "dpo": "DPO (SFT warm-up, then pairs)",
              "kto": "KTO (SFT warm-up, then rows)"}
PREFERENCE_ARMS = ("dpo", "kto")
WARMUP_ARM = "positives"  # the preference arms' SFT warm-up trains on this arm's artifact
WARMUP_FRACTION = 0.5  # of the step budget; the rest is the preference objective
DATA_SEED = 0
# The chat template's words and the conditioning strings, so each is one or two tokens.
CHAT_WORDS = ["<|im_start|>user\n", "<|im_start|>assistant\n", "now? [Correct]<|im_end|>", "now? [Incorrect]<|im_end|>"]
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


@dataclass(frozen=True)
class ModelSize:
    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    vocab_size: int = 1200


@dataclass
class Settings:
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int | None = None  # None: the specs' train.max_steps
    test_questions: int | None = None  # None: all of test.jsonl
    model: ModelSize = ModelSize()
    sizes: nat_task.DataSizes = nat_task.DataSizes()
    work: Path = HERE / "work"
    results_dir: Path = HERE
    quick: bool = False
    arms: tuple[str, ...] = ARMS
    reuse: tuple[Path, ...] = ()  # earlier results.json files: runs of arms not in `arms` come from them


def _quiet_threads() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(k, "1")
    import torch

    torch.set_num_threads(1)


def make_tokenizer(out: Path, lines: list[str], vocab_size: int) -> Path:
    """A byte-level BPE trained on the task's training text (never the test questions).

    A space before a number is split off, so a number is the same token in the question
    (" 46"), in an action ("calculate[46") and in an observation: copying it is one lookup."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r" (?=[0-9])"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines + CHAT_WORDS * 100, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<pad>")
    fast.save_pretrained(out)
    return out


def make_model(out: Path, tokenizer_dir: Path, size: ModelSize, seed: int) -> Path:
    """A tiny Llama built from code, initialised with `seed`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=size.hidden_size,
                         intermediate_size=size.hidden_size * 2, num_hidden_layers=size.layers,
                         num_attention_heads=size.heads, num_key_value_heads=size.heads,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def prepare(settings: Settings) -> dict[str, Any]:
    """Data, tokenizer and the three built artifacts under the work directory."""
    from dsc.compiler.engine.driver import build

    work = settings.work = settings.work.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    data_stats = nat_task.generate(work / "data", DATA_SEED, settings.sizes)
    if settings.test_questions is not None:
        test = (work / "data" / "test.jsonl").read_text(encoding="utf-8").splitlines()
        (work / "data" / "test.jsonl").write_text("\n".join(test[: settings.test_questions]) + "\n", encoding="utf-8")
    make_tokenizer(work / "tokenizer", nat_task.corpus_lines(work / "data"), settings.model.vocab_size)
    artifacts = {}
    for arm in ARMS:
        spec = work / f"{arm}.yaml"
        shutil.copy(HERE / "specs" / f"{arm}.yaml", spec)  # beside data/ and tokenizer/, as the paths say
        result = build(spec, work / "build" / arm, cache=False)
        manifest = json.loads((Path(result.out_dir) / "manifest.json").read_text(encoding="utf-8"))
        artifacts[arm] = {"path": str(result.out_dir), "version": manifest["version"],
                          "rows": {s: v for s, v in manifest.get("counts", {}).get("per_split", {}).items()}
                          if isinstance(manifest.get("counts", {}).get("per_split"), dict) else None,
                          "per_label": manifest.get("counts", {}).get("per_label"),
                          "inference": manifest.get("inference"), "preference": manifest.get("preference")}
    return {"data": data_stats, "artifacts": artifacts}


def run_arm(arm: str, seed: int, artifact: str, base: Path, settings: Settings) -> dict[str, Any]:
    from dsc.runtime.evaluation import evaluate
    from dsc.runtime.train import train

    runs = settings.work / "runs"
    overrides = [f"seed={seed}"] + ([f"max_steps={settings.steps}"] if settings.steps else [])
    warmup = None
    if arm in PREFERENCE_ARMS:  # (timed apart: its time is the warm-up row's, once per seed)
        warmup = warm_up(seed, base, settings)
        base = Path(warmup["model"])
        overrides = [f"seed={seed}", f"max_steps={budget_steps(settings) - warmup['steps']}"]
        overrides += preference_overrides(arm, artifact)
    t0, c0 = time.time(), time.process_time()
    result = train(artifact, model=str(base), out=runs / f"{arm}-s{seed}", overrides=overrides)
    t1, c1 = time.time(), time.process_time()
    # The spec's eval: block names its data relative to the spec; the manifest records no spec
    # directory, so `dsc eval` resolves it against the working directory: run it from there.
    with contextlib.chdir(settings.work):
        record = evaluate([str(runs / f"{arm}-s{seed}")], out=settings.work / "eval" / f"{arm}-s{seed}")
    t2, c2 = time.time(), time.process_time()
    probe = condition_probe(arm, seed, artifact, settings) if arm == "nat" else None
    task = record["models"][0]["tasks"]["arithmetic"]
    items = [json.loads(x) for x in (settings.work / "eval" / f"{arm}-s{seed}" / f"{arm}-s{seed}" /
                                     "arithmetic.jsonl").read_text(encoding="utf-8").splitlines()]
    return {"arm": arm, "seed": seed, "n": task["n"], "success": task["metrics"]["em"]["mean"],
            "ci95": task["metrics"]["em"]["ci95"], "artifact_version": record["models"][0]["artifact_version"],
            "train_loss": result.metrics.get("final_loss"), "eval_loss": result.metrics.get("eval_loss"),
            "steps": result.metrics.get("global_step"), "tokens_seen": result.metrics.get("tokens_seen"),
            "train_wall_s": round(t1 - t0, 1), "train_cpu_s": round(c1 - c0, 1),
            "eval_wall_s": round(t2 - t1, 1), "eval_cpu_s": round(c2 - c1, 1),
            "failure_modes": failure_modes(items), "success_with_failure_string": probe,
            "warmup": None if warmup is None else {k: v for k, v in warmup.items() if k != "model"},
            "preference_metrics": {k: v for k, v in result.metrics.items() if k.startswith(("rewards", "kl", "logps"))}
            or None}


def budget_steps(settings: Settings) -> int:
    """The step budget every arm gets: --steps, else the SFT specs' train.max_steps."""
    from dsc.spec.runtime import load_yaml_file

    return settings.steps or int(load_yaml_file(HERE / "specs" / "positives.yaml")["train"]["max_steps"])


_WARM: dict[tuple[Path, int], dict[str, Any]] = {}


def warm_up(seed: int, base: Path, settings: Settings) -> dict[str, Any]:
    """The preference arms' start: `dsc train` (SFT) on the positives-only artifact for
    WARMUP_FRACTION of the step budget, with its own full schedule; one per seed, shared by DPO
    and KTO (its cost is counted in each arm's steps, and its wall/CPU time once, here)."""
    from dsc.runtime.train import train

    key = (settings.work, seed)
    if key not in _WARM:
        steps = max(1, int(budget_steps(settings) * WARMUP_FRACTION))
        out = settings.work / "runs" / f"warmup-s{seed}"
        t0, c0 = time.time(), time.process_time()
        result = train(str(settings.work / "build" / WARMUP_ARM), model=str(base), out=out,
                       overrides=[f"seed={seed}", f"max_steps={steps}"])
        _WARM[key] = {"model": str(out), "steps": steps, "train_loss": result.metrics.get("final_loss"),
                      "eval_loss": result.metrics.get("eval_loss"), "train_wall_s": round(time.time() - t0, 1),
                      "train_cpu_s": round(time.process_time() - c0, 1)}
    return _WARM[key]


def preference_overrides(arm: str, artifact: str) -> list[str]:
    """KTO's class weights from the artifact's own counts (TRL's rule: desirable x weight about
    undesirable x weight): undesirable 1, desirable = undesirable / desirable rows of the train split."""
    if arm != "kto":
        return []
    classes = json.loads((Path(artifact) / "manifest.json").read_text(encoding="utf-8"))["preference"]["kto_classes"]
    weight = classes["undesirable"]["train"] / max(classes["desirable"]["train"], 1)
    return [f"desirable_weight={weight:.3f}", "undesirable_weight=1.0"]


def condition_probe(arm: str, seed: int, artifact: str, settings: Settings) -> float:
    """Does the model use its condition? The same eval with the *failure* string in the prompt:
    a model that learned the condition should do clearly worse with it."""
    from dsc.runtime.artifact import load_artifact
    from dsc.runtime.evaluation import evaluate
    from dsc.spec.runtime import load_yaml_file

    art = load_artifact(artifact)
    condition = art.spec["condition"]
    failure = condition["strings"]["failure"]
    content = failure + "{{ question }}" if condition["position"] == "prefix" else "{{ question }}" + failure
    task = dict(load_yaml_file(settings.work / f"{arm}.yaml")["eval"]["tasks"]["arithmetic"])
    task["prompt"] = [{"role": "user", "content": content}]
    tasks_file = settings.work / f"probe-{arm}.json"
    tasks_file.write_text(json.dumps({"tasks": {"arithmetic": {k: (dict(v) if isinstance(v, dict) else v)
                                                                for k, v in task.items()}}}), encoding="utf-8")
    record = evaluate([str(settings.work / "runs" / f"{arm}-s{seed}")], tasks_file=tasks_file,
                      out=settings.work / "probe" / f"{arm}-s{seed}")
    return record["models"][0]["tasks"]["arithmetic"]["metrics"]["em"]["mean"]


def failure_modes(items: list[dict[str, Any]]) -> dict[str, int]:
    """What went wrong in the failed episodes, read off their trajectories."""
    modes: dict[str, int] = {}
    for it in items:
        if it["scores"]["em"] == 1.0:
            continue
        steps = it["trajectory"]
        actions = [s["action"] for s in steps]
        if "finish" not in actions:
            mode = "no_finish"
        elif any(a is None or a not in ("calculate", "finish") for a in actions):
            mode = "invalid_action"
        else:
            mode = "wrong_answer"
        modes[mode] = modes.get(mode, 0) + 1
    return modes


def mean_ci(values: list[float], resamples: int = 1000, seed: int = 0) -> list[float] | None:
    """A bootstrap 95% interval of the mean over items pooled across seeds (the runtime's own)."""
    from dsc.runtime.evaluation import bootstrap_ci

    return bootstrap_ci(values, resamples, seed)


def summarise(runs: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    arms = {}
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        if not mine:
            continue
        successes = [r["success"] for r in mine]
        pooled: list[float] = []
        for r in mine:
            pooled += r["_scores"]
        arms[arm] = {"mean_success": sum(successes) / len(successes), "per_seed": successes,
                     "pooled_ci95": mean_ci(pooled)}
    goal = None
    if {"positives", "nut", "nat"} <= set(arms):
        nat = arms["nat"]["mean_success"]
        goal = {"nat_minus_positives": nat - arms["positives"]["mean_success"],
                "nat_minus_nut": nat - arms["nut"]["mean_success"]}
        goal["met"] = goal["nat_minus_positives"] >= 0.05 and goal["nat_minus_nut"] >= 0.05
    preference = {f"{arm}_minus_nat": arms[arm]["mean_success"] - arms["nat"]["mean_success"]
                  for arm in PREFERENCE_ARMS if arm in arms and "nat" in arms}
    for arm in PREFERENCE_ARMS:
        if arm in arms and "nat" in arms:  # above NAT only if the pooled CIs do not overlap
            lo, hi = arms[arm]["pooled_ci95"] or [0, 1], arms["nat"]["pooled_ci95"] or [0, 1]
            preference[f"{arm}_vs_nat"] = "above" if lo[0] > hi[1] else "below" if lo[1] < hi[0] else "overlapping"
    return {"arms": arms, "goal": goal, "preference": preference or None}


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=110)
    seeds = sorted({r["seed"] for r in runs})
    shown = [a for a in ARMS if any(r["arm"] == a for r in runs)]
    width = 0.8 / max(len(seeds), 1)
    for j, seed in enumerate(seeds):
        xs, ys, lo, hi = [], [], [], []
        for i, arm in enumerate(shown):
            r = next((r for r in runs if r["arm"] == arm and r["seed"] == seed), None)
            if r is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(100 * r["success"])
            ci = r["ci95"] or [r["success"], r["success"]]
            lo.append(100 * (r["success"] - ci[0]))
            hi.append(100 * (ci[1] - r["success"]))
        ax.bar(xs, ys, width * 0.9, yerr=[lo, hi], capsize=3, label=f"seed {seed}")
    ax.set_xticks(range(len(shown)), [ARM_TITLES[a].split(" (")[0] for a in shown])
    ax.set_ylabel("success on held-out questions (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("Miniature NAT: success by arm and seed (95% bootstrap CI)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _ci(ci: list[float] | None) -> str:
    return "-" if not ci else f"[{_pct(ci[0])}, {_pct(ci[1])}]"


def results_markdown(result: dict[str, Any]) -> str:
    """The measured part of RESULTS.md (the design history is kept in DESIGNS.md beside it)."""
    s = result["summary"]
    lines = ["# Miniature NAT — results", "",
             "Written by `run.py` with `results.json` (do not edit by hand). The designs tried before this",
             "one, with their numbers, follow the tables (from [DESIGNS.md](DESIGNS.md)).", "",
             f"- command: `{result['command']}` (niced, torch threads = 1)",
             f"- date: {result['date_utc']}; machine: {result['machine']['platform']}, "
             f"{result['machine']['cpus']} CPUs (shared), python {result['machine']['python']}",
             f"- wall {result['wall_s']:.0f} s, CPU {result['cpu_s']:.0f} s (this process)",
             "- libraries: " + ", ".join(f"{k} {v}" for k, v in result["libraries"].items()),
             "- artifacts: " + ", ".join(f"{arm} `{a['version']}`" for arm, a in result["artifacts"].items()),
             f"- model: {result['settings']['model']}; steps: {result['runs'][0]['steps'] if result['runs'] else '-'}",
             f"- data (seed {result['settings']['data_seed']}): {result['data']['attempts']} attempts on "
             f"{result['data']['train_questions']} training questions, {result['data']['successes']} succeeded; "
             f"{result['runs'][0]['n'] if result['runs'] else '-'} held-out test questions", "",
             "## Success rate (exact match of the final answer, agent mode with the real calculator)", "",
             "| arm | " + " | ".join(f"seed {x}" for x in result["settings"]["seeds"]) + " | mean | pooled 95% CI |",
             "|---|" + "---|" * (len(result["settings"]["seeds"]) + 2)]
    for arm, a in s["arms"].items():
        per_seed = []
        for seed in result["settings"]["seeds"]:
            r = next((r for r in result["runs"] if r["arm"] == arm and r["seed"] == seed), None)
            per_seed.append("-" if r is None else f"{_pct(r['success'])} {_ci(r['ci95'])}")
        lines.append(f"| {ARM_TITLES[arm]} | " + " | ".join(per_seed) +
                     f" | **{_pct(a['mean_success'])}** | {_ci(a['pooled_ci95'])} |")
    g = s.get("goal")
    if g:
        lines += ["", f"NAT − positives only: {100 * g['nat_minus_positives']:+.1f} points; NAT − NUT: "
                      f"{100 * g['nat_minus_nut']:+.1f} points. Goal (≥ +5 over each): "
                      f"**{'met' if g['met'] else 'not met'}**."]
    pref = s.get("preference") or {}
    for arm in PREFERENCE_ARMS:
        if f"{arm}_minus_nat" not in pref:
            continue
        verdict = {"above": "beats NAT's conditioning (pooled CIs do not overlap)",
                   "below": "does worse than NAT's conditioning (pooled CIs do not overlap)",
                   "overlapping": "does not separate from NAT's conditioning (pooled CIs overlap)"}[pref[f"{arm}_vs_nat"]]
        a = s["arms"]
        lines += ["", f"{arm.upper()} − NAT: {100 * pref[f'{arm}_minus_nat']:+.1f} points "
                      f"({_pct(a[arm]['mean_success'])} {_ci(a[arm]['pooled_ci95'])} against "
                      f"{_pct(a['nat']['mean_success'])} {_ci(a['nat']['pooled_ci95'])}): {arm.upper()} {verdict}; "
                      f"against positives only {100 * (a[arm]['mean_success'] - a['positives']['mean_success']):+.1f} points."
                      if "positives" in a else ""]
    warm = [r for r in result["runs"] if r.get("warmup")]
    if warm:
        w = warm[0]["warmup"]
        lines += ["", f"Preference arms: an SFT warm-up of {w['steps']} steps on the positives-only artifact, then "
                      f"{warm[0]['steps']} steps of DPO / KTO (lr, beta: the specs'); the warm-up's cost is in "
                      "each arm's steps, its wall/CPU time in the per-run table's `warm-up` rows."]
    for src in (result.get("reused") or {}).get("sources", []):
        if src.get("versions_differ"):
            why = (f"built by an earlier dsc (artifact versions of {', '.join(src['versions_differ'])} differ); taken "
                   f"because this run's {src['reproduced_by']} runs, trained by the current code, reproduce that "
                   f"run's {src['reproduced_by']} success exactly on every seed")
        else:
            why = "whose artifacts this run rebuilt byte-identically (same versions)"
        lines += ["", "Runs of " + ", ".join(src["arms"]) + f" are taken from an earlier run (`{src['command']}`, "
                  f"{src['date_utc']}), {why}; their wall/CPU times are that run's."]
    probes = [(r["seed"], r["success"], r["success_with_failure_string"]) for r in result["runs"]
              if r.get("success_with_failure_string") is not None]
    if probes:
        lines += ["", "Condition probe (NAT models prompted with the *failure* string instead): " +
                  "; ".join(f"seed {sd}: {_pct(a)} → {_pct(b)}" for sd, a, b in probes) +
                  " (a model that uses its condition does clearly worse with the failure string)."]
    lines += ["", "![success by arm and seed](success.png)", "",
              "## Per run", "", "(val loss: on each arm's own validation rows, not comparable across arms)", "",
              "| arm | seed | success | train loss | val loss | train wall / CPU s | "
              "eval wall / CPU s | failed episodes |", "|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        if r.get("warmup") and r["arm"] == next(x["arm"] for x in result["runs"] if x.get("warmup")):
            w = r["warmup"]
            lines.append(f"| warm-up | {r['seed']} | - | {w['train_loss'] or 0:.3f} | {w['eval_loss'] or 0:.3f} | "
                         f"{w['train_wall_s']} / {w['train_cpu_s']} | - | - |")
        fm = ", ".join(f"{k} {v}" for k, v in sorted(r["failure_modes"].items()))
        lines.append(f"| {r['arm']} | {r['seed']} | {_pct(r['success'])} | {r['train_loss'] or 0:.3f} | "
                     f"{r['eval_loss'] or 0:.3f} | {r['train_wall_s']} / {r['train_cpu_s']} | "
                     f"{r['eval_wall_s']} / {r['eval_cpu_s']} | {fm} |")
    lines += ["", "## Training data (noisy-policy attempts, labelled by the scorer)", "",
              "| mistake made : label | attempts |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result["data"]["mistakes_by_label"].items()]
    designs = HERE / "DESIGNS.md"
    if designs.is_file():  # every design tried, the failed ones included
        lines += ["", designs.read_text(encoding="utf-8").replace("# Miniature NAT — the designs tried",
                                                                  "## The designs tried", 1)
                  .replace("\n## Design", "\n### Design").rstrip()]
    return "\n".join(lines) + "\n"


def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("dsc", "torch", "transformers", "tokenizers", "datasets", "peft")}


def run(settings: Settings) -> dict[str, Any]:
    _quiet_threads()
    t0 = time.time()
    prepared = prepare(settings)
    if settings.reuse and settings.arms:  # what can be checked before hours of training, not after
        reuse_runs([], prepared["artifacts"], settings)
    runs = []
    for seed in settings.seeds:
        base = make_model(settings.work / f"base-s{seed}", settings.work / "tokenizer", settings.model, seed)
        for arm in settings.arms:
            r = run_arm(arm, seed, prepared["artifacts"][arm]["path"], base, settings)
            items = (settings.work / "eval" / f"{arm}-s{seed}" / f"{arm}-s{seed}" / "arithmetic.jsonl")
            r["_scores"] = [json.loads(x)["scores"]["em"] for x in items.read_text(encoding="utf-8").splitlines()]
            runs.append(r)
            print(f"[nat-miniature] {arm} seed {seed}: success {r['success']:.3f} (train {r['train_wall_s']}s, "
                  f"eval {r['eval_wall_s']}s)", flush=True)
    reused = None
    if settings.reuse:
        runs, reused = reuse_runs(runs, prepared["artifacts"], settings)
    summary = summarise(runs, settings)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "command": " ".join(["python", "experiments/nat_miniature/run.py", *sys.argv[1:]]),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch_threads": 1, "nice": os.nice(0)},
        "libraries": library_versions(),
        "wall_s": round(time.time() - t0, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "settings": {"seeds": list(settings.seeds), "steps": settings.steps, "model": asdict(settings.model),
                     "data": asdict(settings.sizes), "data_seed": DATA_SEED, "quick": settings.quick},
        "data": prepared["data"], "artifacts": prepared["artifacts"],
        "runs": [{**{k: v for k, v in r.items() if not k.startswith("_")},
                  "item_scores": "".join(str(int(x)) for x in r["_scores"])} for r in runs],
        "summary": summary, "reused": reused,
    }
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    (settings.results_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot(runs, settings.results_dir / "success.png")
    (settings.results_dir / "RESULTS.md").write_text(results_markdown(result), encoding="utf-8")
    return result


def reuse_runs(runs: list[dict[str, Any]], artifacts: dict[str, Any],
               settings: Settings) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The runs of the arms this run skipped, from `settings.reuse` (earlier results.json files,
    the first that has an (arm, seed) wins; the pooled CIs are recomputed from their item scores).
    Refused unless each artifact was rebuilt byte-identically, with the same steps and test-set size."""
    have = {(r["arm"], r["seed"]) for r in runs}
    sources = []
    for path in settings.reuse:
        old = json.loads(path.read_text(encoding="utf-8"))
        taken = [r for r in old["runs"] if r["arm"] not in settings.arms and r["seed"] in settings.seeds
                 and (r["arm"], r["seed"]) not in have]
        if not taken:
            continue
        if (settings.steps or None) != (old["settings"]["steps"] or None):
            raise SystemExit(f"--reuse: {path} ran {old['settings']['steps']} steps, this run {settings.steps}")
        changed = sorted({r["arm"] for r in taken if old["artifacts"][r["arm"]]["version"] != artifacts[r["arm"]]["version"]})
        reproduced = None
        if changed:
            # Artifact versions also change with dsc itself: accept the file only if an arm this
            # merge already has (trained by the current code) reproduces its numbers exactly on
            # every seed (same success on the same test questions).
            mine = {(r["arm"], r["seed"]): r for r in runs}
            for arm in ARMS:
                olds = [r for r in old["runs"] if r["arm"] == arm and r["seed"] in settings.seeds]
                if len(olds) == len(settings.seeds) and all(
                        (arm, r["seed"]) in mine and mine[(arm, r["seed"])]["success"] == r["success"]
                        and mine[(arm, r["seed"])]["n"] == r["n"] for r in olds):
                    reproduced = arm
                    break
            if reproduced is None and runs:  # (before training, with no runs yet, it cannot be known)
                raise SystemExit(f"--reuse: the artifacts of {', '.join(changed)} differ from {path}'s, and no arm "
                                 "of this run reproduces that file's numbers on every seed: rerun them")
        for r in taken:
            if runs and runs[0]["n"] != r["n"]:
                raise SystemExit(f"--reuse: {path} evaluated {r['n']} questions, this run {runs[0]['n']}")
            if r.get("item_scores"):  # each test question's score, in order
                scores = [float(c) for c in r["item_scores"]]
            else:  # an older results.json: the same 0/1 multiset (the bootstrap's distribution)
                hits = round(r["success"] * r["n"])
                scores = [1.0] * hits + [0.0] * (r["n"] - hits)
            runs.append({**r, "_scores": scores})
            have.add((r["arm"], r["seed"]))
        arms = sorted({r["arm"] for r in taken}, key=ARMS.index)
        sources.append({"from": str(path), "date_utc": old["date_utc"], "command": old["command"], "arms": arms,
                        "versions_differ": changed, "reproduced_by": reproduced})
    if not sources:
        return runs, None
    runs.sort(key=lambda r: (r["seed"], ARMS.index(r["arm"])))
    return runs, {"sources": sources}


def quick_settings(work: Path, results_dir: Path, seed: int = 0) -> Settings:
    """One seed, 20 steps, 150 training and 30 test questions: the chain end to end, in CI."""
    return Settings(seeds=(seed,), steps=20, test_questions=30, work=work, results_dir=results_dir, quick=True,
                    sizes=nat_task.DataSizes(train_questions=150, test_questions=30))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (model init + data order)")
    ap.add_argument("--steps", type=int, default=None, help="override the specs' train.max_steps")
    ap.add_argument("--test-questions", type=int, default=None, help="evaluate on the first N test questions")
    ap.add_argument("--work", type=Path, default=HERE / "work", help="scratch directory (deleted first)")
    ap.add_argument("--results", type=Path, default=HERE, help="where results.json and success.png go")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms to run (pilots)")
    ap.add_argument("--reuse", type=Path, action="append", default=[],
                    help="an earlier results.json (repeatable): the arms not in --arms are taken from it "
                         "(their artifacts must be rebuilt byte-identically)")
    ap.add_argument("--quick", action="store_true", help="one seed, 20 steps, 30 test questions (CI)")
    args = ap.parse_args(argv)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    settings = Settings(seeds=seeds, steps=args.steps, test_questions=args.test_questions, work=args.work,
                        results_dir=args.results, quick=args.quick, arms=tuple(a for a in args.arms.split(",") if a),
                        reuse=tuple(args.reuse))
    if args.quick:
        settings = quick_settings(args.work, args.results, seed=seeds[0])
        settings.arms, settings.reuse = tuple(a for a in args.arms.split(",") if a), tuple(args.reuse)
    result = run(settings)
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    os.nice(19)  # the machine is shared
    raise SystemExit(main())

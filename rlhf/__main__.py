"""Command line: `python -m rlhf <command>`, one subcommand per pipeline stage; the UI calls the same library code.

Errors the user can fix print one line (`error: ...`) and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from rlhf.config import (
    DPOTrainConfig, ModelConfig, PPOConfig, RewardTrainConfig, RLHFError, SamplingConfig, add_arguments, data_dir,
    from_arguments,
)


def _add_project(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", required=True, help="project name (a folder under the data directory)")


def _add_spec(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--model", dest="spec", default=None, help=help)


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", dest="spec", default=None,
        help="model spec: `bundled`, a local directory or a Hub id (default: $RLHF_MODEL, else bundled)",
    )
    add_arguments(parser, ModelConfig, only=["device", "dtype"])


def cmd_projects(args) -> None:
    from rlhf.store import Store, list_projects

    if args.create:
        store = Store.open(args.create, create=True)
        print(f"project {store.name!r} ready at {store.folder}")
        return
    names = list_projects()
    if not names:
        print(f"no projects yet under {data_dir()}; create one with `python -m rlhf projects --create NAME`")
    for name in names:
        print(name, json.dumps(Store.open(name).counts()))


def cmd_prepare_model(args) -> None:
    from rlhf.models import resolve_source

    print(f"{args.spec or ModelConfig().spec} ready at {resolve_source(args.spec or ModelConfig().spec)}")


def cmd_generate(args) -> None:
    from rlhf.generate import generate_candidates, parse_prompts, read_prompts_file
    from rlhf.models import load_model
    from rlhf.store import Store

    sampling = from_arguments(SamplingConfig, args).validate()
    model_config = from_arguments(ModelConfig, args).validate()
    prompts = parse_prompts(sys.stdin.read()) if args.prompts == "-" else read_prompts_file(args.prompts)
    store = Store.open(args.project)  # the project must exist before any slow model loading
    loaded = load_model(model_config)

    bars = []  # made at the first batch: bad input is refused first, with its one-line error alone on stderr

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(_bar(total, "prompt"))
        bars[0].update(done - bars[0].n)

    try:
        result = generate_candidates(store, loaded, prompts, sampling, source=f"cli:{args.prompts}",
                                     progress=progress)
    finally:
        for bar in bars:
            bar.close()
    completions = {c.id: c for c in store.completions(result.run_id)}
    for completion_id in result.completion_ids:
        c = completions[completion_id]
        print(json.dumps({"id": c.id, "prompt": c.prompt, "candidate": c.candidate_index, "text": c.text,
                          "finish_reason": c.finish_reason}, ensure_ascii=False))
    print(f"stored {len(result.completion_ids)} candidates for {result.prompts_done} prompts in project "
          f"{store.name!r} (run {result.run_id}, seed {result.params['seed']})", file=sys.stderr)


def cmd_chat(args) -> None:
    from rlhf.generate import chat_messages, stream_chat
    from rlhf.models import load_model

    message = args.message if args.message != "-" else sys.stdin.read()
    sampling = from_arguments(SamplingConfig, args, num_candidates=1).validate(min_candidates=1)
    loaded = load_model(from_arguments(ModelConfig, args).validate())
    shown = ""
    for text in stream_chat(loaded, chat_messages(message, args.system_prompt), sampling):
        print(text[len(shown):], end="", flush=True)
        shown = text
    print()


def cmd_guidelines(args) -> None:
    from rlhf.store import Store

    store = Store.open(args.project)
    if args.set:
        text = sys.stdin.read() if args.set == "-" else _read_text(args.set)
        version = store.save_guidelines(text, author=args.author)
        print(f"guidelines of {store.name!r} are now version {version}", file=sys.stderr)
        return
    print(store.guidelines())


def _read_text(path: str) -> str:
    from pathlib import Path

    if not Path(path).is_file():
        raise RLHFError(f"the file {path!r} does not exist (relative paths start at {Path.cwd()}); check the path.")
    return Path(path).read_text(encoding="utf-8")


def cmd_annotate(args) -> None:
    from rlhf.judges import annotate, load_function
    from rlhf.store import Store

    store = Store.open(args.project)
    judge = load_function(args.judge)
    annotator = args.annotator or f"judge:{args.judge.rpartition(':')[2]}"
    stored = annotate(store, judge, annotator, limit=args.limit, seed=args.seed, order=args.order)
    print(f"{annotator} voted on {stored} pairs in project {store.name!r}", file=sys.stderr)


def cmd_stats(args) -> None:
    from rlhf.stats import format_stats, project_stats
    from rlhf.store import Store

    stats = project_stats(Store.open(args.project))
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))


def cmd_export(args) -> None:
    from rlhf.dataset import default_export_dir, export_preferences
    from rlhf.store import Store

    store = Store.open(args.project)
    result = export_preferences(store, args.out or default_export_dir(store))
    print(f"exported {json.dumps(result.rows)} to {result.folder}")


def cmd_import(args) -> None:
    from rlhf.dataset import import_preferences
    from rlhf.store import Store

    store = Store.open(args.project, create=args.create)
    result = import_preferences(store, args.source, annotator=args.annotator, gold=args.gold)
    what = "gold pairs" if args.gold else f"new votes ({result.votes_added})"
    print(f"imported {result.rows} rows from {args.source} into {store.name!r}: {result.pairs} pairs, {what}")


def _bar(total: int, unit: str):
    """A progress bar on stderr (tqdm): what the Train tab's progress shows, in a terminal."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True)


def _step_progress(unit: str, loss_key: str):
    """A (step, total, metrics) callback for the TRL trainers that moves a tqdm bar."""
    bar = None

    def progress(step: int, total: int, metrics: dict) -> None:
        nonlocal bar
        if bar is None:
            bar = _bar(total, unit)
        bar.update(step - bar.n)
        if isinstance(metrics.get(loss_key), (int, float)):
            bar.set_postfix(loss=f"{metrics[loss_key]:.4f}")
        if "check/kl" in metrics:  # DPO's KL-budget check: a line of its own above the bar
            from rlhf.dpo import check_line

            bar.write(check_line(metrics), file=sys.stderr)
        if step >= total:
            bar.close()

    return progress


def _print_evaluation(meta: dict) -> None:
    evaluation = meta.get("evaluation")
    if not evaluation:
        print("no evaluation: the project has no reward model to judge the policy by (`evaluate --judge` can)",
              file=sys.stderr)
        return
    from rlhf.evaluate import report_text

    print(report_text(evaluation), file=sys.stderr)


def cmd_train_reward(args) -> None:
    from rlhf.monitor import stop_on_ctrl_c
    from rlhf.pipeline import train_reward
    from rlhf.store import Store

    config = from_arguments(RewardTrainConfig, args).validate()
    store = Store.open(args.project)  # the project must exist before any slow model loading
    meta = train_reward(store, config, args.spec or ModelConfig().spec, progress=_step_progress("step", "reward/loss"),
                        stop=stop_on_ctrl_c())
    if meta.get("rank", 0) != 0:
        return  # one process reports: rank 0 wrote the checkpoint
    m = meta["metrics"]
    held_out = (f"held-out accuracy {m['eval_accuracy']:.2f} on {m['n_eval']} pairs" if m["n_eval"]
                else f"no pairs held out, training accuracy {m['train_accuracy']:.2f}")
    audit = (f"; auditor (trained on the held-out pairs) {meta['audit']['accuracy_on_reward_model_pairs']:.2f} on "
             "the reward model's pairs" if meta.get("audit") else "; no auditor (too few held-out pairs)")
    steps = f"{m['steps']} step{'s' if m['steps'] != 1 else ''}"
    ties = f" and {m['n_ties']} ties" if m.get("n_ties") else ""
    print(f"reward model: {steps} on {m['n_train']} pairs{ties}, loss {m['final_loss']:.4f}, {held_out}{audit} "
          f"-> {meta['path']}")


def cmd_score(args) -> None:
    from rlhf.checkpoints import find_checkpoint
    from rlhf.reward import RewardModel
    from rlhf.store import Store

    store = Store.open(args.project)
    found = find_checkpoint(store, args.reward_model, kinds=("reward",))
    reward_model = RewardModel.load(found["path"], device=args.device or "auto", dtype=args.dtype or "auto")
    heads = reward_model.score_heads([args.prompt], [args.response])[0]  # (K,)
    reward = reward_model.rewards([args.prompt], [args.response])
    print(f"{heads.mean().item():.4f}")
    spread = f", heads disagree by {reward.disagreement.item():.3f}" if reward.disagreement is not None else ""
    print(f"(normalised mean of {len(heads)} head{'s' if len(heads) > 1 else ''}{spread}; PPO's reward "
          f"{reward.scores.item():.4f}; reward model {found['id']})", file=sys.stderr)


def cmd_ppo(args) -> None:
    from rlhf.generate import read_prompts_file
    from rlhf.monitor import stop_on_ctrl_c
    from rlhf.pipeline import train_policy
    from rlhf.store import Store

    store = Store.open(args.project)
    config = from_arguments(PPOConfig, args).validate()
    prompts = read_prompts_file(args.prompts) if args.prompts else None
    bar = _bar(config.steps, "step")

    def report(result) -> None:
        m = result.metrics
        audit = f"  auditor {m['audit/evidence']:+.2f}" if "audit/evidence" in m else ""
        bar.write(f"step {result.step}/{config.steps}  score {m['objective/scores']:+.3f}{audit}  kl "
                  f"{m['objective/kl']:.2f} (coef {m['objective/kl_coef']:.3f})  eos {m['ppo/eos_rate']:.2f}  len "
                  f"{m['ppo/response_length']:.1f}  {m['time/step_s']:.1f}s", file=sys.stderr)
        for flag in m.get("drift/flags", []):
            bar.write(f"  drift: {flag}", file=sys.stderr)
        bar.update(1)

    meta = train_policy(store, "ppo", config, args.spec or ModelConfig().spec, reward_model=args.reward_model,
                        reward_function=args.reward, prompts=prompts, resume=args.resume, on_step=report,
                        stop=stop_on_ctrl_c(), device=args.device or "auto")
    bar.close()
    if meta.get("rank", 0) != 0:
        return  # one process reports: rank 0 wrote the checkpoint and evaluated it
    if meta.get("kl_guard"):
        guard = meta["kl_guard"]
        print(f"stopped by the KL guard at step {guard['step']} (KL {guard['kl']:.1f} nats per answer); kept step "
              f"{meta['selected_step']}", file=sys.stderr)
    _print_evaluation(meta)
    print(f"ppo checkpoint {meta['id']} after {meta['steps_done']} steps (published: step {meta['selected_step']}, "
          f"chosen by the {meta['selected_by']}): {meta['path']}")


def cmd_dpo(args) -> None:
    from rlhf.monitor import stop_on_ctrl_c
    from rlhf.pipeline import train_policy
    from rlhf.store import Store

    config = from_arguments(DPOTrainConfig, args).validate()
    store = Store.open(args.project)
    meta = train_policy(store, "dpo", config, args.spec or ModelConfig().spec,
                        progress=_step_progress("step", "dpo/loss"), stop=stop_on_ctrl_c())
    if meta.get("rank", 0) != 0:
        return  # one process reports: rank 0 wrote the checkpoint and evaluated it
    m = meta["metrics"]
    _print_evaluation(meta)
    from rlhf.dpo import published_words

    if meta.get("kl_budget_stop"):
        stop = meta["kl_budget_stop"]
        print(f"KL budget: stopped at the check of step {stop['step']} (KL {stop['kl']:.1f} nats per answer, over "
              f"the budget of {config.target_kl:g}); published {published_words(meta)}", file=sys.stderr)
    print(f"dpo: {m['steps']} step{'s' * (m['steps'] != 1)} on {m['n_pairs']} pairs, loss {m['dpo/loss']:.4f}, "
          f"reward margin {m['dpo/rewards/margins']:.4f}, accuracy {m['dpo/rewards/accuracies']:.2f} (published: "
          f"{published_words(meta)}, chosen by the {meta['selected_by']}) -> {meta['path']}")


def cmd_evaluate(args) -> None:
    from rlhf.evaluate import write_report
    from rlhf.generate import read_prompts_file
    from rlhf.judges import load_function
    from rlhf.pipeline import evaluate
    from rlhf.store import Store

    store = Store.open(args.project)
    sampling = SamplingConfig(num_candidates=1, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              top_p=1.0, seed=args.seed)
    report = evaluate(
        store, args.policy, prompts=read_prompts_file(args.prompts) if args.prompts else None,
        judge=load_function(args.judge) if args.judge else None, reward_model=args.reward_model,
        sampling=sampling, device=args.device or "auto", save=args.save,
    )
    from rlhf.evaluate import report_text

    write_report(report, args.out)
    print(report_text(report), file=sys.stderr)
    print(json.dumps(report, ensure_ascii=False))


def _print_rows(rows: list[dict], as_json: bool, empty: str, line) -> None:
    """A listing command's rows: as JSON, or one `line(rank, row)` each, or what to do when there are none."""
    if as_json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(empty)
    for rank, row in enumerate([] if as_json else rows, start=1):
        print(line(rank, row))


def cmd_leaderboard(args) -> None:
    from rlhf.arena import leaderboard
    from rlhf.store import Store

    def line(rank: int, row: dict) -> str:
        extra = "" if row["reward"] is None else f"  reward {row['reward']:+.2f}  kl {row['kl']:.2f}"
        return (f"{rank:>2}. {row['model']:<40} {row['rating']:>5} [{row['ci_low']}, {row['ci_high']}]  "
                f"{row['votes']} votes{extra}")

    _print_rows(leaderboard(Store.open(args.project)), args.json,
                "no head-to-head votes yet: compare two models in the Chat tab's arena", line)


def cmd_rounds(args) -> None:
    from rlhf.rounds import rounds
    from rlhf.store import Store

    def line(_: int, r: dict) -> str:
        win = "-" if r["win_rate_vs_previous"] is None else f"{r['win_rate_vs_previous']:.0%}"
        accuracy = "-" if r["reward_model_accuracy"] is None else f"{r['reward_model_accuracy']:.2f}"
        return (f"round {r['round']}: {r['policy']} ({r['algorithm']}) +{r['votes_added']} votes, "
                f"reward model accuracy {accuracy}, win rate vs the previous policy {win}")

    _print_rows(rounds(Store.open(args.project)), args.json, "round 0: the base model; no policy trained yet", line)


def cmd_next_round(args) -> None:
    from rlhf.pipeline import next_round
    from rlhf.rounds import last_sampling, newest_policy
    from rlhf.store import Store

    store = Store.open(args.project)
    # As the Train tab's button: the last generation's settings, with only the flags given changed.
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(SamplingConfig)
             if getattr(args, f.name, None) is not None}
    sampling = dataclasses.replace(last_sampling(store), **given).validate() if given else None
    print(f"sampling candidates from {newest_policy(store)}", file=sys.stderr)
    result = next_round(store, sampling)
    print(f"stored {len(result.completion_ids)} candidates for {result.prompts_done} prompts (run {result.run_id}); "
          "label them in the Prefer tab")


def cmd_walkthrough(args) -> None:
    from rlhf.walkthrough import PROMPTS, create_walkthrough_projects

    for name in create_walkthrough_projects():
        print(f"project {name!r} ready")
    print("prompts for both:\n" + "\n".join(PROMPTS))


def cmd_serve(args) -> None:
    from rlhf.ui import launch

    if args.spec:
        import os

        os.environ["RLHF_MODEL"] = args.spec
    launch(server_name=args.host, server_port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rlhf", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = commands.add_parser("projects", help="list projects, or create one with --create NAME")
    p.add_argument("--create", metavar="NAME", help="create a project (a folder under the data directory)")
    p.set_defaults(func=cmd_projects)

    p = commands.add_parser("prepare-model", help="load a model once (the bundled GGUF is converted and cached)")
    _add_model(p)
    p.set_defaults(func=cmd_prepare_model)

    p = commands.add_parser("generate", help="sample K candidate answers per prompt and store them in the project")
    _add_project(p)
    p.add_argument("--prompts", required=True, help="file with one prompt per line, or - to read them from stdin")
    _add_model(p)
    add_arguments(p, SamplingConfig)
    p.set_defaults(func=cmd_generate)

    p = commands.add_parser("chat", help="stream one answer to a message (the UI's Chat tab, without the UI)")
    p.add_argument("message", help="the user message, or - to read it from stdin")
    p.add_argument("--system-prompt", default=None, help="optional system prompt")
    _add_model(p)
    add_arguments(p, SamplingConfig, only=["max_new_tokens", "temperature", "top_p", "seed"])
    p.set_defaults(func=cmd_chat)

    p = commands.add_parser("guidelines", help="print the project's annotation guidelines, or --set a new version")
    _add_project(p)
    p.add_argument("--set", metavar="FILE", help="markdown file (or - for stdin) to save as the next version")
    p.add_argument("--author", default=None, help="who wrote this version")
    p.set_defaults(func=cmd_guidelines)

    p = commands.add_parser("annotate", help="let a scripted judge vote on every open pair (function(prompt, a, b))")
    _add_project(p)
    p.add_argument("--judge", required=True, help="path/to/file.py:function returning a, b, tie or both_bad")
    p.add_argument("--annotator", default=None, help="name its votes carry (default: judge:FUNCTION)")
    p.add_argument("--limit", type=int, default=None, help="vote on at most this many pairs")
    p.add_argument("--seed", type=int, default=None, help="seed for the left/right order shown to the judge")
    p.add_argument("--order", choices=["oldest", "uncertain"], default="oldest",
                   help="which pairs first: oldest, or uncertain (smallest score gap under the newest reward model, "
                        "the Prefer tab's 'Least certain first'; plain order without one)")
    p.set_defaults(func=cmd_annotate)

    p = commands.add_parser("stats", help="label quality: votes, speed, agreement (Krippendorff's alpha), gold, bias")
    _add_project(p)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_stats)

    p = commands.add_parser("export", help="write the preference dataset (TRL format, parquet + card)")
    _add_project(p)
    p.add_argument("--out", default=None, help="folder to write (default: PROJECT/exports/TIMESTAMP)")
    p.set_defaults(func=cmd_export)

    p = commands.add_parser("import", help="import a preference dataset (TRL formats, hh-rlhf) from a path or Hub id")
    _add_project(p)
    p.add_argument("--source", required=True, help="a folder, a .parquet/.json/.jsonl/.csv file, or a Hub dataset id")
    p.add_argument("--annotator", default=None, help="annotator for rows without an `annotator` column")
    p.add_argument("--gold", action="store_true", help="store the pairs as gold pairs (known answers) instead")
    p.add_argument("--create", action="store_true", help="create the project if it does not exist")
    p.set_defaults(func=cmd_import)

    p = commands.add_parser("ppo", help="train the policy with PPO against a reward model (or a Python reward)")
    _add_project(p)
    p.add_argument("--model", dest="spec", default=None, help="policy to start from: a spec or a policy checkpoint")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: auto)")
    p.add_argument("--prompts", default=None, help="file with one prompt per line (default: the project's prompts)")
    p.add_argument("--reward-model", default=None, help="reward checkpoint id or path (default: the newest)")
    p.add_argument("--reward", default=None, help="path/to/file.py:function(prompt, response) -> float instead")
    p.add_argument("--resume", default=None, help="PPO checkpoint to continue exactly where it stopped")
    add_arguments(p, PPOConfig)
    p.set_defaults(func=cmd_ppo)

    p = commands.add_parser("rounds", help="the project's rounds: votes added, reward model accuracy, win rate")
    _add_project(p)
    p.add_argument("--json", action="store_true", help="print the rounds as JSON")
    p.set_defaults(func=cmd_rounds)

    p = commands.add_parser("next-round", help="start the next round: candidates from the newest policy to label, "
                            "sampled like the last generation (flags change that)")
    _add_project(p)
    add_arguments(p, SamplingConfig)
    p.set_defaults(func=cmd_next_round)

    p = commands.add_parser("leaderboard", help="models ranked by a Bradley-Terry fit of head-to-head votes")
    _add_project(p)
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=cmd_leaderboard)

    p = commands.add_parser("evaluate", help="tuned policy vs reference: win rate, reward delta, KL, length")
    _add_project(p)
    p.add_argument("--policy", default="latest", help="policy checkpoint id or path, or latest (default)")
    p.add_argument("--prompts", default=None, help="file with one prompt per line (default: the project's prompts)")
    p.add_argument("--judge", default=None, help="path/to/file.py:function(prompt, a, b); a is the tuned answer")
    p.add_argument("--reward-model", default=None, help="reward checkpoint (default: the newest, if any)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default: 64)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature for both (default: 0.7)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed for both (default: 0)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda")
    p.add_argument("--out", default=None, help="also write the JSON report here")
    p.add_argument("--no-save", dest="save", action="store_false",
                   help="do not save the report as the checkpoint's evaluation (default: saved, as after training)")
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser("train-reward", help="train a reward model (and its auditor) on the project's pairs (TRL)")
    _add_project(p)
    _add_spec(p, "base model spec: `bundled`, a local directory or a Hub id (default: $RLHF_MODEL, else bundled)")
    add_arguments(p, RewardTrainConfig)
    p.add_argument("--full", dest="lora", action="store_false", default=None,
                   help="train every weight instead of a LoRA adapter (same as --no-lora)")
    p.set_defaults(func=cmd_train_reward)

    p = commands.add_parser("score", help="score one answer with a reward model (normalised: reference answers ~N(0,1))")
    _add_project(p)
    p.add_argument("--reward-model", default="latest", metavar="CKPT",
                   help="reward checkpoint: id, folder, or `latest` (default: latest)")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--response", required=True, help="the answer to score")
    add_arguments(p, ModelConfig, only=["device", "dtype"])
    p.set_defaults(func=cmd_score)

    p = commands.add_parser("dpo", help="tune a policy on the project's preference pairs with DPO (TRL)")
    _add_project(p)
    _add_spec(p, "base model spec, or a policy checkpoint folder to continue from (default: $RLHF_MODEL, else "
                 "bundled)")
    add_arguments(p, DPOTrainConfig)
    p.set_defaults(func=cmd_dpo)

    from rlhf.hub import add_pull_parser, add_push_parser

    add_push_parser(commands)
    add_pull_parser(commands)

    from rlhf.backup import add_backup_parser

    add_backup_parser(commands)

    p = commands.add_parser("walkthrough", help="create the two starter projects (biology tutor, meme bot)")
    p.set_defaults(func=cmd_walkthrough)

    p = commands.add_parser("serve", help="launch the web app (what app.py does)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--model", dest="spec", default=None, help="default model spec for the app")
    p.set_defaults(func=cmd_serve)
    return parser


def quiet_libraries() -> None:
    """Per-tensor loading bars and library warnings drown our one-line messages; the CLI reports its own progress."""
    import transformers

    import warnings

    import datasets

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecations inside TRL/PEFT, not ours to fix


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        args.func(args)
    except RLHFError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`autoif`: run the AutoIF graph from a terminal and print its funnel; trace any row.

    autoif run                       # the whole graph at demo scale on the embedded models
    autoif run --stale               # only the assets a code or input change made stale, and downstream
    autoif trace sft-1a2b3c4d5e6f7a8b   # a training sample's chain back to its seed instruction
    autoif run --profile paper --supervisor-model Qwen/Qwen2-72B-Instruct
    autoif run --llm-backend openai --base-url http://127.0.0.1:8000/v1 --supervisor-model NAME
    autoif evaluate --ifeval input_data.jsonl --ifbench IFBench_test.jsonl   # the base model's IFEval/IFBench scores
    autoif train --ifeval input_data.jsonl --ifbench IFBench_test.jsonl      # checkpoints, each scored beside the base
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .home import Home


# Unset, a backend is the resource's default (LLMResource: vllm, SandboxResource: docker), or
# the definitions' AUTOIF_LLM_BACKEND / AUTOIF_SANDBOX: one default each, kept by the resource.
LLM_BACKEND_HELP = ("what generates: vLLM in this process (default), an OpenAI-compatible server, engine replicas "
                    "on a Ray cluster, or replay")
SANDBOX_HELP = ("where verifiers run: a hardened container (default), host namespaces, a plain process, or "
                "workers on a Ray cluster")


def _given(**settings: Any) -> dict[str, Any]:
    """The settings given on the command line (the rest stay the resources' defaults)."""
    return {name: value for name, value in settings.items() if value is not None}


def _run_config(args: argparse.Namespace, home: Home) -> dict[str, Any]:
    from .config import PROFILES
    from .resources.models import DEFAULT_POLICY, DEFAULT_SUPERVISOR
    from .terminal import loggers_config

    method = PROFILES[args.profile]().model_dump(mode="json")
    if args.config:
        _merge(method, _load_yaml(args.config))
    if args.seeds:
        method["seeds_path"] = str(Path(args.seeds).resolve())
    if args.queries:
        method["queries_path"] = str(Path(args.queries).resolve())
    # Models are always named: a resource's run config replaces its configured values, so a
    # role left out would fall back to the field's default. Only --supervisor-model: the
    # paper's self-alignment setting (one model in both roles).
    roles = {
        "supervisor_llm": args.supervisor_model or DEFAULT_SUPERVISOR,
        "policy_llm": args.policy_model or args.supervisor_model or DEFAULT_POLICY,
    }
    llms: dict[str, Any] = {}
    for role, model in roles.items():
        llm: dict[str, Any] = {**_given(backend=args.llm_backend, ray_address=args.ray_address,
                                        replicas=args.replicas),
                               "model": model, "ledger_path": str(home.ledger)}
        if args.base_url:
            llm["base_url"] = args.base_url
        llms[role] = {"config": llm}
    return {
        "loggers": loggers_config(args.verbose),
        "resources": {
            "autoif": {"config": method},
            **llms,
            "sandbox": {"config": {**_given(backend=args.sandbox, ray_address=args.ray_address),
                                   "ledger_path": str(home.ledger)}},
            "io_manager": {"config": {"base_dir": str(home.assets)}},
            "exports": {"config": {"directory": str(home.exports)}},
        }
    }


def _load_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SystemExit(f"autoif: cannot read config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"autoif: config file {path} must hold a mapping of method settings")
    return data


def _merge(base: dict[str, Any], override: dict[str, Any]) -> None:
    """Override `base` in place, section by section (nested mappings merge, values replace)."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def funnel_rows(result: Any) -> list[dict[str, Any]]:
    """One row per materialized asset, in execution order: rows in/out and drops per reason."""
    rows = []
    seen = set()
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key in seen:  # a run over several rounds: each round's event has the totals
            continue
        seen.add(mat.asset_key)
        meta = {k: v.value for k, v in mat.metadata.items()}
        rows.append(
            {"asset": mat.asset_key.to_user_string(), "in": meta.get("rows_in"), "out": meta.get("rows_out"),
             "dropped": meta.get("dropped") or {},
             "llm": {k: v for k, v in meta.items() if k.startswith(("llm_", "ledger_"))},
             "sandbox": meta.get("sandbox_calls") or {}}
        )
    return rows


def print_funnel(rows: list[dict[str, Any]]) -> None:
    width = max(len(r["asset"]) for r in rows) if rows else 10
    print(f"\n{'asset':<{width}}  {'in':>7}  {'out':>7}  dropped (reason: rows)")
    for r in rows:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(r["dropped"].items(), key=lambda kv: -kv[1]))
        print(f"{r['asset']:<{width}}  {r['in']!s:>7}  {r['out']!s:>7}  {reasons or '-'}")


def _failure_message(result: Any) -> str:
    for event in result.all_events:
        if event.is_step_failure:
            error = event.event_specific_data.error
            cause = error.cause or error
            return f"step {event.step_key} failed: {cause.message.strip()}"
    return "the run failed"


def _home(args: argparse.Namespace) -> Home:
    return Home.from_env(Path(args.home) if args.home else None)


def _embedded_instance(args: argparse.Namespace) -> Home:
    """AUTOIF_HOME, and DAGSTER_HOME under it (unless set) with the embedded instance's yaml."""
    from .instance import ensure_local

    home = _home(args)
    os.environ["AUTOIF_HOME"] = str(home.root)
    os.environ.setdefault("DAGSTER_HOME", str(home.dagster))
    ensure_local(Path(os.environ["DAGSTER_HOME"]))
    return home


def _prepare_instance(command: str) -> list[str]:
    import dagster as dg

    from .instance import prepare

    with dg.DagsterInstance.get() as instance:
        found = prepare(instance)
    for problem in found:
        print(f"autoif {command}: {problem}", file=sys.stderr)
    return found


def cmd_run(args: argparse.Namespace) -> int:
    from .rounds import resolve_rounds

    try:
        first, last = resolve_rounds(args.round)
    except ValueError as exc:  # before anything is created
        print(f"autoif run: {exc}", file=sys.stderr)
        return 2
    home = _embedded_instance(args)

    import dagster as dg

    from .definitions import defs
    from .resources.vllm_engine import shutdown_engines

    run_config = _run_config(args, home)
    job = defs.resolve_job_def("autoif")
    with dg.DagsterInstance.get() as instance:
        selection = None
        if args.stale:
            from .versions import stale_assets, to_refresh

            ours = job.asset_layer.selected_asset_keys  # the data; models have their own job
            stale = stale_assets(instance, defs, first, within=ours)
            if not stale:
                print(f"autoif: nothing is stale in {os.environ['DAGSTER_HOME']}: every asset is up to date")
                return 0
            for key, causes in stale.items():
                print(f"stale: {key.to_user_string()}: {'; '.join(causes)}")
            selection = to_refresh(stale, defs, within=ours)
        try:
            # one round, or a range of them in one run (one engine): Dagster's single-run backfill
            rounds = ({"partition_key": first} if first == last else
                      {"tags": {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}})
            print(f"autoif: round {first}" + (f" to {last}" if last != first else ""))
            result = job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False,
                                            asset_selection=selection, **rounds)
        finally:
            shutdown_engines()
    rows = funnel_rows(result)
    print_funnel(rows)
    if args.funnel_json:
        Path(args.funnel_json).write_text(json.dumps(rows, indent=2))
    print(f"\nrun {result.run_id}: {'succeeded' if result.success else 'FAILED'}; "
          f"artifacts in {home.assets}; Dagster instance in {os.environ['DAGSTER_HOME']}")
    if not result.success:
        print(_failure_message(result), file=sys.stderr)
        return 1
    return 0


def evaluation_config(args: argparse.Namespace) -> dict[str, Any]:
    """evaluation_config's settings from evaluate's and train's arguments: prompt files, subset
    sizes (-1: the whole benchmark), --full for every prompt of both."""
    evaluation: dict[str, Any] = {"ifeval_path": args.ifeval and str(Path(args.ifeval).resolve()),
                                  "ifbench_path": args.ifbench and str(Path(args.ifbench).resolve())}
    if args.full and (args.ifeval_prompts is not None or args.ifbench_prompts is not None):
        raise ValueError("--full is every prompt of both benchmarks: give it or --ifeval-prompts/--ifbench-prompts")
    for name in ("ifeval_prompts", "ifbench_prompts"):
        if args.full:
            evaluation[name] = None
        elif getattr(args, name) is not None:  # -1: the whole benchmark
            evaluation[name] = None if getattr(args, name) < 0 else getattr(args, name)
    return evaluation


def _model_job(args: argparse.Namespace, job: str, resources: dict[str, Any]) -> tuple[Any, Path] | None:
    """Run `job` (evaluate or train) on the embedded instance with the prompts and base model
    the arguments name; its result, or None after printing why it failed."""
    home = _embedded_instance(args)

    import dagster as dg

    from .definitions import defs
    from .resources.vllm_engine import shutdown_engines
    from .resources.models import DEFAULT_BASE
    from .terminal import loggers_config

    try:
        evaluation = evaluation_config(args)
    except ValueError as exc:
        print(f"autoif {job}: {exc}", file=sys.stderr)
        return None
    run_config = {"loggers": loggers_config(args.verbose), "resources": {
        "evaluation_config": {"config": evaluation},
        "base_llm": {"config": {**_given(backend=args.llm_backend), "model": args.base_model or DEFAULT_BASE,
                                "ledger_path": str(home.ledger)}},
        "io_manager": {"config": {"base_dir": str(home.assets)}},
        **resources,
    }}
    with dg.DagsterInstance.get() as instance:
        try:
            result = defs.resolve_job_def(job).execute_in_process(run_config=run_config, instance=instance,
                                                                  raise_on_error=False)
        finally:
            shutdown_engines()
    if not result.success:
        print(_failure_message(result), file=sys.stderr)
        return None
    return result, home


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The evaluate job: the base model's answers to IFEval and IFBench, judged and scored."""
    done = _model_job(args, "evaluate", {})
    if done is None:
        return 1
    result, home = done
    meta = result.asset_materializations_for_node("base_benchmark_scores")[0].metadata
    print(f"\n{meta['model'].value}\n{meta['scores'].value}\nrun {result.run_id}; answers in {home.assets}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """The train job: SFT, offline-DPO and online-DPO checkpoints from the base model on the
    data `autoif run` made, then the base and each checkpoint scored on IFEval and IFBench."""
    from .schemas import CHECKPOINT_ARTIFACTS, SCORE_ARTIFACTS

    home = _home(args)
    done = _model_job(args, "train", {
        "checkpoint_io_manager": {"config": {"base_dir": str(home.checkpoints)}},
        "sandbox": {"config": {**_given(backend=args.sandbox), "ledger_path": str(home.ledger)}},
    })
    if done is None:
        return 1
    result, home = done
    print(f"\n{'checkpoint':<24}{'steps':>6}{'seconds':>9}  path")
    for name in CHECKPOINT_ARTIFACTS:
        meta = result.asset_materializations_for_node(name)[0].metadata
        print(f"{name:<24}{meta['steps'].value:>6}{meta['wall_seconds'].value:>9.0f}  {meta['path'].value}")
    print()
    for name in SCORE_ARTIFACTS:
        meta = result.asset_materializations_for_node(name)[0].metadata
        print(f"{name.removesuffix('_benchmark_scores')} ({meta['model'].value})\n{meta['scores'].value}\n")
        if "covered_vs_rest" in meta:  # a checkpoint: its instruction-level accuracy on the types the data covers
            print(f"{meta['covered_vs_rest'].value}\n")
    print(f"run {result.run_id}; checkpoints in {home.checkpoints}, answers in {home.assets}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """`dagster dev` (webserver and daemon) on the embedded instance, its pools ready."""
    _embedded_instance(args)
    _prepare_instance("ui")  # a warning: the user's own dagster.yaml is theirs to fix
    code = ["-w", "workspace.yaml"] if Path("workspace.yaml").exists() else ["-m", "autoif_dagster.definitions"]
    command = [str(Path(sys.executable).with_name("dagster")), "dev", *code, "-h", args.host, "-p", str(args.port)]
    os.execv(command[0], command)


def cmd_instance(args: argparse.Namespace) -> int:
    """For a deployment's instance ($DAGSTER_HOME, e.g. deploy/dagster.yaml): pools initialized, problems named."""
    if "DAGSTER_HOME" not in os.environ:
        print("autoif instance: set DAGSTER_HOME to the instance's directory", file=sys.stderr)
        return 2
    if _prepare_instance("instance"):
        return 1
    print(f"autoif instance: {os.environ['DAGSTER_HOME']} is ready (pools initialized)")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from .trace import Tracer, TraceError, render

    home = _home(args)
    try:
        tree = Tracer(home.root).trace(args.id)
    except TraceError as exc:
        print(f"autoif trace: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(tree, indent=2, default=str) if args.json else render(tree))
    return 0


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    """What evaluate and train share: the benchmarks' prompts, the base model, its backend, the home."""
    parser.add_argument("--ifeval", help="IFEval prompts, JSONL as published (default: google/IFEval from the Hub)")
    parser.add_argument("--ifbench", help="IFBench prompts, the same format (default: allenai/IFBench_test)")
    parser.add_argument("--ifeval-prompts", type=int, help="a seeded subset of this many (default 40; -1: all)")
    parser.add_argument("--ifbench-prompts", type=int, help="likewise (default 20; 0: skip the benchmark)")
    parser.add_argument("--full", action="store_true", help="every prompt of both benchmarks (IFEval's 541, every "
                        "IFBench prompt given): the intervals of a 40-prompt subset are too wide to see most gains")
    parser.add_argument("--base-model", help="embedded alias, local checkpoint dir or HF id (default: the training base)")
    parser.add_argument("--llm-backend", choices=["vllm", "openai", "ray", "replay"], help=LLM_BACKEND_HELP)
    parser.add_argument("--home", help="where artifacts and the Dagster instance live (default ./.autoif)")
    _verbose_argument(parser)


def _verbose_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true", help="print every Dagster event and the engine's own "
                        "log (default: a line per stage; the events are in the instance, the UI's run page)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoif", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize the whole AutoIF graph and print its funnel")
    run.add_argument("--profile", choices=["demo", "paper"], default="demo")
    run.add_argument("--config", help="YAML of method settings over the profile, e.g. 'responses: {samples_per_prompt: 8}'")
    run.add_argument("--supervisor-model", help="embedded alias, local checkpoint dir or HF id "
                     "(alone, it also answers: self-alignment)")
    run.add_argument("--policy-model", help="the responding model (default: the supervisor's; a weaker one for strong-to-weak)")
    run.add_argument("--llm-backend", choices=["vllm", "openai", "ray", "replay"],
                     help=LLM_BACKEND_HELP + "; replay: answer only from the ledger in --home (re-parse a run "
                     "without a model)")
    run.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    run.add_argument("--sandbox", choices=["docker", "host", "local", "ray"], help=SANDBOX_HELP)
    run.add_argument("--ray-address", help="the Ray cluster of the ray backends: ray://HEAD:10001, or 'auto' "
                     "(default) for the one this machine belongs to")
    run.add_argument("--replicas", type=int, help="engine replicas on the Ray cluster (--llm-backend ray; default 1)")
    run.add_argument("--seeds", help="your seed instructions (.txt, .jsonl, .parquet)")
    run.add_argument("--queries", help="your queries (.jsonl, .json, .parquet with a 'query' column)")
    run.add_argument("--round", help="the round (a day, YYYY-MM-DD; default today) or rounds FIRST:LAST, in one run; "
                     "its seeds derive from it, so a round run again reproduces itself")
    run.add_argument("--home", help="where artifacts and the Dagster instance live (default ./.autoif)")
    run.add_argument("--funnel-json", help="also write the funnel to this JSON file")
    run.add_argument("--stale", action="store_true", help="only what changed: assets never materialized, or whose "
                     "code or inputs changed since (as the UI shows them stale), and what depends on them")
    _verbose_argument(run)
    run.set_defaults(func=cmd_run)
    trace = sub.add_parser("trace", help="print the whole chain of a row (sft-..., pair-..., resp-...) back to its seed")
    trace.add_argument("id", help="any row's id, or a generation id (gen-...)")
    trace.add_argument("--home", help="the home `autoif run` wrote to (default ./.autoif)")
    trace.add_argument("--json", action="store_true", help="the chain as JSON, for machines")
    trace.set_defaults(func=cmd_trace)
    evaluate = sub.add_parser("evaluate", help="score the base model on IFEval and IFBench (official checkers)")
    _model_arguments(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)
    train = sub.add_parser("train", help="train the SFT, offline-DPO and online-DPO checkpoints on the data `autoif run` "
                           "made, and score the base and each on IFEval and IFBench")
    _model_arguments(train)
    train.add_argument("--sandbox", choices=["docker", "host", "local", "ray"],
                       help=SANDBOX_HELP.replace("verifiers run", "online DPO's verifiers judge the policy's answers"))
    train.set_defaults(func=cmd_train)
    ui = sub.add_parser("ui", help="the Dagster UI and daemon (dagster dev) on the embedded instance in --home")
    ui.add_argument("--home", help="where artifacts and the Dagster instance live (default ./.autoif)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)
    instance = sub.add_parser("instance", help="initialize the pools of the instance in $DAGSTER_HOME and "
                              "name what is wrong with it (run once per deployment)")
    instance.set_defaults(func=cmd_instance)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not getattr(args, "verbose", True):
        from .terminal import quiet_libraries

        quiet_libraries()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

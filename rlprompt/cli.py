"""The ``rlprompt`` command line: thin wrappers that parse arguments, call the library and print.

Each subcommand is one ``_cmd_*`` function and one ``_add_*`` parser builder; everything they do is
callable from Python directly. Torch and the methods are imported only by the command that runs, so
``rlprompt --help`` answers at once.

Errors: a project error (:class:`rlprompt.errors.RLPromptError`: a bad setting, a missing or malformed file, a
target or disk that failed) and an ``OSError`` are one line on stderr and exit 2 (bad input) or 1 (the target,
the disk or the OS failed); ``--debug`` prints their traceback too. Any other exception is a bug in rlprompt
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings

from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.model_names import BUNDLED


def add_renamed_option(parser: argparse.ArgumentParser, old: str, new: str, **kwargs: object) -> None:
    """Keep reading ``old``, the former name of ``parser``'s option ``new`` (hidden from ``--help``): it sets
    ``new``'s value with a ``FutureWarning``. ``kwargs`` (``type``, ``nargs``) must match ``new``'s."""

    class Renamed(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                     option_string: str | None = None) -> None:
            warnings.warn(f"`{parser.prog} {old}` is deprecated: use {new}", FutureWarning, stacklevel=2)
            setattr(namespace, self.dest, values)

    parser.add_argument(old, dest=new.lstrip("-").replace("-", "_"), action=Renamed, help=argparse.SUPPRESS,
                        **kwargs)


def _debug_option(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand's parser leaves the top-level `rlprompt --debug` alone when not given after it
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="print the traceback of an error, not only its one-line message")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy of a prompt on a classification task with a target model")
    p.add_argument("--task", default="sentiment", help="built-in task name, or a path to a data dir/file (default: sentiment)")
    p.add_argument("--task-seed", default=None,
                   help="dataset seed directory of RLPrompt 16-shot data (default 16-42), as a config's task_seed")
    add_renamed_option(p, "--seed", "--task-seed")  # `enhance --seed` is an integer sampling seed
    p.add_argument("--split", default="test", help="split to evaluate (train, dev or validation, test; default test)")
    p.add_argument("--prompt", default=None, help="the prompt filled into {prompt} (default: the task's)")
    p.add_argument("--template", default=None, help="template with {sentence} and {prompt} (default: the task's)")
    p.add_argument("--verbalizers", nargs="+", default=None, help="one single-token verbalizer per label (default: the task's)")
    p.add_argument("--target", default=BUNDLED, help=f"model name/path, or openai:<base_url>:<model> (default {BUNDLED})")
    p.add_argument("--dtype", default="bfloat16", help="dtype of a local target (bfloat16 or float32)")
    p.add_argument("--device", default="cpu", help="device of a local target: cpu, cuda, cuda:N or auto")
    p.add_argument("--target-cache", default=None, metavar="PATH",
                   help="SQLite response cache in front of the target: answers asked before come from it (default: none)")
    p.add_argument("--limit", type=int, default=None,
                   help="evaluate a seeded sample of N examples holding each label in proportion (in file order)")
    p.add_argument("--limit-seed", type=int, default=0, help="seed of the --limit sample (default 0)")
    p.add_argument(
        "--calibrate",
        nargs="?",
        const="contextual",
        default="none",
        choices=["none", "contextual", "mean"],
        help="calibration baseline: contextual (Zhao et al. 2021; the default when given alone) or mean",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from rlprompt.benchmarking import stratified_indices
    from rlprompt.evaluation import evaluate
    from rlprompt.tasks import load_task
    from rlprompt.targets import make_target

    overrides = {k: v for k, v in (("prompt", args.prompt), ("template", args.template)) if v is not None}
    if args.verbalizers is not None:
        overrides["verbalizers"] = tuple(args.verbalizers)
    task = load_task(args.task, seed=args.task_seed, **overrides)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    split = task.split(args.split)
    keep = stratified_indices(split.labels, args.limit, seed=args.limit_seed)
    texts, labels = [split.texts[i] for i in keep], [split.labels[i] for i in keep]
    target = make_target(args.target, dtype=args.dtype, device=args.device, cache=args.target_cache)
    result = evaluate(
        target,
        template=task.template,
        prompt=task.prompt,
        verbalizers=task.verbalizers,
        texts=texts,
        labels=labels,
        calibrate=args.calibrate,
        progress=not args.json,
    )
    out = {"task": task.name, "split": args.split, "target": args.target, **result.as_dict(),
           "labels_per_class": [labels.count(c) for c in range(task.num_labels)]}
    if args.json:
        print(json.dumps(out))
    else:
        width = max(len(k) for k in out)
        for key, value in out.items():
            print(f"{key:<{width}}  {value}")
    if result.unparsed:
        print(f"rlprompt eval: warning: {result.unparsed} of {result.n} answers named no verbalizer of "
              f"{list(task.verbalizers)}: they score a tie between the classes, not the model's prediction",
              file=sys.stderr)
    return 0


def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", default=None, help="run directory (default: runs/<config name>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir from its newest valid checkpoint, with its own config.yaml")
    p.add_argument("--max-target-queries", type=int, default=None, help="stop before passing this many target sequences")


def _train_epilog() -> str:
    from rlprompt.config import RESUME_CHANGEABLE
    from rlprompt.training import METHODS

    width = max(map(len, METHODS))
    lines = ["methods (a config's method: key):"]
    lines += [f"  {name:<{width}}  {what}" for name, what in METHODS.items()]
    lines += ["", "`rlprompt config METHOD` prints every key of a method's config, with its default and meaning.",
              "`rlprompt train --resume --run-dir DIR [key=value ...]` continues a run with the config it was "
              f"started with; on resume only {', '.join(RESUME_CHANGEABLE)} may change."]
    return "\n".join(lines)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a prompt policy from a YAML config (its method: key picks the method)",
                       epilog=_train_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default=None,
                   help="YAML config file (experiments/configs/*.yaml); not needed with --resume")
    # REMAINDER lets options and key=value overrides mix in any order after CONFIG (argparse cannot
    # intermix a nargs='*' positional with options); _cmd_train parses the options out of it again.
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="key=value settings that override the file (YAML scalars)")
    _train_options(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from rlprompt.config import parse_overrides
    from rlprompt.training import train

    again = argparse.ArgumentParser(prog="rlprompt train", add_help=False)
    _train_options(again)
    _debug_option(again)
    tokens = list(args.overrides)
    if args.config is not None and "=" in args.config and not Path(args.config).is_file():
        args.config, tokens = None, [args.config, *tokens]  # `train --resume --run-dir D steps=9`: no config file
    args, rest = again.parse_known_args(tokens, namespace=args)
    bad = [token for token in rest if "=" not in token or token.startswith("-")]
    if bad:
        raise ConfigError(f"unrecognized arguments {bad}: expected options or key=value overrides")
    if args.resume and args.run_dir is None:
        raise ConfigError("--resume needs --run-dir: the run to continue")
    if args.config is None and not args.resume:
        raise ConfigError("give a config file (experiments/configs/*.yaml), or --resume --run-dir DIR")
    overrides = parse_overrides(rest)
    if args.max_target_queries is not None:
        overrides["max_target_queries"] = args.max_target_queries
    run_dir = args.run_dir or str(Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    summary = train(args.config, run_dir, resume=args.resume, **overrides)
    print(json.dumps(summary))
    return 0


def _add_config(sub: argparse._SubParsersAction) -> None:
    from rlprompt.training import METHODS

    p = sub.add_parser("config", help="print a method's complete default config as commented YAML")
    p.add_argument("method", choices=list(METHODS), help="the method whose config to print")
    p.set_defaults(func=_cmd_config)


def _cmd_config(args: argparse.Namespace) -> int:
    from rlprompt.config import default_yaml
    from rlprompt.training import method_entry

    print(default_yaml(method_entry(args.method)[0]), end="")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="a curve PNG per run (reward or loss vs target queries or steps) and a table "
                                      "comparing the runs of any methods (markdown and JSON)")
    p.add_argument("run_dirs", nargs="+", help="run directories written by `rlprompt train`")
    p.add_argument("--out", default="report", help="output directory (default: ./report)")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from rlprompt.report import write_report

    paths = write_report(args.run_dirs, args.out)
    print(paths["markdown"].read_text(encoding="utf-8"))
    for key, path in paths.items():
        print(f"{key}: {path}", file=sys.stderr)
    return 0


def _add_prefs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prefs", help="build DPO / Sem-DPO preference pairs from a config (method: dpo or sem-dpo)")
    p.add_argument("config", help="YAML config with method: dpo or sem-dpo")
    p.add_argument("overrides", nargs="*", help="key=value settings that override the file")
    p.set_defaults(func=_cmd_prefs)


def _cmd_prefs(args: argparse.Namespace) -> int:
    from rlprompt.policies.dpo import build_preferences, load_method_config

    path = build_preferences(load_method_config(args.config, args.overrides))
    with open(path, encoding="utf-8") as handle:
        print(json.dumps({"preferences": str(path), "pairs": sum(1 for _ in handle)}))
    return 0


def _add_enhance(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("enhance", help="rewrite prompts with a learned prompt enhancer (stderr: its stored dev "
                                       "evaluation, and whether it keeps prompts unchanged)")
    p.add_argument("prompts", nargs="*", default=["-"], help="prompts to enhance; none or '-' reads one per stdin line")
    p.add_argument("--enhancer", required=True, help="enhancer directory (RUN/enhancer of a PRewrite, DPO or Sem-DPO run)")
    p.add_argument("--num-samples", type=int, default=1, help="rewrites per prompt (sampled when > 1)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature when --num-samples > 1")
    p.add_argument("--seed", type=int, default=None, help="sampling seed")
    p.add_argument("--dtype", default=None, help="override the enhancer's dtype (bfloat16 or float32)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {prompt, enhanced, fallback}")
    p.set_defaults(func=_cmd_enhance)


def _cmd_enhance(args: argparse.Namespace) -> int:
    from rlprompt.enhancer import enhance_main

    return enhance_main(args.enhancer, args.prompts or ["-"], num_samples=args.num_samples,
                        temperature=args.temperature, seed=args.seed, dtype=args.dtype, as_json=args.json)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from rlprompt.proxy import ENHANCE_SCOPES
    from rlprompt.serve import ServeConfig

    p = sub.add_parser("serve", help="serve a prompt enhancer over HTTP (/v1/enhance, an OpenAI-compatible proxy)")
    p.add_argument("--enhancer", dest="enhancer_dir", required=True, help="enhancer directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="TCP port, 0..65535")
    p.add_argument("--upstream", default=None,
                   help="OpenAI-compatible base URL behind /v1/chat/completions, /v1/completions and /v1/models")
    p.add_argument("--api-key-env", default=None, help="environment variable holding the bearer token clients must send")
    p.add_argument("--upstream-api-key-env", default=None,
                   help="environment variable holding the bearer token sent to --upstream")
    p.add_argument("--dtype", default=None, help="override the enhancer's dtype")
    limits = {  # ServeConfig's limits: each option is named after its field and defaults to the field's default
        "batch_window_ms": "how long to gather concurrent requests into one batch",
        "max_batch": "most prompts per enhancer call",
        "max_batch_tokens": "most padded tokens (prompts x longest) per enhancer call",
        "max_body_bytes": "largest request body accepted (413 beyond)",
        "body_timeout": "seconds to receive a whole request body (408 beyond)",
        "max_prompt_chars": "longest prompt accepted (422 beyond)",
        "max_concurrent": "requests in flight (503 beyond)",
        "upstream_timeout": "total seconds for one upstream exchange, streaming included (504 beyond)",
    }
    for name, text in limits.items():
        default = getattr(ServeConfig, name)
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default, help=text)
    p.add_argument("--max-prompt-tokens", type=int, default=None,
                   help="longest prompt in enhancer tokens (422 beyond; default: the model's context minus new tokens)")
    p.add_argument("--enhance-scope", choices=ENHANCE_SCOPES, default=ServeConfig.enhance_scope,
                   help="what the proxy rewrites: all = the last user message of every chat; opt-in = only for "
                   "requests with the header x-rlprompt-enhance: on; system = the system messages. A request's "
                   "x-rlprompt-enhance: off always skips; completions are rewritten only when they opt in")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from rlprompt.serve import serve_main

    return serve_main(args)


def build_parser() -> argparse.ArgumentParser:
    """The ``rlprompt`` parser: one subparser per command, each with ``--debug`` (also accepted before the command)."""
    parser = argparse.ArgumentParser(prog="rlprompt", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error, not only its one-line message")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_eval, _add_train, _add_config, _add_report, _add_prefs, _add_enhance, _add_serve):
        add(sub)
    for command in sub.choices.values():
        _debug_option(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rlprompt`` console script.

    A project error (:class:`~rlprompt.errors.RLPromptError`) is one line, ``rlprompt CMD: error: ...``, and its
    ``exit_code`` (2 for bad input); a target or disk failure (exit code 1) and an ``OSError`` (exit 1) name their
    type instead of ``error``. ``--debug`` prints the traceback above that line. Anything else propagates with
    its traceback: it is a bug."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (RLPromptError, OSError) as err:
        if args.debug:
            traceback.print_exc()
        code = err.exit_code if isinstance(err, RLPromptError) else 1
        kind = "error" if code == 2 else type(err).__name__
        print(f"rlprompt {args.command}: {kind}: {err}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())

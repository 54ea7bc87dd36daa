"""The `hybridbench` command: one subcommand group per module, errors turned into exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from channelzoo.errors import InputError
from suite.cli import figures, model, reproduce, results, run, zoo
from suite.config import ConfigError

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridbench", description=__doc__)
    parser.add_argument("--results", default="results", help="folder of catalogues, result tables and figures")
    commands = parser.add_subparsers(dest="command", required=True)
    zoo.register(commands)
    run.register(commands)
    figures.register(commands)
    results.register(commands)
    reproduce.register(commands)
    model.register(commands)
    return parser


def check_results_folder(path: Path) -> None:
    """``--results`` is a folder, or can become one: the nearest existing path on its way is a folder."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"{existing} is a file, not a folder; --results names the folder of results",
                          file=str(path), field="--results")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_results_folder(Path(args.results))
        return int(args.handler(args) or 0)
    except InputError as e:
        print(f"hybridbench: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())

"""The `hybridbench` command: one subcommand group per module, errors turned into exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from channelzoo.errors import InputError
from suite.cli import figures, model, reproduce, results, run, zoo

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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except InputError as e:
        print(f"hybridbench: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())

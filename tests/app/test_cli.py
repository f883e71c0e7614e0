"""`app.cli`: the options of `python -m app` and the `influence app` subcommand."""

import argparse

import pytest

from app.cli import add_app_subcommand, add_arguments, open_setup


def test_subcommand_registers_on_the_influence_cli():
    parser = argparse.ArgumentParser(prog="influence")
    sub = parser.add_subparsers(dest="command", required=True)
    add_app_subcommand(sub)
    args = parser.parse_args(["app", "--demo", "text", "--port", "7999"])
    assert (args.command, args.demo, args.port, args.host) == ("app", "text", 7999, "127.0.0.1")
    with pytest.raises(SystemExit):
        parser.parse_args(["app", "--demo", "mnist"])


def test_index_needs_its_factory_and_data():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit, match="--factory, --train, --eval"):
        open_setup(parser.parse_args(["--index", "somewhere"]))

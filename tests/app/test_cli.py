"""`influence_app.cli`: the options of `influence app` (also `python -m influence_app`)."""

import argparse
import os
import subprocess
import sys

import pytest

from influence_app.cli import add_arguments, main, open_setup
from influence.errors import InvalidArgumentError
from tests.app.conftest import ROOT


def test_help_names_the_influence_app_command():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "influence.cli", "app", "--help"], capture_output=True, text=True,
                          env=env, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: influence app ")
    assert "--report REPORT" in proc.stdout and "python -m influence_app" not in proc.stdout


def test_index_needs_its_factory_and_data():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(InvalidArgumentError, match="--index needs --factory, --train, --eval"):
        open_setup(parser.parse_args(["--index", "somewhere"]))


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("influence app: error: `--report`") and "bundle.json" in err and "Traceback" not in err


def test_every_option_is_documented():
    """Why 7: `influence app --help` left options without a word."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    bare = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert bare == []

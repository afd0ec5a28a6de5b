"""The command line's own surface: --version and --help."""

from __future__ import annotations

import pytest

from hashplug.cli import main


def test_version_and_every_option_documented(capsys):
    import argparse

    import hashplug
    from hashplug.cli import build_parser

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert (
        e.value.code == 0 and capsys.readouterr().out.strip() == f"hashplug {hashplug.__version__}"
    )
    parser = build_parser()
    assert "``" not in (parser.description or "")  # no reST markup in --help
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    undocumented = [
        f"{name} {a.option_strings[0] if a.option_strings else a.dest}"
        for name, p in sub.choices.items()
        for a in p._actions
        if not a.help and not isinstance(a, argparse._HelpAction)
    ]
    assert undocumented == []

"""The CLI's help and usage errors as a new user meets them (issue 19, item 7)."""

from __future__ import annotations

import pytest

from aiolease.cli import EXIT_USAGE, main

COMMANDS = ("demo", "create-table", "add", "ls", "release", "server")


def help_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_the_exit_codes_are_listed_once_at_the_top_level(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "exit codes:" in help_of(capsys)
    for command in COMMANDS:
        out = help_of(capsys, command)
        assert "exit codes:" not in out, f"{command} --help repeats the exit codes"
        assert "aiolease --help" in out, f"{command} --help should point to the exit codes"
        assert out.count("example") >= 1 and "--endpoint-url" in out, out


def test_each_command_shows_only_its_own_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("create-table", "add", "ls", "release"):
        out = help_of(capsys, command)
        examples = [line for line in out.splitlines() if line.strip().startswith("aiolease ")]
        assert examples, f"{command} --help has no example"
        others = [line for line in examples if f"aiolease {command} " not in line]
        assert not others, f"{command} --help shows other commands' examples: {others}"


def test_ls_without_table_prints_the_usage_of_ls(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["ls", "--endpoint-url", "http://127.0.0.1:9"])
    assert info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: aiolease ls "), err
    assert "--table is required" in err


def test_release_help_says_the_token_is_kept_and_what_that_means(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = " ".join(help_of(capsys, "release").split())
    assert "fencing token" in out and "kept" in out
    assert "fenced writes still pass" in out, out

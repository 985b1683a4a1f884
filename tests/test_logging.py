"""Messages go through stdlib logging: midog's progress (INFO) shows by default, --quiet
keeps warnings and errors, --verbose adds debug messages; every command takes both flags."""

from __future__ import annotations

import logging

import pytest

from midog.commands.cli import build_parser, setup_logging


@pytest.fixture
def log():
    yield logging.getLogger("midog.test_logging")
    setup_logging()  # back to the default for the tests that follow


def messages(log: logging.Logger, capsys: pytest.CaptureFixture[str]) -> list[str]:
    log.debug("debug line")
    log.info("progress line")
    log.warning("warning line")
    log.error("error line")
    return [line.split()[0] for line in capsys.readouterr().err.splitlines()]


def test_default_shows_progress_not_debug(log, capsys) -> None:
    setup_logging()
    assert messages(log, capsys) == ["progress", "warning", "error"]


def test_quiet_keeps_warnings_and_errors(log, capsys) -> None:
    setup_logging(quiet=True)
    assert messages(log, capsys) == ["warning", "error"]


@pytest.mark.parametrize("flag", ["verbose", "debug"])
def test_verbose_and_debug_add_debug_messages(log, capsys, flag: str) -> None:
    setup_logging(**{flag: True})
    assert messages(log, capsys) == ["debug", "progress", "warning", "error"]


def test_other_libraries_stay_at_warning_by_default(capsys) -> None:
    setup_logging()
    logging.getLogger("some_library").info("library chatter")
    logging.getLogger("tifffile").warning("odd tag")
    assert capsys.readouterr().err == ""


def test_every_command_takes_quiet_and_verbose() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert len(commands) >= 9
    for name, sub in commands.items():
        assert {"--quiet", "-q", "--verbose", "-v"} <= set(sub._option_string_actions), name

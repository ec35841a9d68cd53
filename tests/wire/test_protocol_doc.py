"""
docs/protocol.md is the wire contract's documentation: every command has
its section, and every command's arguments and every record's fields are
in its tables, in order.  A change to ``wire/commands.py`` that the page
does not follow fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from twisted.protocols.amp import Command

from cwtx.wire import commands
from cwtx.wire.records import Records

DOC = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()

COMMANDS = [
    c
    for c in vars(commands).values()
    if isinstance(c, type) and issubclass(c, Command) and c is not Command
]


#: The record schema each batch command carries.
BATCHES = {
    commands.SubmitJobs: "JOB_RECORD",
    commands.JobResults: "RESULT_RECORD",
    commands.RunTasks: "TASK_RECORD",
    commands.TaskResults: "TASK_RESULT_RECORD",
    commands.TasksStarted: "STARTED_RECORD",
    commands.JobsStarted: "JOB_STARTED_RECORD",
    commands.TaskOutput: "TASK_OUTPUT_RECORD",
    commands.JobOutput: "JOB_OUTPUT_RECORD",
}


def section(name: str) -> str:
    match = re.search(rf"^### {name} \(.*?(?=^##)", DOC, re.M | re.S)
    assert match, f"docs/protocol.md has no section for {name}"
    return match.group(0)


def table_fields(text: str) -> list[list[str]]:
    """The first column of each table in ``text``: ``a / a_blob`` is two."""
    tables: list[list[str]] = []
    for block in re.findall(r"(?:^\|.*\|\n)+", text, re.M):
        rows = block.strip().splitlines()[2:]  # header and rule
        cells = [row.split("|")[1].strip() for row in rows]
        tables.append([f for cell in cells for f in cell.split(" / ")])
    return tables


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.__name__)
def test_every_command_has_its_section_with_its_arguments(command):
    text = section(command.__name__)
    names = [name.decode() for name, _ in command.arguments]
    if not names:
        assert "No arguments" in text
        return
    if isinstance(command.arguments[0][1], Records):  # a batch: its record is the table
        record = BATCHES[command]
        assert f"`Records({record})`" in text
        expected = [field for field, _ in getattr(commands, record)]
        assert expected in table_fields(text)
    elif len(names) == 1 and f"`{names[0]}`:" in text:  # a one-argument prose line
        return
    else:
        assert names in table_fields(text)


def test_the_documented_version_is_the_code_s():
    from cwtx.wire.names import PROTOCOL_VERSION

    assert f"`PROTOCOL_VERSION` is **{PROTOCOL_VERSION}**" in DOC

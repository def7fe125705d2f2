"""The fenced code blocks of the Markdown docs, and the shell steps of their command blocks.

* A block preceded by ``<!-- not-run: KIND: detail -->`` is neither run nor parsed. ``KIND`` is
  one of :data:`NOT_RUN_KINDS`; the detail says what the block needs.
* A shell block is ``bash``/``sh``/``shell``/``console``, or an unlabelled or ``text`` block
  holding a transcript (lines starting with ``$ ``). In a transcript the ``$`` lines are the
  commands and the lines after each are its output; in a script every non-comment line is a
  command. ``cron`` blocks are crontabs: the command of a line follows its five time fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
PYTHON_LANGS = {"python", "py"}
SHELL_LANGS = {"bash", "sh", "shell", "console"}
NOT_RUN = re.compile(r"<!--\s*not-run:(.*?)-->\s*$")
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
# the only reasons a block may stay unexecuted; `elsewhere` names the test that runs it
NOT_RUN_KINDS = {
    "installs": "changes the Python environment (pip install)",
    "recursive": "runs the test suite or CI itself",
    "external": "needs a host, service or schedule outside the test machine",
    "elsewhere": "executed by the named test file",
    "state": "a python block needing registry state the docs' python namespace does not build",
}


@dataclass(frozen=True)
class DocBlock:
    path: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    body: str
    not_run: str | None  # the reason, when marked

    @property
    def is_transcript(self) -> bool:
        return any(line.startswith("$ ") for line in self.body.splitlines())

    @property
    def is_shell(self) -> bool:
        if self.lang in SHELL_LANGS or self.lang == "cron":
            return True
        return self.lang in ("", "text") and self.is_transcript


def doc_blocks(path: Path) -> list[DocBlock]:
    """The fenced code blocks of one Markdown file, with their not-run marker if any."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = NOT_RUN.search(before)
        out.append(
            DocBlock(
                path=path.relative_to(ROOT).as_posix(),
                line=text.count("\n", 0, m.start()) + 1,
                lang=m.group(1).strip().lower(),
                body=m.group(2),
                not_run=marker.group(1).strip() if marker else None,
            )
        )
    return out


def all_blocks() -> list[DocBlock]:
    return [b for path in DOC_FILES for b in doc_blocks(path)]


@dataclass
class Step:
    """One command of a shell block, where it is, and what the page says of its outcome."""

    path: str
    line: int  # 1-based line of the command in the file
    command: str  # as written (continuation lines joined)
    output: list[str] = field(default_factory=list)  # the transcript's lines after it
    expect: int | None = 0  # the exit code; None: any non-zero (an `Error:` with no code)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


_EXIT_IN_OUTPUT = re.compile(r"^\[exit (\d+)\]$|^exit=(\d+)$|\(exit code (\d+)\)\s*$")
_EXIT_COMMENT = re.compile(r"#\s*exit (\d+)\b")


def _expected_exit(step: Step) -> int | None:
    for line in step.output:
        m = _EXIT_IN_OUTPUT.search(line.strip())
        if m:
            return int(next(g for g in m.groups() if g is not None))
    m = _EXIT_COMMENT.search(step.command)
    if m:
        return int(m.group(1))
    if "||" in step.command:
        return 0  # the line handles the failure itself
    if any(line.startswith("Error:") for line in step.output):
        return None
    return 0


def block_steps(block: DocBlock) -> list[Step]:
    """The commands of a shell block in order, each with its expected exit code.

    ``$ echo $?`` after a command is not a step: its output is the command's expected code.
    """
    lines = block.body.splitlines()
    steps: list[Step] = []
    i = 0
    transcript = block.is_transcript
    while i < len(lines):
        raw = lines[i]
        lineno = block.line + 1 + i
        i += 1
        if transcript:
            if not raw.startswith("$ "):
                if steps:
                    steps[-1].output.append(raw)
                continue
            command = raw[2:]
        else:
            command = raw.strip()
            if not command or command.startswith("#"):
                continue
            if block.lang == "cron":
                command = command.split(None, 5)[5]
        while command.endswith("\\") and i < len(lines):
            command = command[:-1].rstrip() + " " + lines[i].strip()
            i += 1
        steps.append(Step(block.path, lineno, command.strip()))
    out: list[Step] = []
    for step in steps:
        if step.command == "echo $?" and out:
            out[-1].output.append(f"[exit {step.output[0].strip()}]")
            continue
        out.append(step)
    for step in out:
        step.expect = _expected_exit(step)
    return out

"""Run the shell steps of one docs page against a real $QCLI_HOME.

A step that is one plain ``qcli`` command (optionally ``VAR=value`` prefixes, a ``# comment``,
a trailing ``; echo "exit=$?"``) runs in this process through the real ``main`` (a fresh
interpreter spends seconds importing MLflow and Feast); anything else (pipes, redirects,
``curl``, ``feast``, ``head``) runs under ``bash -c`` with ``qcli`` on ``PATH``. A foreground
``qcli serve`` runs bounded: started in the background, its ``/health`` must answer, then it is
stopped.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from _docs_blocks import ROOT, Step

_QUOTED = re.compile(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"")
_SHELL_SYNTAX = re.compile(r"[|&;<>`]|\$\(|\bfor\b|\bdo\b")
_ENV_PREFIX = re.compile(r"[A-Z_][A-Z0-9_]*=\S*")
_ECHO_EXIT = re.compile(r';\s*echo "exit=\$\?"\s*$')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shell_env(home: Path, bindir: Path) -> dict[str, str]:
    """The environment of a bash step: this interpreter's ``qcli``/``python`` first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "COLUMNS"))}
    env["QCLI_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT)
    env["PATH"] = os.pathsep.join([str(bindir), str(Path(sys.executable).parent), env["PATH"]])
    return env


def make_bindir(path: Path) -> Path:
    """``qcli`` and ``python`` commands that run this interpreter on this checkout."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "qcli").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m quantcli "$@"\n')
    (path / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for name in ("qcli", "python"):
        (path / name).chmod(0o755)
    return path


def in_process_argv(command: str) -> tuple[dict[str, str], list[str]] | None:
    """``(env prefixes, argv after qcli)`` when ``command`` is one plain qcli command."""
    command = _ECHO_EXIT.sub("", command)
    if _SHELL_SYNTAX.search(_QUOTED.sub("''", command)):
        return None
    words = shlex.split(command, comments=True)
    env = {}
    while words and _ENV_PREFIX.fullmatch(words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if not words or words[0] != "qcli" or words[1:2] == ["serve"]:
        return None
    argv = [os.path.expanduser(os.path.expandvars(w)) for w in words[1:]]
    return env, argv


@contextlib.contextmanager
def background_server(
    command: list[str], env: dict[str, str], cwd: Path, log: Path, health: str = "/health"
) -> Iterator[int]:
    """``command`` (a server taking ``--port``) in a process group of its own, on a free port;
    yields the port once ``health`` answers 200, stops the group after."""
    port = free_port()
    command = list(command)
    if "--port" in command:
        command[command.index("--port") + 1] = str(port)
    else:
        command += ["--port", str(port)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                tail = log.read_text()[-3000:]
                raise AssertionError(f"`{shlex.join(command)}` exited {proc.returncode}:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}{health}", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"`{shlex.join(command)}` never answered {health}")
            time.sleep(0.3)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def background_serve(argv: list[str], env: dict[str, str], cwd: Path, log: Path):
    """``qcli ARGV`` (a ``serve``) in the background; see :func:`background_server`."""
    return background_server([sys.executable, "-m", "quantcli", *argv], env, cwd, log)


class PageRunner:
    """Runs one page's steps in ``cwd`` with ``$QCLI_HOME=home``; records what it ran."""

    def __init__(
        self,
        home: Path,
        cwd: Path,
        bindir: Path,
        qcli: Callable,
        monkeypatch,
        keep_serving: contextlib.ExitStack | None = None,
    ) -> None:
        # keep_serving: the page's first foreground `qcli serve` is the service its later
        # commands reach; it runs in the background until the stack closes (``self.port``)
        self.keep_serving = keep_serving
        self.port = ""
        self.home = home
        self.cwd = cwd
        self.env = shell_env(home, bindir)
        self.qcli = qcli
        self.monkeypatch = monkeypatch
        self.ran: list[tuple[str, str]] = []  # (command, how)
        self.seconds: list[tuple[str, float]] = []  # (where, wall seconds)

    def run(self, step: Step, command: str) -> None:
        """Run ``command`` (the step after substitution); fail naming the file and line."""
        start = time.perf_counter()
        code, output = self._execute(command)
        self.seconds.append((step.where, round(time.perf_counter() - start, 2)))
        expect = step.expect
        ok = code != 0 if expect is None else code == expect
        if not ok:
            want = "a non-zero exit" if expect is None else f"exit {expect}"
            raise AssertionError(
                f"{step.where}: `{command}` exited {code}, the page implies {want}\n"
                f"{output[-3000:]}"
            )

    def _execute(self, command: str) -> tuple[int, str]:
        words = [os.path.expandvars(w) for w in shlex.split(command, comments=True)]
        if not command.rstrip().endswith("&") and (
            words[:2] == ["qcli", "serve"] or (words[0] == "feast" and "ui" in words)
        ):
            # a foreground server: bounded (it must come up and answer, then it is stopped)
            qcli_serve = words[0] == "qcli"
            server = [sys.executable, "-m", "quantcli", *words[1:]] if qcli_serve else words
            health = "/health" if qcli_serve else "/"
            running = background_server(server, self.env, self.cwd, self.cwd / "server.log", health)
            if qcli_serve and self.keep_serving is not None and not self.port:
                self.port = str(self.keep_serving.enter_context(running))
                self.ran.append((command, "server kept for the page"))
                return 0, ""
            with running:
                pass
            self.ran.append((command, "bounded server"))
            return 0, ""
        if words[0] == "feast" and not _SHELL_SYNTAX.search(_QUOTED.sub("''", command)):
            return self._feast(words[1:])
        plain = in_process_argv(command)
        if plain is not None:
            env, argv = plain
            with self.monkeypatch.context() as mp:
                for key, value in env.items():
                    mp.setenv(key, value)
                result = self.qcli(*argv)
            self.ran.append((command, "in-process"))
            return result.code, result.out + result.err
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.ran.append((command, "bash"))
        return proc.returncode, proc.stdout + proc.stderr

    def _feast(self, args: list[str]) -> tuple[int, str]:
        """Feast's own CLI (``feast.cli.cli:cli``, what the ``feast`` script runs), in process."""
        from click.testing import CliRunner
        from feast.cli.cli import cli

        result = CliRunner().invoke(cli, args, env={"QCLI_HOME": str(self.home)})
        self.ran.append((shlex.join(["feast", *args]), "in-process"))
        return result.exit_code, result.output + repr(result.exception or "")

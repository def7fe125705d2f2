"""Docs that must match the code: the CLI reference, the README's commands, every code block."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from _docs_blocks import (
    NOT_RUN_KINDS,
    PYTHON_LANGS,
    ROOT,
    DocBlock,
    Step,
    all_blocks,
    block_steps,
    doc_blocks,
)
from _docs_pages import PAGES, REDIS_URL, build_home
from _docs_runner import PageRunner, background_serve, make_bindir


def test_cli_reference_matches_the_code():
    from quantcli.cli._reference import render

    committed = (ROOT / "docs" / "cli.md").read_text()
    assert committed == render(), (
        "docs/cli.md is stale: regenerate with `python -m quantcli.cli._reference > docs/cli.md`"
    )


def test_readme_opens_with_the_two_fresh_machine_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert lines == [
        'pip install -e ".[dev]" && qcli pipeline run --sample',
        'pip install -e ".[dev]" && pytest tests -n 2',
    ]


def test_every_command_in_the_readme_tour_exists():
    from quantcli.cli._reference import render

    reference = render()
    text = (ROOT / "README.md").read_text()
    used = set(re.findall(r"^qcli ((?:[a-z-]+ ?){1,2})", text, re.M))
    assert used, "the README tour names no command"
    for cmd in used:
        words = cmd.split()
        # `qcli data ingest` -> heading "`qcli data ingest`"; `qcli predict SPX` -> "`qcli predict`"
        assert f"`qcli {' '.join(words)}`" in reference or f"`qcli {words[0]}`" in reference, cmd


# -- every code block of README.md and docs/ runs ------------------------------------------------
#
# * ```python blocks are executed, each file's blocks in order in one namespace, in a temp
#   working directory and a temp $QCLI_HOME holding the bundled sample and its technical_v1
#   features. DOC_NAMES lists the names the snippets use without defining them (like doctest's
#   globs); docs/api.md is executed by tests/test_documented_api.py, which also checks its values.
# * shell blocks (bash, sh, shell, console, cron, or an unlabelled or text transcript of `$ ...`
#   lines) are executed, each page's commands in order, in a copy of a prepared $QCLI_HOME with
#   the page's files and placeholders (tests/_docs_pages.py); each command must exit with the code
#   the page shows (0 unless it shows a failure). Every qcli command is also parsed by the CLI.
# * A block preceded by `<!-- not-run: KIND: detail -->` is neither run nor parsed; KIND is one of
#   tests/_docs_blocks.py's NOT_RUN_KINDS (a host outside the machine, pip install, the test suite
#   itself, or a test elsewhere that runs it). Keep these rare.

# executed by tests/test_documented_api.py with assertions on the values it prints
EXECUTED_ELSEWHERE = {"docs/api.md"}


def _all_blocks() -> list[DocBlock]:
    return all_blocks()


def _qcli_commands(block: DocBlock) -> list[list[str]]:
    """The argv (after ``qcli``) of every qcli command in a shell block."""
    commands = []
    for step in block_steps(block):
        line = step.command.split(" #", 1)[0]
        for part in re.split(r"\s*(?:&&|\|\||;|\||&)\s*", line):  # & : a background job
            if not re.match(r"(?:[A-Z_][A-Z0-9_]*=\S*\s+)*qcli\b", part):
                continue  # curl, cat, echo: not quantcli's to check
            words = shlex.split(part)
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
                words = words[1:]  # VAR=value prefixes
            if words and words[0] == "qcli":
                commands.append(words[1:])
    return commands


def _shell_blocks() -> list[DocBlock]:
    return [b for b in _all_blocks() if b.not_run is None and b.is_shell]


def _python_files() -> list[str]:
    files = {
        b.path
        for b in _all_blocks()
        if b.lang in PYTHON_LANGS and b.not_run is None and b.path not in EXECUTED_ELSEWHERE
    }
    return sorted(files)


def test_the_harness_finds_the_blocks():
    """The block parser sees python and shell blocks, and markers only right before a fence."""
    sample = (
        "text\n\n```python\nx = 1\n```\n\n<!-- not-run: needs a server -->\n"
        "```bash\nqcli serve --port 1\n```\n\n```\n$ qcli data summary --json\n{}\n```\n"
    )
    path = ROOT / "docs" / "_harness_probe.md"
    try:
        path.write_text(sample)
        blocks = doc_blocks(path)
    finally:
        path.unlink()
    assert [(b.line, b.lang, b.not_run) for b in blocks] == [
        (3, "python", None),
        (8, "bash", "needs a server"),
        (12, "", None),
    ]
    assert _qcli_commands(blocks[2]) == [["data", "summary", "--json"]]
    assert _qcli_commands(
        DocBlock("x", 1, "bash", "A=1 qcli model list --json && echo ok; qcli audit verify\n", None)
    ) == [["model", "list", "--json"], ["audit", "verify"]]
    # the parse check rejects what the CLI rejects
    _parse(["data", "summary", "--json"])
    for bad in (["data", "sumary"], ["data", "summary", "--bogus"], ["model", "train", "--model"]):
        with pytest.raises(Exception, match=r"No such|requires an argument|Missing"):
            _parse(bad)


def test_steps_take_the_exit_code_the_page_shows_and_a_failure_names_its_line(
    qcli_home, tmp_path, qcli, monkeypatch
):
    body = (
        "$ qcli data summary --bogus\nError: No such option: --bogus\n$ echo $?\n2\n"
        '$ qcli --version; echo "exit=$?"\nexit=0\n'
        "$ qcli features show FOO\nError: no feature rows\n"
        "$ qcli --version | grep -c qcli  # exit 0\n1\n"
    )
    steps = block_steps(DocBlock("docs/x.md", 10, "console", body, None))
    assert [(s.line, s.expect) for s in steps] == [(11, 2), (15, 0), (17, None), (19, 0)]
    runner = PageRunner(qcli_home, tmp_path, make_bindir(tmp_path / "bin"), qcli, monkeypatch)
    for step in steps:
        runner.run(step, step.command)
    assert [how for _, how in runner.ran] == ["in-process"] * 3 + ["bash"]
    wrong = Step("docs/x.md", 99, "qcli data summary --bogus")  # the page would imply exit 0
    with pytest.raises(
        AssertionError, match=r"^docs/x.md:99: `qcli data summary --bogus` exited 2"
    ):
        runner.run(wrong, wrong.command)


def test_not_run_markers_say_why():
    marked = [b for b in _all_blocks() if b.not_run is not None]
    for b in marked:
        kind, _, detail = b.not_run.partition(":")
        assert kind in NOT_RUN_KINDS and len(detail.strip()) >= 10, (
            f"{b.path}:{b.line}: a not-run marker is `KIND: why`, KIND in {sorted(NOT_RUN_KINDS)}"
        )
        if kind == "elsewhere":
            test = ROOT / detail.split()[0]
            assert test.is_file() and b.path in test.read_text(), f"{b.path}:{b.line}: {detail}"
    code = [b for b in _all_blocks() if b.lang in PYTHON_LANGS or b.is_shell]
    # exceptions stay rare: at most one code block in five is not run
    assert len(marked) * 5 <= max(len(code), 5), [f"{b.path}:{b.line}" for b in marked]


def _parse(argv: list[str]) -> None:
    """Parse ``qcli argv`` with the real CLI, down to the leaf command, without invoking it."""
    from typer.main import get_command

    from quantcli.cli import app

    command = get_command(app)
    ctx = command.make_context("qcli", list(argv))
    while True:
        protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
        rest = [*protected, *ctx.args]
        if not rest or not hasattr(command, "resolve_command"):
            return
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)


@pytest.mark.parametrize("block", _shell_blocks(), ids=lambda b: f"{b.path}:{b.line}")
def test_every_qcli_command_in_the_docs_parses(block: DocBlock):
    try:
        from typer._click.exceptions import ClickException, Exit
    except ImportError:  # pragma: no cover - older typer
        from click.exceptions import ClickException, Exit

    for argv in _qcli_commands(block):
        try:
            _parse(argv)
        except Exit:
            pass  # --help / --version: parsed, then the CLI would print and exit 0
        except ClickException as exc:
            pytest.fail(
                f"{block.path}:{block.line}: `qcli {shlex.join(argv)}`: {exc.format_message()}"
            )


@pytest.fixture(scope="module")
def docs_home(tmp_path_factory: pytest.TempPathFactory):
    """A $QCLI_HOME with the bundled sample ingested and technical_v1 built (read by the docs)."""
    home = tmp_path_factory.mktemp("docs_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QCLI_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        from quantcli import build_features, ingest_sample

        ingest_sample()
        build_features()
        yield home


def _doc_names(workdir: Path) -> dict[str, Any]:
    """The names the docs' snippets use without defining them (doctest's globs)."""
    import numpy as np
    import polars as pl

    from quantcli import load_sample, load_training_frame
    from quantcli.models.estimators import make_model

    bars = load_sample()
    frame = load_training_frame()  # symbol, ts, features, label, label_end; sorted by ts
    names = [c for c in frame.columns if c not in ("symbol", "ts", "label", "label_end")]
    X = frame.select(names).to_numpy()
    spx = bars.filter(pl.col("symbol") == "SPX")
    features = frame.drop("label", "label_end")
    cut = frame.get_column("ts").dt.year() < 2017
    model = make_model("ensemble", {"lgbm": {"n_estimators": 20}}, seed=1)
    model.fit(X[:2000], frame.get_column("label").to_numpy()[:2000])
    # the files docs/data.md ingests
    bars.filter(pl.col("symbol") == "SPX").write_csv(workdir / "a.csv")
    bars.filter(pl.col("symbol") == "IXIC").write_parquet(workdir / "b.parquet")
    return {
        "bars": bars,
        "frame": frame,
        "X": X,
        "X_sample": X[:500],
        "returns": spx.get_column("close").pct_change().drop_nulls().to_numpy(),
        "baseline_df": features.filter(cut),
        "current_df": features.filter(~cut),
        "features_frame": features.tail(4),
        "frame_with_symbol_and_ts": frame.select("symbol", "ts").tail(4),
        "model": model,
        "np": np,
        "pl": pl,
    }


@pytest.fixture(scope="module")
def docs_feast(docs_home: Path) -> Path:
    """The docs' $QCLI_HOME with technical_v1 materialized into the online store."""
    from quantcli import materialize

    materialize()
    return docs_home


@pytest.mark.parametrize("doc", _python_files())
def test_python_blocks_run(doc: str, docs_home: Path, tmp_path: Path, monkeypatch, request):
    if "get_feature_store" in (ROOT / doc).read_text(encoding="utf-8"):
        request.getfixturevalue("docs_feast")
    monkeypatch.setenv("QCLI_HOME", str(docs_home))
    monkeypatch.chdir(tmp_path)
    namespace = _doc_names(tmp_path)
    for block in doc_blocks(ROOT / doc):
        if block.lang not in PYTHON_LANGS or block.not_run is not None:
            continue
        code = compile(block.body, f"{doc}:{block.line}", "exec")
        try:
            exec(code, namespace)
        except Exception as exc:
            pytest.fail(f"{doc}:{block.line}: {type(exc).__name__}: {exc}")


# -- the API reference, generated from the docstrings -------------------------------------------
def test_api_reference_builds_with_warnings_fatal(tmp_path: Path):
    """pdoc renders every public name of ``quantcli`` (numpydoc docstrings); any warning fails.

    The same page a user builds with ``python -m pdoc -d numpy quantcli -o site/``.
    """
    import warnings

    import pdoc  # the dev extra
    import pdoc.render

    import quantcli

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pdoc.render.configure(docformat="numpy")
        pdoc.pdoc("quantcli", output_directory=tmp_path)
    page = (tmp_path / "quantcli.html").read_text(encoding="utf-8")
    for name in quantcli.__all__:
        if name != "__version__":
            assert f'id="{name}"' in page, f"{name} is missing from the API reference"
    # numpydoc sections render as headings (docformat numpy), the new parameters included
    assert page.count('<h6 id="parameters">Parameters</h6>') >= 10
    assert "n_splits" in page and "trial_sharpes" in page


@pytest.mark.parametrize(
    "module",
    [
        "quantcli",
        "quantcli.backtest.cpcv",
        "quantcli.backtest.gates",
        "quantcli.features.generator",
    ],
)
def test_docstring_examples_of_the_public_api_run(module: str):
    """The Examples sections of the front-door classes print what they say."""
    import doctest
    import importlib

    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{module} has no docstring example"
    assert result.failed == 0, f"{module}: {result.failed} docstring example(s) failed"


# -- every shell block runs ----------------------------------------------------------------------
def _page_steps(doc: str):
    return [
        step
        for b in doc_blocks(ROOT / doc)
        if b.is_shell and b.not_run is None
        for step in block_steps(b)
    ]


def test_every_page_with_commands_has_a_setup():
    pages = {b.path for b in _shell_blocks()}
    assert pages == set(PAGES), "add the page's state and placeholders to tests/_docs_pages.py"


@pytest.fixture(scope="session")
def prepared_home(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path):
    """``prepared_home(kind)``: a $QCLI_HOME of tests/_docs_pages.py's ``kind``, built once."""
    built: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in built:
            home = tmp_path_factory.mktemp(f"docs_{kind}")
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("QCLI_HOME", str(home))
                mp.delenv("MLFLOW_TRACKING_URI", raising=False)
                build_home(kind, home, mlflow_template_db)
            built[kind] = home
        return built[kind]

    return get


@pytest.mark.parametrize("doc", sorted(PAGES))
def test_shell_blocks_of_the_page_run(doc, prepared_home, tmp_path, monkeypatch, qcli):
    """Every command of the page's shell blocks, in order, exits as the page says."""
    import contextlib
    import shutil

    page = PAGES[doc]
    home = tmp_path / "home"
    shutil.copytree(prepared_home(page.home), home)
    monkeypatch.setenv("QCLI_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("QCLI_API_TOKEN", raising=False)
    for key, value in page.env:
        monkeypatch.setenv(key, value)
    cwd = home / page.cwd if page.cwd else tmp_path / "work"
    cwd.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(cwd)
    steps = _page_steps(doc)
    assert steps, f"{doc} has no shell command left to run"
    for step in steps:  # `$ cat FILE` shows the file the page uses
        if step.command.startswith("cat ") and step.output:
            (cwd / step.command.split()[1]).write_text("\n".join(step.output) + "\n")
    if page.files:
        page.files(cwd)
    if page.setup:
        page.setup(home, cwd)
    with contextlib.ExitStack() as stack:
        bindir = make_bindir(tmp_path / "bin")
        keep = stack if page.serves else None
        runner = PageRunner(home, cwd, bindir, qcli, monkeypatch, keep_serving=keep)
        if page.service:
            service = background_serve(list(page.service), runner.env, cwd, tmp_path / "svc.log")
            runner.port = str(stack.enter_context(service))
        pending = dict(page.before)
        for step in steps:
            key = next((k for k in pending if step.command.startswith(k)), None)
            for before in pending.pop(key, []):
                if callable(before):
                    before(home, cwd, runner.port)
                else:
                    result = qcli(*before)
                    assert result.code == 0, f"{step.where}: `qcli {shlex.join(before)}`: {result}"
            values = {"port": runner.port, "redis": REDIS_URL, "home": str(home)}
            command = page.substitute(step.command, **values)
            runner.run(step, command)
    assert not pending, f"no step of {doc} starts with {sorted(pending)}"
    assert len(runner.ran) == len(steps)

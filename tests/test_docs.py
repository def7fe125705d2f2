"""Docs that must match the code: the CLI reference, the README's commands, every code block."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
        'pip install -e ".[dev]" && pytest tests',
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
# * shell blocks (bash, sh, shell, console, or an unlabelled transcript of `$ qcli ...` lines):
#   every `qcli` command in them is parsed by the real CLI (the command exists, its options and
#   choices are accepted) without running it.
# * A block preceded by `<!-- not-run: REASON -->` is neither run nor parsed; the reason says why
#   (a server, a file from outside the repository). Keep these rare.

DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
PYTHON_LANGS = {"python", "py"}
SHELL_LANGS = {"bash", "sh", "shell", "console"}
NOT_RUN = re.compile(r"<!--\s*not-run:(.*?)-->\s*$")
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
# executed by tests/test_documented_api.py with assertions on the values it prints
EXECUTED_ELSEWHERE = {"docs/api.md"}


@dataclass(frozen=True)
class DocBlock:
    path: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    body: str
    not_run: str | None  # the reason, when marked


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


def _all_blocks() -> list[DocBlock]:
    return [b for path in DOC_FILES for b in doc_blocks(path)]


def _qcli_commands(block: DocBlock) -> list[list[str]]:
    """The argv (after ``qcli``) of every qcli command in a shell block."""
    text = re.sub(r"\\\n", " ", block.body)  # line continuations
    is_transcript = block.lang in ("console", "") or any(
        line.startswith("$ ") for line in text.splitlines()
    )
    commands = []
    for line in text.splitlines():
        line = line.strip()
        if is_transcript:
            if not line.startswith("$ "):
                continue  # output
            line = line[2:]
        line = line.split(" #", 1)[0]
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
    out = []
    for b in _all_blocks():
        if b.not_run is not None or b.lang in PYTHON_LANGS:
            continue
        if b.lang in SHELL_LANGS or (
            b.lang == "" and any(line.startswith("$ qcli") for line in b.body.splitlines())
        ):
            out.append(b)
    return out


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


def test_not_run_markers_say_why():
    marked = [b for b in _all_blocks() if b.not_run is not None]
    for b in marked:
        assert len(b.not_run) >= 10, f"{b.path}:{b.line}: a not-run marker needs a reason"
    code = [b for b in _all_blocks() if b.lang in PYTHON_LANGS | SHELL_LANGS]
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


# read-only commands need no more than the sample: these are run, not only parsed
READ_ONLY_COMMANDS = {("data", "summary"), ("features", "list"), ("features", "show")}


def test_read_only_qcli_commands_of_the_docs_run(docs_home: Path, monkeypatch, cli):
    monkeypatch.setenv("QCLI_HOME", str(docs_home))
    ran = []
    for block in _shell_blocks():
        for argv in _qcli_commands(block):
            if tuple(argv[:2]) in READ_ONLY_COMMANDS:
                code, _, err = cli(*argv)
                assert code == 0, f"{block.path}:{block.line}: `qcli {shlex.join(argv)}`: {err}"
                ran.append(tuple(argv[:2]))
    assert set(ran) == READ_ONLY_COMMANDS  # the docs still show each of them

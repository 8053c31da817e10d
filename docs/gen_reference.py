"""The generated pages of the documentation site, written at build time by the mkdocs-gen-files plugin.

- ``reference/cli.md``: every ``vtok`` command and flag, read from the argparse parsers.
- ``reference/config.md``: every key of every registered part and of the preset sections, read from the
  ``Config`` dataclasses: type, default, range (``vtok.config.ranged``) and the field's documentation, which
  is the comment on the field (the comment lines right above it and the comment beside it) or a string
  literal right below it.
- ``results-archive.md``: ``benchmarks/RESULTS.md`` as it stands, its figures beside it.

So the reference cannot fall behind the code: ``make docs`` regenerates it on every build, and
``tests/test_docs_reference.py`` checks that no key is missing. ``python docs/gen_reference.py OUT``
writes the same pages into OUT, for reading without mkdocs.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
LONG_DEFAULT = 60  # characters of a default shown in a table cell; longer ones are cut


# --- the command line -----------------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in the order ``vtok --help`` lists them."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            out += [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return out


def _argument_rows(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.option_strings:
            name = ", ".join(f"`{s}`" for s in action.option_strings)
            if action.nargs != 0:  # the value's name; a flag with choices lists them in its description instead
                meta = action.metavar or action.dest.upper()
                name += f" `{meta}`" if action.nargs in (None, 1) else f" `{meta} ...`"
        else:
            name = f"`{action.dest}`" + {"+": " (one or more)", "*": " (any number)"}.get(action.nargs, "")
        default = action.default
        shown = "" if default in (None, argparse.SUPPRESS, False) or not action.option_strings else f"`{default}`"
        if action.required and action.option_strings:
            shown = "required"
        text = formatter._expand_help(action) if action.help else ""
        if action.choices is not None:
            text = text.rstrip() + ("" if not text.strip() else " " if text.rstrip().endswith(".") else ". ")
            text += "One of: " + ", ".join(f"`{c}`" for c in action.choices) + "."
        rows.append(f"| {name} | {shown} | {_cell(text)} |")
    return rows


def cli_markdown() -> str:
    """``reference/cli.md``: the usage line and every argument of ``vtok`` and of each of its commands."""
    from vtok.cli import build_parser

    parser = build_parser()
    lines = [
        "# Command line",
        "",
        "Generated from the argparse parsers of `vtok` (`vtok/cli/`) at every build of this site, so it lists",
        "exactly what `vtok COMMAND --help` prints. Bad input to any command ends with one line",
        "`vtok: error: ...` and exit status 2.",
        "",
        "```text",
        parser.format_usage().strip(),
        "```",
        "",
    ]
    top = _argument_rows(parser)
    if top:
        lines += ["| argument | default | what |", "|---|---|---|", *top, ""]
    lines += ["| command | what |", "|---|---|"]
    lines += [f"| [`vtok {name}`](#vtok-{name}) | {_cell(text)} |" for name, text, _ in _subcommands(parser)]
    for name, text, sub in _subcommands(parser):
        lines += ["", f"## vtok {name}", "", f"{text[:1].upper()}{text[1:]}." if text else "", ""]
        lines += ["```text", sub.format_usage().strip(), "```", ""]
        if sub.description:
            lines += [sub.description, ""]
        lines += ["| argument | default | what |", "|---|---|---|", *_argument_rows(sub)]
    return "\n".join(lines) + "\n"


# --- config keys ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One config key: its name (dotted below nested dataclasses) and what the reference says of it."""

    key: str
    type: str
    default: str
    range: str
    doc: str


def field_docs(cls: type) -> dict[str, str]:
    """Each field's documentation in the source of dataclass ``cls`` (and of its dataclass bases).

    A field's text is its comment: the comment lines directly above it (no blank line between) and the
    comments on its own lines, or a string literal on the line after it (an attribute docstring).
    """
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        lines = source.splitlines()
        comments: dict[int, str] = {}
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
        body = ast.parse(source).body[0].body  # the class's statements
        for i, stmt in enumerate(body):
            if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
                continue
            above, line = [], stmt.lineno - 1
            while line >= 1 and lines[line - 1].strip().startswith("#"):
                above.insert(0, comments.get(line, ""))
                line -= 1
            own = [comments[n] for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1) if n in comments]
            text = " ".join(t for t in above + own if t and not t.startswith(("noqa", "type:", "fmt:")))
            nxt = body[i + 1] if i + 1 < len(body) else None
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                text = (text + " " + inspect.cleandoc(nxt.value.value)).strip()
            if text:
                docs[stmt.target.id] = text
    return docs


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " or ".join(repr(a).replace("'", '"') for a in args)
    if origin is not None and args:
        if origin in (typing.Union, types.UnionType):
            return " | ".join(_type_name(a) for a in args)
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    try:
        text = yaml.safe_dump(_plain(value), default_flow_style=True, width=10_000).strip()
    except yaml.YAMLError:
        text = repr(value)
    text = text.removesuffix("\n...").removesuffix("...").strip()
    if len(text) > LONG_DEFAULT:
        text = text[: LONG_DEFAULT - 3] + "..."
    return f"`{text}`"


def _mentions(doc: str, name: str) -> str:
    """The sentences of a class docstring that name field ``name`` in code (``name`` or ``name: value``)."""
    pattern = re.compile(r"``?" + re.escape(name) + r"(``?|[:= >][^`]*``?)")
    sentences = re.split(r"(?<=[.;])\s+(?=[A-Z`(])", doc)
    return " ".join(s for s in sentences if pattern.search(s))


def config_rows(cls: type, prefix: str = "", owner: type | None = None) -> list[Row]:
    """A row per key of dataclass ``cls``, nested dataclasses (not parts) expanded as ``field.key``.

    A field without a comment of its own gets the sentences of its class's docstring (or of ``owner``'s,
    the registered part the ``Config`` belongs to) that name it.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    class_doc = " ".join(filter(None, (_class_doc(cls), _class_doc(owner) if owner is not None else "")))
    for f in dataclasses.fields(cls):
        if f.name not in docs and class_doc:
            docs[f.name] = _mentions(class_doc, f.name)
    rows = []
    for f in dataclasses.fields(cls):
        key, tp = f"{prefix}{f.name}", hints[f.name]
        kind = f.metadata.get("component")
        if kind is not None:
            rows.append(Row(key, f"part: [`{kind}`](#{kind})", _default(f), "", docs.get(f.name, "")))
            continue
        if dataclasses.is_dataclass(tp):
            rows.append(Row(key, f"`{tp.__name__}`", "", "", docs.get(f.name, "") or _class_doc(tp)))
            rows += config_rows(tp, f"{key}.")
            continue
        valid = f.metadata.get("range")
        rows.append(Row(key, f"`{_type_name(tp)}`", _default(f), "" if valid is None else str(valid),
                        docs.get(f.name, "")))  # fmt: skip
    return rows


def _class_doc(cls: type) -> str:
    """The class's own docstring, as one paragraph (a dataclass's generated signature is no docstring)."""
    doc = cls.__dict__.get("__doc__") or ""
    if not doc or doc.startswith(f"{cls.__name__}("):
        return ""
    return " ".join(inspect.cleandoc(doc).split())


def _table(rows: list[Row]) -> list[str]:
    out = ["| key | type | default | range | what it does |", "|---|---|---|---|---|"]
    return out + [f"| `{r.key}` | {_cell(r.type)} | {_cell(r.default)} | {r.range} | {_cell(r.doc)} |" for r in rows]


def _cell(text: str) -> str:
    """One line of a table cell: pipes outside code spans escaped (Python-Markdown keeps those inside)."""
    parts = re.split(r"(`+[^`]*`+)", " ".join(text.split()))
    return "".join(p if p.startswith("`") else p.replace("|", "\\|") for p in parts)


def part_paths() -> dict[str, list[str]]:
    """Where each registry kind is set in a preset: ``quantizer`` -> ``model.quantizer``, ... (shortest first)."""
    from vtok import registry
    from vtok.presets import RunConfig

    found: dict[str, set[str]] = {}
    queue: list[tuple[str, type]] = [("", RunConfig)]
    seen: set[tuple[str, type]] = set()
    while queue:
        prefix, cls = queue.pop(0)
        if (prefix, cls) in seen or prefix.count(".") > 4:
            continue
        seen.add((prefix, cls))
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            path, kind = f"{prefix}{f.name}", f.metadata.get("component")
            if kind is not None:
                found.setdefault(kind, set()).add(path)
                queue += [(f"{path}.", registry.lookup(kind, n).Config) for n in registry.names(kind)]
            elif dataclasses.is_dataclass(hints[f.name]):
                queue.append((f"{path}.", hints[f.name]))
    return {k: sorted(v, key=lambda p: (p.count("."), p)) for k, v in found.items()}


def registered_parts() -> Iterator[tuple[str, str, type]]:
    """(kind, name, class) of every registered part that is built from a ``Config``."""
    from vtok import registry

    for kind in registry.kinds():
        for name in registry.names(kind):
            cls = registry.lookup(kind, name)
            if hasattr(cls, "Config"):
                yield kind, name, cls


def config_markdown() -> str:
    """``reference/config.md``: the preset sections, then every registered part's keys, kind by kind."""
    from vtok.data import DataConfig
    from vtok.presets import TrainConfig

    paths = part_paths()
    parts = list(registered_parts())
    kinds = list(dict.fromkeys(kind for kind, _, _ in parts))
    lines = [
        "# Config keys",
        "",
        "Every key a preset or an override can set, generated from the `Config` dataclasses at every build",
        "of this site. A preset has four sections: `model` (a [`model`](#model) part), `loss` (a",
        "[`loss`](#loss) part), [`train`](#train) and [`data`](#data). A part is a mapping",
        "`{name: REGISTERED_NAME, key: value, ...}`; the keys of each registered name are listed below, and",
        "a part nested in another is set by its dotted path, e.g. `model.quantizer.dead_code_share=0.5` is",
        "the key `dead_code_share` of the [`vq`](#quantizer-vq) quantizer of a grid model.",
        "",
        "Ranges are checked wherever a value enters (YAML, overrides, objects built in Python, CLI flags);",
        "a value outside its range, of the wrong type, or an unknown key fails in one line naming the key.",
        "NaN and infinity are never accepted. An empty *what it does* cell means the field has no comment",
        "in its source: its part's description above the table says what the part does.",
        "",
        "## Parts by kind",
        "",
        "| kind | set at | registered names |",
        "|---|---|---|",
    ]
    for kind in kinds:
        names = ", ".join(f"[`{n}`](#{kind}-{n})" for k, n, _ in parts if k == kind)
        where = ", ".join(f"`{p}`" for p in paths.get(kind, [])[:4]) or "in Python (not a preset key)"
        lines.append(f"| [`{kind}`](#{kind}) | {where} | {names} |")
    for section, cls in (("train", TrainConfig), ("data", DataConfig)):
        lines += ["", f"## {section} {{#{section}}}", "", _class_doc(cls), "", *_table(config_rows(cls, f"{section}."))]
    for kind in kinds:
        where = paths.get(kind, [])
        lines += ["", f"## {kind} {{#{kind}}}", ""]
        set_at = ", ".join(f"`{p}`" for p in where)
        lines.append(f"Set at {set_at}." if where else "Built in Python, not from a preset.")
        for k, name, cls in parts:
            if k != kind:
                continue
            lines += ["", f"### {kind} `{name}` {{#{kind}-{name}}}", ""]
            lines.append(f"`{cls.__module__}.{cls.__qualname__}`. {_class_doc(cls)}".strip())
            config_doc = _class_doc(cls.Config)
            if config_doc:
                lines += ["", config_doc]
            rows = config_rows(cls.Config, owner=cls)
            lines += ["", *_table(rows)] if rows else ["", "No keys besides `name`."]
    return "\n".join(lines) + "\n"


# --- the results archive ------------------------------------------------------------------------------

_LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")


def results_archive() -> tuple[str, list[str]]:
    """``results-archive.md`` (RESULTS.md with its links made valid on the site) and the figures it shows.

    Figures keep their paths (``figures/...``, copied beside the page); links into ``docs/`` point at the
    page; any other link into the repository becomes its path in code, since the site holds no such page.
    """
    figures: list[str] = []

    def fix(match: re.Match) -> str:
        text, target = match.groups()
        if target.startswith(("#", "http://", "https://", "mailto:")):
            return match.group(0)
        path = target.split("#")[0]
        if path.startswith("figures/") and (RESULTS.parent / path).is_file():
            figures.append(path)
            return match.group(0)
        if path.startswith("../docs/"):
            return f"[{text}]({target.removeprefix('../docs/')})"
        return f"{text} (`{path}`)" if text.strip("`") != path else text

    text = RESULTS.read_text(encoding="utf-8")
    intro = (
        "Every measurement section of `benchmarks/RESULTS.md` in the order it was written, as the file "
        "stands in the repository; [Results](results.md) gathers the findings by topic.\n\n"
    )
    body = _LINK.sub(fix, text)
    first, _, rest = body.partition("\n")
    return f"{first}\n\n{intro}{rest}", sorted(set(figures))


def pages() -> dict[str, str]:
    """Every generated page: path under docs/ -> Markdown."""
    archive, _ = results_archive()
    return {"reference/cli.md": cli_markdown(), "reference/config.md": config_markdown(), "results-archive.md": archive}


def _write_with_gen_files() -> None:
    import mkdocs_gen_files

    for path, text in pages().items():
        with mkdocs_gen_files.open(path, "w") as out:
            out.write(text)
    for figure in results_archive()[1]:
        with mkdocs_gen_files.open(figure, "wb") as out:
            out.write((RESULTS.parent / figure).read_bytes())


if __name__ == "<run_path>":  # run by the mkdocs-gen-files plugin during `mkdocs build`
    _write_with_gen_files()
elif __name__ == "__main__":
    out_dir, generated = Path(sys.argv[1] if len(sys.argv) > 1 else "site-reference"), pages()
    for rel, page in generated.items():
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / rel).write_text(page, encoding="utf-8")
    print(f"wrote {len(generated)} pages under {out_dir}")

"""Email templates rendered once per site, locale and shape; per message only values go in.

Jinja builds a new context and runs the template for every part of every message, which
was most of what rendering cost a worker. A template whose per-message variables are only
printed as they are (``{{ code }}``) or tested for truth (``{% if code %}``) renders to the
same text whatever their values, apart from where they are printed: that text is rendered
once with markers in their place, and a message is the text with its (escaped) values
spliced in. Anything else about a template (filters or comparisons on those variables,
includes, macros, ``{% autoescape %}`` blocks, …) keeps it on plain Jinja, and the first
message of each shape is checked against Jinja's own output before the stencil is used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Template, nodes
from markupsafe import escape

# Private-use characters: no template's own text holds them (checked), escaping keeps them.
_MARK = "\ue000"
_MARKER = re.compile(f"{_MARK}(\\d+){_MARK}")
# Value types whose printed form Jinja takes from str() (escaped in HTML): nothing else is
# spliced in (Markup, say, prints unescaped; a list's truth and text differ from a str's).
_PLAIN = (str, int)
# Nodes that can print, transform or rebind a variable out of sight of this check.
_OPAQUE = (
    nodes.Extends,
    nodes.Include,
    nodes.Import,
    nodes.FromImport,
    nodes.Macro,
    nodes.CallBlock,
    nodes.FilterBlock,
    nodes.EvalContextModifier,
)


@dataclass(frozen=True, slots=True)
class Stencil:
    """A template's output cut around its per-message variables.

    ``literals`` has one more item than ``names``: literal, name, literal, …, literal.
    """

    literals: tuple[str, ...]
    names: tuple[str, ...]
    escaped: bool

    def fill(self, values: Mapping[str, Any]) -> str:
        """The template's output for ``values`` (the message's own variables)."""
        literals = self.literals
        if not self.names:
            return literals[0]
        out = [literals[0]]
        for i, name in enumerate(self.names, 1):
            value = values[name]
            out.append(str(escape(value)) if self.escaped else str(value))
            out.append(literals[i])
        return "".join(out)


def shape(values: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """What a stencil for ``values`` depends on: their names and which are empty.

    None when a value is of a type stencils do not take (then Jinja renders the message).
    """
    key: list[Any] = []
    for name, value in values.items():
        if type(value) not in _PLAIN:
            return None
        # An empty value is rendered in place (it can only be "" or 0), a non-empty one
        # spliced in; a template may test either.
        key.append(name if value else (name, value))
    return tuple(key)


def stencil(
    template: Template, variables: Mapping[str, Any], per_message: Mapping[str, Any]
) -> Stencil | None:
    """``template`` rendered with markers for ``per_message``'s non-empty values, if safe.

    ``variables`` are the constant ones (a site's brand). None: Jinja must render it.
    """
    names = [name for name, value in per_message.items() if value]
    if not _splices_safely(template, frozenset(per_message)):
        return None
    markers = {name: f"{_MARK}{i}{_MARK}" for i, name in enumerate(names)}
    text = template.render({**variables, **per_message, **markers})
    pieces = _MARKER.split(text)
    if text.count(_MARK) != 2 * (len(pieces) // 2):
        return None
    autoescape = template.environment.autoescape
    return Stencil(
        literals=tuple(pieces[0::2]),
        names=tuple(names[int(i)] for i in pieces[1::2]),
        escaped=bool(autoescape(template.name) if callable(autoescape) else autoescape),
    )


def _splices_safely(template: Template, names: frozenset[str]) -> bool:
    """Whether ``names`` are only printed as they are or tested for truth in ``template``."""
    # Jinja keeps no syntax tree of a compiled template: parse its file again.
    filename = template.filename
    if filename is None or not os.path.isfile(filename):
        return False
    with open(filename, encoding="utf-8") as file:
        source = file.read()
    if _MARK in source:
        return False
    tree = template.environment.parse(source)
    return all(ok for ok in _uses(tree, names, "statement"))


def _uses(node: nodes.Node, names: frozenset[str], role: str) -> Iterator[bool]:
    """For every use of ``names`` under ``node``, whether it is a plain print or a test."""
    if isinstance(node, _OPAQUE):
        yield False
        return
    if isinstance(node, nodes.Name):
        if node.name in names:
            yield node.ctx == "load" and role in ("output", "test")
        return
    for field, child in node.iter_fields():
        for item in child if isinstance(child, list) else [child]:
            if isinstance(item, nodes.Node):
                yield from _uses(item, names, _role_of(node, field, role))


def _role_of(parent: nodes.Node, field: str, role: str) -> str:
    """How a child in ``parent.field`` is used: printed, tested for truth, or otherwise."""
    if isinstance(parent, nodes.Output):
        return "output"  # each item is printed as it is
    if isinstance(parent, nodes.If | nodes.CondExpr) and field == "test":
        return "test"
    if isinstance(parent, nodes.Not | nodes.And | nodes.Or) and role == "test":
        return "test"  # `not x`, `x and y` under a test: only truth counts
    if isinstance(parent, nodes.If) and field in ("body", "elif_", "else_"):
        return "statement"
    if isinstance(parent, nodes.Template | nodes.Block | nodes.For) and role == "statement":
        return "statement" if field in ("body", "else_") else "other"
    return "other"

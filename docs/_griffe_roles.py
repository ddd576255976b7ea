"""A griffe extension for the API reference: reStructuredText roles to Markdown cross-references.

The docstrings use Sphinx roles (``:class:`Locker```) and double-backtick literals, which
read well in ``help()``; mkdocstrings renders Markdown. This rewrites each role into an
autorefs link resolved in the docstring's scope, and a trailing ``::`` into ``:``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|exc|func|meth|attr|data|obj|mod):`~?\.?([\w.]+)`")
_LITERAL_BLOCK = re.compile(r"::$", re.MULTILINE)


class RolesToCrossrefs(griffe.Extension):
    """Rewrite the roles of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is None:
            return
        text = _ROLE.sub(lambda m: f"[`{m.group(1)}`][{m.group(1)}]", docstring.value)
        docstring.value = _LITERAL_BLOCK.sub(":", text)

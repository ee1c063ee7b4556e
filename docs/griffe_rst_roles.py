"""A griffe extension for the docs build (mkdocs.yml loads it): reST roles in docstrings become Markdown code.

lightning_pg's docstrings are Google style (``Args:`` sections) with reST inline markup. Double backquotes read
as code in Markdown too, but roles such as :class:`~lightning_pg.algorithms.base.RLModule` or :math:`G_t` would
be printed as they are written. This turns each role into inline code, `RLModule` and `G_t` (a leading ``~``
keeps the last dotted name, as Sphinx shows it). The docstrings themselves stay as they are.
"""
from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|obj|exc|data|math):`(~?)([^`]+)`")


def _as_code(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class RstRolesAsCode(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_as_code, obj.docstring.value)

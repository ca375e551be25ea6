"""pyiceberg's row-filter predicates, as their constructors really are called.

``GreaterThanOrEqual("event_ts", "2026-11-21T00:00:00")`` builds a predicate from a column
name and a plain value: pyiceberg's own ``__init__(term, literal)`` turns both into its types.
Those classes are pydantic models, though, and mypy (with or without pydantic's plugin) types
their constructor from the model fields instead (``term: UnboundTerm, value: LiteralValue``,
keywords only), so every such call would look wrong to it. Import them from here: at run time
these *are* pyiceberg's classes (imported on first use of this module, as before at the call
sites); for mypy they are functions with the signature pyiceberg implements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from pyiceberg.expressions import BooleanExpression

    def GreaterThanOrEqual(term: str, literal: Any, /) -> BooleanExpression: ...

    def LessThanOrEqual(term: str, literal: Any, /) -> BooleanExpression: ...

    def LessThan(term: str, literal: Any, /) -> BooleanExpression: ...

    def In(term: str, literals: Iterable[Any], /) -> BooleanExpression: ...

    def EqualTo(term: str, literal: Any, /) -> BooleanExpression: ...
else:
    from pyiceberg.expressions import (
        EqualTo,
        GreaterThanOrEqual,
        In,
        LessThan,
        LessThanOrEqual,
    )

__all__ = ["EqualTo", "GreaterThanOrEqual", "In", "LessThan", "LessThanOrEqual"]

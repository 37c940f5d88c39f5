"""Errors that are both lightkit's (a class with a ``code``) and pydantic's
``ValidationError`` (``errors()``, the fields named), so either ``except`` catches them."""

from __future__ import annotations

from typing import Any, TypeVar, cast, get_args

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

E = TypeVar("E", bound="AlsoValidationError")

_KNOWN = frozenset(get_args(ErrorType))


_URL_LINE = "For further information visit https://errors.pydantic.dev"


class AlsoValidationError:
    """Mixin for ``class X(AlsoValidationError, SomeLightkitError, ValidationError)``."""

    code: str
    #: The code when the errors' own causes do not agree on one, or are not consulted.
    default_code = "lightkit-error"
    #: Whether one code that all the errors' causes have is the error's code.
    cause_codes = True

    def __init__(self, *args: Any) -> None:
        pass  # pydantic makes it from its own arguments (from_exception_data)

    def __str__(self) -> str:
        # pydantic's report, without its documentation links: the fix is lightkit's to give.
        text = ValidationError.__str__(cast(ValidationError, self))
        return "\n".join(
            line for line in text.split("\n") if not line.lstrip().startswith(_URL_LINE)
        )

    @classmethod
    def of(cls: type[E], exc: ValidationError) -> E:
        """``exc`` as this class; its code is its causes' one code, if they have one."""
        errors = exc.errors()
        codes = {getattr(e.get("ctx", {}).get("error"), "code", None) for e in errors}
        only = codes.pop() if len(codes) == 1 and cls.cause_codes else None
        return cls._made(exc.title, errors, only if isinstance(only, str) else cls.default_code)

    @classmethod
    def _made(cls: type[E], title: str, errors: Any, code: str) -> E:
        # A validator's own PydanticCustomError has a type pydantic does not know by name.
        rebuilt = [
            e if e["type"] in _KNOWN else {**e, "type": PydanticCustomError(e["type"], e["msg"])}
            for e in errors
        ]
        made = cast(Any, cls).from_exception_data(title, cast(list[InitErrorDetails], rebuilt))
        made.code = code
        made._described()
        return cast(E, made)

    def _described(self) -> None:
        """Set what the lightkit class's own constructor would have set."""

    def __reduce__(self) -> Any:
        me = cast(Any, self)
        return type(self)._made, (me.title, me.errors(), self.code)

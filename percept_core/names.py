"""The one rule for model names and versions: what a blob's metadata may name before it becomes part of a URL.

Anyone who can write a blob can write its metadata, and a name such as ".." would be normalised away by the
HTTP stack, turning `/api/v1/keys/../bootstrap` into another endpoint whose answer would become the key.
"""

from __future__ import annotations

import re

from .errors import InvalidMetadataError

MAX_NAME_LENGTH = 128
ALLOWED = "letters, digits, '.', '_' and '-' (ASCII), 1 to 128 characters, not only dots"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_SHOWN = 60  # characters of an offending value a message shows


def shown(value: str) -> str:
    """The value as a message may show it: escaped to ASCII (look-alikes and control characters visible), cut short."""
    text = ascii(value[:_SHOWN])
    return text if len(value) <= _SHOWN and len(text) <= _SHOWN + 2 else f"{text[: _SHOWN + 1]}... ({len(value)} chars)"


def _problem(value: object) -> str | None:
    """Why `value` is not a valid model name or version, or None when it is one."""
    if not isinstance(value, str):
        return "is not text"
    if not value:
        return "is empty"
    if len(value) > MAX_NAME_LENGTH:
        return f"is {len(value)} characters long, more than {MAX_NAME_LENGTH}"
    if not value.isascii():
        # Look-alikes (Cyrillic, fullwidth) and dot-like characters (U+2024) pass a human eye, not this check.
        return "contains non-ASCII characters"
    if "%" in value:
        return "contains '%' (an encoded character such as %2e or %2f)"
    if "/" in value or "\\" in value:
        return "contains a path separator"
    if any(c.isspace() or not c.isprintable() for c in value):
        return "contains whitespace or control characters"
    if not _NAME.fullmatch(value):
        return "contains characters other than letters, digits, '.', '_' and '-'"
    if not value.strip("."):
        return "is made only of dots (a path segment that names a folder, not a model)"
    return None


def is_valid_name(value: object) -> bool:
    """Whether `value` may be used as a model name or version."""
    return _problem(value) is None


def validate_name(value: object, *, field: str, blob_name: str | None = None) -> str:
    """`value` when it is a valid model name or version; InvalidMetadataError naming the blob and field otherwise."""
    problem = _problem(value)
    if problem is None:
        return value  # type: ignore[return-value]  # _problem checked it is a str
    what = shown(value) if isinstance(value, str) else type(value).__name__
    if blob_name is not None:
        message = f"Blob {blob_name!r} has an invalid {field} in its metadata: {what} {problem}."
        hint = (
            f"Reject the blob: a Percept device never writes such metadata, so no key is asked for it "
            f"(a {field} is {ALLOWED})."
        )
    else:
        message = f"The {field} {what} is not a valid model name or version: it {problem}."
        hint = f"A {field} is {ALLOWED}."
    raise InvalidMetadataError(message, blob_name=blob_name, hint=hint)


def validate_model(model_name: object, model_version: object, *, blob_name: str | None = None) -> tuple[str, str]:
    """Both names of a model version, validated (see `validate_name`)."""
    return (
        validate_name(model_name, field="model_name", blob_name=blob_name),
        validate_name(model_version, field="model_version", blob_name=blob_name),
    )

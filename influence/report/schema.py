"""Validation of report.json against the JSON schema shipped with the package (`schema.json`),
with `jsonschema` (a dependency of the `demo` extra, which the report needs)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from influence.errors import InfluenceError


class SchemaError(InfluenceError):
    """A report document does not match `schema.json`."""


@cache
def schema() -> dict:
    """The report's JSON schema (a dict)."""
    return json.loads(resources.files("influence.report").joinpath("schema.json").read_text())


def validate(doc: dict) -> None:
    """Raise `SchemaError` naming the first offending path if `doc` does not match the schema."""
    try:
        import jsonschema
    except ImportError as error:
        raise ImportError("validating report.json needs `jsonschema`: pip install 'influence-debugger[demo]'"
                          ) from error
    try:
        jsonschema.validate(doc, schema())
    except jsonschema.ValidationError as error:
        path = "/".join(str(p) for p in error.absolute_path)
        raise SchemaError(f"report.json does not match its schema at /{path}: {error.message}") from None

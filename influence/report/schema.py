"""Validation of report.json against the JSON schema shipped with the package (`schema.json`).

Uses `jsonschema` when it is installed; otherwise a small validator that understands the
keywords `schema.json` uses (type, const, enum, required, properties, items, minItems,
maxItems, minimum, maximum, $ref to `#/$defs/...`).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from influence.errors import InfluenceError


class SchemaError(InfluenceError):
    """A report document does not match `schema.json`."""


@cache
def schema() -> dict:
    """The report's JSON schema (a dict)."""
    return json.loads(resources.files("influence.report").joinpath("schema.json").read_text())


def validate(doc: dict, use_jsonschema: bool = True) -> None:
    """Raise `SchemaError` naming the first offending path if `doc` does not match the schema."""
    if use_jsonschema:
        try:
            import jsonschema
        except ImportError:
            use_jsonschema = False
    if use_jsonschema:
        try:
            jsonschema.validate(doc, schema())
        except jsonschema.ValidationError as error:
            path = "/".join(str(p) for p in error.absolute_path)
            raise SchemaError(f"report.json does not match its schema at /{path}: {error.message}") from None
        return
    problems = _check(doc, schema(), "", schema())
    if problems:
        raise SchemaError(f"report.json does not match its schema at {problems[0]}")


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def _check(value: Any, rule: dict, path: str, root: dict) -> list[str]:
    if "$ref" in rule:
        target = root
        for part in rule["$ref"].lstrip("#/").split("/"):
            target = target[part]
        rule = target
    where = path or "/"
    types = rule.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_is_type(value, t) for t in types):
            return [f"{where}: {value!r:.60} is not of type {' or '.join(types)}"]
    if "const" in rule and value != rule["const"]:
        return [f"{where}: {value!r:.60} is not {rule['const']!r}"]
    if "enum" in rule and value not in rule["enum"]:
        return [f"{where}: {value!r:.60} is not one of {rule['enum']}"]
    if _is_type(value, "number"):
        if "minimum" in rule and value < rule["minimum"]:
            return [f"{where}: {value} is less than the minimum of {rule['minimum']}"]
        if "maximum" in rule and value > rule["maximum"]:
            return [f"{where}: {value} is greater than the maximum of {rule['maximum']}"]
    problems: list[str] = []
    if isinstance(value, dict):
        problems += [f"{where}: {key!r} is a required property" for key in rule.get("required", []) if key not in value]
        for key, sub in rule.get("properties", {}).items():
            if key in value:
                problems += _check(value[key], sub, f"{path}/{key}", root)
    if isinstance(value, list):
        if len(value) < rule.get("minItems", 0):
            problems.append(f"{where}: has fewer than {rule['minItems']} items")
        if "maxItems" in rule and len(value) > rule["maxItems"]:
            problems.append(f"{where}: has more than {rule['maxItems']} items")
        if "items" in rule:
            for i, item in enumerate(value):
                problems += _check(item, rule["items"], f"{path}/{i}", root)
    return problems

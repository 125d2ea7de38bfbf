"""JSON Schemas of the pack files, and one validation helper that names the file and field."""

from __future__ import annotations

import functools
import json
from importlib import resources

import jsonschema

from specs.errors import ToolError

SCHEMAS = ("io_spec", "manifest", "plan_meta")


@functools.cache
def load_schema(name: str) -> dict:
    if name not in SCHEMAS:
        raise KeyError(name)
    return json.loads(resources.files("specs.schema").joinpath(f"{name}.schema.json").read_text())


def read_json(path, what: str, expected: str | None = None):
    """Parse a JSON file; a missing or malformed file is a ToolError naming it."""
    from pathlib import Path

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ToolError(path, f"{what} is missing", expected) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ToolError(path, f"{what} cannot be read as JSON ({e})", expected) from None


@functools.cache
def _registry():
    """All our schemas by $id, so one schema can refer to another's definitions (the chunk policy)."""
    from referencing import Registry, Resource

    return Registry().with_resources((load_schema(n)["$id"], Resource.from_contents(load_schema(n))) for n in SCHEMAS)


def validate_json(doc: dict, schema: str, source: str) -> None:
    """Validate `doc` against schema `schema`; raise ToolError naming `source` and the failing field."""
    validator = jsonschema.Draft202012Validator(load_schema(schema), registry=_registry())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        field = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ToolError(
            source, f"field {field}: {err.message}{more}", f"a valid {schema} per specs/schema/{schema}.schema.json"
        )

"""The JSON Schema of pipeline files, derived from the kind registry's models (for editors and CI)."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from mlops_ops.authoring import kinds

SCHEMA_ID = "https://mlops-ops.dev/schemas/pipeline.json"


def json_schema() -> dict[str, Any]:
    """One schema for every kind, chosen by the ``kind`` key."""
    models = tuple(k.model for name in kinds.names() if (k := kinds.get(name)) is not None)
    union = Annotated[Union[models], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007
    schema = TypeAdapter(union).json_schema(mode="validation")
    _shorthands(schema["$defs"])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "mlops-ops pipeline file",
        "description": "A YAML pipeline: kind " + ", ".join(kinds.names()) + " (docs/authoring.md).",
        **schema,
    }


#: What a file may write as a plain string instead of a mapping (the models' "before" validators).
_STRING_FORMS: dict[str, dict[str, Any]] = {
    "Gate": {"type": "string", "pattern": r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*(>=|<=|>|<)\s*[-+0-9.eE]+\s*$"},
    "RunnerSpec": {"enum": ["local", "kubernetes"]},
    "ScheduleSpec": {"type": "string", "description": "A cron expression or a preset such as '@daily'."},
}


def _shorthands(defs: dict[str, Any]) -> None:
    for name, form in _STRING_FORMS.items():
        if name in defs:
            defs[name] = {"anyOf": [form, defs[name]]}
    for model in defs.values():
        gates = model.get("properties", {}).get("gates")
        if gates is not None:
            model["properties"]["gates"] = {
                "anyOf": [{"$ref": "#/$defs/Gate"}, gates],
                "description": gates.get("description", ""),
            }

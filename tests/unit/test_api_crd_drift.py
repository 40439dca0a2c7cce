"""The pydantic models in controller/api.py must describe exactly the CRD's schema."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from controller import api

ROOT = Path(__file__).resolve().parents[2]


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / "agenttask.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation like `X | None` or `tuple[X, ...]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, tuple, list):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _drift(schema: dict[str, Any], model: type[BaseModel], path: str) -> list[str]:
    problems: list[str] = []
    if schema.get("type") == "array":
        schema = schema["items"]
    props: dict[str, Any] = schema.get("properties", {})
    fields = {(f.alias or name): (name, f) for name, f in model.model_fields.items()}
    for missing in sorted(set(props) - set(fields)):
        problems.append(f"{path}.{missing}: in the CRD but not in {model.__name__}")
    for extra in sorted(set(fields) - set(props)):
        problems.append(f"{path}.{extra}: in {model.__name__} but not in the CRD")
    for key in sorted(set(props) & set(fields)):
        prop = props[key]
        _, field = fields[key]
        if "default" in prop and field.get_default(call_default_factory=True) != prop["default"]:
            problems.append(
                f"{path}.{key}: CRD default {prop['default']!r} != model default {field.default!r}"
            )
        if "description" not in prop:
            problems.append(f"{path}.{key}: no description in the CRD")
        sub = _model_of(field.annotation)
        child = prop["items"] if prop.get("type") == "array" else prop
        if sub is not None and child.get("type") == "object":
            problems += _drift(child, sub, f"{path}.{key}")
        elif (sub is None) != (child.get("type") != "object" or "properties" not in child):
            problems.append(f"{path}.{key}: object in one, scalar in the other")
    return problems


@pytest.mark.parametrize(
    ("part", "model"), [("spec", api.AgentTaskSpec), ("status", api.AgentTaskStatus)]
)
def test_models_mirror_the_crd(part: str, model: type[BaseModel]) -> None:
    assert _drift(crd_schema()["properties"][part], model, part) == []


def test_phase_enum_matches_crd() -> None:
    enum = crd_schema()["properties"]["status"]["properties"]["phase"]["enum"]
    assert enum == [p.value for p in api.Phase]


def test_drift_check_catches_a_missing_field() -> None:
    """The checker itself must fail when a field is added to the CRD only."""
    schema = crd_schema()["properties"]["spec"]
    schema["properties"]["newField"] = {"type": "string", "description": "x"}
    assert _drift(schema, api.AgentTaskSpec, "spec") == [
        "spec.newField: in the CRD but not in AgentTaskSpec"
    ]


def test_examples_parse() -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "AgentTask":
                doc.setdefault("metadata", {}).update(namespace="x", uid="u")
                task = api.AgentTask.from_body(doc)
                assert task.spec.repository.url

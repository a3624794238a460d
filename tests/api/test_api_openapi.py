"""`/openapi.json` against the published runner spec (a copy in `data/`), and the docs page.

Allowed differences, each documented in the code it concerns:
- newer than the reference copy (ai-runner's current runner/openapi.yaml): `LOADING` in
  `HealthCheck.status`, `GET /version` and its `Version` schema;
- schemas the reference copy cuts off (from `LLMTokenUsage` on), checked against
  `CUT_SCHEMAS` below, taken from ai-runner's runner/openapi.yaml (v0.14.1);
- extra error responses we document (413/415/503) besides the spec's;
- no `servers` (they name the public gateways, not this runner).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from api_helpers import ClientFactory

NEWER_PATHS = {"/version"}
NEWER_ENUM_VALUES = {("HealthCheck", "status"): {"LOADING"}}
#: Present in the reference copy, but only in part (it is cut inside this schema).
PARTIAL_SCHEMAS = {"LLMTokenUsage"}
#: name -> (properties in order, required, defaults), from ai-runner's runner/openapi.yaml v0.14.1.
CUT_SCHEMAS: dict[str, tuple[list[str], list[str], dict[str, Any]]] = {
    "LLMTokenUsage": (["prompt_tokens", "completion_tokens", "total_tokens"], ["prompt_tokens", "completion_tokens", "total_tokens"], {}),
    "LiveVideoToVideoParams": (
        ["subscribe_url", "publish_url", "control_url", "events_url", "model_id", "params", "gateway_request_id", "manifest_id", "stream_id"],
        ["subscribe_url", "publish_url"],
        {"control_url": "", "events_url": "", "model_id": "", "params": {}, "gateway_request_id": "", "manifest_id": "", "stream_id": ""},
    ),
    "LiveVideoToVideoResponse": (
        ["subscribe_url", "publish_url", "control_url", "events_url", "request_id", "manifest_id"],
        ["subscribe_url", "publish_url"],
        {"control_url": "", "events_url": "", "request_id": "", "manifest_id": ""},
    ),
    "MasksResponse": (["masks", "scores", "logits"], ["masks", "scores", "logits"], {}),
    "Media": (["url", "seed", "nsfw"], ["url", "seed", "nsfw"], {}),
    "MediaURL": (["url"], ["url"], {}),
    "TextResponse": (["text", "chunks"], ["text", "chunks"], {}),
    "TextToImageParams": (
        ["model_id", "loras", "prompt", "height", "width", "guidance_scale", "negative_prompt", "safety_check", "seed", "num_inference_steps", "num_images_per_prompt"],
        ["prompt"],
        {"model_id": "", "loras": "", "height": 576, "width": 1024, "guidance_scale": 7.5, "negative_prompt": "", "safety_check": True, "num_inference_steps": 50, "num_images_per_prompt": 1},
    ),
    "TextToSpeechParams": (
        ["model_id", "text", "description"],
        [],
        {"model_id": "", "text": "", "description": "A male speaker delivers a slightly expressive and animated speech with a moderate speed and pitch."},
    ),
    "ValidationError": (["loc", "msg", "type"], ["loc", "msg", "type"], {}),
    "VideoResponse": (["frames"], ["frames"], {}),
    "Version": (["pipeline", "model_id", "version"], ["pipeline", "model_id", "version"], {}),
}  # fmt: skip


#: ai-runner's spec as the reference page publishes it; its header says where and when from.
REFERENCE_SPEC = Path(__file__).parent / "data" / "livepeer-ai-worker-openapi.yml"


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return yaml.safe_load(REFERENCE_SPEC.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@pytest.fixture
async def ours(make_client: ClientFactory) -> dict[str, Any]:
    client = await make_client()
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    return await resp.json()  # type: ignore[no-any-return]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _ref(schema: dict[str, Any]) -> str | None:
    if "$ref" in schema:
        return schema["$ref"]  # type: ignore[no-any-return]
    if "allOf" in schema and len(schema["allOf"]) == 1:  # older FastAPI wraps a described $ref
        return schema["allOf"][0].get("$ref")  # type: ignore[no-any-return]
    return None


def test_paths_methods_and_operation_ids(reference: dict[str, Any], ours: dict[str, Any]) -> None:
    assert set(ours["paths"]) - set(reference["paths"]) == NEWER_PATHS
    assert set(reference["paths"]) <= set(ours["paths"])
    for path, methods in reference["paths"].items():
        assert set(ours["paths"][path]) == set(methods), path
        for method, op in methods.items():
            mine = ours["paths"][path][method]
            for key in ("operationId", "summary", "tags", "security", "x-speakeasy-name-override"):
                assert mine.get(key) == op.get(key), (path, key)
            assert _norm(mine.get("description", "")) == _norm(op.get("description", "")), path


def test_request_bodies(reference: dict[str, Any], ours: dict[str, Any]) -> None:
    for path, methods in reference["paths"].items():
        for method, op in methods.items():
            mine = ours["paths"][path][method]
            if "requestBody" not in op:
                assert "requestBody" not in mine, path
                continue
            assert mine["requestBody"]["required"] == op["requestBody"]["required"]
            theirs = {ct: _ref(c["schema"]) for ct, c in op["requestBody"]["content"].items()}
            assert {ct: _ref(c["schema"]) for ct, c in mine["requestBody"]["content"].items()} == theirs, path


def test_responses(reference: dict[str, Any], ours: dict[str, Any]) -> None:
    for path, methods in reference["paths"].items():
        for method, op in methods.items():
            mine = ours["paths"][path][method]["responses"]
            for code, response in op["responses"].items():
                assert code in mine, (path, code)
                schema = response["content"]["application/json"]["schema"]
                my_schema = mine[code]["content"]["application/json"]["schema"]
                assert _ref(my_schema) == _ref(schema), (path, code)
                assert my_schema.get("x-speakeasy-name-override") == schema.get("x-speakeasy-name-override")
                assert mine[code]["description"] == response["description"]
            extra = set(mine) - set(op["responses"])
            assert extra <= {"413", "415", "503"}, (path, extra)


def _check_schema(name: str, mine: dict[str, Any], theirs: dict[str, Any], partial: bool) -> None:
    props, their_props = mine.get("properties", {}), theirs.get("properties", {})
    if partial:
        assert list(their_props) == list(props)[: len(their_props)], name
    else:
        assert list(props) == list(their_props), name
        assert set(mine.get("required", [])) == set(theirs.get("required", [])), name
    for field, spec in their_props.items():
        field_schema = props[field]
        where = f"{name}.{field}"
        assert ("default" in field_schema) == ("default" in spec), where
        assert field_schema.get("default") == spec.get("default"), where
        for key in ("type", "format", "title"):
            if key in spec:
                assert field_schema.get(key) == spec[key], (where, key)
        if "description" in spec:
            assert _norm(field_schema.get("description", "")) == _norm(spec["description"]), where
        if "enum" in spec:
            assert set(field_schema["enum"]) - set(spec["enum"]) == NEWER_ENUM_VALUES.get((name, field), set()), where
        if (ref := _ref(spec)) is not None:
            assert _ref(field_schema) == ref, where
        if "items" in spec and _ref(spec["items"]):
            assert _ref(field_schema["items"]) == _ref(spec["items"]), where
        if isinstance(spec.get("additionalProperties"), dict):
            assert _ref(field_schema["additionalProperties"]) == _ref(spec["additionalProperties"]), where


def test_schemas_field_for_field(reference: dict[str, Any], ours: dict[str, Any]) -> None:
    mine = ours["components"]["schemas"]
    theirs = reference["components"]["schemas"]
    assert set(theirs) <= set(mine)
    for name, schema in theirs.items():
        _check_schema(name, mine[name], schema, partial=name in PARTIAL_SCHEMAS)
    assert set(mine) == set(theirs) | set(CUT_SCHEMAS)


@pytest.mark.parametrize("name", sorted(CUT_SCHEMAS))
def test_schemas_cut_from_the_reference(ours: dict[str, Any], name: str) -> None:
    props, required, defaults = CUT_SCHEMAS[name]
    schema = ours["components"]["schemas"][name]
    assert list(schema["properties"]) == props
    assert set(schema.get("required", [])) == set(required)
    assert {k: v["default"] for k, v in schema["properties"].items() if "default" in v} == defaults


def test_security_scheme(ours: dict[str, Any]) -> None:
    assert ours["components"]["securitySchemes"] == {"HTTPBearer": {"type": "http", "scheme": "bearer"}}
    assert ours["info"]["title"] == "Livepeer AI Runner"
    assert ours["openapi"] == "3.1.0"


async def test_docs_page_lists_every_route(make_client: ClientFactory, reference: dict[str, Any]) -> None:
    client = await make_client()
    resp = await client.get("/docs")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    html = await resp.text()
    assert "<script" not in html and "http://" not in html.replace('href="/openapi.json"', "")
    for path, methods in reference["paths"].items():
        assert f"<code>{path}</code>" in html
        for op in methods.values():
            assert op["operationId"] in html
    assert 'id="schema-TextToImageParams"' in html

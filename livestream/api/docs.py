"""`GET /docs`: the OpenAPI document rendered as one self-contained HTML page (no scripts, no CDN)."""

from __future__ import annotations

import json
from html import escape
from typing import Any

__all__ = ["render_docs"]

_CSS = """
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem 2rem;color:#1d1d1f}
h1{margin-bottom:0}h2{margin-top:2.5rem;border-bottom:1px solid #ddd}h3{margin:1.8rem 0 .3rem}
code{font:13px ui-monospace,monospace;background:#f4f4f6;padding:0 .25rem;border-radius:3px}
table{border-collapse:collapse;width:100%;margin:.4rem 0}td,th{border:1px solid #e3e3e8;padding:.3rem .5rem;
text-align:left;vertical-align:top}th{background:#f8f8fa}.m{display:inline-block;min-width:3.5rem;font-weight:600}
.get{color:#0a7d32}.post{color:#0b5cad}.req{color:#b00020;font-weight:600}nav a{margin-right:.6rem}
.small{color:#666;font-size:13px}
"""


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _type(schema: dict[str, Any]) -> str:
    if name := _ref_name(schema):
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    if "anyOf" in schema:
        return " | ".join(_type(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of {_type(schema['additionalProperties'])}"
    if "enum" in schema:
        return " | ".join(f"<code>{escape(json.dumps(v))}</code>" for v in schema["enum"])
    if schema.get("format") == "binary":
        return "file"
    return escape(str(kind))


def _fields(schema: dict[str, Any]) -> str:
    required = set(schema.get("required", []))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        default = f"<code>{escape(json.dumps(prop['default']))}</code>" if "default" in prop else ""
        req = '<span class="req">required</span>' if name in required else default
        rows.append(
            f"<tr><td><code>{escape(name)}</code></td><td>{_type(prop)}</td><td>{req}</td>"
            f"<td>{escape(prop.get('description', ''))}</td></tr>"
        )
    if not rows:
        return ""
    return "<table><tr><th>field</th><th>type</th><th>required / default</th><th>description</th></tr>" + "".join(rows) + "</table>"


def render_docs(spec: dict[str, Any]) -> str:
    schemas: dict[str, Any] = spec["components"]["schemas"]
    info = spec["info"]
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{escape(info['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(info['title'])}</h1><p>{escape(info.get('description', ''))} &middot; version "
        f"<code>{escape(str(info['version']))}</code> &middot; machine-readable: <a href=\"/openapi.json\">/openapi.json</a></p>",
        '<p class="small">Routes marked <b>auth</b> need <code>Authorization: Bearer TOKEN</code> when the server '
        "runs with a token. Errors are <code>{\"detail\": {\"msg\": \"...\"}}</code>; validation errors (422) are "
        '<code>{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}</code>.</p>',
        "<nav>",
    ]
    for path, methods in spec["paths"].items():
        for method in methods:
            out.append(f'<a href="#{escape(methods[method]["operationId"])}">{escape(path)}</a>')
    out.append("</nav><h2>Routes</h2>")
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            auth = " &middot; <b>auth</b>" if op.get("security") else ""
            out.append(
                f'<h3 id="{escape(op["operationId"])}"><span class="m {method}">{method.upper()}</span> '
                f"<code>{escape(path)}</code></h3>"
                f'<p><b>{escape(op.get("summary", ""))}</b>. {escape(op.get("description", ""))} '
                f'<span class="small">operationId <code>{escape(op["operationId"])}</code>{auth}</span></p>'
            )
            if body := op.get("requestBody"):
                for media, content in body["content"].items():
                    name = _ref_name(content["schema"]) or ""
                    out.append(f"<p>Request body <code>{escape(media)}</code>: {_type(content['schema'])}</p>")
                    out.append(_fields(schemas.get(name, {})))
            codes = ", ".join(
                f"<code>{escape(code)}</code> {escape(r['description'])}"
                + (f" ({_type(r['content']['application/json']['schema'])})" if "content" in r else "")
                for code, r in op["responses"].items()
            )
            out.append(f"<p>Responses: {codes}</p>")
    out.append("<h2>Schemas</h2>")
    for name, schema in schemas.items():
        out.append(f'<h3 id="schema-{escape(name)}">{escape(name)}</h3>')
        if desc := schema.get("description"):
            out.append(f"<p>{escape(desc)}</p>")
        out.append(_fields(schema))
    out.append("</body></html>")
    return "\n".join(out)

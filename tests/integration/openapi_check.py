"""
openapi_check.py — a small validator (stdlib only) for the subset of OpenAPI 3.0 schemas
docs/openapi.json uses: type (integer is not number's float, booleans are neither),
properties, required, additionalProperties (bool or schema), items, min/maxItems,
maxProperties, enum, nullable, oneOf, anyOf, allOf, $ref (#/components/...),
minimum/maximum, minLength/maxLength, pattern (unanchored, as JSON Schema); a path
parameter marked "x-rest-of-path": true matches the rest of the path, slashes included.

    validate(spec, schema, instance)               -> None or AssertionError("$.a[0].b: …")
    validate_response(spec, method, path_template, status, body_json,
                      content_type=None, headers=None)
    find_template(spec, concrete_path)             -> "/jobs/{job_id}" or None
"""
import re

__all__ = ["validate", "validate_response", "find_template", "resolve", "check_document"]


def resolve(spec, node):
    """Follow $ref chains (only local ones: #/components/...)."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise AssertionError(f"unsupported $ref {ref!r}")
        cur = spec
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(cur, dict) or part not in cur:
                raise AssertionError(f"unresolvable $ref {ref!r}")
            cur = cur[part]
        node = cur
        seen += 1
        if seen > 50:
            raise AssertionError(f"$ref loop at {ref!r}")
    return node


def _type_ok(t, v):
    if t == "object":
        return isinstance(v, dict)
    if t == "array":
        return isinstance(v, list)
    if t == "string":
        return isinstance(v, str)
    if t == "boolean":
        return isinstance(v, bool)
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    raise AssertionError(f"unsupported type {t!r} in schema")


def _tname(v):
    if v is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "array", dict: "object"}.get(type(v), type(v).__name__)


def _fail(path, msg):
    raise AssertionError(f"{path}: {msg}")


def validate(spec, schema, v, path="$"):
    """Raise AssertionError naming the JSON path of the first mismatch."""
    schema = resolve(spec, schema)
    if not isinstance(schema, dict):
        raise AssertionError(f"{path}: schema is not an object: {schema!r}")
    if v is None:
        # OpenAPI 3.0: null only where nullable (an untyped, unconstrained schema takes anything)
        constrained = any(k in schema for k in ("type", "properties", "items", "enum",
                                                "oneOf", "anyOf", "allOf"))
        if schema.get("nullable") or not constrained:
            return
        _fail(path, "null where the schema is not nullable")
    if "allOf" in schema:
        for sub in schema["allOf"]:
            validate(spec, sub, v, path)
    if "oneOf" in schema or "anyOf" in schema:
        alts = schema.get("oneOf") or schema.get("anyOf")
        errors, matched = [], 0
        for sub in alts:
            try:
                validate(spec, sub, v, path)
                matched += 1
            except AssertionError as e:
                errors.append(str(e))
        if matched == 0:
            _fail(path, "matches none of the alternatives: " + " | ".join(errors))
        if "oneOf" in schema and matched > 1:
            _fail(path, f"matches {matched} oneOf alternatives (must be exactly one)")
    t = schema.get("type")
    if t is not None and not _type_ok(t, v):
        _fail(path, f"expected {t}, got {_tname(v)} {v!r:.80}")
    if "enum" in schema and v not in schema["enum"]:
        _fail(path, f"{v!r:.80} is not one of {schema['enum']}")
    if isinstance(v, str):
        if "minLength" in schema and len(v) < schema["minLength"]:
            _fail(path, f"shorter than {schema['minLength']}")
        if "maxLength" in schema and len(v) > schema["maxLength"]:
            _fail(path, f"longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], v):
            _fail(path, f"{v!r:.80} does not match {schema['pattern']!r}")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if "minimum" in schema:
            if v < schema["minimum"] or (schema.get("exclusiveMinimum") and v == schema["minimum"]):
                _fail(path, f"{v} is below the minimum {schema['minimum']}")
        if "maximum" in schema:
            if v > schema["maximum"] or (schema.get("exclusiveMaximum") and v == schema["maximum"]):
                _fail(path, f"{v} is above the maximum {schema['maximum']}")
    if isinstance(v, list):
        if "minItems" in schema and len(v) < schema["minItems"]:
            _fail(path, f"fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(v) > schema["maxItems"]:
            _fail(path, f"more than {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(v):
                validate(spec, schema["items"], item, f"{path}[{i}]")
    if isinstance(v, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in v:
                _fail(path, f"missing required property {name!r}")
        if "maxProperties" in schema and len(v) > schema["maxProperties"]:
            _fail(path, f"more than {schema['maxProperties']} properties")
        extra = schema.get("additionalProperties", True)
        for name, val in v.items():
            sub = f"{path}.{name}" if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name) else f"{path}[{name!r}]"
            if name in props:
                validate(spec, props[name], val, sub)
            elif extra is False:
                _fail(sub, "property not allowed (additionalProperties is false)")
            elif isinstance(extra, dict):
                validate(spec, extra, val, sub)


def _template_regex(template, rest=()):
    """A parameter matches one segment, or (named in `rest`) the rest of the path, / and all."""
    parts = re.split(r"(\{[^/{}]+\})", template)
    return re.compile("^" + "".join((".+" if p[1:-1] in rest else "[^/]+") if p.startswith("{")
                                    else re.escape(p) for p in parts) + "$")


def _rest_params(spec, item):
    """Path parameters of a path item marked "x-rest-of-path": true (OpenAPI 3.0 has no
    multi-segment parameter: the document marks one that takes the rest of the path)."""
    params = list(item.get("parameters", []))
    for m, op in item.items():
        if m != "parameters" and isinstance(op, dict):
            params += op.get("parameters", [])
    return {resolve(spec, p)["name"] for p in params
            if resolve(spec, p).get("in") == "path" and resolve(spec, p).get("x-rest-of-path")}


def find_template(spec, path):
    """The paths key a concrete path (no query) falls under; literal segments win."""
    path = path.split("?", 1)[0]
    if path in spec["paths"]:
        return path
    hits = [t for t, item in spec["paths"].items()
            if _template_regex(t, _rest_params(spec, item)).match(path)]
    hits.sort(key=lambda t: t.count("{"))
    return hits[0] if hits else None


def _response_for(spec, method, path_template, status):
    item = spec["paths"].get(path_template)
    if item is None:
        raise AssertionError(f"{method} {path_template}: path not in the document")
    op = item.get(method.lower())
    if op is None:
        if status == 405:  # another method on a documented path: any operation's 405
            for m in ("get", "post", "put", "delete", "head", "patch"):
                if m in item and "405" in item[m]["responses"]:
                    return resolve(spec, item[m]["responses"]["405"])
        raise AssertionError(f"{method} {path_template}: method not documented (status {status})")
    resps = op["responses"]
    r = resps.get(str(status)) or resps.get(f"{str(status)[0]}XX") or resps.get("default")
    if r is None:
        raise AssertionError(f"{method} {path_template}: status {status} is not documented "
                             f"(documented: {sorted(resps)})")
    return resolve(spec, r)


def validate_response(spec, method, path_template, status, body_json, content_type=None,
                      headers=None):
    """Check one response against the document: the status is documented for the
    operation, the body matches the schema of its media type (JSON bodies; other media
    types are only checked to be documented), and required documented headers are there
    (when `headers`, a case-insensitive mapping, is given)."""
    resp = _response_for(spec, method, path_template, status)
    where = f"{method} {path_template} {status}"
    content = resp.get("content") or {}
    mt = (content_type or "application/json").split(";")[0].strip().lower()
    if content:
        if mt in content:
            media = content[mt]
        elif "*/*" in content:
            media = content["*/*"]
        elif method.upper() == "HEAD" or status == 304:
            media = None
        else:
            raise AssertionError(f"{where}: media type {mt} not documented ({sorted(content)})")
        if media is not None and mt == "application/json" and method.upper() != "HEAD":
            try:
                validate(spec, media.get("schema", {}), body_json)
            except AssertionError as e:
                raise AssertionError(f"{where}: {e}") from None
    if headers is not None:
        for name, h in (resp.get("headers") or {}).items():
            h = resolve(spec, h)
            if h.get("required") and headers.get(name) is None:
                raise AssertionError(f"{where}: header {name} missing")
            if headers.get(name) is not None and "schema" in h:
                val = headers.get(name)
                hs = resolve(spec, h["schema"])
                if hs.get("type") == "integer":
                    try:
                        val = int(val)
                    except ValueError:
                        raise AssertionError(f"{where}: header {name}: {val!r} is not an integer") from None
                try:
                    validate(spec, hs, val, f"header {name}")
                except AssertionError as e:
                    raise AssertionError(f"{where}: {e}") from None


def check_document(spec):
    """Structural checks: 3.0.x, every $ref resolves, every operation has responses."""
    assert str(spec.get("openapi", "")).startswith("3.0."), spec.get("openapi")
    assert "title" in spec.get("info", {}) and "version" in spec["info"]

    def walk(node, where):
        if isinstance(node, dict):
            if "$ref" in node:
                try:
                    resolve(spec, node)
                except AssertionError as e:
                    raise AssertionError(f"{where}: {e}") from None
            for k, v in node.items():
                walk(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}/{i}")
    walk(spec, "#")
    for path, item in spec["paths"].items():
        params = set(re.findall(r"\{([^}]+)\}", path))
        for m, op in item.items():
            if m == "parameters":
                continue
            assert op.get("responses"), f"{m.upper()} {path}: no responses"
            declared = {resolve(spec, p)["name"] for p in item.get("parameters", []) + op.get("parameters", [])
                        if resolve(spec, p)["in"] == "path"}
            assert declared == params, f"{m.upper()} {path}: path parameters {declared} != {params}"

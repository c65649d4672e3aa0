"""The HTTP API reference page of the documentation site, written from the service's own OpenAPI schema.

``python -m app.api.reference > docs/api.md`` writes it; a test fails when the page and the schema differ, so
the page cannot drift from the routes.
"""

from __future__ import annotations

from typing import Any

_HEADER = """# HTTP API

Every route of genserve's own API, with its parameters and answers, as the running service documents them at
`/docs` (interactive) and `/openapi.json`. This page is written from that schema by
`python -m app.api.reference`. The inference protocols (Open Inference Protocol v2, TensorFlow Serving REST and
gRPC) and OpenAI's completions API (`/openai/v1`) follow their own specifications: see
[Inference protocols](protocols.md). Errors answer `{"error": {"code", "message"}}`, the message naming the
field and the limit.
"""


def markdown(schema: dict[str, Any]) -> str:
    """The reference page for an OpenAPI `schema`: one section per route, in the schema's order."""
    sections = [_HEADER]
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            sections.append(_operation(method.upper(), path, operation))
    return "\n".join(sections)


def _operation(method: str, path: str, operation: dict[str, Any]) -> str:
    lines = [f"## `{method} {path}`", ""]
    description = (operation.get("description") or operation.get("summary") or "").strip()
    if description:
        lines += [_one_paragraph(description), ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | type | default | meaning |", "|---|---|---|---|---|"]
        lines += [_parameter_row(parameter) for parameter in parameters]
        lines.append("")
    body = operation.get("requestBody", {}).get("content", {})
    if body:
        lines += [f"Request body: {', '.join(f'`{media}`' for media in body)}.", ""]
    answers = []
    for status, response in operation.get("responses", {}).items():
        media = ", ".join(f"`{kind}`" for kind in response.get("content", {}))
        answers.append(f"{status}" + (f" ({media})" if media else ""))
    lines += [f"Answers: {'; '.join(answers)}.", ""]
    return "\n".join(lines)


def _parameter_row(parameter: dict[str, Any]) -> str:
    schema = parameter.get("schema", {})
    default = schema.get("default")
    cells = [
        f"`{parameter['name']}`" + (" (required)" if parameter.get("required") else ""),
        parameter.get("in", ""),
        _type(schema),
        "" if default is None else f"`{default}`",
        _one_paragraph(parameter.get("description") or schema.get("description") or ""),
    ]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _type(schema: dict[str, Any]) -> str:
    """A parameter's type in words: its JSON type, its choices, or the types a union allows."""
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    if "anyOf" in schema:
        kinds = [_type(option) for option in schema["anyOf"] if option.get("type") != "null"]
        return " or ".join(kind for kind in kinds if kind)
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    kind = str(schema.get("type", ""))
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    bounds = [
        f"≥ {schema['minimum']}" if "minimum" in schema else "",
        f"≤ {schema['maximum']}" if "maximum" in schema else "",
    ]
    bounds += [f"> {schema['exclusiveMinimum']}" if "exclusiveMinimum" in schema else ""]
    shown = ", ".join(bound for bound in bounds if bound)
    return kind + (f" ({shown})" if shown else "")


def _one_paragraph(text: str) -> str:
    return " ".join(text.split())


def main() -> None:
    from app.config import Settings
    from app.main import create_app

    print(markdown(create_app(Settings()).openapi()), end="")


if __name__ == "__main__":
    main()

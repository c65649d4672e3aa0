"""`parse_query`: a query string read into a model in one validation, with FastAPI's rules for parameters."""

from __future__ import annotations

import pytest
from fastapi import Request
from fastapi.exceptions import RequestValidationError

from app.api.openapi import parse_query, query_parameters
from app.api.schemas import GenerateFormat, GenerateQuery


def request(query: str) -> Request:
    return Request(
        {"type": "http", "method": "POST", "path": "/", "query_string": query.encode(), "headers": []}
    )


def test_values_are_read_from_strings_the_last_repeat_wins_and_lists_keep_every_value() -> None:
    parsed = parse_query(
        GenerateQuery, request("n=3&n=5&seed=7&format=npy&stream=true&stop=a&stop=%0A&other=1")
    )

    assert (parsed.n, parsed.seed, parsed.format, parsed.stream) == (5, 7, GenerateFormat.npy, True)
    assert parsed.stop == ["a", "\n"]
    assert parsed.model is None  # absent fields keep their defaults; unknown names are ignored


@pytest.mark.parametrize(
    ("query", "field"), [("n=many", "n"), ("truncation=x", "truncation"), ("format=gif", "format")]
)
def test_a_bad_value_is_a_validation_error_located_in_the_query(query: str, field: str) -> None:
    with pytest.raises(RequestValidationError) as raised:
        parse_query(GenerateQuery, request(query))

    [problem] = raised.value.errors()
    assert problem["loc"] == ("query", field)


def test_every_field_is_documented_as_an_optional_query_parameter() -> None:
    parameters = {parameter["name"]: parameter for parameter in query_parameters(GenerateQuery)}

    assert set(parameters) == set(GenerateQuery.model_fields)
    assert all(p["in"] == "query" and not p["required"] and p["description"] for p in parameters.values())
    assert parameters["format"]["schema"]["anyOf"][0] == {"$ref": "#/components/schemas/GenerateFormat"}

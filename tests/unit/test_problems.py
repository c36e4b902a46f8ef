"""The API's one table from domain error classes to problem+json answers (api/problems.py)."""

from __future__ import annotations

import inspect
import json

import pytest

from leadhook.api.console.views import CsrfRefused, error_status
from leadhook.api.problems import PROBLEMS, ProblemKind, problem_kind
from leadhook.domain import errors

# docs/api.md's table of problem types, as the domain errors answer them.
EXPECTED = {
    errors.LeadhookError: (500, "internal", "Internal error"),
    errors.ValidationError: (422, "validation", "Validation failed"),
    errors.BadRequestError: (400, "bad-request", "Bad request"),
    errors.BadJsonError: (400, "bad-json", "Bad request"),
    errors.UnsupportedMediaTypeError: (422, "unsupported-media-type", "Unsupported media type"),
    errors.UnauthorizedError: (401, "unauthorized", "Unauthorized"),
    errors.NotFoundError: (404, "not-found", "Not found"),
    errors.VersionMismatchError: (412, "version-mismatch", "Precondition failed"),
    errors.ConflictError: (409, "conflict", "Conflict"),
    errors.LeadVoidedError: (409, "lead-voided", "Lead is voided"),
    errors.ClaimRefusedError: (409, "claim-refused", "Claim refused"),
    errors.UnavailableError: (503, "unavailable", "Service unavailable"),
    errors.SecretKeyUnavailableError: (503, "unavailable", "Service unavailable"),
}

DOMAIN_ERRORS = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.LeadhookError) and cls.__module__ == errors.__name__
]


@pytest.mark.parametrize("cls", DOMAIN_ERRORS, ids=lambda c: c.__name__)
def test_every_domain_error_has_its_answer(cls: type[errors.LeadhookError]) -> None:
    assert cls in PROBLEMS, f"{cls.__name__} has no row in api/problems.py PROBLEMS"
    assert problem_kind(cls("x")) == ProblemKind(*EXPECTED[cls])


@pytest.mark.parametrize("cls", DOMAIN_ERRORS, ids=lambda c: c.__name__)
def test_domain_errors_know_nothing_of_http(cls: type[errors.LeadhookError]) -> None:
    for name in ("status", "title", "type_slug", "expected"):
        assert not hasattr(cls("x"), name), f"{cls.__name__}.{name} is HTTP's business"


def test_an_unlisted_subclass_answers_as_its_nearest_base() -> None:
    class Refused(errors.ClaimRefusedError):
        pass

    assert problem_kind(Refused("x")) == ProblemKind(409, "claim-refused", "Claim refused")
    assert problem_kind(CsrfRefused("x")) == ProblemKind(500, "internal", "Internal error")
    assert error_status(CsrfRefused("x")) == 403
    assert error_status(errors.NotFoundError("x")) == 404


def test_the_tree_in_the_docstring_names_every_domain_error() -> None:
    doc = errors.__doc__ or ""
    for cls in DOMAIN_ERRORS:
        assert f" {cls.__name__}: " in doc or doc.count(f"\n{cls.__name__}: "), cls.__name__


def test_the_answer_is_the_same_bytes_as_before() -> None:
    # The body the handler builds from a table row, as docs/api.md shows a 409.
    from leadhook.api.problems import problem

    kind = problem_kind(errors.LeadVoidedError("lead L1 is voided"))
    response = problem(kind.status, kind.title, "lead L1 is voided", kind.slug)
    assert response.status_code == 409
    assert json.loads(bytes(response.body)) == {
        "type": "https://leadhook.dev/problems/lead-voided",
        "title": "Lead is voided",
        "status": 409,
        "detail": "lead L1 is voided",
    }
    # Compact, as every answer of the API is (docs/api.md, "Answers").
    assert bytes(response.body).startswith(b'{"type":"https://leadhook.dev/problems/lead-voided",')
    assert b'", "' not in bytes(response.body) and b'": ' not in bytes(response.body)

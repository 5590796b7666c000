"""registry.errors: typed fields, builtin bases, one-line messages."""

from __future__ import annotations

import pytest

from registry.errors import (
    CatalogError,
    CheckpointError,
    DataNotFoundError,
    HubAuthError,
    HubEntryNotFoundError,
    HubError,
    RecipeError,
    RegistryError,
    UnknownMethodError,
)


def test_declared_fields_exist_even_when_not_given() -> None:
    # Fields used to be set only when passed, so `exc.repo_id` raised AttributeError on a bare error.
    assert HubError("down").repo_id is None and HubError("down").status is None
    assert CatalogError("x").entry_id is None
    assert CheckpointError("x").tensor is None
    assert DataNotFoundError("x").path is None and DataNotFoundError("x").task is None


def test_fields_are_typed_attributes_and_listed() -> None:
    exc = HubEntryNotFoundError("no file", repo_id="a/b", status=404, endpoint="http://h", path="config.json")
    assert (exc.repo_id, exc.status, exc.endpoint, exc.path, exc.revision) == (
        "a/b",
        404,
        "http://h",
        "config.json",
        None,
    )
    assert exc.fields == {"repo_id": "a/b", "status": 404, "endpoint": "http://h", "path": "config.json"}
    assert isinstance(exc, FileNotFoundError) and isinstance(exc, RegistryError)
    method = UnknownMethodError("bad", method="tie", valid=["ties", "linear"], field="merge_method")
    assert method.valid == ("ties", "linear") and method.field == "merge_method" and isinstance(method, ValueError)


def test_undeclared_keywords_still_accepted() -> None:
    exc = RecipeError("bad", path="r.yaml", line=3)
    assert exc.path == "r.yaml" and exc.fields["line"] == 3


@pytest.mark.parametrize("cls", [HubAuthError, CatalogError, RecipeError])
def test_message_is_the_string(cls: type[RegistryError]) -> None:
    assert str(cls("what failed; what to do")) == "what failed; what to do"

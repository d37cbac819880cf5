"""Parameters for agents: one line naming the field for every mistake, CLI pairs typed by the model."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from amas.agent_tasks import (
    InvalidParameters,
    describe_validation_error,
    is_transient,
    one_line_error,
    parse_param_pairs,
    validate_params,
)
from amas.errors import ServiceUnavailable
from amas.registry import AgentInputError, UnknownAgent, get_agent, load_agents

pytestmark = pytest.mark.unit


def test_all_six_agents_and_the_inventory_are_registered_with_typed_models() -> None:
    agents = load_agents()
    assert set(agents) == {"data_analysis", "forensics", "code_analysis", "pii_classifier", "web_audit", "report",
                           "store_inventory"}
    for name, agent in agents.items():
        assert agent.name == name and agent.description
        assert agent.Input.model_json_schema()["properties"], f"{name} has no parameters to show in a form"
        assert "summary" in agent.Output.model_fields and "findings" in agent.Output.model_fields
        for field_name, info in agent.Input.model_fields.items():
            assert info.description, f"{name}.{field_name} has no description for the UI form"


def test_unknown_agent_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownAgent, match="unknown agent 'forensic'; valid agents: code_analysis, data_analysis"):
        get_agent("forensic")


def test_cli_pairs_follow_the_field_types() -> None:
    inventory = get_agent("store_inventory")
    assert parse_param_pairs(inventory, ["include_storage=false", "max_objects=25"]) == {
        "include_storage": False, "max_objects": 25}
    forensics = get_agent("forensics")
    # A list field collects repeated names; a text field keeps what was typed, even if it looks like JSON.
    assert parse_param_pairs(forensics, ["paths=a.bin", "paths=dir/b", "case_ref=123"]) == {
        "paths": ["a.bin", "dir/b"], "case_ref": "123"}
    assert parse_param_pairs(forensics, ['paths=["x", "y"]'])["paths"] == ["x", "y"]


@pytest.mark.parametrize(("pairs", "message"), [
    (["max_objects"], "--param 'max_objects' is not key=value"),
    (["=3"], "--param '=3' is not key=value"),
    (["max_object=3"], "unknown parameter 'max_object'; valid: include_storage, max_objects"),
])
def test_bad_pairs_are_refused_naming_the_key(pairs: list[str], message: str) -> None:
    with pytest.raises(InvalidParameters, match=message.replace("[", r"\[")):
        parse_param_pairs(get_agent("store_inventory"), pairs)


def test_invalid_values_name_each_field_and_what_was_given() -> None:
    inventory = get_agent("store_inventory")
    with pytest.raises(InvalidParameters) as caught:
        validate_params(inventory, {"max_objects": 0, "include_storage": "perhaps"})
    message = str(caught.value)
    assert message.startswith("agent store_inventory: ")
    assert "max_objects: Input should be greater than or equal to 1 (got 0)" in message
    assert "include_storage: Input should be a valid boolean" in message and "'perhaps'" in message
    assert "\n" not in message


def test_unknown_fields_are_refused_not_ignored() -> None:
    with pytest.raises(InvalidParameters, match="unknown parameter\\(s\\) colour; valid: include_storage, max_objects"):
        validate_params(get_agent("store_inventory"), {"colour": "red"})


def test_long_inputs_are_shortened_in_the_message() -> None:
    agent = get_agent("store_inventory")
    try:
        agent.Input.model_validate({"max_objects": "x" * 500})
    except ValidationError as exc:
        message = describe_validation_error("store_inventory", exc)
    assert len(message) < 200 and message.endswith("…)")


@pytest.mark.parametrize(("exc", "transient"), [
    (ServiceUnavailable("store unreachable"), True),
    (ConnectionRefusedError("refused"), True),
    (TimeoutError("slow"), True),
    (AgentInputError("path: no such file"), False),
    (InvalidParameters("bad"), False),
    (ValueError("a bug"), False),
])
def test_only_service_trouble_is_retried(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_errors_become_one_line() -> None:
    assert one_line_error(ValueError("two\nlines  here")) == "ValueError: two lines here"
    assert one_line_error(AgentInputError("path: missing")) == "path: missing"

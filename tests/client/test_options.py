"""Job options: what is accepted, and what is refused at once."""

from __future__ import annotations

import re

import pytest

from cwtx.client.options import JobOptions


def test_resources_may_be_given_as_a_dict():
    assert JobOptions().replace(resources={"gpu": 1}).resources == '{"gpu":1}'
    assert JobOptions().replace(resources=None).resources == "{}"
    assert JobOptions().replace(resources={"mem": "16G"}).resources == '{"mem":17179869184}'
    assert JobOptions().replace(resources='{"gpu": 2}').resources == '{"gpu":2}'


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"gpu": -1}, "resources: gpu: -1 must be a finite amount, 0 or more"),
        ({"gpu": "lots"}, "resources: gpu: 'lots' is not an amount"),
        ({"": 1}, "'' is not a resource name"),
        ([1], "resources must be a mapping of names to amounts"),
    ],
)
def test_bad_resources_fail_at_the_call(bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        JobOptions().replace(resources=bad)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"timeout": float("inf")}, "timeout must be a positive number"),
        ({"timeout": "10"}, "timeout must be a positive number"),
        ({"max_retries": -1}, "max_retries must be an int >= 0"),
        ({"max_retries": 1.5}, "max_retries must be an int >= 0"),
        ({"priority": 1.5}, "priority must be an int"),
    ],
)
def test_bad_options_say_what_is_wrong(change, complaint):
    with pytest.raises(ValueError, match=complaint):
        JobOptions().replace(**change)


def test_an_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="unknown job option 'colour'"):
        JobOptions().replace(colour="red")

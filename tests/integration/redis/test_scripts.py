"""The delayed-set member format: written by Python, split by Lua on the server."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskorbit.transports.redis.scripts import LUA_HELPERS, decode_member, encode_member

pytestmark = pytest.mark.integration

fields_strategy = st.lists(st.binary(max_size=64), min_size=2, max_size=8).filter(
    lambda f: len(f) % 2 == 0
)

# Splits a member with the Lua function the mover itself uses.
SPLIT = LUA_HELPERS + "return fields_of(ARGV[1])"


@given(fields=fields_strategy)
def test_members_round_trip_in_python(fields: list[bytes]) -> None:
    assert decode_member(encode_member(fields)) == fields


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=fields_strategy)
def test_lua_splits_members_into_the_fields_python_wrote(
    raw_redis: Any, fields: list[bytes]
) -> None:
    assert raw_redis.eval(SPLIT, 0, encode_member(fields)) == fields


def test_equal_fields_make_distinct_members() -> None:
    assert encode_member(["topic", "t"]) != encode_member(["topic", "t"])


# Builds a member with the Lua function that hands malformed entries back as stored.
JOIN = LUA_HELPERS + "return member_of(ARGV[1], {unpack(ARGV, 2)})"
NONCE = b"0123456789abcdef"


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=fields_strategy)
def test_lua_builds_members_that_python_splits_into_the_same_fields(
    raw_redis: Any, fields: list[bytes]
) -> None:
    member = raw_redis.eval(JOIN, 0, NONCE, *fields)
    assert member.startswith(NONCE)
    assert decode_member(member) == fields


@pytest.mark.parametrize(
    "member",
    [b"short", NONCE, NONCE + b"x:abc", NONCE + b"5:ab", NONCE + b"-1:a", NONCE + b"1:a"],
    ids=["shorter-than-a-nonce", "no-fields", "no-length", "too-long", "negative", "odd"],
)
def test_lua_finds_no_fields_in_a_member_taskorbit_did_not_write(
    raw_redis: Any, member: bytes
) -> None:
    assert raw_redis.eval(LUA_HELPERS + "return fields_of(ARGV[1]) or 'none'", 0, member) == b"none"

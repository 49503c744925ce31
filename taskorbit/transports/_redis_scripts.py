"""The Lua scripts of the Redis Streams transport.

Each script is one atomic step on the server: Redis runs a script to the end before
any other command, so a worker that dies between two Python calls can never leave a
message half-moved. Scripts do not roll back on error, so every script checks first
and writes the copy before it removes the original.

Delayed messages are kept in a sorted set (score: due time, epoch seconds). A member
is a 16-character nonce (two equal messages with equal due times stay two members)
followed by the entry's fields as ``<length>:<bytes>`` pairs, which Lua can split
without a decoder (Redis 7.0's cmsgpack cannot read msgpack's binary type).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

Field = bytes | str


def encode_member(fields: Sequence[Field]) -> bytes:
    """One delayed-set member: nonce + length-prefixed fields.

    >>> encode_member(["topic", b"a.b"])[16:]
    b'5:topic3:a.b'
    """
    parts = [os.urandom(8).hex().encode()]
    for value in fields:
        raw = value.encode() if isinstance(value, str) else value
        parts.append(b"%d:%s" % (len(raw), raw))
    return b"".join(parts)


def decode_member(member: bytes) -> list[bytes]:
    """The fields of a delayed-set member (the inverse of :func:`encode_member`)."""
    fields, pos = [], 16
    while pos < len(member):
        colon = member.index(b":", pos)
        size = int(member[pos:colon])
        fields.append(member[colon + 1 : colon + 1 + size])
        pos = colon + 1 + size
    return fields


# Shared Lua helpers, prepended to the scripts that need them.
LUA_HELPERS = """
local function fields_of(member)
  local out, pos = {}, 17
  while pos <= #member do
    local colon = string.find(member, ':', pos, true)
    local size = tonumber(string.sub(member, pos, colon - 1))
    out[#out + 1] = string.sub(member, colon + 1, colon + size)
    pos = colon + size + 1
  end
  return out
end

-- trim: '' (none), 'MAXLEN <n>' or 'MINID <id>'; always approximate (~), which
-- drops whole stream nodes only and costs next to nothing.
local function xadd(stream, trim, fields)
  if trim ~= '' then
    local kind, arg = string.match(trim, '(%u+) (.+)')
    return redis.call('XADD', stream, kind, '~', arg, '*', unpack(fields))
  end
  return redis.call('XADD', stream, '*', unpack(fields))
end

local function is_pending(stream, group, id)
  return #redis.call('XPENDING', stream, group, id, id, 1) > 0
end
"""

# KEYS: stream. ARGV: trim (see xadd), then per entry its field count followed by
# its fields. One EVALSHA for a whole batch costs the client far less than a
# pipeline of XADDs (redis-py packs and parses every command separately) and adds
# the batch atomically. Returns the entry ids in order.
PUBLISH = (
    LUA_HELPERS
    + """
local ids, i = {}, 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  ids[#ids + 1] = xadd(KEYS[1], ARGV[1], {unpack(ARGV, i + 1, i + n)})
  i = i + n + 1
end
return ids
"""
)

# KEYS: stream. ARGV: trim (see xadd), topic, then one body per entry. The common
# batch (one topic, bodies only, as ``publish_many`` sends) in one argument per
# entry instead of five: redis-py packs every argument in Python and Lua handles each
# one, so this cuts the producer's and the server's time per entry by more than half,
# time that workers on the same cores get back. Returns the entry ids in order.
PUBLISH_BODIES = (
    LUA_HELPERS
    + """
local ids, key, trim, topic = {}, KEYS[1], ARGV[1], ARGV[2]
if trim == '' then
  for i = 3, #ARGV do
    ids[i - 2] = redis.call('XADD', key, '*', 'topic', topic, 'body', ARGV[i])
  end
else
  for i = 3, #ARGV do
    ids[i - 2] = xadd(key, trim, {'topic', topic, 'body', ARGV[i]})
  end
end
return ids
"""
)

# KEYS: delayed set, stream. ARGV: now (epoch s), limit, trim (see xadd).
# Moves due members into the stream; returns {moved, next due score or false}.
MOVE_DUE = (
    LUA_HELPERS
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  xadd(KEYS[2], ARGV[3], fields_of(member))
  redis.call('ZREM', KEYS[1], member)
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, next_due[2] or false}
"""
)

# KEYS: stream, delayed set. ARGV: group, delete acked ('1'/'0'), trim, then
# triples (entry id, due score or '' for now, member). Entries no longer pending
# (acked by a consumer that claimed them after our lease ran out) are skipped, so a
# late nack never duplicates a message. Returns how many were put back.
REQUEUE = (
    LUA_HELPERS
    + """
local done = 0
for i = 4, #ARGV, 3 do
  local id, due, member = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if is_pending(KEYS[1], ARGV[1], id) then
    if due == '' then
      xadd(KEYS[1], ARGV[3], fields_of(member))
    else
      redis.call('ZADD', KEYS[2], due, member)
    end
    redis.call('XACK', KEYS[1], ARGV[1], id)
    if ARGV[2] == '1' then redis.call('XDEL', KEYS[1], id) end
    done = done + 1
  end
end
return done
"""
)

# KEYS: stream, dead-letter stream. ARGV: group, delete acked, entry id, then the
# dead-letter entry's fields. Copies first, removes the original second.
DEAD_LETTER = (
    LUA_HELPERS
    + """
if not is_pending(KEYS[1], ARGV[1], ARGV[3]) then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if ARGV[2] == '1' then redis.call('XDEL', KEYS[1], ARGV[3]) end
return 1
"""
)

# KEYS: stream. ARGV: group, delete acked ('1'/'0'), entry ids. One EVALSHA instead
# of an XACK + XDEL pipeline: a single command costs the client much less to send
# and parse. Returns how many entries were still pending.
ACK = """
local ids = {unpack(ARGV, 3)}
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
if ARGV[2] == '1' then redis.call('XDEL', KEYS[1], unpack(ids)) end
return acked
"""

# KEYS: stream. ARGV: group, consumer, min idle ms, cursor, count.
# XAUTOCLAIM plus each claimed entry's delivery count (which XAUTOCLAIM has just
# raised), so the attempt number survives crashes. Returns {cursor, entries, counts}.
CLAIM_IDLE = """
local res = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local counts = {}
for i, entry in ipairs(res[2]) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
  counts[i] = p[1] and p[1][4] or 1
end
return {res[1], res[2], counts}
"""

# KEYS: stream. ARGV: group, consumer, entry ids. Resets the idle time of the entries
# this consumer still owns (XCLAIM JUSTID does not raise the delivery count). An entry
# that another consumer claimed after our lease ran out stays with it.
EXTEND = """
local mine = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then mine[#mine + 1] = ARGV[i] end
end
if #mine == 0 then return 0 end
mine[#mine + 1] = 'JUSTID'
return #redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(mine))
"""

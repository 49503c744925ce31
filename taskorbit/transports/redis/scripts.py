"""The Lua scripts of the Redis Streams transport.

Each script is one atomic step on the server: Redis runs a script to the end before
any other command, so a worker that dies between two Python calls can never leave a
message half-moved. Scripts do not roll back on error, so every script checks first
and writes the copy before it removes the original.

The keys of one consumer group (see ``redis_streams``): the shared stream and
delayed set, which every group reads, and the group's own retry stream and delayed
set, which only it reads. Scripts that settle an entry take both streams as KEYS and
are told per entry which one it is in, so that a batch is still one call.

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
    parts = [new_nonce()]
    for value in fields:
        raw = value.encode() if isinstance(value, str) else value
        parts.append(b"%d:%s" % (len(raw), raw))
    return b"".join(parts)


def new_nonce() -> bytes:
    """The 16 characters that start a delayed-set member."""
    return os.urandom(8).hex().encode()


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
-- The fields of a delayed-set member, or nil when it is not in the
-- length-prefixed format (written by something other than taskorbit).
local function fields_of(member)
  local out, pos = {}, 17
  while pos <= #member do
    local colon = string.find(member, ':', pos, true)
    local size = colon and tonumber(string.sub(member, pos, colon - 1))
    if not size or size < 0 or colon + size > #member then return nil end
    out[#out + 1] = string.sub(member, colon + 1, colon + size)
    pos = colon + size + 1
  end
  if #out == 0 or #out % 2 == 1 then return nil end
  return out
end

-- A delayed-set member for fields (the Lua twin of encode_member).
local function member_of(nonce, fields)
  local parts = {nonce}
  for i = 1, #fields do parts[#parts + 1] = #fields[i] .. ':' .. fields[i] end
  return table.concat(parts)
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

-- The fields of entry id as stored, without dlq-* fields, with an 'id' field (the
-- entry id) when it had none; nil when the entry is gone (trimmed or deleted).
local function raw_fields(stream, id)
  local found = redis.call('XRANGE', stream, id, id)
  if #found == 0 then return nil end
  local stored, out, has_id = found[1][2], {}, false
  for i = 1, #stored, 2 do
    if string.sub(stored[i], 1, 4) ~= 'dlq-' then
      has_id = has_id or stored[i] == 'id'
      out[#out + 1] = stored[i]
      out[#out + 1] = stored[i + 1]
    end
  end
  if not has_id then
    out[#out + 1] = 'id'
    out[#out + 1] = id
  end
  return out
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

# KEYS: shared delayed set, shared stream, group's delayed set, group's retry
# stream. ARGV: now (epoch s), limit per set, trim (see xadd; the shared stream only).
# Moves due members of each set into its stream: published ETAs into the stream
# every group reads, the group's own hand-backs into its retry stream (never
# trimmed: only this group reads it and deletes what it acks). Each member is added
# before it is removed. A member that is not in taskorbit's format is added as one
# 'unreadable' field, so that it is received as malformed and dead-lettered with its
# bytes instead of failing every move after it. Returns {most moved from one set,
# next due score of either set or false}.
MOVE_DUE = (
    LUA_HELPERS
    + """
local function move(set, stream, trim)
  local due = redis.call('ZRANGEBYSCORE', set, '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
  for _, member in ipairs(due) do
    xadd(stream, trim, fields_of(member) or {'unreadable', member})
    redis.call('ZREM', set, member)
  end
  return #due
end
local moved = math.max(move(KEYS[1], KEYS[2], ARGV[3]), move(KEYS[3], KEYS[4], ''))
local next_due = false
for _, set in ipairs({KEYS[1], KEYS[3]}) do
  local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if first[2] and (not next_due or tonumber(first[2]) < tonumber(next_due)) then
    next_due = first[2]
  end
end
return {moved, next_due}
"""
)

# KEYS: shared stream, group's retry stream, group's delayed set. ARGV: group,
# delete acked from the shared stream ('1'/'0'), then quadruples (where: 's' shared
# or 'r' retry stream, entry id, due score or '' for now, member). A hand-back goes
# to this group's retry stream (due now) or delayed set, never to the shared stream,
# so no other group sees it again. A member of 16 characters is a bare nonce: the
# message was malformed, and the entry is copied as stored (raw_fields) instead of
# from fields Python rebuilt. Entries no longer pending (acked by a consumer that
# claimed them after our lease ran out) are skipped, so a late nack never
# duplicates a message. The copy is written before the original is acked.
# Returns {how many were put back, ids of malformed entries that were gone}.
REQUEUE = (
    LUA_HELPERS
    + """
local done, lost = 0, {}
for i = 3, #ARGV, 4 do
  local where, id, due, member = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local source = where == 'r' and KEYS[2] or KEYS[1]
  if is_pending(source, ARGV[1], id) then
    local raw = #member == 16
    local fields
    if raw then fields = raw_fields(source, id) else fields = fields_of(member) end
    if not fields then
      lost[#lost + 1] = id
    elseif due == '' then
      xadd(KEYS[2], '', fields)
    else
      if raw then member = member_of(member, fields) end
      redis.call('ZADD', KEYS[3], due, member)
    end
    redis.call('XACK', source, ARGV[1], id)
    if where == 'r' or ARGV[2] == '1' then redis.call('XDEL', source, id) end
    done = done + 1
  end
end
return {done, lost}
"""
)

# KEYS: the stream the entry is in, dead-letter stream. ARGV: group, delete the
# original ('1'/'0'), entry id, mode, then fields. Modes: 'copy' writes the fields
# given (a message Python could read); 'raw' writes the entry's fields as stored
# (raw_fields: a malformed message keeps what was received) followed by the fields
# given (dlq-*); 'gone' writes only the fields given, for an entry trimmed while
# pending, which XAUTOCLAIM has already taken off the pending list. Except for
# 'gone', the entry must still be pending, so a late dead letter of an entry
# another consumer settled adds nothing. Copies first, removes the original second.
# Returns 1 when a dead letter was written.
DEAD_LETTER = (
    LUA_HELPERS
    + """
local mode, id = ARGV[4], ARGV[3]
if mode ~= 'gone' and not is_pending(KEYS[1], ARGV[1], id) then return 0 end
local fields = {}
if mode == 'raw' then fields = raw_fields(KEYS[1], id) or {'id', id} end
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], '*', unpack(fields))
if mode ~= 'gone' then
  redis.call('XACK', KEYS[1], ARGV[1], id)
  if ARGV[2] == '1' then redis.call('XDEL', KEYS[1], id) end
end
return 1
"""
)

# KEYS: shared stream, group's retry stream. ARGV: group, delete acked from the
# shared stream ('1'/'0'), how many ids are in the shared stream, those ids, then
# the retry stream's ids. One EVALSHA instead of an XACK + XDEL pipeline: a single
# command costs the client much less to send and parse. Retry entries are always
# deleted (no other group reads that stream). Returns how many were still pending.
ACK = """
local n = tonumber(ARGV[3])
local acked = 0
if n > 0 then
  local ids = {unpack(ARGV, 4, 3 + n)}
  acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
  if ARGV[2] == '1' then redis.call('XDEL', KEYS[1], unpack(ids)) end
end
if #ARGV > 3 + n then
  local ids = {unpack(ARGV, 4 + n)}
  acked = acked + redis.call('XACK', KEYS[2], ARGV[1], unpack(ids))
  redis.call('XDEL', KEYS[2], unpack(ids))
end
return acked
"""

# KEYS: shared stream, group's retry stream. ARGV: group, consumer, min idle ms,
# cursor in the shared stream, cursor in the retry stream, count.
# XAUTOCLAIM on both streams, at most count entries in all, plus each claimed
# entry's delivery count (which XAUTOCLAIM has just raised), so the attempt number
# survives crashes, plus the ids XAUTOCLAIM dropped from the pending list because
# the entry was gone (trimmed by MAXLEN/MINID while pending; Redis 7 reports them),
# so that they are reported instead of vanishing without a word.
# Returns {cursor, entries, counts, gone} for the shared stream, then the same for
# the retry stream.
CLAIM_IDLE = """
local function claim(stream, cursor, count)
  local res = redis.call('XAUTOCLAIM', stream, ARGV[1], ARGV[2], ARGV[3], cursor, 'COUNT', count)
  local entries, counts = {}, {}
  for _, entry in ipairs(res[2]) do
    if type(entry) == 'table' and entry[2] then
      local p = redis.call('XPENDING', stream, ARGV[1], entry[1], entry[1], 1)
      entries[#entries + 1] = entry
      counts[#counts + 1] = p[1] and p[1][4] or 1
    end
  end
  return {res[1], entries, counts, res[3] or {}}
end
local budget = tonumber(ARGV[6])
local shared = claim(KEYS[1], ARGV[4], budget)
budget = budget - #shared[2] - #shared[4]
local retry = {ARGV[5], {}, {}, {}}
if budget > 0 then retry = claim(KEYS[2], ARGV[5], budget) end
return {shared[1], shared[2], shared[3], shared[4], retry[1], retry[2], retry[3], retry[4]}
"""

# KEYS: shared stream, group's retry stream. ARGV: group, consumer, how many ids are
# in the shared stream, those ids, then the retry stream's ids. Resets the idle time
# of the entries this consumer still owns (XCLAIM JUSTID does not raise the delivery
# count). An entry that another consumer claimed after our lease ran out stays with
# it. Returns the ids extended, of both streams.
EXTEND = """
local out = {}
local function extend(stream, first, last)
  local mine = {}
  for i = first, last do
    local p = redis.call('XPENDING', stream, ARGV[1], ARGV[i], ARGV[i], 1)
    if p[1] and p[1][2] == ARGV[2] then mine[#mine + 1] = ARGV[i] end
  end
  if #mine == 0 then return end
  mine[#mine + 1] = 'JUSTID'
  for _, id in ipairs(redis.call('XCLAIM', stream, ARGV[1], ARGV[2], 0, unpack(mine))) do
    out[#out + 1] = id
  end
end
local n = tonumber(ARGV[3])
extend(KEYS[1], 4, 3 + n)
extend(KEYS[2], 4 + n, #ARGV)
return out
"""

# KEYS: dead-letter stream, then the stream each letter goes back to (the retry
# stream of the group that dead-lettered it, or the shared stream). ARGV: the
# redriven-from attribute's name, then per target key a triple (dead-letter entry id,
# trim: see xadd, '' for a retry stream; the letter's message id).
# Copies each entry as stored, without its dlq-* fields, its attempt (a redriven
# message starts over) and its id (the copy is a new message, whose id is its new
# entry id), with the letter's message id added to its attrs under the redriven-from
# name; then deletes it from the dead-letter stream: copy first, delete second.
# Attrs that are not a JSON object (a malformed entry) go back as they were. An
# entry with an empty or no topic and body (the report of an entry trimmed before it
# was acked) has nothing to redrive and stays. Returns (dead-letter entry id, new
# entry id) pairs, flat, for the entries redriven.
REDRIVE = (
    LUA_HELPERS
    + """
local function linked(attrs, from)
  if ARGV[1] == '' then return attrs end
  local ok, decoded = true, {}
  if attrs then ok, decoded = pcall(cjson.decode, attrs) end
  if not ok or type(decoded) ~= 'table' or decoded[1] ~= nil then return attrs end
  decoded[ARGV[1]] = from
  return cjson.encode(decoded)
end
local done = {}
for k = 2, #KEYS do
  local id, trim, from, target = ARGV[3 * k - 4], ARGV[3 * k - 3], ARGV[3 * k - 2], KEYS[k]
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if #found > 0 then
    local stored, fields, content, attrs = found[1][2], {}, false, nil
    for j = 1, #stored, 2 do
      local name = stored[j]
      if name == 'attrs' then
        attrs = stored[j + 1]
      elseif string.sub(name, 1, 4) ~= 'dlq-' and name ~= 'attempt' and name ~= 'id' then
        content = content or ((name == 'topic' or name == 'body') and #stored[j + 1] > 0)
        fields[#fields + 1] = name
        fields[#fields + 1] = stored[j + 1]
      end
    end
    if content then
      attrs = linked(attrs, from)
      if attrs then
        fields[#fields + 1] = 'attrs'
        fields[#fields + 1] = attrs
      end
      local new_id = xadd(target, trim, fields)
      redis.call('XDEL', KEYS[1], id)
      done[#done + 1] = id
      done[#done + 1] = new_id
    end
  end
end
return done
"""
)

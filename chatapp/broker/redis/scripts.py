"""The Redis broker's Lua scripts: every step that must be atomic is one script.

Each touches the keys of one session, or of one owner, so each runs on one slot of a
Redis Cluster. The layout of those keys is described in :mod:`chatapp.broker.redis`. No script
builds an event: payloads come from :mod:`chatapp.events`, already encoded, as arguments.
"""

from __future__ import annotations

__all__ = ["APPEND", "BEGIN", "FINISH", "HOLD_STREAM", "INTERRUPT", "RELEASE", "RENEW", "RENEW_STREAM", "TAKEOVER"]

# A running turn is held by a lease: the token of its producer, in ``meta.lease`` and as
# the value of the ``alive`` key, which expires unless the producer renews it. Every
# write that only the producer may make checks the token (a fence), so a producer that
# was only paused, and whose turn another worker took over meanwhile, changes nothing.

# Open a turn: refuse when one runs or the history is full (in messages, or in bytes of
# stored JSON, ARGV[6]); store the user's message and the history's size; trim the log to
# the previous turn; remember where the new turn starts. Answers {after, owner,
# history...} so the producer needs no second round trip.
BEGIN = """
local meta, messages, events = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', meta) == 0 then return 'missing' end
if redis.call('HGET', meta, 'turn') ~= '' then return 'conflict' end
local limit = tonumber(ARGV[5])
if limit > 0 and redis.call('LLEN', messages) + 2 > limit then return 'full' end
local size = string.len(ARGV[1])
for _, message in ipairs(redis.call('LRANGE', messages, 0, -1)) do size = size + string.len(message) end
local max_bytes = tonumber(ARGV[6])
if max_bytes > 0 and size > max_bytes then return 'too_large' end
redis.call('HSET', meta, 'bytes', size)
local prev = redis.call('HGET', meta, 'after') or '0-0'
local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
local after = '0-0'
if #last > 0 then after = last[1][1] end
if prev ~= '0-0' then
  local first = redis.call('XRANGE', events, '(' .. prev, '+', 'COUNT', 1)
  if #first > 0 then redis.call('XTRIM', events, 'MINID', first[1][1]) end
end
redis.call('RPUSH', messages, ARGV[1])
redis.call('HSET', meta, 'turn', ARGV[2], 'prev', prev, 'after', after, 'lease', ARGV[7], 'takeovers', 0)
redis.call('DEL', KEYS[5])
redis.call('SET', KEYS[4], ARGV[7], 'PX', ARGV[4])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
local reply = {after, redis.call('HGET', meta, 'owner')}
for _, message in ipairs(redis.call('LRANGE', messages, 0, -1)) do reply[#reply + 1] = message end
return reply
"""

# (Scripts that wake readers are told how: PUBLISH, or SPUBLISH on a cluster, whose
# sharded channel lives in the session's slot like its keys.)

# Close the turn: only the producer that owns it may; append the reply and the closing
# entry in the same step, so a reader that sees `end` can post its next message at once.
FINISH = """
local meta, messages, events = KEYS[1], KEYS[2], KEYS[3]
if redis.call('HGET', meta, 'turn') ~= ARGV[1] then return 0 end
if redis.call('HGET', meta, 'lease') ~= ARGV[6] then return 0 end
if ARGV[2] ~= '' then
  redis.call('RPUSH', messages, ARGV[2])
  redis.call('HINCRBY', meta, 'bytes', string.len(ARGV[2]))
end
local fields = cjson.decode(ARGV[4])
redis.call('XADD', events, ARGV[3], unpack(fields))
redis.call('HSET', meta, 'turn', '')
redis.call('DEL', KEYS[4], KEYS[5])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
redis.call(ARGV[7], KEYS[6], 'e')
return 1
"""

# The producer's beat: keep its lease alive. A lease that lapsed unclaimed is taken
# back; one that another worker claimed is lost (0), and the producer must stop.
RENEW = """
local meta, alive = KEYS[1], KEYS[2]
local holder = redis.call('GET', alive)
if holder == ARGV[1] then
  redis.call('PEXPIRE', alive, ARGV[2])
  return 1
end
if holder == false and redis.call('HGET', meta, 'lease') == ARGV[1] and redis.call('HGET', meta, 'turn') ~= '' then
  redis.call('SET', alive, ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# Give a lease up at once (a worker stopping), so the sweep of another claims the turn now.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""

# Claim a turn whose lease lapsed, at most ARGV[3] times per turn. Answers 0 when the
# turn ended or is held, -1 when it was taken over too often (end it instead), else
# {last event id, the turn's first id, owner, history...} for the new producer.
TAKEOVER = """
local meta, messages, events, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('HGET', meta, 'turn') ~= ARGV[1] then return 0 end
if redis.call('EXISTS', alive) == 1 then return 0 end
if redis.call('HINCRBY', meta, 'takeovers', 1) > tonumber(ARGV[3]) then return -1 end
redis.call('HSET', meta, 'lease', ARGV[2])
redis.call('SET', alive, ARGV[2], 'PX', ARGV[4])
local after = redis.call('HGET', meta, 'after')
local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
local top = after
if #last > 0 then top = last[1][1] end
local reply = {top, after, redis.call('HGET', meta, 'owner')}
for _, message in ipairs(redis.call('LRANGE', messages, 0, -1)) do reply[#reply + 1] = message end
return reply
"""

# A reader found the producer gone: end the turn once, with ids after the last entry.
# ARGV: the turn's reply id, the partial reply as a history message ('' for none), the
# closing entry's fields as a JSON array, its event count, and the publish command.
INTERRUPT = """
local meta, messages, events = KEYS[1], KEYS[2], KEYS[3]
local turn = redis.call('HGET', meta, 'turn')
if turn == false or turn == '' or turn ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = 0
local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
if #last > 0 then
  local lms, lseq = string.match(last[1][1], '(%d+)-(%d+)')
  lms, lseq = tonumber(lms), tonumber(lseq)
  if lms >= ms then ms = lms; seq = lseq + 1 end
end
local end_id = ms .. '-' .. (seq + tonumber(ARGV[4]) - 1)
if ARGV[2] ~= '' then redis.call('RPUSH', messages, ARGV[2]) end
redis.call('XADD', events, end_id, unpack(cjson.decode(ARGV[3])))
redis.call('HSET', meta, 'turn', '')
redis.call('DEL', KEYS[5])
redis.call(ARGV[5], KEYS[6], 'e')
return 1
"""

# Append a producer's entries to the turn's log, only while the session exists, and give
# the log its expiry in the same step: a write racing a DELETE never leaves a key that
# lives for ever (nor one that outlives the session). KEYS: meta, events. ARGV: the TTL in
# ms, the producer's lease, then per entry its id, its field count and its fields.
# Answers 0 when the session is gone, -1 when the lease is another producer's (the turn
# was taken over: write nothing). An id at or below the log's last one is an error.
APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[2] then return -1 end
local i = 3
while i <= #ARGV do
  local count = tonumber(ARGV[i + 1])
  redis.call('XADD', KEYS[2], ARGV[i], unpack(ARGV, i + 2, i + 1 + count))
  i = i + 2 + count
end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""


# Take a stream slot of an owner if fewer than the limit are held; lapsed leases (a
# worker killed with its streams open) no longer count. Redis's clock, one for all hosts.
HOLD_STREAM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit = tonumber(ARGV[1])
if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

RENEW_STREAM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

"""The approval store's server-side (Lua) scripts: each change of a request is one atomic step in Redis.

Kept apart from :mod:`ivr.approvals.store`, which builds their keys and arguments and reads their replies;
the comment above each script lists its ``KEYS`` and ``ARGV``. The first set is for a single Redis (one script
per change, atomic over every key); the second, below "Redis Cluster", splits each change into a step in the
call's hash slot and an idempotent step in the global one.
"""

from __future__ import annotations

__all__ = [
    "ABANDON_CALL_LUA",
    "ABANDON_LUA",
    "CLAIM_LUA",
    "CLOSE_GLOBAL_LUA",
    "DECIDE_CALL_LUA",
    "DECIDE_LUA",
    "EXECUTED_CALL_LUA",
    "EXECUTED_GLOBAL_LUA",
    "EXECUTED_LUA",
    "REQUEST_CALL_LUA",
    "REQUEST_GLOBAL_LUA",
    "REQUEST_LUA",
    "SWEEP_CALL_LUA",
    "SWEEP_LUA",
]


_LUA_CLOCK = """
local function clock(arg)
  if arg ~= nil and arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function stamp(x) return string.format('%.6f', x) end
local function audit_minid(now, retention)
  return string.format('%.0f', math.max(0, (now - retention) * 1000))
end
"""

# Closing a request (decided, expired or abandoned) is one step wherever it happens: the record, the pending
# index, the audit entry, the dashboard event and the pub/sub notification for the waiting call.
# c = {key, aid, status, by (decided_by, or nil to keep the stored one), audit_by, note, now, retention,
#      pending, audit, events, channel, maxlen}
_LUA_CLOSE = """
local function close(c)
  local h = redis.call('HMGET', c.key, 'call_sid', 'instance_id', 'tool', 'arguments', 'flow_id',
    'arguments_shown')
  local shown = h[6] or h[4]
  redis.call('HSET', c.key, 'status', c.status)
  -- Closed without running: only the masked arguments are kept (an approved one keeps them until it ran).
  if h[6] and c.status ~= 'approved' then redis.call('HSET', c.key, 'arguments', h[6]) end
  if c.by then redis.call('HSET', c.key, 'decided_by', c.by, 'decided_at', stamp(c.now)) end
  if c.note ~= '' then redis.call('HSET', c.key, 'note', c.note) end
  redis.call('EXPIRE', c.key, math.ceil(c.retention))
  redis.call('ZREM', c.pending, c.aid)
  redis.call('XADD', c.audit, 'MINID', '~', audit_minid(c.now, c.retention), '*',
    'action', c.status, 'approval_id', c.aid, 'call_sid', h[1], 'flow_id', h[5], 'tool', h[3],
    'arguments', shown, 'by', c.audit_by, 'note', c.note, 'ts', stamp(c.now))
  redis.call('XADD', c.events, 'MAXLEN', '~', c.maxlen, '*', 'type', 'approval.decided', 'call_sid', h[1],
    'ts', stamp(c.now),
    'data', cjson.encode({id = c.aid, tool = h[3], status = c.status, decided_by = c.audit_by,
                          instance_id = h[2]}))
  redis.call('PUBLISH', c.channel,
    cjson.encode({id = c.aid, call_sid = h[1], instance_id = h[2], status = c.status}))
end
local function call_ended(call_head, sid)
  if not sid or sid == '' then return false end
  local ended = redis.call('HGET', call_head .. sid, 'ended_at')  -- 'null' (JSON) while the call runs
  return type(ended) == 'string' and tonumber(ended) ~= nil
end
"""

# KEYS: 1 call's approval index (set), 2 the new approval hash, 3 pending (zset), 4 audit (stream),
#       5 events (stream)
# ARGV: 1 approval key head (key = head .. id), 2 digest, 3 mode ('pending' | 'gate'), 4 now ('' = server),
#       5 id, 6 call_sid, 7 instance_id, 8 flow_id, 9 tool, 10 call_id, 11 arguments JSON, 12 reason,
#       13 timeout_s, 14 retention_s, 15 events maxlen, 16 the arguments as the flow's redact: masks them
#       ('' = nothing to mask: the audit shows the arguments themselves)
REQUEST_LUA = (
    _LUA_CLOCK
    + """
local digest, mode = ARGV[2], ARGV[3]
local found_pending, found_approved, found_closed
for _, aid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HMGET', ARGV[1] .. aid, 'digest', 'status', 'claimed_at', 'executed_at')
  if h[1] == digest then
    if h[2] == 'pending' then found_pending = aid
    elseif h[2] == 'approved' and not h[3] and not h[4] then found_approved = aid
    elseif h[2] == 'denied' or h[2] == 'expired' or h[2] == 'abandoned' then found_closed = aid end
  end
end
local existing = found_pending
if mode == 'gate' then existing = found_closed or found_approved or found_pending end
if existing then
  return {'existing', unpack(redis.call('HGETALL', ARGV[1] .. existing))}
end
local now = clock(ARGV[4])
local timeout, retention = tonumber(ARGV[13]), tonumber(ARGV[14])
local deadline = now + timeout
local aid = ARGV[5]
redis.call('HSET', KEYS[2], 'id', aid, 'call_sid', ARGV[6], 'instance_id', ARGV[7], 'flow_id', ARGV[8],
  'tool', ARGV[9], 'call_id', ARGV[10], 'arguments', ARGV[11], 'digest', digest, 'reason', ARGV[12],
  'status', 'pending', 'created_at', stamp(now), 'deadline', stamp(deadline))
if ARGV[16] ~= '' then redis.call('HSET', KEYS[2], 'arguments_shown', ARGV[16]) end
redis.call('EXPIRE', KEYS[2], math.ceil(timeout + retention))
redis.call('ZADD', KEYS[3], stamp(deadline), aid)
redis.call('SADD', KEYS[1], aid)
redis.call('EXPIRE', KEYS[1], math.ceil(timeout + retention))
redis.call('XADD', KEYS[4], 'MINID', '~', audit_minid(now, retention), '*',
  'action', 'requested', 'approval_id', aid, 'call_sid', ARGV[6], 'flow_id', ARGV[8], 'tool', ARGV[9],
  'arguments', ARGV[16] ~= '' and ARGV[16] or ARGV[11], 'reason', ARGV[12], 'by', 'instance:' .. ARGV[7],
  'ts', stamp(now))
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[15], '*', 'type', 'approval.requested',
  'call_sid', ARGV[6], 'ts', stamp(now),
  'data', cjson.encode({id = aid, tool = ARGV[9], reason = ARGV[12], deadline = deadline,
                        instance_id = ARGV[7], flow_id = ARGV[8]}))
return {'created', unpack(redis.call('HGETALL', KEYS[2]))}
"""
)

# KEYS: 1 approval hash, 2 pending (zset), 3 audit (stream), 4 events (stream)
# ARGV: 1 new status, 2 operator, 3 note, 4 now ('' = server), 5 retention_s, 6 channel, 7 events maxlen,
#       8 expired note, 9 timeout operator, 10 call key head (key = head .. call sid), 11 abandoned note,
#       12 call-ended operator
# A request whose call has ended (its record has ended_at) is abandoned instead: nothing could run it.
DECIDE_LUA = (
    _LUA_CLOCK
    + _LUA_CLOSE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'notfound'} end
local h = redis.call('HMGET', KEYS[1], 'status', 'deadline', 'id', 'call_sid')
if h[1] ~= 'pending' then
  return {'decided', unpack(redis.call('HGETALL', KEYS[1]))}
end
local now = clock(ARGV[4])
local status, by, note, outcome = ARGV[1], ARGV[2], ARGV[3], 'ok'
if call_ended(ARGV[10], h[4]) then
  outcome, status, by, note = 'abandoned', 'abandoned', ARGV[12], ARGV[11]
elseif status ~= 'expired' and now > tonumber(h[2]) then
  outcome, status, by, note = 'expired', 'expired', ARGV[9], ARGV[8]
end
close({key = KEYS[1], aid = h[3], status = status, by = by, audit_by = by, note = note, now = now,
  retention = tonumber(ARGV[5]), pending = KEYS[2], audit = KEYS[3], events = KEYS[4], channel = ARGV[6],
  maxlen = ARGV[7]})
return {outcome, unpack(redis.call('HGETALL', KEYS[1]))}
"""
)

# KEYS: 1 call's approval index (set), 2 pending (zset), 3 audit (stream), 4 events (stream)
# ARGV: 1 approval key head, 2 now ('' = server), 3 retention_s, 4 channel, 5 events maxlen, 6 instance id,
#       7 note (undecided), 8 note (approved, not run), 9 call-ended operator
# Returns the ids abandoned. A request whose action was taken to run (claimed_at) is left alone.
ABANDON_LUA = (
    _LUA_CLOCK
    + _LUA_CLOSE
    + """
local now = clock(ARGV[2])
local done = {}
for _, aid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. aid
  local h = redis.call('HMGET', key, 'status', 'claimed_at', 'executed_at')
  local note, by = nil, nil
  if h[1] == 'pending' then note, by = ARGV[7], ARGV[9]
  elseif h[1] == 'approved' and not h[2] and not h[3] then note = ARGV[8] end
  if note then
    close({key = key, aid = aid, status = 'abandoned', by = by, audit_by = 'instance:' .. ARGV[6],
      note = note, now = now, retention = tonumber(ARGV[3]), pending = KEYS[2], audit = KEYS[3],
      events = KEYS[4], channel = ARGV[4], maxlen = ARGV[5]})
    table.insert(done, aid)
  end
end
return done
"""
)

# KEYS: 1 pending (zset), 2 audit (stream), 3 events (stream)
# ARGV: 1 approval key head, 2 call key head, 3 now ('' = server), 4 retention_s, 5 channel,
#       6 events maxlen, 7 expired note, 8 timeout operator, 9 abandoned note, 10 call-ended operator,
#       11 how many pending entries to look at (soonest deadline first)
# Returns {expired ids, abandoned ids}: overdue requests expire; those whose call ended are abandoned.
SWEEP_LUA = (
    _LUA_CLOCK
    + _LUA_CLOSE
    + """
local now = clock(ARGV[3])
local expired, abandoned = {}, {}
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[11]) - 1)
for _, aid in ipairs(ids) do
  local key = ARGV[1] .. aid
  local h = redis.call('HMGET', key, 'status', 'deadline', 'call_sid')
  if h[1] ~= 'pending' then
    redis.call('ZREM', KEYS[1], aid)  -- the record is gone or was closed: drop the stale index entry
  else
    local status, by, note
    if call_ended(ARGV[2], h[3]) then
      status, by, note = 'abandoned', ARGV[10], ARGV[9]
      table.insert(abandoned, aid)
    elseif now > tonumber(h[2]) then
      status, by, note = 'expired', ARGV[8], ARGV[7]
      table.insert(expired, aid)
    end
    if status then
      close({key = key, aid = aid, status = status, by = by, audit_by = by, note = note, now = now,
        retention = tonumber(ARGV[4]), pending = KEYS[1], audit = KEYS[2], events = KEYS[3],
        channel = ARGV[5], maxlen = ARGV[6]})
    end
  end
end
return {expired, abandoned}
"""
)

# KEYS: 1 approval hash; ARGV: 1 now ('' = server), 2 instance id
# Takes an approved request to run it: only once, and never after it was abandoned. No audit entry yet.
CLAIM_LUA = (
    _LUA_CLOCK
    + """
local h = redis.call('HMGET', KEYS[1], 'status', 'claimed_at', 'executed_at')
if h[1] ~= 'approved' or h[2] or h[3] then return 0 end
redis.call('HSET', KEYS[1], 'claimed_at', stamp(clock(ARGV[1])), 'claimed_by', 'instance:' .. ARGV[2])
return 1
"""
)

# KEYS: 1 approval hash, 2 audit (stream), 3 events (stream)
# ARGV: 1 now ('' = server), 2 retention_s, 3 instance id, 4 outcome ('ok' | 'failed'), 5 error type,
#       6 events maxlen
# The claimed action has run: its outcome, and the audit's `executed` entry. Once.
EXECUTED_LUA = (
    _LUA_CLOCK
    + """
local h = redis.call('HMGET', KEYS[1], 'claimed_at', 'executed_at', 'id', 'call_sid', 'tool', 'arguments',
  'flow_id', 'instance_id', 'arguments_shown')
if not h[1] or h[2] then return 0 end
local now = clock(ARGV[1])
redis.call('HSET', KEYS[1], 'executed_at', stamp(now), 'outcome', ARGV[4])
if h[9] then redis.call('HSET', KEYS[1], 'arguments', h[9]) end  -- it ran: keep only the masked arguments
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'error_type', ARGV[5]) end
redis.call('XADD', KEYS[2], 'MINID', '~', audit_minid(now, tonumber(ARGV[2])), '*',
  'action', 'executed', 'approval_id', h[3], 'call_sid', h[4], 'flow_id', h[7], 'tool', h[5],
  'arguments', h[9] or h[6], 'outcome', ARGV[4], 'error_type', ARGV[5], 'by', 'instance:' .. ARGV[3],
  'ts', stamp(now))
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'type', 'approval.executed', 'call_sid', h[4],
  'ts', stamp(now),
  'data', cjson.encode({id = h[3], tool = h[5], outcome = ARGV[4], error_type = ARGV[5],
                        instance_id = h[8]}))
return 1
"""
)


# -- Redis Cluster ------------------------------------------------------------------------------------------
# On a Cluster a script may only touch keys of one hash slot. A request's record (``approval(aid, sid)``) and
# its call's approval set live in the call's slot; the pending index, the audit stream, the event stream, the
# channel and the approval's index entry (``approval_call(aid)``: its call sid, and which global steps ran)
# live in the global slot. So each change is two scripts: a *call step* over the call's slot that runs the
# state machine (the only place a decision is made, so still exactly once) and stores what the global step
# needs (``closed_at``, ``closed_audit_by``, ``executed_by``), then a *global step* that writes the indexes,
# the audit and event entries and the notification, guarded by ``HSETNX`` on the index entry so it runs once
# however often it is repeated. A crash between the two leaves the global step undone; it is repeated by the
# next attempt at the same change (a repeated request, decision or ``record_execution``), and the sweeper
# repeats the close of every request still in the pending index whose record is closed.

# Closing a request in its call's slot:
# c = {key, status, by (decided_by, nil to keep it), audit_by, note, now, retention}.
_LUA_CLOSE_CALL = """
local function close_call(c)
  local shown = redis.call('HGET', c.key, 'arguments_shown')
  redis.call('HSET', c.key, 'status', c.status, 'closed_at', stamp(c.now), 'closed_audit_by', c.audit_by)
  if shown and c.status ~= 'approved' then redis.call('HSET', c.key, 'arguments', shown) end
  if c.by then redis.call('HSET', c.key, 'decided_by', c.by, 'decided_at', stamp(c.now)) end
  if c.note ~= '' then redis.call('HSET', c.key, 'note', c.note) end
  redis.call('EXPIRE', c.key, math.ceil(c.retention))
end
local function call_ended(call_key)
  local ended = redis.call('HGET', call_key, 'ended_at')  -- 'null' (JSON) while the call runs
  return type(ended) == 'string' and tonumber(ended) ~= nil
end
"""

# Picks the call's earlier request with this digest (as REQUEST_LUA does), from hashes passed as KEYS.
# KEYS: 1 call's approval set, 2 the new approval hash, 3… the hashes of the ids in ARGV[16…]
# ARGV: 1 digest, 2 mode ('pending' | 'gate'), 3 now ('' = server), 4 id, 5 call_sid, 6 instance_id,
#       7 flow_id, 8 tool, 9 call_id, 10 arguments JSON, 11 reason, 12 timeout_s, 13 retention_s,
#       14 the masked arguments ('' = none), 15 how many earlier ids, 16… the earlier ids (the set's members)
# Returns {'again'} when the set is not the one read (a request was added meanwhile: read it again), else
# {'existing' | 'created', the record's fields…}.
REQUEST_CALL_LUA = (
    _LUA_CLOCK
    + """
local n = tonumber(ARGV[15])
if redis.call('SCARD', KEYS[1]) ~= n then return {'again'} end
local digest, mode = ARGV[1], ARGV[2]
local found_pending, found_approved, found_closed
for i = 1, n do
  if redis.call('SISMEMBER', KEYS[1], ARGV[15 + i]) == 0 then return {'again'} end
  local h = redis.call('HMGET', KEYS[2 + i], 'digest', 'status', 'claimed_at', 'executed_at')
  if h[1] == digest then
    if h[2] == 'pending' then found_pending = 2 + i
    elseif h[2] == 'approved' and not h[3] and not h[4] then found_approved = 2 + i
    elseif h[2] == 'denied' or h[2] == 'expired' or h[2] == 'abandoned' then found_closed = 2 + i end
  end
end
local existing = found_pending
if mode == 'gate' then existing = found_closed or found_approved or found_pending end
if existing then return {'existing', unpack(redis.call('HGETALL', KEYS[existing]))} end
local now = clock(ARGV[3])
local timeout, retention = tonumber(ARGV[12]), tonumber(ARGV[13])
redis.call('HSET', KEYS[2], 'id', ARGV[4], 'call_sid', ARGV[5], 'instance_id', ARGV[6], 'flow_id', ARGV[7],
  'tool', ARGV[8], 'call_id', ARGV[9], 'arguments', ARGV[10], 'digest', digest, 'reason', ARGV[11],
  'status', 'pending', 'created_at', stamp(now), 'deadline', stamp(now + timeout))
if ARGV[14] ~= '' then redis.call('HSET', KEYS[2], 'arguments_shown', ARGV[14]) end
redis.call('EXPIRE', KEYS[2], math.ceil(timeout + retention))
redis.call('SADD', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(timeout + retention))
return {'created', unpack(redis.call('HGETALL', KEYS[2]))}
"""
)

# The global step of a new request, once: its index entry, the pending index, the audit and event entries.
# KEYS: 1 the approval's index entry (hash), 2 pending (zset), 3 audit (stream), 4 events (stream)
# ARGV: 1 id, 2 call_sid, 3 created_at, 4 deadline, 5 TTL of the index entry (s), 6 retention_s,
#       7 events maxlen, 8 audit arguments, 9 reason, 10 instance_id, 11 flow_id, 12 tool, 13 event data JSON
REQUEST_GLOBAL_LUA = (
    _LUA_CLOCK
    + """
if redis.call('HSETNX', KEYS[1], 'requested', ARGV[3]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'call_sid', ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[5])))
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('XADD', KEYS[3], 'MINID', '~', audit_minid(tonumber(ARGV[3]), tonumber(ARGV[6])), '*',
  'action', 'requested', 'approval_id', ARGV[1], 'call_sid', ARGV[2], 'flow_id', ARGV[11], 'tool', ARGV[12],
  'arguments', ARGV[8], 'reason', ARGV[9], 'by', 'instance:' .. ARGV[10], 'ts', ARGV[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'type', 'approval.requested', 'call_sid', ARGV[2],
  'ts', ARGV[3], 'data', ARGV[13])
return 1
"""
)

# Decide (or expire) one request in its call's slot. KEYS: 1 approval hash, 2 its call's record
# ARGV: 1 new status, 2 operator, 3 note, 4 now ('' = server), 5 retention_s, 6 expired note,
#       7 timeout operator, 8 abandoned note, 9 call-ended operator
DECIDE_CALL_LUA = (
    _LUA_CLOCK
    + _LUA_CLOSE_CALL
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'notfound'} end
local h = redis.call('HMGET', KEYS[1], 'status', 'deadline')
if h[1] ~= 'pending' then return {'decided', unpack(redis.call('HGETALL', KEYS[1]))} end
local now = clock(ARGV[4])
local status, by, note, outcome = ARGV[1], ARGV[2], ARGV[3], 'ok'
if call_ended(KEYS[2]) then
  outcome, status, by, note = 'abandoned', 'abandoned', ARGV[9], ARGV[8]
elseif status ~= 'expired' and now > tonumber(h[2]) then
  outcome, status, by, note = 'expired', 'expired', ARGV[7], ARGV[6]
end
close_call({key = KEYS[1], status = status, by = by, audit_by = by, note = note, now = now,
  retention = tonumber(ARGV[5])})
return {outcome, unpack(redis.call('HGETALL', KEYS[1]))}
"""
)

# The global step of a close (decided, expired, abandoned), once: pending index, audit, event, notification.
# KEYS: 1 the approval's index entry (hash), 2 pending (zset), 3 audit (stream), 4 events (stream)
# ARGV: 1 id, 2 status, 3 closed_at, 4 retention_s, 5 channel, 6 '1' = SPUBLISH (Cluster) else PUBLISH,
#       7 events maxlen, 8 call_sid, 9 flow_id, 10 tool, 11 audit arguments, 12 by, 13 note,
#       14 event data JSON, 15 message JSON
CLOSE_GLOBAL_LUA = (
    _LUA_CLOCK
    + """
if redis.call('HSETNX', KEYS[1], 'closed', ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'call_sid', ARGV[8])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[4])))
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MINID', '~', audit_minid(tonumber(ARGV[3]), tonumber(ARGV[4])), '*',
  'action', ARGV[2], 'approval_id', ARGV[1], 'call_sid', ARGV[8], 'flow_id', ARGV[9], 'tool', ARGV[10],
  'arguments', ARGV[11], 'by', ARGV[12], 'note', ARGV[13], 'ts', ARGV[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'type', 'approval.decided', 'call_sid', ARGV[8],
  'ts', ARGV[3], 'data', ARGV[14])
redis.call(ARGV[6] == '1' and 'SPUBLISH' or 'PUBLISH', ARGV[5], ARGV[15])
return 1
"""
)

# Sweep one pending request in its call's slot: abandon it if its call ended, expire it if overdue.
# KEYS: 1 approval hash, 2 its call's record
# ARGV: 1 now ('' = server), 2 retention_s, 3 expired note, 4 timeout operator, 5 abandoned note,
#       6 call-ended operator
# Returns {'gone'}, {'pending'}, or {'closed' | 'expired' | 'abandoned', the record's fields…}.
SWEEP_CALL_LUA = (
    _LUA_CLOCK
    + _LUA_CLOSE_CALL
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone'} end
local h = redis.call('HMGET', KEYS[1], 'status', 'deadline')
if h[1] ~= 'pending' then return {'closed', unpack(redis.call('HGETALL', KEYS[1]))} end
local now = clock(ARGV[1])
local outcome, by, note
if call_ended(KEYS[2]) then outcome, by, note = 'abandoned', ARGV[6], ARGV[5]
elseif now > tonumber(h[2]) then outcome, by, note = 'expired', ARGV[4], ARGV[3]
else return {'pending'} end
close_call({key = KEYS[1], status = outcome, by = by, audit_by = by, note = note, now = now,
  retention = tonumber(ARGV[2])})
return {outcome, unpack(redis.call('HGETALL', KEYS[1]))}
"""
)

# Abandon a call's open requests in its slot (as ABANDON_LUA). KEYS: 1 the call's approval set, 2… the hashes
# of the ids in ARGV[8…]. ARGV: 1 now ('' = server), 2 retention_s, 3 instance id, 4 note (undecided),
# 5 note (approved, not run), 6 call-ended operator, 7 how many ids, 8… the ids (the set's members)
# Returns {'again'} when the set is not the one read, else {'done', ids closed now…}.
ABANDON_CALL_LUA = (
    _LUA_CLOCK
    + _LUA_CLOSE_CALL
    + """
local n = tonumber(ARGV[7])
if redis.call('SCARD', KEYS[1]) ~= n then return {'again'} end
local now = clock(ARGV[1])
local done = {'done'}
for i = 1, n do
  if redis.call('SISMEMBER', KEYS[1], ARGV[7 + i]) == 0 then return {'again'} end
end
for i = 1, n do
  local key = KEYS[1 + i]
  local h = redis.call('HMGET', key, 'status', 'claimed_at', 'executed_at')
  local note, by = nil, nil
  if h[1] == 'pending' then note, by = ARGV[4], ARGV[6]
  elseif h[1] == 'approved' and not h[2] and not h[3] then note = ARGV[5] end
  if note then
    close_call({key = key, status = 'abandoned', by = by, audit_by = 'instance:' .. ARGV[3], note = note,
      now = now, retention = tonumber(ARGV[2])})
    table.insert(done, ARGV[7 + i])
  end
end
return done
"""
)

# The claimed action has run: its outcome, in the call's slot, once. KEYS: 1 approval hash
# ARGV: 1 now ('' = server), 2 outcome ('ok' | 'failed'), 3 error type, 4 instance id
# Returns {0} when it was not claimed, {0, fields…} when already recorded, {1, fields…} when recorded now.
EXECUTED_CALL_LUA = (
    _LUA_CLOCK
    + """
local h = redis.call('HMGET', KEYS[1], 'claimed_at', 'executed_at', 'arguments_shown')
if not h[1] then return {0} end
if h[2] then return {0, unpack(redis.call('HGETALL', KEYS[1]))} end
redis.call('HSET', KEYS[1], 'executed_at', stamp(clock(ARGV[1])), 'outcome', ARGV[2],
  'executed_by', 'instance:' .. ARGV[4])
if h[3] then redis.call('HSET', KEYS[1], 'arguments', h[3]) end  -- it ran: keep only the masked arguments
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error_type', ARGV[3]) end
return {1, unpack(redis.call('HGETALL', KEYS[1]))}
"""
)

# The global step of an execution, once: the audit's `executed` entry and the event.
# KEYS: 1 the approval's index entry (hash), 2 audit (stream), 3 events (stream)
# ARGV: 1 executed_at, 2 retention_s, 3 events maxlen, 4 id, 5 call_sid, 6 flow_id, 7 tool,
#       8 audit arguments, 9 outcome, 10 error type, 11 by, 12 event data JSON
EXECUTED_GLOBAL_LUA = (
    _LUA_CLOCK
    + """
if redis.call('HSETNX', KEYS[1], 'executed', ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MINID', '~', audit_minid(tonumber(ARGV[1]), tonumber(ARGV[2])), '*',
  'action', 'executed', 'approval_id', ARGV[4], 'call_sid', ARGV[5], 'flow_id', ARGV[6], 'tool', ARGV[7],
  'arguments', ARGV[8], 'outcome', ARGV[9], 'error_type', ARGV[10], 'by', ARGV[11], 'ts', ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'type', 'approval.executed', 'call_sid', ARGV[5],
  'ts', ARGV[1], 'data', ARGV[12])
return 1
"""
)

"""Every message between refbook processes: its type number and fields.

A message body is a tuple ``(TYPE, *fields)``; the wire (``wire/frames.py``) signs and
frames it.  The protocol core builds and reads these tuples, so they live here, free of
I/O.
"""

# Message types.  Direction in the comment: who sends it, who receives it.
# -- process <-> node manager
REGISTER = 1           # proc -> nm: (addr, kind, pid, req_id)
REGISTERED = 2         # nm -> proc: (info dict)
LEASE_REQUEST = 3      # owner -> nm: (owner, req_id, resources, dedicated)
LEASE_GRANTED = 4      # nm -> owner: (req_id, lease_id or None, worker or message, nm)
LEASE_RETURN = 5       # owner -> nm: (lease_id,)
LEASE_RECLAIM = 6      # nm -> owner: ()  return any idle lease
PROCESS_DIED = 7       # nm -> procs, nm -> nm, driver -> nm: (addr, reason, oom)
ALLOC = 8              # proc -> nm rpc socket: (addr, reply_to, oid, size, owner)
ALLOC_REPLY = 9        # nm -> proc: (status, offset or message)
SEAL = 10              # proc -> nm: (oid, offset, size, owner, pin_for or None)
FREE = 11              # owner -> nm: (oids,)
BLOCKED = 12           # worker -> nm: (addr,)
UNBLOCKED = 13         # worker -> nm: (addr,)
KILL_WORKER = 14       # owner -> nm: (worker_addr, reason)
STATE_QUERY = 15       # proc -> nm/any: (addr, req_id, what)
STATE_REPLY = 16       # -> proc: (req_id, data)
SHUTDOWN = 17          # driver -> nm: ()
# -- owner <-> worker
PUSH_TASKS = 20        # owner -> worker: (owner, lease_id, [spec, ...])
TASKS_DONE = 21        # worker -> owner: (worker, [result, ...])
TASKS_RETURNED = 22    # worker -> owner: (worker, [task_id, ...])  not started, worker blocked
CANCEL_TASK = 23       # owner -> worker: (task_id,)
OUTPUT = 24            # worker -> owner: (worker, task_id, stream, text)
# -- borrower <-> owner
GET_OBJECT = 30        # borrower -> owner: (addr, req_id, oid)
OBJECT_REPLY = 31      # owner -> borrower: (req_id, oid, value entry)
INC_REF = 32           # holder -> owner: (addr, oid, for_addr, ack_id)
INC_ACK = 33           # owner -> holder: (ack_id,)
DEC_REF = 34           # borrower -> owner: (addr, oid, n)
# -- store pins and memory pressure
PIN = 40               # proc -> nm rpc socket: (addr, reply_to, [oid, ...], {oid: node})
                       #   all or nothing; objects on other nodes are pulled here first
PIN_REPLY = 41         # nm -> proc: ("ok", {oid: (offset, size)}) or (status, message)
UNPIN = 42             # proc -> nm: (addr, [oid, ...], [oid in use, ...], waiting, kind,
#                        seq)  cached pins it gave up; in answer to UNPIN_REQUEST also the
#                        ones it cannot (live values use them), and if it waits in get()
#                        now; seq numbers a process's UNPINs (a PIN names the last one)
UNPIN_REQUEST = 43     # nm -> proc: ([oid, ...],)  please drop these pins if unused
PREFETCH = 44          # owner -> nm: ([oid, ...],)  queued tasks will need these
TASK_QUERY = 45        # nm -> worker: (query_id,)  what are you running?
TASK_INFO = 46         # worker -> nm: (addr, query_id, info or None)
# -- actors
CREATE_ACTOR = 50      # owner -> worker: (owner, spec)  become this actor
ACTOR_CALLS = 51       # caller -> actor: (caller, [spec, ...])  run in this order
ACTOR_EXIT = 52        # owner -> actor: ()  no handle is left: finish pending calls, exit
ACTOR_UPDATE = 53      # owner -> nm: (record dict)  the actor directory
ACTOR_KILL = 54        # holder -> owner: (actor_id, no_restart)
# -- membership (node managers <-> head) and transfer between nodes
NODE_REGISTER = 60     # nm -> head: (node view)
HEARTBEAT = 61         # nm -> head: (node view)
HEAD_VIEW = 62         # head -> nm: ([node view, ...])
NODE_DIED = 63         # head -> nm, nm -> its processes: (node_id, reason)
LEASE_SPILLBACK = 64   # nm -> owner: (req_id, nm address)  ask that node instead
PULL = 65              # nm -> nm: (oid, requester nm, requester node id)  send your copy
PULL_META = 66         # nm -> nm: (oid, size, owner)
PULL_CHUNK = 67        # nm -> nm: (oid, requester nm, offset, length)
CHUNK = 68             # nm -> nm: (oid, offset) + a raw data frame
PULL_DONE = 69         # nm -> nm: (oid, requester nm)  copy complete: unpin yours
PULL_FAIL = 70         # nm -> nm: (oid, message)
OBJECT_COPY = 71       # nm -> owner: (oid, node id, present)  a secondary copy came or went

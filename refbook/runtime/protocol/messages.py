"""Every message between refbook processes: its type number and fields.

A message body is a plain tuple ``(TYPE, *fields)``; the wire (``wire/frames.py``) signs,
frames and pickles it.  The protocol core builds and reads these tuples, so they live
here, free of I/O.

Each message is declared once below: its type number (``TASKS_DONE = 21``), which the
code builds and dispatches on, and a :class:`~typing.NamedTuple` with its fields in order,
the first being the type number.  So a received message *is* an instance's tuple, and a
handler may name its fields at the cost of one call::

    m = P.TasksDone._make(msg)          # or, on the hottest paths: _, worker, results = msg
    m.worker, m.results

Senders build plain tuples (``(P.TASKS_DONE, me, results)``): that is free, and it is
what goes on the wire; ``encode`` turns an instance into a plain tuple, so that the
pickle never names these classes.  ``tests/unit/test_messages.py`` checks every tuple
built in ``refbook/`` against the fields declared here, and that every message is both
built and handled somewhere.

Some fields are optional (with a default): a message built without them is shorter, so
read it with ``Cls(*msg)`` or :func:`named`, not ``_make``.  A message in
``WITH_DATA_FRAME`` carries a raw data frame, sent as ``send(..., data=...)`` and not
pickled; the wire appends it to the tuple on receipt, as the last field.
"""

# No ``from __future__ import annotations`` here: NamedTuple compiles every string
# annotation into a ForwardRef, which made this module's import 1.5 times as slow.
from typing import Any, NamedTuple

# Direction in each docstring: who sends it, who receives it.  "nm" is a node manager,
# "proc" any driver or worker process, "owner" the process that owns an object or
# submitted a task, "head" the node manager that keeps the cluster's membership.

# -- process <-> node manager ---------------------------------------------------------------
REGISTER = 1


class Register(NamedTuple):
    """proc -> its nm: a driver or worker started at ``addr``; answered by REGISTERED."""
    type: int
    addr: str
    kind: str            # "driver" or "worker"
    pid: int
    req_id: int


REGISTERED = 2


class Registered(NamedTuple):
    """nm -> proc: the answer to REGISTER, the node's info dict (node_id, address, head...)."""
    type: int
    req_id: int
    info: dict


LEASE_REQUEST = 3


class LeaseRequest(NamedTuple):
    """owner -> nm: lease a worker with these resources, near node ``prefer`` if it can."""
    type: int
    owner: str
    req_id: int
    resources: dict
    dedicated: bool      # for an actor: the worker is never shared
    prefer: str | None   # node id where the task's arguments are, or None


LEASE_GRANTED = 4


class LeaseGranted(NamedTuple):
    """nm -> owner: the answer to LEASE_REQUEST: a lease on a worker, or why there is none."""
    type: int
    req_id: int
    lease_id: int | None     # None: rejected, no node can ever run it
    worker: str              # the worker's address, or (rejected) the reason
    nm: str                  # the node manager that granted it (LEASE_RETURN goes there)


LEASE_RETURN = 5


class LeaseReturn(NamedTuple):
    """owner -> the nm that granted it: the lease is over, its worker is free again."""
    type: int
    lease_id: int


LEASE_RECLAIM = 6


class LeaseReclaim(NamedTuple):
    """nm -> owner: other requests wait for workers; return any lease that is idle."""
    type: int


PROCESS_DIED = 7


class ProcessDied(NamedTuple):
    """nm -> its procs and the other nms, driver -> nm (it leaves): process ``addr`` is gone."""
    type: int
    addr: str
    reason: str
    oom: bool            # killed by the memory monitor (its tasks ran out of memory)


ALLOC = 8


class Alloc(NamedTuple):
    """proc -> nm's request socket: room in the arena for object ``oid``; see ALLOC_REPLY."""
    type: int
    addr: str            # the process that writes it (the object's creator)
    reply_to: str        # the requesting thread's own address
    oid: bytes
    size: int
    owner: str


ALLOC_REPLY = 9


class AllocReply(NamedTuple):
    """nm -> proc: the answer to ALLOC: ("ok" or "exists", offset) or ("full", message)."""
    type: int
    status: str
    detail: Any          # the offset in the arena, or why not


SEAL = 10


class Seal(NamedTuple):
    """proc -> nm: the object allocated at ``offset`` is written and may be read now."""
    type: int
    oid: bytes
    offset: int
    size: int
    owner: str
    pin_for: str | None  # the writer, which keeps a pin on it (it may read it), or None


FREE = 11


class Free(NamedTuple):
    """owner -> its nm, nm -> nm: free every copy of these objects on node ``node``."""
    type: int
    oids: list
    node: str | None = None      # the node they are on; left out: the receiver's
    creator: str | None = None   # only the copies this process wrote (a dead attempt's)


BLOCKED = 12


class Blocked(NamedTuple):
    """worker -> its nm: blocked in get()/wait(); its CPU may go to another worker."""
    type: int
    addr: str


UNBLOCKED = 13


class Unblocked(NamedTuple):
    """worker -> its nm: no longer blocked in get()/wait() (see BLOCKED)."""
    type: int
    addr: str


KILL_WORKER = 14


class KillWorker(NamedTuple):
    """owner -> nm: kill this worker (a task cancelled with force, an actor gone or killed)."""
    type: int
    worker: str
    reason: str


STATE_QUERY = 15


class StateQuery(NamedTuple):
    """any -> proc or nm: the state API's question ``what`` ("objects", "nodes"...)."""
    type: int
    addr: str            # where the STATE_REPLY goes
    req_id: int
    what: Any            # a string, or a tuple such as ("actor_named", name)


STATE_REPLY = 16


class StateReply(NamedTuple):
    """proc or nm -> the asker: the answer to STATE_QUERY."""
    type: int
    req_id: int
    data: Any


SHUTDOWN = 17


class Shutdown(NamedTuple):
    """driver -> its nm: shut the node down."""
    type: int


# -- owner <-> worker ------------------------------------------------------------------------
PUSH_TASKS = 20


class PushTasks(NamedTuple):
    """owner -> leased worker: run these tasks, in this order."""
    type: int
    owner: str
    lease_id: int
    specs: list          # [(task_id, fn_id, fn_blob or None, args, resolved, return_ids,
    #                        name, retriable), ...]


TASKS_DONE = 21


class TasksDone(NamedTuple):
    """worker -> owner (or caller, for actor calls): results of tasks that finished."""
    type: int
    worker: str
    results: list        # [(task_id, ok, payload, borrowed, seconds), ...]


TASKS_RETURNED = 22


class TasksReturned(NamedTuple):
    """worker -> owner: tasks it had not started when it blocked in get(): run them elsewhere."""
    type: int
    worker: str
    task_ids: list


CANCEL_TASK = 23


class CancelTask(NamedTuple):
    """owner -> worker: interrupt this task (KeyboardInterrupt) if it is the one running."""
    type: int
    task_id: bytes


OUTPUT = 24


class Output(NamedTuple):
    """worker -> owner: a task printed ``text`` on its stdout ("out") or stderr ("err")."""
    type: int
    worker: str
    task_id: bytes
    stream: str
    text: str


# -- borrower <-> owner ----------------------------------------------------------------------
GET_OBJECT = 30


class GetObject(NamedTuple):
    """borrower -> owner: send me ``oid``'s value entry (OBJECT_REPLY) once it is known."""
    type: int
    addr: str
    req_id: int          # 0 today: the reply names the object
    oid: bytes


OBJECT_REPLY = 31


class ObjectReply(NamedTuple):
    """owner -> borrower: the answer to GET_OBJECT, the object's value entry."""
    type: int
    req_id: int
    oid: bytes
    entry: tuple         # (INLINE, meta, buffers), (STORED, node, offset, size), (ERROR, e)


INC_REF = 32


class IncRef(NamedTuple):
    """holder -> owner: count ``for_addr`` as a borrower of ``oid``; INC_ACK if ack_id."""
    type: int
    addr: str
    oid: bytes
    for_addr: str
    ack_id: int          # 0: no acknowledgement wanted


INC_ACK = 33


class IncAck(NamedTuple):
    """owner -> holder: the INC_REF with this ack_id is counted."""
    type: int
    ack_id: int


DEC_REF = 34


class DecRef(NamedTuple):
    """borrower -> owner: ``addr`` dropped ``n`` registrations of ``oid``."""
    type: int
    addr: str
    oid: bytes
    n: int


# -- store pins and memory pressure ----------------------------------------------------------
PIN = 40


class Pin(NamedTuple):
    """proc -> nm's request socket: pin these objects in the arena, all or nothing."""
    type: int
    addr: str
    reply_to: str
    oids: list
    where: dict          # {oid: node} of those on other nodes: pulled here first
    after: int           # the seq of this process's last UNPIN: served after it arrived
    in_place: bool = False   # it can map spill files: a spilled object may stay there


PIN_REPLY = 41


class PinReply(NamedTuple):
    """nm -> proc: the answer to PIN: ("ok", {oid: (offset, size)}) or (status, message)."""
    # the offset of an object read in place is (path, file offset, file header)
    type: int
    status: str
    detail: Any


UNPIN = 42


class Unpin(NamedTuple):
    """proc -> its nm: cached pins it gave up (and, asked by UNPIN_REQUEST, those it keeps)."""
    type: int
    addr: str
    oids: list
    in_use: list         # pins it cannot drop: live values use them
    waiting: bool        # it waits in get()/wait() now
    kind: str            # "driver" or "worker"
    seq: int             # numbers a process's UNPINs (a PIN names the last one)


UNPIN_REQUEST = 43


class UnpinRequest(NamedTuple):
    """nm -> proc: the store needs room: drop your pins of these objects if unused."""
    type: int
    oids: list


PREFETCH = 44


class Prefetch(NamedTuple):
    """owner -> its nm: queued tasks will need these objects: restore them if spilled."""
    type: int
    oids: list


TASK_QUERY = 45


class TaskQuery(NamedTuple):
    """nm -> worker: the memory monitor asks what it runs (answered by TASK_INFO)."""
    type: int
    query_id: int


TASK_INFO = 46


class TaskInfo(NamedTuple):
    """worker -> its nm: the answer to TASK_QUERY: what it runs now, or None."""
    type: int
    addr: str
    query_id: int
    info: tuple | None   # (task_id, name, owner, retriable, start, rss)


# -- actors ----------------------------------------------------------------------------------
CREATE_ACTOR = 50


class CreateActor(NamedTuple):
    """owner -> leased worker: become this actor (run its constructor)."""
    type: int
    owner: str
    spec: tuple          # (task_id, actor_id, class_id, blob, args, resolved, name,
    #                       max_concurrency)


ACTOR_CALLS = 51


class ActorCalls(NamedTuple):
    """caller -> actor: run these method calls, in this order."""
    type: int
    caller: str
    specs: list          # [(task_id, method, args, resolved, return_ids, name, retriable)]


ACTOR_EXIT = 52


class ActorExit(NamedTuple):
    """owner -> actor: no handle is left: finish the pending calls, then exit."""
    type: int


ACTOR_UPDATE = 53


class ActorUpdate(NamedTuple):
    """owner -> head: the actor directory's record of one of its actors."""
    type: int
    record: dict


ACTOR_KILL = 54


class ActorKill(NamedTuple):
    """holder -> owner: kill this actor (refbook.kill()); restart it unless no_restart."""
    type: int
    actor_id: bytes
    no_restart: bool


# -- membership (node managers <-> head) and transfer between nodes -------------------------
NODE_REGISTER = 60


class NodeRegister(NamedTuple):
    """nm -> head: a node joins the cluster; answered by HEAD_VIEW."""
    type: int
    view: dict


HEARTBEAT = 61


class Heartbeat(NamedTuple):
    """nm -> head: this node is alive, and its current view."""
    type: int
    view: dict


HEAD_VIEW = 62


class HeadView(NamedTuple):
    """head -> nm: the cluster as the head sees it: every node's view."""
    type: int
    views: list


NODE_DIED = 63


class NodeDied(NamedTuple):
    """head -> nms (also the dead one), nm -> its procs: node ``node_id`` is gone."""
    type: int
    node_id: str
    reason: str


LEASE_SPILLBACK = 64


class LeaseSpillback(NamedTuple):
    """nm -> owner: ask the node manager at ``nm`` for this lease instead."""
    type: int
    req_id: int
    nm: str
    prefer: bool         # False: the arguments' node is busy; stop preferring it


PULL = 65


class Pull(NamedTuple):
    """nm -> nm: send me your copy of ``oid`` (answered by PULL_META, or PULL_FAIL)."""
    type: int
    oid: bytes
    requester: str       # the requesting nm's address
    requester_node: str


PULL_META = 66


class PullMeta(NamedTuple):
    """nm -> nm: the answer to PULL: the object's size and owner; chunks may be asked now."""
    type: int
    oid: bytes
    size: int
    owner: str


PULL_CHUNK = 67


class PullChunk(NamedTuple):
    """nm -> nm: send me ``length`` bytes of ``oid`` from ``offset`` (answered by CHUNK)."""
    type: int
    oid: bytes
    requester: str
    offset: int
    length: int


CHUNK = 68


class Chunk(NamedTuple):
    """nm -> nm: the answer to PULL_CHUNK: bytes of ``oid`` from ``offset``."""
    type: int
    oid: bytes
    offset: int
    data: Any            # the raw data frame (in WITH_DATA_FRAME: not in the pickle)


PULL_DONE = 69


class PullDone(NamedTuple):
    """nm -> nm: the copy of ``oid`` is complete (or was there): unpin yours."""
    type: int
    oid: bytes
    requester: str


PULL_FAIL = 70


class PullFail(NamedTuple):
    """nm -> nm: the pull of ``oid`` failed, and why."""
    type: int
    oid: bytes
    message: str


OBJECT_COPY = 71


class ObjectCopy(NamedTuple):
    """nm -> owner: node ``node_id`` gained (present) or dropped a copy of ``oid``."""
    type: int
    oid: bytes
    node_id: str
    present: bool


# -- the registry ----------------------------------------------------------------------------
BY_TYPE: dict[int, type] = {
    REGISTER: Register, REGISTERED: Registered, LEASE_REQUEST: LeaseRequest,
    LEASE_GRANTED: LeaseGranted, LEASE_RETURN: LeaseReturn, LEASE_RECLAIM: LeaseReclaim,
    PROCESS_DIED: ProcessDied, ALLOC: Alloc, ALLOC_REPLY: AllocReply, SEAL: Seal,
    FREE: Free, BLOCKED: Blocked, UNBLOCKED: Unblocked, KILL_WORKER: KillWorker,
    STATE_QUERY: StateQuery, STATE_REPLY: StateReply, SHUTDOWN: Shutdown,
    PUSH_TASKS: PushTasks, TASKS_DONE: TasksDone, TASKS_RETURNED: TasksReturned,
    CANCEL_TASK: CancelTask, OUTPUT: Output,
    GET_OBJECT: GetObject, OBJECT_REPLY: ObjectReply, INC_REF: IncRef, INC_ACK: IncAck,
    DEC_REF: DecRef,
    PIN: Pin, PIN_REPLY: PinReply, UNPIN: Unpin, UNPIN_REQUEST: UnpinRequest,
    PREFETCH: Prefetch, TASK_QUERY: TaskQuery, TASK_INFO: TaskInfo,
    CREATE_ACTOR: CreateActor, ACTOR_CALLS: ActorCalls, ACTOR_EXIT: ActorExit,
    ACTOR_UPDATE: ActorUpdate, ACTOR_KILL: ActorKill,
    NODE_REGISTER: NodeRegister, HEARTBEAT: Heartbeat, HEAD_VIEW: HeadView,
    NODE_DIED: NodeDied, LEASE_SPILLBACK: LeaseSpillback, PULL: Pull, PULL_META: PullMeta,
    PULL_CHUNK: PullChunk, CHUNK: Chunk, PULL_DONE: PullDone, PULL_FAIL: PullFail,
    OBJECT_COPY: ObjectCopy,
}

# Messages whose last field is a raw data frame: the sender passes it as ``data=`` (it is
# not pickled) and the receiver finds it appended to the tuple.
WITH_DATA_FRAME = frozenset({CHUNK})


def named(msg: tuple):
    """``msg`` with named fields (its class's instance), for any message, also one
    sent without its optional fields; KeyError for an unknown type.  Handlers that know
    their message's type and length call ``Cls._make(msg)`` instead (cheaper)."""
    cls = BY_TYPE[msg[0]]
    return cls._make(msg) if len(msg) == len(cls._fields) else cls(*msg)


def name_of(kind) -> str:
    """The name of message type ``kind`` ("TASKS_DONE"), for logs."""
    return (type(kind) is int and _NAMES.get(kind)) or repr(kind)


_NAMES = {v: k for k, v in list(globals().items()) if k.isupper() and type(v) is int}

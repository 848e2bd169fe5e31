"""What named message fields cost: plain tuples against protocol/messages.py's classes.

    python benchmarks/messages.py [--quick] [--only TASKS_DONE,PUSH_TASKS]

For every message type, with made-up fields of the declared kinds, the median time in
nanoseconds of:

- build:   the plain tuple ``(T, a, b)`` (what senders do)  /  ``Cls(T, a, b)``;
- pickle:  ``pickle.dumps`` of the plain tuple  /  of the class's instance, which names
  its class in the pickle (bytes of each in brackets)  /  ``frames.encode`` of the plain
  tuple, before and now;
- receive: ``msg[1], msg[2]`` (indexing)  /  ``_, a, b = msg`` (unpacking)  /
  ``m = Cls._make(msg); m.a, m.b`` (named fields).

``enc<`` is ``encode`` as it was (a bare ``pickle.dumps``), ``encode`` as it is now (a
type check first).  The last lines are medians over all message types.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import timeit

from refbook.runtime.protocol import messages as P
from refbook.runtime.wire.frames import encode

SAMPLES = {
    str: "ipc:///tmp/refbook-s/w-3-5f0c1d2e3a4b",
    bytes: bytes(range(20)),
    int: 123456,
    bool: True,
    list: [bytes(range(20)), bytes(range(1, 21))],
    dict: {"CPU": 1.0, "node_id": "a1b2c3"},
    tuple: (1, "a1b2c3", 4096, 65536),
}
# realistic bodies of the per-task messages (one task, one small return value)
RESULT = (bytes(20), True, [(1, (b"\x80\x05K\x01.", []), [])], [], 0.0003)
SPEC = (bytes(20), bytes(16), None, ((1, b"\x80\x05\x95", []), None), [], [bytes(20)],
        "f", True)
REAL = {P.TASKS_DONE: [RESULT], P.PUSH_TASKS: [SPEC], P.ACTOR_CALLS: [SPEC[:7]]}


def sample(kind: int, cls, field: str):
    if field == cls._fields[-1] and kind in REAL:
        return REAL[kind]
    t = cls.__annotations__[field]
    if t not in SAMPLES:                            # X | None, or Any
        t = getattr(t, "__args__", (None,))[0]
    return SAMPLES.get(t, "detail")


def encode_before(msg: tuple) -> bytes:
    """``frames.encode`` before it turned instances into plain tuples."""
    return pickle.dumps(msg, protocol=5)


def measure(kind: int, number: int, repeat: int) -> dict:
    cls = P.BY_TYPE[kind]
    fields = cls._fields[1:]
    ns = {"pickle": pickle, "encode": encode, "encode_before": encode_before, "Cls": cls,
          "T": kind}
    for f in fields:
        ns[f"f_{f}"] = sample(kind, cls, f)
    args = ", ".join(["T"] + [f"f_{f}" for f in fields])
    msg = (kind, *(ns[f"f_{f}"] for f in fields))
    inst = cls._make(msg)
    ns.update(msg=msg, inst=inst)
    idx = ", ".join(f"msg[{i}]" for i in range(1, len(msg))) or "msg[0]"
    unpack = (", ".join(["_"] + [f"a{i}" for i in range(1, len(msg))]) + ", = msg")
    attrs = ", ".join(f"m.{f}" for f in fields) or "m.type"

    stmts = {
        "build_tuple": f"({args},)",
        "build_class": f"Cls({args})",
        "dumps_tuple": "pickle.dumps(msg, protocol=5)",
        "dumps_class": "pickle.dumps(inst, protocol=5)",
        "encode_before": "encode_before(msg)",
        "encode_tuple": "encode(msg)",
        "index": idx,
        "unpack": unpack,
        "make_attrs": f"m = Cls._make(msg); {attrs}",
    }
    timers = {k: timeit.Timer(v, globals=ns) for k, v in stmts.items()}
    times: dict[str, list] = {k: [] for k in stmts}
    for _ in range(repeat):            # interleaved, so that a busy moment hits them all
        for k, timer in timers.items():
            times[k].append(timer.timeit(number) / number * 1e9)
    out = {k: statistics.median(v) for k, v in times.items()}
    out.update(name=P.name_of(kind), bytes_tuple=len(pickle.dumps(msg, protocol=5)),
               bytes_class=len(pickle.dumps(inst, protocol=5)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--only", help="comma-separated message names")
    a = ap.parse_args()
    number, repeat = (2000, 5) if a.quick else (20000, 7)
    kinds = sorted(P.BY_TYPE)
    if a.only:
        want = {n.strip().upper() for n in a.only.split(",")}
        kinds = [k for k in kinds if P.name_of(k) in want]
    head = (f"{'message':16} {'tuple':>6} {'Cls()':>6} | {'dumps':>6} {'dumps(inst)':>15} "
            f"{'enc<':>6} {'encode':>6} | {'msg[i]':>6} {'unpack':>6} {'_make+.f':>8}")
    print("median ns per operation (build | pickle [bytes] | receive)")
    print(head)
    print("-" * len(head))
    rows = []
    for kind in kinds:
        r = measure(kind, number, repeat)
        rows.append(r)
        print(f"{r['name']:16} {r['build_tuple']:6.0f} {r['build_class']:6.0f} | "
              f"{r['dumps_tuple']:6.0f} {r['dumps_class']:6.0f} "
              f"[{r['bytes_tuple']:3}/{r['bytes_class']:3}] {r['encode_before']:6.0f} "
              f"{r['encode_tuple']:6.0f} | "
              f"{r['index']:6.0f} {r['unpack']:6.0f} {r['make_attrs']:8.0f}")
    print("-" * len(head))
    for col in ("build_tuple", "build_class", "dumps_tuple", "dumps_class", "encode_before",
                "encode_tuple", "index", "unpack", "make_attrs"):
        print(f"median over messages, {col:12}: {statistics.median(r[col] for r in rows):6.0f}")


if __name__ == "__main__":
    main()

"""The tables `refbook memory` and `refbook events` print (no cluster needed)."""

from refbook.clitables import event_line, memory_table, process_name

DRIVER = "ipc:///tmp/refbook-x/n-1a2b3c4d/d-0011223344ff"
WORKER = "ipc:///tmp/refbook-x/n-99998888/w-3-0011223344ff"


def obj(oid, size, owner, node, **extra):
    return {"object_id": oid * 40, "owner": owner, "size": size, "state": "ready",
            "nodes": [node], "spilled": False, "task": None, "local_refs": 1,
            "submitted_refs": 0, "borrowers": [], **extra}


def test_process_names():
    assert process_name(DRIVER) == "driver @1a2b3c4d"
    assert process_name(WORKER) == "worker 3 @99998888"
    assert process_name(None) == "-"


def test_grouped_by_owner_biggest_first_with_a_summary():
    objs = [obj("a", 100, DRIVER, "1a2b3c4d"), obj("b", 3 << 20, WORKER, "99998888"),
            obj("c", None, DRIVER, "1a2b3c4d", state="pending", nodes=[])]
    lines = memory_table(objs, "owner")
    groups = [x for x in lines if x.startswith("---")]
    assert groups == ["--- owner worker 3 @99998888: 1 object(s), 3 MiB ---",
                      "--- owner driver @1a2b3c4d: 2 object(s), 100 B ---"]
    assert any("b" * 40 in x and "3 MiB" in x and "1/0/0" in x for x in lines)
    assert lines[-1].startswith("3 object(s), 3 MiB in all; 0 spilled")


def test_a_missing_field_is_said_and_the_owner_used():
    lines = memory_table([obj("a", 10, DRIVER, "1a2b3c4d")], "call_site")
    assert "no 'call_site'" in lines[0] and "grouped by owner" in lines[0]
    lines = memory_table([obj("a", 10, DRIVER, "n1", call_site="f.py:3", names=["x"])],
                         "call_site")
    assert lines[0].startswith("--- call_site f.py:3:") and lines[1].endswith("ALIVE BECAUSE")
    assert lines[2].endswith("variable x")


def test_alive_because():
    from refbook.clitables import alive_because
    o = obj("a", 1, DRIVER, "n1", names=["x", "y"], contained_in=["c" * 40, "d" * 40],
            submitted_refs=2, borrowers=["p"], lineage=[{"task_id": "t"}])
    assert alive_because(o) == ("variable x, y; inside " + "c" * 40 + " +1; "
                                "2 pending task(s); "
                                "1 borrower(s); lineage of 1 task(s)")
    assert alive_because(obj("a", 1, DRIVER, "n1")) == "a ref in driver @1a2b3c4d"


def test_event_lines():
    e = {"time": 1_700_000_000.25, "kind": "spill", "node_id": "1a2b3c4d",
         "object_ids": ["ab" * 20, "cd" * 20], "bytes": 10 << 20}
    line = event_line(e)
    assert ".250  1a2b3c4d  spill" in line
    assert "objects=2 (abababab, cdcdcdcd)" in line and "bytes=10 MiB" in line
    assert event_line(dict(e, seq=7)).lstrip().startswith("7  ")


def test_made_by_names_the_owners_nth_task():
    lines = memory_table([obj("a", 1, DRIVER, "n1", task="ab" * 8 + "00" * 7 + "02")], "node")
    assert "task #2" in lines[2]

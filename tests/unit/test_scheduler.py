from refbook.runtime.protocol.leases import LeaseScheduler


def grants(actions):
    return [a for a in actions if a[0] == "grant"]


def test_grants_idle_workers_until_cpus_run_out_then_queues():
    s = LeaseScheduler({"CPU": 2}, max_workers=8)
    for w in ("w1", "w2", "w3"):
        s.worker_registered(w)
    g = grants(s.request("o", 1, {"CPU": 1})) + grants(s.request("o", 2, {"CPU": 1}))
    assert len(g) == 2 and {a[4] for a in g} <= {"w1", "w2", "w3"}
    assert s.request("o", 3, {"CPU": 1}) == []         # queued: no CPU left
    lease_id = g[0][3]
    g2 = grants(s.release(lease_id))
    assert len(g2) == 1 and g2[0][2] == 3


def test_impossible_requests_are_rejected_with_the_reason():
    s = LeaseScheduler({"CPU": 2}, max_workers=8)
    (a,) = s.request("o", 1, {"CPU": 4})
    assert a[0] == "reject" and "CPU" in a[3]
    (a,) = s.request("o", 2, {"CPU": 1, "gpu": 1})
    assert a[0] == "reject" and "gpu" in a[3]


def test_starts_a_worker_when_resources_are_free_but_no_worker_is():
    s = LeaseScheduler({"CPU": 2}, max_workers=8)
    actions = s.request("o", 1, {"CPU": 1})
    assert ("start_worker",) in actions
    assert grants(s.worker_registered("w1"))


def test_blocked_worker_lends_its_cpu_to_nested_tasks():
    s = LeaseScheduler({"CPU": 1}, max_workers=8)
    s.worker_registered("w1")
    s.worker_registered("w2")
    (g,) = grants(s.request("driver", 1, {"CPU": 1}))
    assert s.request("w1", 2, {"CPU": 1}) == [("reclaim", "driver")]
    g2 = grants(s.worker_blocked(g[4]))
    assert len(g2) == 1 and g2[0][1] == "w1"
    s.worker_unblocked(g[4])
    assert s.available["CPU"] == -1                  # oversubscribed for a moment
    s.release(g2[0][3])
    assert s.available["CPU"] == 0


def test_dead_worker_and_dead_owner_give_resources_back():
    s = LeaseScheduler({"CPU": 2}, max_workers=8)
    s.worker_registered("w1")
    s.worker_registered("w2")
    (g1,) = grants(s.request("o1", 1, {"CPU": 1}))
    (g2,) = grants(s.request("o2", 2, {"CPU": 1}))
    s.worker_died(g1[4])
    assert s.available["CPU"] == 1
    s.owner_died("o2")
    assert s.available["CPU"] == 2 and not s.leases


def nest(s, depth):
    """A chain of nested gets: each leased worker blocks, asking for one more."""
    owner, req, out = "driver", 1, []
    for _ in range(depth):
        actions = s.request(owner, req, {"CPU": 1})
        while ("start_worker",) in actions and not grants(actions):
            actions = s.worker_registered(f"w{len(s.workers)}")
        if not grants(actions):
            return out + actions
        (g,) = grants(actions)
        out.append(g)
        owner, req = g[4], req + 1
        s.worker_blocked(g[4])
    return out


def test_blocked_workers_do_not_count_against_the_cap_on_running_workers():
    s = LeaseScheduler({"CPU": 1}, max_workers=2, hard_max=100)
    got = nest(s, 30)
    assert len(grants(got)) == 30 and len(s.workers) == 30


def test_beyond_the_hard_limit_a_nested_request_is_rejected_naming_it():
    s = LeaseScheduler({"CPU": 1}, max_workers=2, hard_max=5, hard_max_name="LIMIT")
    got = nest(s, 10)
    assert len(grants(got)) == 5
    (reject,) = [a for a in got if a[0] == "reject"]
    assert "LIMIT=5" in reject[3] and "5 of them are blocked" in reject[3]


def test_at_the_hard_limit_a_request_waits_while_a_running_worker_can_finish():
    s = LeaseScheduler({"CPU": 2}, max_workers=2, hard_max=2)
    s.worker_registered("w1")
    s.worker_registered("w2")
    (g1,) = grants(s.request("d", 1, {"CPU": 1}))
    (g2,) = grants(s.request("d", 2, {"CPU": 1}))
    s.worker_blocked(g1[4])                  # w2 still runs: it will give its lease back
    assert not [a for a in s.request(g1[4], 3, {"CPU": 1}) if a[0] in ("reject", "grant")]
    assert grants(s.release(g2[3]))


def test_a_task_runs_where_its_data_is_unless_that_node_is_busy_and_another_idle():
    from refbook.runtime.protocol.membership import place_lease

    def node(nid, free):
        return {"node_id": nid, "address": f"nm-{nid}", "alive": True,
                "resources": {"CPU": 1}, "available": {"CPU": free}}
    cpu = {"CPU": 1}
    view = [node("a", 0), node("b", 1), node("c", 0)]
    # the arguments are on a, where nothing waits: here
    assert place_lease(view, cpu, "a", "a", True, False, None) == ("here", None)
    # requests queue on a already and b is idle: b, and the owner stops insisting on a
    assert place_lease(view, cpu, "a", "a", True, True, None) == ("spill_away", "nm-b")
    # a is crowded and nobody is idle: wait here, by the data
    busy = [node("a", 0), node("b", 0)]
    assert place_lease(busy, cpu, "a", "a", True, True, None) == ("here", None)
    # asked on b for a task whose data is on a: go to a
    assert place_lease(view, cpu, "b", "a", True, False, None) == ("spill", "nm-a")
    # no node can ever run it: the head decides, or the head rejects
    assert place_lease(view, {"CPU": 4}, "b", None, False, False, "head") == ("spill", "head")
    where, why = place_lease(view, {"CPU": 4}, "a", None, False, False, None)
    assert where == "reject" and "no node can ever satisfy" in why


def test_requests_queued_beside_an_idle_node_move_there_each_getting_its_own_cpu():
    """Three actors on three 1-CPU nodes: two requests had queued on one node whose
    view of the others was a heartbeat old, and the second waited there for ever."""
    from refbook.runtime.protocol.leases import respill

    def node(nid, free, cpus=1):
        return {"node_id": nid, "address": f"nm-{nid}", "alive": True,
                "resources": {"CPU": cpus}, "available": {"CPU": free}}
    cpu = {"CPU": 1}
    queue = [("d", 1, cpu, True), ("d", 2, cpu, True), ("d", 3, cpu, True)]
    # a has no CPU free; b and c have one each: two move, one to each; one stays
    moves = respill(queue, {"CPU": 0}, [node("a", 0), node("b", 1), node("c", 1)], "a")
    assert sorted(addr for _, addr in moves) == ["nm-b", "nm-c"]
    assert sorted(i for i, _ in moves) == [0, 1]
    # what fits here now stays here (it is about to be granted)
    assert respill(queue[:1], {"CPU": 1}, [node("a", 1), node("b", 1)], "a") == []
    # the second of two requests moves when only one CPU is free here
    assert respill(queue[:2], {"CPU": 1}, [node("a", 1), node("b", 1)], "a") == [(1, "nm-b")]
    # nobody idle (or only a dead node): everything waits here
    dead = dict(node("b", 1), alive=False)
    assert respill(queue, {"CPU": 0}, [node("a", 0), dead, node("c", 0)], "a") == []
    # a custom resource only c has: it goes to c, never to b
    gpu = {"CPU": 1, "GPU": 1}
    c = dict(node("c", 1), available={"CPU": 1, "GPU": 1})
    assert respill([("d", 4, gpu, True)], {"CPU": 0}, [node("b", 1), c], "a") == \
        [(0, "nm-c")]
    # a task's request waits by its data: its lease comes back soon
    assert respill([("d", 5, cpu, False)], {"CPU": 0}, [node("a", 0), node("b", 1)],
                   "a") == []

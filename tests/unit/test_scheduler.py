from refbook.runtime.scheduler import LeaseScheduler


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

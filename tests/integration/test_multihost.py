"""A cluster across hosts: each host a Linux network namespace of its own (made and
removed here), joined by a bridge; loopback addresses where namespaces are not allowed.
Head on one host, nodes on two others, the notebook's host on a fourth."""

import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from refbook.testing.hosts import Hosts
from tests.integration.helpers import wait_for

DRIVER = textwrap.dedent("""
    import hashlib, os, sys, time, json
    import numpy as np
    import refbook
    MB = 1 << 20
    flags = sys.argv[1]
    def wait_flag(name):
        while not os.path.exists(os.path.join(flags, name)):
            time.sleep(0.05)
    refbook.init(address=os.environ["HEAD"])
    out = {}

    @refbook.remote
    def make(seed, mb):
        return np.random.default_rng(seed).integers(0, 255, mb * MB, dtype=np.uint8)

    @refbook.remote
    def digest(a):
        return hashlib.sha256(memoryview(a).cast("B")).hexdigest()

    @refbook.remote
    def where(a=None):
        from refbook.runtime.processes import core
        return core.current().node_id

    @refbook.remote(resources={"b": 1})
    def hold_b(path, s):
        open(path, "w").close()        # b is busy from now on
        time.sleep(s)

    from refbook.runtime.processes import core
    out["own_node"] = core.current().node_id
    by_res = {k: n["node_id"] for n in refbook.nodes() for k in n["resources"]}
    out["a"], out["b"] = by_res["a"], by_res["b"]

    # tasks run where their data is (while that node has a CPU free)
    x = make.options(resources={"a": 1}).remote(1, 20)
    refbook.wait([x])
    out["locality"] = [refbook.get(where.options(resources={"any": 1}).remote(x))
                       for _ in range(3)]
    # 200 MB moves between hosts byte-exact
    big = make.options(resources={"a": 1}).remote(2, 200)
    out["big_on_b"] = refbook.get(digest.options(resources={"b": 1}).remote(big))
    del big
    # a node that joins later gets work
    print("JOIN_C", flush=True)
    wait_flag("c_started")
    t = time.monotonic()
    while refbook.cluster_resources().get("c", 0) < 1 and time.monotonic() - t < 20:
        time.sleep(0.1)
    out["c_node"] = refbook.get(where.options(resources={"c": 1}).remote(), timeout=30)
    # a host cut off mid-job: its objects are rebuilt on the others
    busy = hold_b.remote(os.path.join(flags, "b_busy"), 3)
    wait_flag("b_busy")
    parts = [make.options(resources={"any": 1}).remote(10 + i, 5) for i in range(4)]
    refbook.wait(parts, num_returns=4)
    placed = [o["nodes"] for o in refbook.objects() if o["object_id"] in
              {p.hex() for p in parts}]
    out["parts_on_a"] = sum(1 for nodes in placed if nodes == [out["a"]])
    refbook.get(busy)
    print("CUT_A", flush=True)
    wait_flag("a_cut")
    out["parts"] = refbook.get([digest.options(resources={"any": 1}).remote(p)
                                for p in parts], timeout=120)
    out["rebuilt"] = len(refbook.events("reconstruct"))
    print("RESULT " + json.dumps(out), flush=True)
    refbook.shutdown()
""")


def sha_of(seed, mb):
    a = np.random.default_rng(seed).integers(0, 255, mb << 20, dtype=np.uint8)
    return hashlib.sha256(memoryview(a).cast("B")).hexdigest()


@pytest.fixture
def hosts(tmp_path):
    h = Hosts(["h", "a", "b", "c", "d"], str(tmp_path))
    try:
        yield h
    finally:
        h.refbook("h", "stop", check=False)     # every node this HOME started
        h.close()


def test_a_cluster_across_hosts(hosts, tmp_path):
    h = hosts
    if not h.netns:
        print(f"network namespaces unavailable ({h.reason}); using loopback addresses")
    head = f"{h.ip['h']}:7400"
    h.refbook("h", "start", "--head", "--port", "7400", "--bind", h.ip["h"],
              "--num-cpus", "0", "--object-store-memory", str(256 << 20))
    secret = os.path.join(h.home, ".refbook", f"{h.ip['h']}_7400.secret")
    for name, res in (("a", '{"a": 1, "any": 1}'), ("b", '{"b": 1, "any": 1}')):
        h.refbook(name, "start", "--address", head, "--bind", h.ip[name], "--secret-file",
                  secret, "--num-cpus", "1", "--object-store-memory", str(512 << 20),
                  "--resources", res)
    # nothing runs on the notebook's host d: the driver starts a node of its own there
    flags = tmp_path / "flags"
    flags.mkdir()
    env = dict(h.env(), HEAD=head, REFBOOK_BIND=h.ip["d"])
    drv = subprocess.Popen(h.argv("d", [sys.executable, "-c", DRIVER, str(flags)]),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    result = None
    try:
        for line in drv.stdout:
            if line.startswith("JOIN_C"):
                h.refbook("c", "start", "--address", head, "--bind", h.ip["c"],
                          "--secret-file", secret, "--num-cpus", "1",
                          "--object-store-memory", str(256 << 20),
                          "--resources", '{"c": 1}')   # no "any": the parts go to a
                (flags / "c_started").touch()
            elif line.startswith("CUT_A"):
                h.cut("a")
                (flags / "a_cut").touch()
            elif line.startswith("RESULT "):
                import json
                result = json.loads(line[7:])
        drv.wait(timeout=60)
    finally:
        if drv.poll() is None:
            drv.kill()
    assert result is not None, drv.stderr.read()[-3000:]
    assert result["own_node"] not in (result["a"], result["b"])
    import psutil  # the driver's own node went with it
    assert wait_for(lambda: not [p for p in psutil.process_iter(["cmdline"])
                                 if f'"bind_host": "{h.ip["d"]}"'
                                 in " ".join(p.info["cmdline"] or [])], timeout=10)
    assert result["locality"] == [result["a"]] * 3
    assert result["big_on_b"] == sha_of(2, 200)
    assert result["c_node"] not in (result["a"], result["b"])
    assert result["parts_on_a"] >= 1
    assert result["parts"] == [sha_of(10 + i, 5) for i in range(4)]
    assert result["rebuilt"] >= result["parts_on_a"]


def test_a_driver_without_the_secret_is_refused(hosts, tmp_path_factory):
    h = hosts
    head = f"{h.ip['h']}:7401"
    h.refbook("h", "start", "--head", "--port", "7401", "--bind", h.ip["h"], "--num-cpus",
              "0", "--object-store-memory", str(64 << 20))
    h.refbook("d", "start", "--address", head, "--bind", h.ip["d"], "--num-cpus", "0",
              "--object-store-memory", str(64 << 20))
    join = [sys.executable, "-c", f"import refbook; refbook.init(address='{head}')"]
    elsewhere = dict(h.env(), HOME=str(tmp_path_factory.mktemp("stranger")),
                     REFBOOK_BIND=h.ip["d"])
    p = subprocess.run(h.argv("d", join), capture_output=True, text=True, timeout=60,
                       env=elsewhere)                      # another user: no secret file
    assert p.returncode != 0 and "no secret" in p.stderr
    p = subprocess.run(h.argv("d", join), capture_output=True, text=True, timeout=60,
                       env=dict(elsewhere, REFBOOK_SECRET=os.urandom(32).hex()))
    assert p.returncode != 0 and "secret does not match" in p.stderr
    p = subprocess.run(h.argv("d", join + []), capture_output=True, text=True, timeout=60,
                       env=dict(h.env(), REFBOOK_BIND=h.ip["d"]))   # the right secret
    assert p.returncode == 0, p.stderr

"""What a start's network plan changes in the exec driver's spec (``jobs.containers``)."""

from __future__ import annotations

from drivers.exec.spec import NAMESPACES, ContainerSpec, Process
from graph.networks import NetworkRecord
from jobs.containers import _networked
from jobs.netplan import Plan

SPEC = ContainerSpec(id="c" * 64, rootfs="/r", bundle="/b", run_dir="/x",
                     process=Process(args=("true",), env=("PATH=/bin",)))  # fmt: skip
BRIDGE = NetworkRecord(id="n" * 64, name="bridge", driver="bridge", bridge="dyt0",
                       subnet="10.250.0.0/24", gateway="10.250.0.1", ip_range="",
                       internal=False, attachable=False, labels={}, options={}, created="",
                       predefined=True)  # fmt: skip


def test_attached_containers_wait_for_their_interfaces_and_get_link_variables() -> None:
    spec = _networked(SPEC, Plan("new", networks=[(BRIDGE, {})], env=["DB_NAME=/a/db"]), "dy")
    assert spec.wait_for_network and spec.namespaces == NAMESPACES
    assert spec.process.env == ("PATH=/bin", "DB_NAME=/a/db") and spec.cgroup_parent == "dy"


def test_a_host_plan_keeps_the_host_network_namespace() -> None:
    # "default" can mean the host's network (--network-driver host): the plan, not the
    # HostConfig, says so.
    spec = _networked(SPEC, Plan("host"), "")
    assert "net" not in spec.namespaces and not spec.wait_for_network
    assert _networked(SPEC, Plan("new"), "").namespaces == NAMESPACES

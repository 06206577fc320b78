"""FRR instances in the lab (iptserver.lab.frr): refused configs, teardown by PID."""

from __future__ import annotations

import pytest

from iptserver.lab.errors import LabError
from iptserver.lab.frr import config_dir, run_dir
from iptserver.lab.mesh import MeshLab
from iptserver.lab.state import start_time


def test_a_refused_config_stops_the_instance_and_teardown_removes_the_rest() -> None:
    with MeshLab() as lab:
        with pytest.raises(LabError, match="vtysh -b refused the config"):
            lab.start_frr("office", "router ospf\n ospf router-id not-an-address\n")
        assert not config_dir(lab.ns("office")).exists()
        frr = lab.start_frr("entry", "router ospf\n ospf router-id 10.255.0.1\n")
        assert frr.show("show ip ospf json")["routerId"] == "10.255.0.1"
        pids = frr.pids
        assert len(pids) == 2 and all(start_time(pid) is not None for pid in pids)
        instance = lab.ns("entry")
        assert (config_dir(instance) / "frr.conf").exists()
    assert all(start_time(pid) is None for pid in pids)
    assert not config_dir(instance).exists() and not run_dir(instance).exists()

"""The server-wide slot against a real Prefect server: it is shared by what shares state (a DVC remote) and by
nothing else, a killed holder's slot is reclaimed by the next run of any clone, a holder on another host keeps its
slot while it renews, and a run that lost its slot never promotes or pushes."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_project, sh, tiny_params

pytestmark = pytest.mark.integration

HOLD = """
import sys, time
from pathlib import Path
from tasks.orchestration.server_slot import server_slot
with server_slot(Path(sys.argv[1]), 0, "a test holder"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture()
def api(prefect_env):
    """This process's Prefect client settings pointed at the session's server (prefect read its settings once)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_env["PREFECT_API_URL"]}):
        yield prefect_env


def project_with_remote(root: Path, tiny_model_dir: Path, remote: Path | None) -> Path:
    project = make_project(root, tiny_params(tiny_model_dir))
    if remote is not None:
        sh(sys.executable, "-m", "dvc", "remote", "add", "-d", "shared", str(remote), cwd=project)
    return project


def hold_in_another_process(project: Path, env: dict) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(project)], env=env, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_clones_of_one_remote_share_the_slot_unrelated_clones_do_not_and_a_killed_holder_is_reclaimed(
        api, tmp_path, tiny_model_dir):
    from tasks.orchestration.locking import ProjectBusy
    from tasks.orchestration.server_slot import limit_name, read_holder, server_slot

    a = project_with_remote(tmp_path / "a", tiny_model_dir, tmp_path / "remote")
    b = project_with_remote(tmp_path / "b", tiny_model_dir, tmp_path / "remote")
    c = project_with_remote(tmp_path / "c", tiny_model_dir, None)  # another clone of the same upstream, own state
    assert limit_name(a) == limit_name(b) != limit_name(c)
    holder = hold_in_another_process(a, api)
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with_credentials = api["PREFECT_API_URL"].replace("http://", "http://ops:hunter2@")
        with temporary_settings({PREFECT_API_URL: with_credentials}):  # a URL that carries a password
            with pytest.raises(ProjectBusy, match=r"`a test holder` \(PID \d+ on .*\) holds the server-wide slot") \
                    as busy:
                with server_slot(b, 0):
                    pass
        assert "hunter2" not in str(busy.value) and "http://***@127.0.0.1" in str(busy.value)
        with server_slot(c, 0):  # an unrelated project is never "busy" because of a's run
            pass
        assert read_holder(limit_name(a)).pid == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: no release, no cleanup
        holder.wait()
    start = time.monotonic()
    with server_slot(b, 0):  # the next run of another clone reclaims the dead holder's slot at once
        assert read_holder(limit_name(b)).pid != holder.pid
    assert time.monotonic() - start < 15


def test_a_holder_on_another_host_keeps_its_slot_while_it_renews_and_loses_it_when_it_stops(api, tmp_path,
                                                                                             tiny_model_dir):
    from prefect.concurrency._sync import acquire_concurrency_slots_with_lease

    from tasks.orchestration.locking import ProjectBusy
    from tasks.orchestration.prefect_objects import ensure_limit
    from tasks.orchestration.server_slot import LEASE_S, GRACE_S, Holder, limit_name, server_slot, write_holder

    project = project_with_remote(tmp_path / "p", tiny_model_dir, tmp_path / "remote")
    name = limit_name(project)
    ensure_limit(name)
    lease = acquire_concurrency_slots_with_lease([name], 1, timeout_seconds=10, lease_duration=LEASE_S, strict=True)
    remote_holder = Holder(str(lease.lease_id), "build-7", 4242, "tuneline run", "2026-11-30 08:00:00 UTC", time.time())
    write_holder(name, remote_holder)
    with pytest.raises(ProjectBusy, match=r"PID 4242 on build-7"):  # it renewed just now: it lives
        with server_slot(project, 0):
            pass
    remote_holder.renewed = time.time() - (LEASE_S + GRACE_S + 60)  # its last renewal, long ago: that host is gone
    write_holder(name, remote_holder)
    with server_slot(project, 0):
        pass


def test_a_run_that_lost_its_slot_never_promotes_or_pushes(api, tmp_path, tiny_model_dir):
    from tasks import changes
    from tasks.orchestration import storage
    from tasks.orchestration.server_slot import SlotLost, limit_name, read_holder, release_lease, server_slot
    from tests.conftest import tree_digest

    project = project_with_remote(tmp_path / "p", tiny_model_dir, tmp_path / "remote")
    before = tree_digest(project)
    with server_slot(project, 0):
        release_lease(read_holder(limit_name(project)).lease_id)  # the server frees it (its lease lapsed, say)
        with pytest.raises(SlotLost, match=r"was lost .* stopped before any promotion or push: nothing was promoted"):
            changes.promote(project)
        with pytest.raises(SlotLost):
            storage.push(project)
    assert {k: v for k, v in tree_digest(project).items() if not k.startswith(".tuneline")} == \
        {k: v for k, v in before.items() if not k.startswith(".tuneline")}
    assert not (tmp_path / "remote").exists()  # nothing was pushed

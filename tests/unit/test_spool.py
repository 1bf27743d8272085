"""The local spool: whole files readable by their owner only, bounded, one file and one ledger row per
capture, and never an exception into the task."""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import stat

import pytest

from airflow_cost_provider.capture import spool as spool_module
from airflow_cost_provider.capture.spool import Spool, result_from_json, result_to_json, writer_for
from airflow_cost_provider.ledger import store
from tests.support.airflow_env import ledger_rows
from tests.unit.test_ledger import make_result

ROWS = (
    "SELECT r.dag_id, r.task_id, r.run_id, r.try_number, r.map_index, r.ol_run_id, r.capture_id, r.state, "
    "r.status, r.hostname, r.owner, r.team, l.source, l.metric, l.amount_nanos, l.currency, l.method, "
    "l.status AS line_status, l.price_ref, l.price_amount, l.price_source_url, l.unpriced_reason, "
    "u.quantity, u.unit, u.external_id, u.attributes "
    "FROM cost_task_runs r JOIN cost_lines l ON l.task_run_id = r.id JOIN cost_usage u ON u.id = l.usage_id "
    "ORDER BY l.source, l.amount_nanos"
)


def replay_into(spool: Spool, url: str, **options):
    engine = store.get_engine(url)

    write = writer_for(engine)

    return spool.replay(write, **options)


def attributed():
    result = make_result(amounts=("0.123456789", "7"))
    task_try = dataclasses.replace(
        result.task_try, owner="ana", team="sales", dag_tags=("daily",), labels=(("product", "shop"),)
    )
    return dataclasses.replace(result, task_try=task_try)


def test_a_spooled_capture_reads_back_to_the_same_ledger_rows(tmp_path):
    original = attributed()
    assert result_from_json(result_to_json(original)).task_try == original.task_try
    direct, replayed = (f"sqlite:///{tmp_path / name}" for name in ("direct.db", "replayed.db"))
    store.store(store.get_engine(direct), original)
    spool = Spool(tmp_path / "spool", 10**6)
    spool.put(original)
    outcome = replay_into(spool, replayed)
    assert (outcome.written, outcome.remaining, outcome.failed) == (1, 0, [])
    assert ledger_rows(replayed, ROWS) == ledger_rows(direct, ROWS)
    assert len(ledger_rows(replayed, ROWS)) == 3  # two priced lines and one unpriced


def test_money_is_kept_as_exact_decimal_text(tmp_path):
    spool = Spool(tmp_path / "spool", 10**6)
    path = spool.put(make_result(amounts=("0.123456789",)))
    text = path.read_text()
    assert '"amount":"0.123456789"' in text and '"amount":"5"' in text  # the line and its unit price


def test_files_are_whole_private_and_one_per_capture(tmp_path):
    spool = Spool(tmp_path / "spool", 10**6)
    first = spool.put(make_result(capture_id="c1"))
    second = spool.put(make_result(capture_id="c1"))
    assert first == second == tmp_path / "spool" / "c1.json"
    assert sorted(os.listdir(spool.directory)) == ["c1.json"]  # no temporary file left
    assert stat.S_IMODE(os.stat(spool.directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o600


def test_a_capture_id_that_is_no_safe_file_name_is_named_by_its_digest(tmp_path):
    spool = Spool(tmp_path / "spool", 10**6)
    path = spool.put(make_result(capture_id="../../etc/passwd"))
    assert path.parent == spool.directory and path.name.startswith("capture-")
    assert spool.contains("../../etc/passwd")


def test_a_full_spool_drops_the_new_capture_with_a_warning(tmp_path, caplog):
    one = len(Spool(tmp_path / "probe", 10**6).put(make_result(capture_id="probe")).read_bytes())
    spool = Spool(tmp_path / "spool", one + one // 2)
    assert spool.put(make_result(capture_id="a")) is not None
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        assert spool.put(make_result(capture_id="b")) is None
    assert "spool" in caplog.text and "is full (spool_max_mb): capture b dropped" in caplog.text
    assert [p.name for p in spool.pending()] == ["a.json"]
    assert spool.put(make_result(capture_id="a")) is not None  # replacing itself still fits


def test_a_full_disk_drops_the_capture_and_leaves_no_partial_file(tmp_path, monkeypatch, caplog):
    def no_space(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.os, "replace", no_space)
    spool = Spool(tmp_path / "spool", 10**6)
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        assert spool.put(make_result()) is None
    assert "could not spool capture c1" in caplog.text and "the disk is full" in caplog.text
    assert os.listdir(spool.directory) == []


def test_an_unwritable_spool_folder_is_a_warning_not_an_error(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    spool = Spool(blocker / "spool", 10**6)
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        assert spool.put(make_result()) is None
    assert "could not spool capture c1" in caplog.text


def test_replaying_a_capture_already_in_the_ledger_keeps_one_row(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    result = make_result()
    store.store(store.get_engine(url), result)  # the late write landed after all
    spool = Spool(tmp_path / "spool", 10**6)
    spool.put(result)
    assert replay_into(spool, url).written == 1
    spool.put(result)
    assert replay_into(spool, url).written == 1
    assert len(ledger_rows(url, "SELECT id FROM cost_task_runs")) == 1
    assert spool.count() == 0


def test_replay_is_oldest_first_bounded_and_keeps_what_failed(tmp_path):
    spool = Spool(tmp_path / "spool", 10**6)
    for number in range(4):
        path = spool.put(make_result(capture_id=f"c{number}", task_id=f"t{number}"))
        os.utime(path, ns=(number * 10**9, number * 10**9))
    seen = []

    def write(item, _left):
        seen.append(item.result.capture_id)
        return (True, RuntimeError("refused")) if item.result.capture_id == "c1" else (True, None)

    outcome = spool.replay(write, limit=3)
    assert seen == ["c0", "c1", "c2"]
    assert (outcome.written, outcome.remaining) == (2, 2)
    assert outcome.failed == [("c1.json", "RuntimeError: refused")]
    assert [p.name for p in spool.pending()] == ["c1.json", "c3.json"]


def test_one_process_replays_at_a_time(tmp_path):
    spool = Spool(tmp_path / "spool", 10**6)
    spool.put(make_result())
    with spool.replay_lock() as mine:
        assert mine
        outcome = spool.replay(lambda *_: pytest.fail("replayed under another lock"))
    assert outcome.busy and outcome.remaining == 1


def test_an_unreadable_file_is_set_aside_and_reported(tmp_path):
    spool = Spool(tmp_path / "spool", 10**6)
    spool.put(make_result())
    (spool.directory / "broken.json").write_text("{not json")
    outcome = replay_into(spool, f"sqlite:///{tmp_path / 'ledger.db'}")
    assert outcome.written == 1 and outcome.remaining == 0
    assert outcome.failed[0][0] == "broken.json" and "unreadable" in outcome.failed[0][1]
    assert (spool.directory / "broken.unreadable").exists()


def test_a_spooled_deferral_is_not_written_once_the_final_capture_is_in(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    result = make_result()
    spool = Spool(tmp_path / "spool", 10**6)
    spool.put_deferred(result.task_try, {"version": 1, "usage": [], "pending": []})
    assert spool.load_deferred(result.task_try) == {"version": 1, "usage": [], "pending": []}
    store.store(store.get_engine(url), result)
    assert replay_into(spool, url).written == 1
    assert ledger_rows(url, "SELECT try_number FROM cost_deferred_captures") == []
    spool.put_deferred(result.task_try, {"version": 1, "usage": [], "pending": []})
    other = dataclasses.replace(result.task_try, try_number=2)
    spool.put_deferred(other, {"version": 1, "usage": [], "pending": []})
    assert replay_into(spool, url).written == 2
    assert len(ledger_rows(url, "SELECT try_number FROM cost_deferred_captures")) == 1


def test_replay_command_writes_every_capture_and_says_how_many(tmp_path, capsys):
    from airflow_cost_provider.cli import main

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    spool = Spool(tmp_path / "spool", 10**6)
    for number in range(3):
        spool.put(make_result(capture_id=f"c{number}", task_id=f"t{number}"))
    spool.put(make_result(capture_id="c0", task_id="t0"))  # spooled twice: one row
    status = main(["replay", "--spool", str(spool.directory), "--ledger", url, "-o", "json"])
    out, err = capsys.readouterr()
    assert status == 0
    assert '"written": 3' in out and '"remaining": 0' in out
    assert "wrote 3 capture(s), 0 remain" in err
    assert len(ledger_rows(url, "SELECT id FROM cost_task_runs")) == 3
    assert main(["replay", "--spool", str(spool.directory), "--ledger", url]) == 0
    assert "wrote 0 capture(s), 0 remain" in capsys.readouterr().out


def test_replay_command_with_an_unreachable_ledger_keeps_the_spool_and_fails(tmp_path, capsys):
    from airflow_cost_provider.cli import main
    from tests.support.http_recorder import closed_port

    spool = Spool(tmp_path / "spool", 10**6)
    spool.put(make_result())
    url = f"postgresql+psycopg2://cost:secret-pw@127.0.0.1:{closed_port()}/ledger"
    assert main(["replay", "--spool", str(spool.directory), "--ledger", url]) == 1
    err = capsys.readouterr().err
    assert "cannot be written" in err and f"1 capture(s) remain in {spool.directory}" in err
    assert "secret-pw" not in err
    assert spool.count() == 1


def test_replay_command_reports_what_it_could_not_write(tmp_path, capsys):
    from airflow_cost_provider.cli import main

    spool = Spool(tmp_path / "spool", 10**6)
    spool.put(make_result(capture_id="good"))
    (spool.directory / "bad.json").write_text("[1, 2")
    status = main(["replay", "--spool", str(spool.directory), "--ledger", f"sqlite:///{tmp_path / 'l.db'}"])
    out = capsys.readouterr().out
    assert status == 1
    assert "bad.json" in out and "wrote 1 capture(s), 0 remain (1 failed: unreadable" in out


def test_report_warns_when_captures_wait_in_this_machines_spool(tmp_path, capsys):
    from airflow_cost_provider.capture.spool import configured_spool
    from airflow_cost_provider.cli import main

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store.store(store.get_engine(url), make_result(capture_id="in"))
    assert main(["report", "--ledger", url]) == 0
    assert "airflow-cost replay" not in capsys.readouterr().err
    spool = configured_spool()
    spool.put(make_result(capture_id="waiting", task_id="other"))
    assert main(["report", "--ledger", url]) == 0
    assert (
        f"warning: 1 capture(s) wait in {spool.directory}: run airflow-cost replay" in capsys.readouterr().err
    )

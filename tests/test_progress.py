from pathlib import Path

from pipelines.progress import RunMonitor, RunTotals


def unit(actor="a", rows=10, tokens=100, committed=True, started=0.0, rate=0.01, seconds=100.0):
    return {"actor_id": actor, "actor_started_at": started, "actor_usd_per_second": rate,
            "committed": committed, "rows": rows, "completion_tokens": tokens, "engine_seconds": seconds}


def test_log_lines_carry_rows_rate_eta_and_dollars(cli_console, capsys):
    m = RunMonitor(RunTotals(rows_total=100, rows_done_before=20, units_pending=8, usd_before=1.0, max_cost_usd=None),
                   request_stop=lambda r: None, interactive=False)
    m.on_unit(unit())
    line = capsys.readouterr().out
    assert line.startswith("spotbatch progress: 30/100 rows") and "ETA" in line and "spent" in line
    assert m.spent() > 1.0 and m.projected() > m.spent()


def test_budget_stops_admitting_units_once_the_next_ones_would_pass_it():
    import time

    stops = []
    now = time.time()
    m = RunMonitor(RunTotals(rows_total=1000, rows_done_before=0, units_pending=100, usd_before=0.0, max_cost_usd=10.0),
                   request_stop=lambda reason: (stops.append(reason), m.stopping(reason)), interactive=False)
    # one actor, 300 s old at $0.01/s: $3 spent; its next 100-s unit, $1, makes $4 < $10
    m.on_unit(unit("a", started=now - 300))
    assert stops == [] and m.stopped is None
    # a second actor, 300 s old: $6 spent; their next units, $2, make $8 < $10
    m.on_unit(unit("b", started=now - 300))
    assert stops == []
    # a unit of 700 s: units now average 300 s, $3 each, $6 for the next round: $6 + $6 > $10
    m.on_unit(unit("a", seconds=700.0))
    assert stops == ["budget"] and m.stopped == "budget"


def test_no_budget_never_stops():
    stops = []
    m = RunMonitor(RunTotals(rows_total=10, rows_done_before=0, units_pending=1, usd_before=0.0, max_cost_usd=None),
                   request_stop=stops.append, interactive=False)
    m.on_unit(unit(started=0.0, rate=1.0))
    assert stops == [] and m.stopped is None


def test_a_deadline_stops_admitting_units_that_would_end_past_it():
    import time

    stops = []
    now = time.time()
    m = RunMonitor(RunTotals(rows_total=1000, rows_done_before=0, units_pending=100, usd_before=0.0, max_cost_usd=None,
                             deadline=now + 250), request_stop=stops.append, interactive=False)
    assert not m.past_deadline(now)  # no unit measured yet: only the deadline itself counts
    assert m.past_deadline(now + 251)
    m.on_unit(unit(seconds=100.0))  # units take 100 s: one taken now ends well before it
    assert stops == [] and not m.past_deadline(now + 140)
    assert m.past_deadline(now + 160)  # one taken then would end at +260
    m.on_unit(unit(seconds=400.0))  # units now average 250 s: the next one would end past it
    assert stops == ["deadline"]


def test_a_log_ends_with_the_runs_final_state_not_its_last_line_before_it(cli_console, capsys):
    m = RunMonitor(RunTotals(rows_total=30, rows_done_before=0, units_pending=3, usd_before=0.0, max_cost_usd=None),
                   request_stop=lambda r: None, interactive=False)
    for _ in range(3):
        m.on_unit(unit())  # one line at the first unit, the next two within LOG_SECONDS of it
    m.close()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" rows")[0] for line in lines] == ["spotbatch progress: 10/30", "spotbatch progress: 30/30"]


def test_nothing_run_logs_no_final_line(cli_console, capsys):
    m = RunMonitor(RunTotals(rows_total=30, rows_done_before=0, units_pending=3, usd_before=0.0, max_cost_usd=None),
                   request_stop=lambda r: None, interactive=False)
    m.close()
    assert capsys.readouterr().out == ""


def test_a_notebook_shows_one_line_redrawn_in_place_ending_at_the_final_state(tmp_path):
    """In a real kernel, as a notebook runs it: one display output, updated, and nothing else."""
    import nbformat
    from nbclient import NotebookClient

    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from pipelines.log import console
from pipelines.progress import RunMonitor, RunTotals
console()  # as a run does first: nothing configured logging in this kernel
m = RunMonitor(RunTotals(rows_total=30, rows_done_before=0, units_pending=3, usd_before=0.0, max_cost_usd=None),
               request_stop=lambda r: None)
for _ in range(3):
    m.on_unit({{"actor_id": "a", "actor_started_at": 0.0, "actor_usd_per_second": 0.0, "committed": True,
               "rows": 10, "completion_tokens": 100, "engine_seconds": 1.0}})
m.close()
"""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    assert [o.output_type for o in outputs] == ["display_data"], outputs
    assert outputs[0].data["text/plain"].startswith("spotbatch progress: 30/30 rows")


def test_a_run_controlled_by_its_caller_prints_nothing_and_gives_its_line(cli_console, capsys):
    m = RunMonitor(RunTotals(rows_total=30, rows_done_before=0, units_pending=3, usd_before=0.0, max_cost_usd=None),
                   request_stop=lambda r: None, interactive=True, show=False)
    m.on_unit(unit())
    m.stopping("cancelled")
    m.close()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert m.line().startswith("10/30 rows") and m.line().endswith("[stopping: cancelled]")

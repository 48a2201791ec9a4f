"""What produced a result is recorded with it (ham/provenance.py): the commit, the command, the versions and the
CPU threads, in every run's summary.json and every sweep's sweep.json / results.md."""

import subprocess
import sys

from ham.provenance import REPO_ROOT, provenance
from ham.sweep import provenance_line


def test_provenance_names_the_commit_command_and_threads(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["sweep.py", "--table", "proxy", "--seeds", "0"])
    p = provenance(threads=1)
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert p["commit"].split("+")[0] == head.strip()
    assert p["command"] == "python sweep.py --table proxy --seeds 0"
    assert p["threads"] == 1 and p["torch"] and p["cpu_cores"] >= 1


def test_results_say_who_made_them():
    manifest = {"provenance": {"command": "python sweep.py --table proxy", "commit": "abc", "torch": "2.9",
                               "cpu_cores": 2}}
    rows = [{"threads": 1, "commit": "abc"}, {"threads": 1, "commit": "abc"}, {"status": "failed"}]
    assert provenance_line(manifest, rows) == ("Made by `python sweep.py --table proxy` at commit abc (torch 2.9, "
                                               "2 cores); runs used 1 CPU thread(s).")
    rows.append({"threads": 2, "commit": "def"})
    line = provenance_line(manifest, rows)
    assert "runs used 1/2 CPU thread(s)" in line and "2 different commits: abc, def" in line


def test_holm_correction_is_step_down_and_monotone():
    from ham.sweep import holm

    got = holm([0.01, 0.04, 0.03, float("nan"), 0.5])
    assert got[:3] == [0.04, 0.09, 0.09] and got[3] != got[3] and got[4] == 0.5

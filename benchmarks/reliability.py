"""Reliability counts, measured by running the fault-injection suite (tests/faults, also part of `make test`).

    python benchmarks/reliability.py --write BENCHMARKS.md --errors docs/errors.md

Runs `pytest tests/faults` once and reads its JUnit report: how many store corruptions were injected and
caught (named by `verify`, refused by `train`, repaired), how many bad inputs ended in one `error:` line
with exit code 2 (also by family: readers, object-store URLs, pipelines, run folders, ...), how many SIGKILL
points and full-disk points an extract survived bit-identical, and how many planted pickles ran code. Appends one row to the Reliability table of BENCHMARKS.md and rewrites
docs/errors.md, the catalogue of error messages, from the messages the suite actually saw.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]  # this checkout's aftpipe, not an installed one
from _markdown import append_rows, replace_block  # noqa: E402

COMMAND = "python -m pytest tests/faults -p no:cacheprovider"


def run_suite() -> tuple[ET.Element, float]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.xml"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "tests/faults", "-p", "no:cacheprovider", "-q", "-o", "junit_family=xunit1",
                        f"--junitxml={report}"], cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
        return ET.parse(report).getroot(), time.perf_counter() - t0


def cases(root: ET.Element) -> list[dict]:
    out = []
    for tc in root.iter("testcase"):
        props = {p.get("name"): p.get("value") for p in tc.iter("property")}
        failed = any(tc.find(k) is not None for k in ("failure", "error", "skipped"))
        out.append({"file": tc.get("classname", "").split(".")[-1], "name": tc.get("name", ""), "ok": not failed,
                    "props": props})
    return out


# the families of the bad-input catalogue, by the case id's prefix (the first that matches)
FAMILIES = (("url-", "object-store URLs"), ("validate-", "pipelines"), ("run-", "pipelines"),
            ("train-out-", "run folders"), ("train-resume-", "run folders"), ("evaluate-", "run folders"),
            ("tsv-", "readers"), ("csv-", "readers"), ("jsonl-", "readers"), ("imagefolder-", "readers"),
            ("hf-folder-", "readers"), ("tfidf-", "readers"), ("predict-", "predict/export/model folders"),
            ("export-", "predict/export/model folders"), ("model-", "predict/export/model folders"),
            ("verify-", "stores"), ("inspect-", "stores"), ("extract-", "extract options and stores"),
            ("train-", "train options and data"), ("distill-", "distill"), ("unknown-", "command line"),
            ("cpu-kernels-", "command line"))


def family(case_id: str) -> str:
    return next((name for prefix, name in FAMILIES if case_id.startswith(prefix)), "other")


def counts(tcs: list[dict]) -> dict[str, tuple[int, int]]:
    """category → (passed, tried); bad inputs also by family (`bad inputs: readers`)."""
    c: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    def add(key: str, ok: int, tried: int) -> None:
        c[key][0] += ok
        c[key][1] += tried

    for t in tcs:
        if t["file"] == "test_corruption":
            add("corruptions", t["ok"], 1)
        elif t["file"] == "test_bad_inputs" and t["name"].startswith("test_bad_input_is_one_line"):
            add("bad inputs", t["ok"], 1)
            add(f"bad inputs: {family(t['name'].split('[', 1)[-1].rstrip(']'))}", t["ok"], 1)
        elif t["file"] == "test_kill_resume":
            add("kills", int(t["props"].get("bit_identical", 0)), int(t["props"].get("kill_points", 0)) or 1)
        elif t["file"] == "test_disk_full" and "every_write_step" in t["name"]:
            add("disk full", int(t["props"].get("recovered", 0)), int(t["props"].get("enospc_points", 0)) or 1)
        elif t["file"] == "test_no_pickle" and "planted" in t["props"]:
            add("pickles", 0 if t["ok"] else int(t["props"]["planted"]), int(t["props"]["planted"]))
        elif t["file"] == "test_regressions":
            add("regressions", t["ok"], 1)
    return {k: (v[0], v[1]) for k, v in c.items()}


def normalise(message: str) -> str:
    """A message without what differs from run to run: temp folders, a lock holder's pid, host and time."""
    message = re.sub(r"/[^ ]*/pytest-of-[^/ ]+/pytest-\d+/[^/ ]+", "…", message)
    return re.sub(r"pid \d+ on \S+ \(since [^)]+\)", "pid PID on HOST (since TIME)", message)


def errors_doc(tcs: list[dict]) -> str:
    from faults.test_bad_inputs import CASES  # the catalogue itself: each case's command

    by_id = {c.id: c for c in CASES}
    rows = []
    for t in tcs:
        if t["file"] != "test_bad_inputs" or "[" not in t["name"]:
            continue
        case = by_id[t["name"].split("[", 1)[1].rstrip("]")]
        command = " ".join(case.args).replace("{tmp}", "…").replace("{data}", "DATA").replace("{run}", "RUN") \
            .replace("{store}", "STORE").replace("{model}", "MODEL").replace("{h5}", "STORE.h5")
        message = normalise(t["props"].get("message", "(failed)")).replace("|", "\\|")
        env = "".join(f"{k}={v} " for k, v in case.env)
        rows.append(f"| `{case.id}` | `{env}aftpipe {command}` | {message} | 2 |")
    return "\n".join([
        "# Error catalogue",
        "",
        "Every error a user can cause ends in one line on stderr, `error: <what is wrong>; <how to fix it>`, and",
        "exit code 2 (no traceback); `aftpipe verify` exits 1 when it finds damage and prints each problem on",
        "its own line first. This table is the bad-input catalogue of `tests/faults/test_bad_inputs.py`, one",
        "row per message, with the message the test saw (paths shortened: `…` is the case's folder, DATA the",
        "tiny dataset, STORE its store, MODEL the model, RUN the run folder). Regenerate it with",
        "`python benchmarks/reliability.py --errors docs/errors.md`.",
        "",
        "| case | command | message | exit |",
        "|---|---|---|---|",
        *rows,
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", help="append a row to this BENCHMARKS.md")
    ap.add_argument("--errors", help="rewrite this error catalogue (docs/errors.md)")
    args = ap.parse_args()
    root, wall = run_suite()
    tcs = cases(root)
    c = counts(tcs)
    for k, (ok, tried) in c.items():
        print(f"{k}: {ok} / {tried}")
    failed = [t["name"] for t in tcs if not t["ok"]]
    if failed:
        print(f"{len(failed)} tests failed: {', '.join(failed[:5])}", file=sys.stderr)
    if args.write:
        machine = f"{platform.machine()} ×{os.cpu_count()} cores"
        cell = lambda k: f"{c.get(k, (0, 0))[0]} / {c.get(k, (0, 0))[1]}"  # noqa: E731
        executed, planted = c.get("pickles", (0, 0))
        append_rows(args.write, "reliability", [
            f"| {dt.date.today()} | {machine} | {cell('corruptions')} | {cell('bad inputs')} | {cell('kills')} | "
            f"{cell('disk full')} | {executed} of {planted} | {cell('regressions')} | {wall:.0f} |"])
        families = sorted(k for k in c if k.startswith("bad inputs: "))
        replace_block(args.write, "reliability-families", "\n".join([
            f"Bad inputs by family, as of the last row above ({dt.date.today()}; the case id's prefix names the family):",
            "", "| family | one `error:` line, exit 2 |", "|---|---|",
            *(f"| {k.removeprefix('bad inputs: ')} | {cell(k)} |" for k in families)]))
    if args.errors:
        sys.path.insert(0, str(ROOT / "tests"))
        Path(args.errors).parent.mkdir(parents=True, exist_ok=True)
        Path(args.errors).write_text(errors_doc(tcs))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""Print the README's Reliability table from the rows the fault suite wrote to test-artifacts/reliability/.

.venv/bin/python -m tests.faults.report

Every number is measured: `lost` and `duplicated` are computed from the project's images (by content and by
provenance), and the upload columns come from the Custom Vision emulator's counters (every image entry it
received and every duplicate it answered). The folder is emptied at the start of each fault-suite run and a
case writes its row only once its checks passed, so the table shows exactly the cases that passed last time.
"""

from __future__ import annotations

import json

from tests.conftest import ARTIFACTS

COLUMNS = (
    "case",
    "profile",
    "what was injected",
    "blobs",
    "runs",
    "faults fired",
    "failed in run 1, pushed in run 2",
    "uploads per eligible blob (entries sent)",
    "duplicate answers (bound)",
    "lost",
    "duplicated",
)


def main() -> None:
    rows = [json.loads(p.read_text()) for p in sorted((ARTIFACTS / "reliability").glob("*.json"))]
    rows.sort(key=lambda row: (row.get("profile", "default") != "default", row["case"]))
    print("| " + " | ".join(COLUMNS) + " |")
    print("| --- | --- | --- | " + " | ".join("---:" for _ in COLUMNS[3:]) + " |")
    for row in rows:
        fault = row["fault"] if not row["fault"].startswith("[") else _plan(row["fault"])
        failed = row.get("failed_in_first_run")
        cells = (
            row["case"],
            row.get("profile", "default"),
            fault,
            row["blobs"],
            row["runs"],
            row["fired"],
            "-" if failed is None else failed,
            f"{row['uploads_per_eligible_blob']:.2f} ({row['entries_sent']})",
            f"{row['duplicate_answers']} (≤ {row['duplicate_answers_bound']})",
            row["lost"],
            row["duplicated"],
        )
        print("| " + " | ".join(str(cell) for cell in cells) + " |")


def _plan(text: str) -> str:
    rules = json.loads(text)
    parts = []
    for rule in rules:
        how = f"p={rule['probability']}" if "probability" in rule else ""
        times = f"up to {rule['times']}x" if "times" in rule else ""
        phase = " after the work" if rule.get("phase") == "after" else ""
        parts.append(" ".join(x for x in (rule["kind"] + phase, "on " + rule["operation"], how, times) if x))
    return "; ".join(parts)


if __name__ == "__main__":
    main()

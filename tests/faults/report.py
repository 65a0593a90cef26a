"""Print the README's Reliability table from the rows the fault suite wrote to test-artifacts/reliability/.

.venv/bin/python -m tests.faults.report
"""

from __future__ import annotations

import json

from tests.conftest import ARTIFACTS


def main() -> None:
    rows = [json.loads(p.read_text()) for p in sorted((ARTIFACTS / "reliability").glob("*.json"))]
    print(
        "| case | what was injected | blobs | runs | faults fired | failed in run 1, pushed in run 2 "
        "| lost | duplicated |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        fault = row["fault"] if not row["fault"].startswith("[") else _plan(row["fault"])
        print(
            f"| {row['case']} | {fault} | {row['blobs']} | {row['runs']} | {row['fired']} | "
            f"{row.get('failed_in_first_run', '-')} | {row['lost']} | {row['duplicated']} |"
        )


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

"""Write tests/data/ledger-before.json: the Table ledger's rows as the code of BEFORE (the layout before
a model's state, decisions and notifications shared its partition) wrote them, for
tests/test_ledger_upgrade.py, which loads them into Azurite and runs this code on them.

The code of BEFORE is taken from git (``git archive``) and run in a process of its own against an
Azurite started here; it handles, through its own service on the example policy: a drift event that
starts a retrain (its notification left pending: no topic), a drift event the guards refuse, the
retrain's run failing (the slot freed, the cooldown kept), and, past the cooldown, a drift event on a
worker that dies after reserving (its slot and reserved record left for the reconciler).

    .venv/bin/python scripts/ledger_before.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BEFORE = "605d401a5623a8d7000c96b0b390b3b31d8e49aa"
OUT = REPO / "tests" / "data" / "ledger-before.json"

# Run by the code of BEFORE (its own handlers/, function_app/ and tests/ on the path).
WRITE = """
import json, os
from datetime import timedelta
from azure.data.tables import TableServiceClient
from tests.builders import drift_event, ours, run_event
from tests.crashes import DiesBeforeActing, WorkerDied
from tests.ledgers import LedgerSpec
from tests.world import World

spec = LedgerSpec("table", os.environ["CONNECTION"], "before")
world = World(spec)
[first] = world.deliver(drift_event(event_id="before-1")).decisions
[refused] = world.deliver(drift_event(event_id="before-2")).decisions
world.clock.advance(minutes=30)
tags = ours(decision=first.id)
world.deliver(run_event(run_id=first.job["name"], tags=tags, status="Failed", event_id="before-run-1"))
world.clock.advance(days=2)
try:
    world.deliver(drift_event(event_id="before-3"), world.new_worker(actions=DiesBeforeActing(world.actions)))
except WorkerDied:
    pass
service = TableServiceClient.from_connection_string(os.environ["CONNECTION"])
rows = {}
for suffix in ("events", "models", "decisions", "outbox"):
    table = service.get_table_client("before" + suffix)
    rows[suffix] = [{**dict(e), "PartitionKey": e["PartitionKey"], "RowKey": e["RowKey"]} for e in table.list_entities()]
print(json.dumps({"now": world.clock().isoformat(), "decisions": [first.id, refused.id], "rows": rows}, default=str))
"""


def main() -> int:
    from tests.azurite import Azurite

    git = shutil.which("git") or "git"
    archive = subprocess.run(  # noqa: S603 (fixed argv)
        [git, "-C", str(REPO), "archive", BEFORE, "handlers", "function_app", "tests", "examples"],
        check=True,
        capture_output=True,
    ).stdout
    azurite = Azurite().start()
    try:
        with tempfile.TemporaryDirectory() as tree:
            with tarfile.open(fileobj=BytesIO(archive)) as tar:
                tar.extractall(tree, filter="data")
            env = {**os.environ, "PYTHONPATH": tree, "CONNECTION": azurite.connection_string}
            done = subprocess.run(  # noqa: S603 (fixed argv)
                [sys.executable, "-c", WRITE], cwd=tree, env=env, check=True, capture_output=True, text=True
            )
    finally:
        azurite.close()
    written = json.loads(done.stdout.strip().splitlines()[-1])
    written["commit"] = BEFORE
    OUT.write_text(json.dumps(written, indent=1, sort_keys=True) + "\n")
    print(f"{OUT.relative_to(REPO)}: {sum(len(r) for r in written['rows'].values())} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

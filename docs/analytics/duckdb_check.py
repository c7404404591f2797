#!/usr/bin/env python3
"""Contact-center counts from a callgate analytics export, read with DuckDB.

A check that the export is usable as it stands by a common analytics tool, and a starting point for
your own queries. It reads the CloudEvents NDJSON that `callgate export --journal DIR` or
`callgate serve --analytics-out FILE` writes (docs/export.md) with DuckDB's JSON reader, keeps the call
detail records (type `callgate.call.cdr.v1`; their `data` is docs/schemas/cdr.v1.schema.json) and
prints counts as one JSON object.

Usage:

    python3 -m pip install duckdb==1.5.6     # the version this script is tested with
    callgate export --journal /var/lib/callgate/journal --out export.ndjson
    python3 docs/analytics/duckdb_check.py export.ndjson

The path is handed to DuckDB's `read_ndjson`, so a glob of several export files that follow one
another ('exports/*.ndjson', say one a day) is read as one export.

Output (one JSON object on standard output):

    {
      "events": 3041,            records of type callgate.tserver.event.v1
      "calls": 360,              calls (distinct cdrId)
      "answered": 262,           calls with an answerTime
      "abandoned": 77,           calls with abandoned = true (the caller left before any answer)
      "transferred": 33,         calls with transferred = true
      "queues": {                one entry per queue DN that calls entered, by DN
        "8001": {
          "offered": 120,        calls that entered the queue
          "answered": 98,        of those, calls answered at or after their entry
          "abandoned": 15,       of those, calls with abandoned = true
          "answeredWithin20s": 80,  of those, calls answered at most 20 s after their entry
          "serviceLevel": 0.6666666666666666   answeredWithin20s / offered
        }
      }
    }

What is counted:

- A call may be recorded more than once: version 1 when it ends, a higher version when its attached
  data or an agent's wrap-up arrive later (docs/cdr.md, "Versions"), and delivery is at least once.
  Only the highest `version` of each `cdrId` counts, as the PostgreSQL sink keeps it.
- A call that entered the same queue more than once counts once for that queue, from its first entry.
  "Answered" for a queue uses the call's `answerTime` (its first answer by a DN that is not a queue):
  a call answered before it entered the queue (a transfer through a queue) is offered there but not
  answered there.

Exit status: 0 when the counts are printed; 1 when DuckDB cannot read the file (its message on
standard error); 2 on a usage error or when the duckdb package is missing.
"""

import json
import sys

try:
    import duckdb
except ImportError:  # reported by main(), so that --help works without it
    duckdb = None

EVENT_TYPE = "callgate.tserver.event.v1"
CDR_TYPE = "callgate.call.cdr.v1"
SERVICE_LEVEL_SECONDS = 20

# Only `type` and `data` are read: `data` as raw JSON, since its shape depends on the record's type.
RECORDS = "read_ndjson($path, columns = {'type': 'VARCHAR', 'data': 'JSON'})"

# The last version of each call, with the members counted below.
CALLS = f"""
CREATE TEMP TABLE calls AS
SELECT
    data ->> 'cdrId' AS cdr_id,
    CAST(data ->> 'version' AS INTEGER) AS version,
    CAST(data ->> 'answerTime' AS TIMESTAMP) AS answer_time,
    CAST(data ->> 'abandoned' AS BOOLEAN) AS abandoned,
    CAST(data ->> 'transferred' AS BOOLEAN) AS transferred,
    from_json(data -> 'queues', '[{{"dn": "VARCHAR", "enterTime": "TIMESTAMP"}}]') AS queues
FROM {RECORDS}
WHERE type = $cdr_type
QUALIFY row_number() OVER (PARTITION BY cdr_id ORDER BY version DESC) = 1
"""

TOTALS = """
SELECT
    count(*) AS calls,
    count(answer_time) AS answered,
    count(*) FILTER (WHERE abandoned) AS abandoned,
    count(*) FILTER (WHERE transferred) AS transferred
FROM calls
"""

# One row per (queue, call): the call's first entry into that queue.
QUEUES = f"""
WITH visits AS (
    SELECT cdr_id, answer_time, abandoned, unnest(queues) AS visit FROM calls
),
entries AS (
    SELECT visit.dn AS dn, cdr_id, any_value(answer_time) AS answer_time,
           any_value(abandoned) AS abandoned, min(visit.enterTime) AS enter_time
    FROM visits
    GROUP BY visit.dn, cdr_id
)
SELECT
    dn,
    count(*) AS offered,
    count(*) FILTER (WHERE answer_time >= enter_time) AS answered,
    count(*) FILTER (WHERE abandoned) AS abandoned,
    count(*) FILTER (
        WHERE answer_time >= enter_time
          AND answer_time <= enter_time + INTERVAL {SERVICE_LEVEL_SECONDS} SECOND
    ) AS answered_in_time
FROM entries
GROUP BY dn
ORDER BY dn
"""


def counts(path):
    """The counts of the export at `path`, as a dict ready for JSON."""
    con = duckdb.connect()  # in memory: nothing is written beside the export
    (events,) = con.execute(
        f"SELECT count(*) FROM {RECORDS} WHERE type = $event_type",
        {"path": path, "event_type": EVENT_TYPE},
    ).fetchone()
    con.execute(CALLS, {"path": path, "cdr_type": CDR_TYPE})
    calls, answered, abandoned, transferred = con.execute(TOTALS).fetchone()
    queues = {}
    for dn, offered, q_answered, q_abandoned, in_time in con.execute(QUEUES).fetchall():
        queues[dn] = {
            "offered": offered,
            "answered": q_answered,
            "abandoned": q_abandoned,
            f"answeredWithin{SERVICE_LEVEL_SECONDS}s": in_time,
            "serviceLevel": in_time / offered,
        }
    return {
        "events": events,
        "calls": calls,
        "answered": answered,
        "abandoned": abandoned,
        "transferred": transferred,
        "queues": queues,
    }


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(f"usage: {argv[0]} EXPORT.ndjson", file=sys.stderr)
        return 2
    if duckdb is None:
        print(
            "duckdb_check.py needs the duckdb package: python3 -m pip install duckdb==1.5.6",
            file=sys.stderr,
        )
        return 2
    try:
        result = counts(argv[1])
    except duckdb.Error as error:
        print(f"{argv[1]}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

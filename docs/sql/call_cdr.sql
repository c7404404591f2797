-- callgate's call detail records in PostgreSQL (analytics.md, "Call detail records"; docs/postgres.md).
-- `callgate sink postgres` runs this when it starts: every statement is safe to run again.

-- One row per call, at the highest version seen. The columns are the CDR's scalar members, for
-- indexes and plain SQL; `record` is the whole CDR as callgate wrote it (queues, agents, segments,
-- links, userData).
CREATE TABLE IF NOT EXISTS call_cdr (
    cdr_id            text        PRIMARY KEY,
    version           integer     NOT NULL,
    server            text        NOT NULL,
    call_uuid         text,
    root_conn_id      text        NOT NULL,
    call_type         text,
    direction         text,
    ani               text,
    dnis              text,
    ani_e164          text,
    start_time        timestamptz NOT NULL,
    answer_time       timestamptz,
    end_time          timestamptz NOT NULL,
    duration_ms       bigint,
    time_to_answer_ms bigint,
    queue_wait_ms     bigint,
    ring_ms           bigint,
    alerts            integer,
    talk_ms           bigint,
    hold_count        integer,
    hold_ms           bigint,
    longest_hold_ms   bigint,
    transferred       boolean,
    transfer_count    integer,
    consult_count     integer,
    conferenced       boolean,
    conference_count  integer,
    monitored         boolean,
    recorded          boolean,
    abandoned         boolean,
    abandon_phase     text,
    abandon_time      timestamptz,
    released_by       text,
    outcome           text,
    disposition       text,
    record            json        NOT NULL,
    stored_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS call_cdr_start_time ON call_cdr (start_time);

-- Each queue a call visited, in order: the rows queue reports count.
CREATE OR REPLACE VIEW call_cdr_queue AS
SELECT c.cdr_id,
       q.visit,
       q.value ->> 'dn'                       AS dn,
       (q.value ->> 'enterTime')::timestamptz AS enter_time,
       (q.value ->> 'exitTime')::timestamptz  AS exit_time,
       (q.value ->> 'waitMs')::bigint         AS wait_ms,
       q.value ->> 'outcome'                  AS outcome,
       c.answer_time,
       c.abandoned,
       c.transferred
FROM call_cdr c
CROSS JOIN LATERAL json_array_elements(c.record::json -> 'queues') WITH ORDINALITY AS q(value, visit);

-- Each handling party of a call (agents and supervisors).
CREATE OR REPLACE VIEW call_cdr_agent AS
SELECT c.cdr_id,
       a.value ->> 'dn'                            AS dn,
       a.value ->> 'agentId'                       AS agent_id,
       (a.value ->> 'firstAlertTime')::timestamptz AS first_alert_time,
       (a.value ->> 'answerTime')::timestamptz     AS answer_time,
       (a.value ->> 'endTime')::timestamptz        AS end_time,
       (a.value ->> 'ringMs')::bigint              AS ring_ms,
       (a.value ->> 'talkMs')::bigint              AS talk_ms,
       (a.value ->> 'holdMs')::bigint              AS hold_ms,
       (a.value ->> 'holdCount')::integer          AS hold_count,
       (a.value ->> 'wrapUpMs')::bigint            AS wrap_up_ms,
       a.value ->> 'result'                        AS result
FROM call_cdr c
CROSS JOIN LATERAL json_array_elements(c.record::json -> 'agents') AS a(value);

-- How far each sink has stored: the journal position after which it goes on (updated in the
-- transaction that stores the records up to it).
CREATE TABLE IF NOT EXISTS callgate_sink_progress (
    consumer   text        PRIMARY KEY,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

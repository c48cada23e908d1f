-- taskmill schema: batched dispatch without per-task subqueries.
--
-- taskmill.dispatch_many (0004_dispatch_many.sql) spent most of its time in
-- work done once per task by a subquery or a set-returning function: every
-- rescan of a subquery or of a function scan starts part of an executor
-- (jsonb_object_keys and jsonb_array_elements per element for the checks,
-- two ARRAY(SELECT DISTINCT ... ORDER BY) sorts per element for the
-- normalisation, jsonb_array_elements_text twice per element for the locks,
-- an unnest per element for the queue rows, one index probe per queue row
-- through a correlated subplan, and a scan of the blocked set per task).
-- This version has the same semantics, element for element, and does the
-- per-task work with plain expressions:
--   * the checks: one pass over the elements with scalar expressions that
--     are true for every element the precise checks of 0004 would reject
--     (and possibly for a few they accept: lists of more than 516
--     bytes of JSON text, names with a backslash). Only if one is true do
--     the precise checks run, to name the first bad element and its reason,
--     exactly as before; the unknown-function check looks up each distinct
--     name once;
--   * the elements are read once by jsonb_to_recordset, which gives the
--     resource lists as text[] (safe only after the checks: every member is
--     a string); lists of at most one name are already normalised, longer
--     ones are sorted and deduplicated as before;
--   * the queue rows come from unnest in the select list (no function scan
--     per element), the probes of earlier queue rows from one index scan
--     over the batch's distinct resources, and the blocked set is joined by
--     hash, not scanned per task.
-- Restated here: taskmill.dispatch_many.

CREATE OR REPLACE FUNCTION taskmill.dispatch_many(p_tasks jsonb) RETURNS uuid[]
LANGUAGE plpgsql
-- As dispatch_task: generic plans, no sequential scans, no JIT.
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
DECLARE
  v_n integer;
  v_bad_index bigint;
  v_bad text;
  v_suspect boolean;
  v_refs boolean;
  v_locked bigint;
  v_ids uuid[];
  v_woken integer;
  v_idle_floor bigint;
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'taskmill.dispatch_many needs READ COMMITTED isolation, not %',
      current_setting('transaction_isolation') USING ERRCODE = 'TM400';
  END IF;
  IF p_tasks IS NULL OR jsonb_typeof(p_tasks) <> 'array' THEN
    RAISE EXCEPTION 'a batch must be a JSON array of tasks' USING ERRCODE = 'TM400';
  END IF;
  v_n := jsonb_array_length(p_tasks);
  IF v_n = 0 THEN
    RETURN '{}';
  END IF;
  IF v_n > 10000 THEN
    RAISE EXCEPTION 'too many tasks in one batch: % (at most 10000)', v_n USING ERRCODE = 'TM400';
  END IF;

  -- The quick pass: true for an element if any check below could reject it
  -- (see the top of this file), and whether any element names a group or a
  -- parent. Each WHEN may assume the ones before it are false, as in the
  -- precise checks.
  SELECT bool_or(CASE
           WHEN jsonb_typeof(x.t) <> 'object' THEN true
           WHEN (x.t - ARRAY['name', 'args', 'kwargs', 'exclusive_resources', 'shared_resources',
                             'immediate', 'task_group', 'parent_task', 'logging_cid'])
                <> '{}'::jsonb THEN true
           WHEN jsonb_typeof(x.t->'name') IS DISTINCT FROM 'string' OR x.t->>'name' = '' THEN true
           WHEN jsonb_typeof(coalesce(x.t->'args', '[]')) <> 'array' THEN true
           WHEN jsonb_typeof(coalesce(x.t->'kwargs', '{}')) <> 'object' THEN true
           WHEN jsonb_typeof(coalesce(x.t->'exclusive_resources', '[]')) <> 'array'
                OR jsonb_typeof(coalesce(x.t->'shared_resources', '[]')) <> 'array' THEN true
           WHEN jsonb_array_length(coalesce(x.t->'exclusive_resources', '[]')) > 256
                OR jsonb_array_length(coalesce(x.t->'shared_resources', '[]')) > 256 THEN true
           WHEN jsonb_typeof(coalesce(x.t->'immediate', 'false')) <> 'boolean' THEN true
           WHEN jsonb_typeof(coalesce(x.t->'logging_cid', '""')) <> 'string' THEN true
           WHEN jsonb_typeof(coalesce(x.t->'task_group', 'null')) NOT IN ('null', 'string')
                OR (x.t->>'task_group') !~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$' THEN true
           WHEN jsonb_typeof(coalesce(x.t->'parent_task', 'null')) NOT IN ('null', 'string')
                OR (x.t->>'parent_task') !~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$' THEN true
           -- Resource names: both lists are arrays here, so strict mode
           -- looks at their members as they are (lax mode would unwrap a
           -- nested array and see its members instead): not a string, or
           -- empty.
           WHEN jsonb_path_exists(
                  coalesce(x.t->'exclusive_resources', '[]') || coalesce(x.t->'shared_resources', '[]'),
                  'strict $[*] ? (@.type() != "string" || @ == "")') THEN true
           -- Then on the lists' JSON text: a control character is there
           -- either escaped (a backslash) or as itself (the same regular
           -- expression as below); a name of more than 512 bytes makes the
           -- text of its list longer than 516 bytes.
           ELSE octet_length(x.t->>'exclusive_resources') > 516
                OR octet_length(x.t->>'shared_resources') > 516
                OR strpos(x.t->>'exclusive_resources', '\') > 0
                OR strpos(x.t->>'shared_resources', '\') > 0
                OR (x.t->>'exclusive_resources') ~ '[[:cntrl:]]'
                OR (x.t->>'shared_resources') ~ '[[:cntrl:]]'
         END),
         bool_or(x.t ? 'task_group' OR x.t ? 'parent_task')
    INTO v_suspect, v_refs
    FROM jsonb_array_elements(p_tasks) x (t);
  IF v_suspect THEN
    -- The precise checks of 0004_dispatch_many.sql, unchanged from here on:
    -- the first bad element in array order and its reason; then unknown
    -- functions; then unknown groups and parents.
    SELECT e.i - 1, e.reason INTO v_bad_index, v_bad
      FROM (SELECT x.i, CASE
              WHEN jsonb_typeof(x.t) <> 'object' THEN 'a task must be a JSON object'
              WHEN EXISTS (SELECT 1 FROM jsonb_object_keys(x.t) k
                            WHERE k NOT IN ('name', 'args', 'kwargs', 'exclusive_resources',
                                            'shared_resources', 'immediate', 'task_group',
                                            'parent_task', 'logging_cid')) THEN
                format('unknown field %s (known: name, args, kwargs, exclusive_resources, '
                       'shared_resources, immediate, task_group, parent_task, logging_cid)',
                       (SELECT quote_literal(k) FROM jsonb_object_keys(x.t) k
                         WHERE k NOT IN ('name', 'args', 'kwargs', 'exclusive_resources',
                                         'shared_resources', 'immediate', 'task_group',
                                         'parent_task', 'logging_cid') ORDER BY k LIMIT 1))
              WHEN jsonb_typeof(x.t->'name') IS DISTINCT FROM 'string' OR x.t->>'name' = '' THEN
                'a task needs a function name'
              WHEN jsonb_typeof(coalesce(x.t->'args', '[]')) <> 'array' THEN 'args must be a JSON array'
              WHEN jsonb_typeof(coalesce(x.t->'kwargs', '{}')) <> 'object' THEN
                'kwargs must be a JSON object'
              WHEN jsonb_typeof(coalesce(x.t->'exclusive_resources', '[]')) <> 'array'
                   OR jsonb_typeof(coalesce(x.t->'shared_resources', '[]')) <> 'array' THEN
                'resources must be flat lists of names'
              WHEN jsonb_array_length(coalesce(x.t->'exclusive_resources', '[]')) > 256
                   OR jsonb_array_length(coalesce(x.t->'shared_resources', '[]')) > 256 THEN
                'too many resources (at most 256 exclusive and 256 shared)'
              WHEN jsonb_typeof(coalesce(x.t->'immediate', 'false')) <> 'boolean' THEN
                'immediate must be true or false'
              WHEN jsonb_typeof(coalesce(x.t->'logging_cid', '""')) <> 'string' THEN
                'logging_cid must be a string'
              WHEN jsonb_typeof(coalesce(x.t->'task_group', 'null')) NOT IN ('null', 'string')
                   OR (x.t->>'task_group') !~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$' THEN
                'task_group must be a uuid'
              WHEN jsonb_typeof(coalesce(x.t->'parent_task', 'null')) NOT IN ('null', 'string')
                   OR (x.t->>'parent_task') !~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$' THEN
                'parent_task must be a uuid'
              ELSE (SELECT CASE
                             WHEN jsonb_typeof(r) <> 'string' THEN 'resources must be flat lists of names'
                             WHEN r #>> '{}' = '' THEN 'empty resource name'
                             WHEN octet_length(r #>> '{}') > 512 THEN
                               format('resource name too long: %s bytes (at most 512)',
                                      octet_length(r #>> '{}'))
                             WHEN (r #>> '{}') ~ '[[:cntrl:]]' THEN
                               format('resource name contains a control character: %s',
                                      quote_literal(r #>> '{}'))
                           END
                      FROM jsonb_array_elements(coalesce(x.t->'exclusive_resources', '[]')
                                                || coalesce(x.t->'shared_resources', '[]'))
                             WITH ORDINALITY rs (r, o)
                     WHERE jsonb_typeof(r) <> 'string' OR r #>> '{}' = ''
                        OR octet_length(r #>> '{}') > 512 OR (r #>> '{}') ~ '[[:cntrl:]]'
                     ORDER BY o LIMIT 1)
            END AS reason
            FROM jsonb_array_elements(p_tasks) WITH ORDINALITY x (t, i)) e
     WHERE e.reason IS NOT NULL
     ORDER BY e.i LIMIT 1;
  END IF;
  -- Unknown functions: each distinct name looked up once; only if one is
  -- unknown, the first element that names it.
  IF v_bad IS NULL
     AND EXISTS (SELECT 1 FROM (SELECT DISTINCT x.t->>'name' AS name
                                  FROM jsonb_array_elements(p_tasks) x (t)) d
                  WHERE NOT EXISTS (SELECT 1 FROM taskmill.task_function f WHERE f.name = d.name))
  THEN
    SELECT x.i - 1, format('unknown task function "%s"', x.t->>'name') INTO v_bad_index, v_bad
      FROM jsonb_array_elements(p_tasks) WITH ORDINALITY x (t, i)
     WHERE NOT EXISTS (SELECT 1 FROM taskmill.task_function f WHERE f.name = x.t->>'name')
     ORDER BY x.i LIMIT 1;
  END IF;
  IF v_bad IS NULL AND v_refs THEN
    SELECT x.i - 1,
           CASE WHEN x.t->>'task_group' IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM taskmill.task_group g
                                      WHERE g.id = (x.t->>'task_group')::uuid) THEN
                  format('task group %s does not exist', x.t->>'task_group')
                ELSE format('parent task %s does not exist', x.t->>'parent_task') END
      INTO v_bad_index, v_bad
      FROM jsonb_array_elements(p_tasks) WITH ORDINALITY x (t, i)
     WHERE (x.t->>'task_group' IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM taskmill.task_group g
                             WHERE g.id = (x.t->>'task_group')::uuid))
        OR (x.t->>'parent_task' IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM taskmill.task t
                             WHERE t.id = (x.t->>'parent_task')::uuid))
     ORDER BY x.i LIMIT 1;
  END IF;
  IF v_bad IS NOT NULL THEN
    RAISE EXCEPTION 'tasks[%]: %', v_bad_index, v_bad USING ERRCODE = 'TM400',
      DETAIL = v_bad_index::text;
  END IF;

  -- The locks (see the top of 0004_dispatch_many.sql), all before the
  -- statement below takes its snapshot and the places in line: each
  -- distinct resource exclusive if any element names it exclusive; at most
  -- 64 distinct resources: the buckets shared, then the resource locks;
  -- more: only the buckets, exclusive. Buckets before resources, each in
  -- key order.
  SELECT count(CASE WHEN l.k = 0 AND l.x THEN pg_advisory_xact_lock(1953720674, l.h)
                    WHEN l.k = 0 THEN pg_advisory_xact_lock_shared(1953720674, l.h)
                    WHEN l.x THEN pg_advisory_xact_lock(1953720684, l.h)
                    ELSE pg_advisory_xact_lock_shared(1953720684, l.h) END)
    INTO v_locked
    FROM (WITH r AS MATERIALIZED (
            SELECT u.name, bool_or(u.x) AS x FROM (
              SELECT unnest(j.exclusive_resources) AS name, true AS x
                FROM jsonb_to_recordset(p_tasks) AS j (exclusive_resources text[])
              UNION ALL
              SELECT unnest(j.shared_resources), false
                FROM jsonb_to_recordset(p_tasks) AS j (shared_resources text[])) u
             GROUP BY u.name),
          big AS MATERIALIZED (SELECT count(*) > 64 AS b FROM r)
          SELECT q.k, q.h, bool_or(q.x) AS x FROM (
            SELECT 0 AS k, hashtext(r.name) & 255 AS h, (SELECT b FROM big) AS x FROM r
            UNION ALL
            SELECT 1, hashtext(r.name), r.x FROM r WHERE NOT (SELECT b FROM big)) q
           GROUP BY q.k, q.h ORDER BY q.k, q.h) l;

  v_idle_floor := taskmill._idle_floor();
  -- One statement, one snapshot taken after the locks: the places in line
  -- (in array order), each task's readiness (no visible earlier row and no
  -- earlier task of the batch conflicts on any of its resources), the tasks,
  -- their queue rows and one idle worker woken per ready task.
  WITH e AS MATERIALIZED (
    -- Normalised as dispatch_task does: sorted, distinct, a name in both
    -- lists exclusive. A list of at most one name (and no shared names
    -- beside an exclusive one) is already so.
    SELECT j.i, j.name, coalesce(j.args, '[]') AS args, coalesce(j.kwargs, '{}') AS kwargs,
           CASE WHEN coalesce(cardinality(j.exclusive_resources), 0) = 0 THEN '{}'::text[]
                WHEN cardinality(j.exclusive_resources) = 1 THEN j.exclusive_resources
                ELSE ARRAY(SELECT DISTINCT r FROM unnest(j.exclusive_resources) r ORDER BY r)
           END AS ex,
           CASE WHEN coalesce(cardinality(j.shared_resources), 0) = 0 THEN '{}'::text[]
                WHEN cardinality(j.shared_resources) = 1
                     AND coalesce(cardinality(j.exclusive_resources), 0) = 0 THEN j.shared_resources
                ELSE ARRAY(SELECT DISTINCT r FROM unnest(j.shared_resources) r
                            WHERE r <> ALL (coalesce(j.exclusive_resources, '{}')) ORDER BY r)
           END AS sh,
           coalesce(j.immediate, false) AS immediate, j.task_group, j.parent_task,
           nullif(j.logging_cid, '') AS logging_cid
      FROM ROWS FROM (jsonb_to_recordset(p_tasks)
                        AS (name text, args jsonb, kwargs jsonb, exclusive_resources text[],
                            shared_resources text[], immediate boolean, task_group uuid,
                            parent_task uuid, logging_cid text)) WITH ORDINALITY
             AS j (name, args, kwargs, exclusive_resources, shared_resources, immediate,
                   task_group, parent_task, logging_cid, i)
     ORDER BY j.i),
  s AS MATERIALIZED (
    -- nextval in array order: the rows of e come sorted.
    SELECT e.*, nextval('taskmill.task_seq') AS seq, clock_timestamp() AS at,
           gen_random_uuid() AS rnd
      FROM e),
  q AS MATERIALIZED (
    -- The queue rows; the two lists are disjoint.
    SELECT z.i, z.seq, z.r, z.r = ANY (z.ex) AS x
      FROM (SELECT s.i, s.seq, s.ex, unnest(s.ex || s.sh) AS r FROM s) z),
  pr AS MATERIALIZED (
    -- Earlier queue rows on the batch's resources, one index scan: every
    -- visible row on them is earlier than the batch (their dispatches hold
    -- or held our locks before us, so they committed before our snapshot,
    -- or ran earlier in this transaction).
    SELECT tr.resource, bool_or(tr.exclusive) AS exclusive
      FROM taskmill.task_resource tr
     WHERE tr.resource = ANY (ARRAY(SELECT DISTINCT q.r FROM q))
     GROUP BY tr.resource),
  w AS (
    SELECT q.i, q.x, q.r,
           bool_or(q.x) OVER p AS earlier_exclusive, count(*) OVER p AS earlier
      FROM q
    WINDOW p AS (PARTITION BY q.r ORDER BY q.seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)),
  b AS MATERIALIZED (
    SELECT DISTINCT w.i FROM w LEFT JOIN pr ON pr.resource = w.r
     WHERE coalesce(w.earlier_exclusive, false) OR (w.x AND w.earlier > 0)
        OR pr.exclusive OR (w.x AND pr.resource IS NOT NULL)),
  k AS MATERIALIZED (
    SELECT s.*, b.i IS NULL AS ready,
           -- A time-ordered uuid, as in dispatch_task.
           (lpad(to_hex((date_part('epoch', s.at) * 1000)::bigint), 12, '0') || '7'
            || substr(replace(s.rnd::text, '-', ''), 14))::uuid AS id
      FROM s LEFT JOIN b ON b.i = s.i),
  t AS (
    INSERT INTO taskmill.task (id, seq, name, args, kwargs, exclusive_resources, shared_resources,
                               state, created_at, unblocked_at, immediate, deferred, parent_task,
                               task_group, logging_cid)
    SELECT k.id, k.seq, k.name, k.args, k.kwargs, k.ex, k.sh, 'waiting', k.at,
           CASE WHEN k.ready THEN k.at END, k.immediate, true, k.parent_task, k.task_group,
           coalesce(k.logging_cid, replace(k.id::text, '-', ''))
      FROM k ORDER BY k.seq),
  r AS (
    INSERT INTO taskmill.task_resource (resource, seq, task_id, exclusive)
    SELECT q.r, q.seq, k.id, q.x FROM q JOIN k ON k.i = q.i),
  woken AS (
    -- The newest idle registrations within reach (see taskmill._wake_idle).
    DELETE FROM taskmill.idle_worker
     WHERE ticket IN (SELECT i.ticket FROM taskmill.idle_worker i
                       WHERE i.ticket > v_idle_floor
                       ORDER BY i.ticket DESC
                       LIMIT (SELECT count(*) FROM k WHERE k.ready)
                       FOR UPDATE SKIP LOCKED)
    RETURNING channel)
  SELECT (SELECT array_agg(k.id ORDER BY k.i) FROM k),
         (SELECT count(pg_notify(woken.channel, 'work')) FROM woken)
    INTO v_ids, v_woken;
  RETURN v_ids;
END $$;

-- taskmill schema: batched dispatch (taskmill.dispatch_many) and the
-- bucket locks that let one batch name any number of resources.
--
-- The ordering argument (0001_init.sql) needs every dispatch to hold a lock
-- on each of its resources before it takes its place in line, and every
-- finish to hold one before it reads and deletes its queue rows. One lock
-- per distinct resource cannot scale to a batch: a batch of thousands of
-- fresh resources would exhaust the lock table (max_locks_per_transaction).
-- So the resource locks (class 1953720684, key hashtext(resource)) get a
-- second level above them: 256 bucket locks (class 1953720674, key
-- hashtext(resource) & 255).
--   * A dispatch or a finish that takes resource locks first takes the
--     buckets of those resources in shared mode. Shared holders never wait
--     on each other, so single dispatches still wait only on conflicting
--     ones.
--   * A batch that names at most 64 distinct resources does the same: shared
--     buckets, then its resource locks.
--   * A larger batch takes only the buckets of its resources, in exclusive
--     mode (at most 256 locks, whatever the batch names). That conflicts with
--     every dispatch and finish on any of its resources (they hold the
--     bucket shared), which is exactly what the resource locks would have
--     given, plus some false sharing with unrelated resources in the same
--     buckets while the batch's transaction is open.
-- Everybody takes buckets before resource locks, each in ascending key
-- order, so the two levels cannot deadlock against each other.
--
-- Restated here with the bucket locks added, otherwise unchanged:
-- taskmill.dispatch_task, taskmill._finalize, taskmill.finish_and_claim.

CREATE OR REPLACE FUNCTION taskmill.dispatch_task(
  p_name text,
  p_args jsonb DEFAULT '[]',
  p_kwargs jsonb DEFAULT '{}',
  p_exclusive_resources text[] DEFAULT '{}',
  p_shared_resources text[] DEFAULT '{}',
  p_immediate boolean DEFAULT false,
  p_deferred boolean DEFAULT true,
  p_task_group uuid DEFAULT NULL,
  p_parent_task uuid DEFAULT NULL,
  p_logging_cid text DEFAULT NULL,
  p_run_here uuid DEFAULT NULL,
  OUT id uuid, OUT state text, OUT ready boolean, OUT seq bigint)
LANGUAGE plpgsql
-- Generic plans, made once per session: a custom plan per call costs more
-- than the statement itself. The plan may be made while the queues are
-- empty, when a sequential scan looks cheapest; it is never the right plan
-- here. (And JIT compilation, which that cost estimate would trigger, only
-- adds latency.)
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
DECLARE
  v_exclusive text[];
  v_shared text[];
  v_worker_name text;
  v_bad text;
  v_r text;
  v_locked bigint;
  v_woken integer;
  -- A task group or parent to look up: checked (TM404) after every TM400
  -- check and before the locks, in a statement of their own (rare).
  v_refs boolean := p_task_group IS NOT NULL OR p_parent_task IS NOT NULL;
  v_idle_floor bigint;
BEGIN
  -- The checks, in the order (and with the messages) of version 1, as plain
  -- expressions: plpgsql evaluates them without starting an executor. A
  -- snapshot older than our locks could miss an earlier conflicting task and
  -- start this one too early, hence READ COMMITTED.
  v_bad := CASE
             WHEN current_setting('transaction_isolation') <> 'read committed' THEN
               format('taskmill.dispatch needs READ COMMITTED isolation, not %s',
                      current_setting('transaction_isolation'))
             WHEN p_name IS NULL OR p_name = '' THEN 'a task needs a function name'
           END;
  IF v_bad IS NOT NULL THEN
    RAISE EXCEPTION '%', v_bad USING ERRCODE = 'TM400';
  END IF;
  -- The function's existence is checked next, by a statement below; what
  -- these checks find is raised after it.
  v_bad := CASE
             WHEN p_args IS NULL OR jsonb_typeof(p_args) <> 'array' THEN 'args must be a JSON array'
             WHEN p_kwargs IS NULL OR jsonb_typeof(p_kwargs) <> 'object' THEN
               'kwargs must be a JSON object'
             WHEN NOT coalesce(p_immediate, false) AND NOT coalesce(p_deferred, true) THEN
               'a task that is not immediate must be deferred'
             WHEN array_ndims(p_exclusive_resources) > 1 OR array_ndims(p_shared_resources) > 1 THEN
               'resources must be flat lists of names'
             WHEN coalesce(cardinality(p_exclusive_resources), 0) > 256
                  OR coalesce(cardinality(p_shared_resources), 0) > 256 THEN
               'too many resources (at most 256 exclusive and 256 shared)'
           END;
  IF v_bad IS NULL THEN
    FOREACH v_r IN ARRAY coalesce(p_exclusive_resources, '{}') || coalesce(p_shared_resources, '{}')
    LOOP
      v_bad := CASE
                 WHEN v_r IS NULL OR v_r = '' THEN 'empty resource name'
                 WHEN octet_length(v_r) > 512 THEN
                   format('resource name too long: %s bytes (at most 512)', octet_length(v_r))
                 WHEN v_r ~ '[[:cntrl:]]' THEN
                   format('resource name contains a control character: %s', quote_literal(v_r))
               END;
      EXIT WHEN v_bad IS NOT NULL;
    END LOOP;
  END IF;

  IF v_bad IS NULL AND NOT v_refs AND coalesce(cardinality(p_shared_resources), 0) = 0
     AND coalesce(cardinality(p_exclusive_resources), 0) <= 1 THEN
    -- The common shape, at most one exclusive resource: already normalised
    -- (only its bounds are made standard), and its one lock is an
    -- expression. A statement only for the function's existence.
    PERFORM FROM taskmill.task_function f WHERE f.name = p_name;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'unknown task function "%"', p_name USING ERRCODE = 'TM400',
        HINT = 'Known functions are in taskmill.task_function; a worker adds its own when it starts.';
    END IF;
    v_shared := '{}';
    IF coalesce(cardinality(p_exclusive_resources), 0) = 0 THEN
      v_exclusive := '{}';
    ELSE
      v_exclusive := ARRAY[p_exclusive_resources[array_lower(p_exclusive_resources, 1)]];
      -- The insert lock (see the top of 0001_init.sql). (void has no
      -- variable type; its text form is empty.)
      v_r := pg_advisory_xact_lock_shared(1953720674, hashtext(v_exclusive[1]) & 255)::text;
      v_r := pg_advisory_xact_lock(1953720684, hashtext(v_exclusive[1]))::text;
    END IF;
  ELSE
    -- One statement: the function check, the normalisation (resources
    -- sorted and distinct, a name in both lists exclusive) and, if
    -- everything is valid, the insert locks in hash order. The lock set is
    -- computed from the arguments as given: the same hashes, exclusive where
    -- any exclusive name has the hash.
    SELECT CASE
             WHEN NOT EXISTS (SELECT 1 FROM taskmill.task_function f WHERE f.name = p_name) THEN -1
             WHEN v_bad IS NOT NULL OR v_refs THEN 0
             ELSE (SELECT count(CASE WHEN l.k = 0 THEN pg_advisory_xact_lock_shared(1953720674, l.h)
                                     WHEN l.x THEN pg_advisory_xact_lock(1953720684, l.h)
                                     ELSE pg_advisory_xact_lock_shared(1953720684, l.h) END)
                     FROM (SELECT u.k, u.h, bool_or(u.x) AS x FROM (
                             SELECT 0 AS k, hashtext(r) & 255 AS h, false AS x
                               FROM unnest(p_exclusive_resources || p_shared_resources) r
                             UNION ALL
                             SELECT 1, hashtext(r), true FROM unnest(p_exclusive_resources) r
                             UNION ALL
                             SELECT 1, hashtext(r), false FROM unnest(p_shared_resources) r) u
                           GROUP BY u.k, u.h ORDER BY u.k, u.h) l)
           END,
           ARRAY(SELECT DISTINCT r FROM unnest(p_exclusive_resources) r ORDER BY r),
           ARRAY(SELECT DISTINCT r FROM unnest(p_shared_resources) r
                  WHERE r <> ALL (coalesce(p_exclusive_resources, '{}')) ORDER BY r)
      INTO v_locked, v_exclusive, v_shared;
    IF v_locked < 0 THEN
      RAISE EXCEPTION 'unknown task function "%"', p_name USING ERRCODE = 'TM400',
        HINT = 'Known functions are in taskmill.task_function; a worker adds its own when it starts.';
    END IF;
    IF v_bad IS NOT NULL THEN
      RAISE EXCEPTION '%', v_bad USING ERRCODE = 'TM400';
    END IF;
    IF v_refs THEN
      IF p_task_group IS NOT NULL
         AND NOT EXISTS (SELECT 1 FROM taskmill.task_group g WHERE g.id = p_task_group) THEN
        RAISE EXCEPTION 'task group % does not exist', p_task_group USING ERRCODE = 'TM404';
      END IF;
      IF p_parent_task IS NOT NULL
         AND NOT EXISTS (SELECT 1 FROM taskmill.task t WHERE t.id = p_parent_task) THEN
        RAISE EXCEPTION 'parent task % does not exist', p_parent_task USING ERRCODE = 'TM404';
      END IF;
      PERFORM CASE WHEN l.k = 0 THEN pg_advisory_xact_lock_shared(1953720674, l.h)
                   WHEN l.x THEN pg_advisory_xact_lock(1953720684, l.h)
                   ELSE pg_advisory_xact_lock_shared(1953720684, l.h) END
        FROM (SELECT k, h, bool_or(x) AS x FROM (
                SELECT 0 AS k, hashtext(r) & 255 AS h, false AS x FROM unnest(v_exclusive || v_shared) r
                UNION ALL
                SELECT 1, hashtext(r), true FROM unnest(v_exclusive) r
                UNION ALL
                SELECT 1, hashtext(r), false FROM unnest(v_shared) r) u
              GROUP BY k, h ORDER BY k, h) l;
    END IF;
  END IF;

  -- A time-ordered uuid (version 7 layout: 48 bits of milliseconds, the
  -- version, then random bits): new tasks land at the right edge of the
  -- primary key index. Made from a random (version 4) uuid, whose variant
  -- bits are already right. After the locks, like the version 1 one.
  id := (lpad(to_hex((date_part('epoch', clock_timestamp()) * 1000)::bigint), 12, '0') || '7'
         || substr(replace(gen_random_uuid()::text, '-', ''), 14))::uuid;

  v_idle_floor := taskmill._idle_floor();
  IF p_run_here IS NULL THEN
    -- After the locks, in one statement: our place in line, whether anything
    -- before us conflicts (one probe for both lists: the lists are disjoint,
    -- and any earlier row conflicts on an exclusive resource, an exclusive
    -- one on a shared resource), the task, its queue rows, and (if it is
    -- ready) one idle worker woken. The CTEs share one snapshot, taken after
    -- the locks, and the rows inserted here are invisible to the ready check.
    state := 'waiting';
    WITH k AS MATERIALIZED (
      SELECT n.v,
             NOT EXISTS (SELECT 1 FROM taskmill.task_resource tr
                          WHERE tr.resource = ANY (v_exclusive || v_shared) AND tr.seq < n.v
                            AND (tr.exclusive OR tr.resource = ANY (v_exclusive))) AS ready
        FROM (SELECT nextval('taskmill.task_seq') AS v OFFSET 0) n),
    t AS (
      INSERT INTO taskmill.task (id, seq, name, args, kwargs, exclusive_resources, shared_resources,
                                 state, unblocked_at, immediate, deferred, parent_task, task_group,
                                 logging_cid)
      SELECT dispatch_task.id, k.v, p_name, p_args, p_kwargs, v_exclusive, v_shared, 'waiting',
             CASE WHEN k.ready THEN clock_timestamp() END,
             coalesce(p_immediate, false), coalesce(p_deferred, true), p_parent_task, p_task_group,
             coalesce(nullif(p_logging_cid, ''), replace(dispatch_task.id::text, '-', ''))
        FROM k),
    r AS (
      INSERT INTO taskmill.task_resource (resource, seq, task_id, exclusive)
      SELECT x.r, k.v, dispatch_task.id, x.i <= cardinality(v_exclusive)
        FROM k, unnest(v_exclusive || v_shared) WITH ORDINALITY x (r, i)),
    w AS (
      -- The ready test sits inside the subquery, as a one-time filter: a
      -- task that is not ready locks no idle_worker row. The newest
      -- registration first, among the recent ones (taskmill._idle_floor).
      DELETE FROM taskmill.idle_worker
       WHERE ticket = (SELECT i.ticket FROM taskmill.idle_worker i
                        WHERE (SELECT k.ready FROM k) AND i.ticket > v_idle_floor
                        ORDER BY i.ticket DESC
                        LIMIT 1 FOR UPDATE SKIP LOCKED)
      RETURNING channel)
    SELECT k.v, k.ready, (SELECT count(pg_notify(w.channel, 'work')) FROM w)
      INTO seq, ready, v_woken
      FROM k;
    RETURN;
  END IF;

  -- Immediate tasks the dispatcher runs itself: the version 1 steps.
  SELECT n.v,
         NOT EXISTS (SELECT 1 FROM taskmill.task_resource tr
                      WHERE tr.resource = ANY (v_exclusive) AND tr.seq < n.v)
         AND NOT EXISTS (SELECT 1 FROM taskmill.task_resource tr
                          WHERE tr.resource = ANY (v_shared) AND tr.seq < n.v AND tr.exclusive)
    INTO seq, ready
    FROM (SELECT nextval('taskmill.task_seq') AS v) n;

  IF NOT ready AND NOT coalesce(p_deferred, true) THEN
    state := 'canceled';
    INSERT INTO taskmill.task (id, seq, name, args, kwargs, exclusive_resources, shared_resources,
                               state, finished_at, error, immediate, deferred, parent_task,
                               task_group, logging_cid)
    VALUES (id, seq, p_name, p_args, p_kwargs, v_exclusive, v_shared, state, clock_timestamp(),
            jsonb_build_object('reason', 'Resources temporarily unavailable.'),
            coalesce(p_immediate, false), false, p_parent_task, p_task_group,
            coalesce(nullif(p_logging_cid, ''), replace(id::text, '-', '')));
    RETURN;
  END IF;
  IF ready THEN
    SELECT a.name INTO v_worker_name FROM taskmill.app a WHERE a.id = p_run_here FOR KEY SHARE;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'process % is not registered (or was declared dead)', p_run_here
        USING ERRCODE = 'TM410';
    END IF;
  END IF;
  state := CASE WHEN ready THEN 'running' ELSE 'waiting' END;

  WITH t AS (
    INSERT INTO taskmill.task (id, seq, name, args, kwargs, exclusive_resources, shared_resources,
                               state, unblocked_at, started_at, app_lock, worker_name, immediate,
                               deferred, parent_task, task_group, logging_cid)
    VALUES (id, seq, p_name, p_args, p_kwargs, v_exclusive, v_shared, state,
            CASE WHEN ready THEN clock_timestamp() END,
            CASE WHEN state = 'running' THEN clock_timestamp() END,
            CASE WHEN state = 'running' THEN p_run_here END,
            v_worker_name,
            coalesce(p_immediate, false), coalesce(p_deferred, true), p_parent_task, p_task_group,
            coalesce(nullif(p_logging_cid, ''), replace(id::text, '-', '')))
    RETURNING 1),
  r AS (
    INSERT INTO taskmill.task_resource (resource, seq, task_id, exclusive)
    SELECT x, dispatch_task.seq, dispatch_task.id, true FROM unnest(v_exclusive) x
    UNION ALL
    SELECT x, dispatch_task.seq, dispatch_task.id, false FROM unnest(v_shared) x
    RETURNING 1),
  w AS (
    DELETE FROM taskmill.idle_worker
     WHERE ready AND state = 'waiting'
       AND ticket = (SELECT i.ticket FROM taskmill.idle_worker i WHERE i.ticket > v_idle_floor
                      ORDER BY i.ticket DESC LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING channel)
  SELECT count(pg_notify(w.channel, 'work')) INTO v_woken FROM w;
END $$;

CREATE OR REPLACE FUNCTION taskmill._finalize(
  p_task uuid, p_owner uuid, p_from text[], p_state text, p_result jsonb, p_error jsonb)
RETURNS text LANGUAGE plpgsql
-- Internal: called only from entry points that set the planner options (see
-- taskmill.claim); SET clauses cost a little on every call.
AS $$
DECLARE
  v_seq bigint;
  v_resources text[];
  v_void text;
  v_state text;
  v_pending boolean;
BEGIN
  SELECT tk.seq, tk.exclusive_resources || tk.shared_resources INTO v_seq, v_resources
    FROM taskmill.task tk WHERE tk.id = p_task;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  -- Exclusive locks on every resource: a dispatch that is reading these
  -- queues right now finishes first, so either it sees our rows gone or
  -- process_releases (after our commit) sees its task. Taken before the
  -- next statement, whose snapshot must be taken after them; one lock (the
  -- common case) as an expression, which needs no executor. (void has no
  -- variable type; its text form is empty.)
  IF cardinality(v_resources) = 1 THEN
    v_void := pg_advisory_xact_lock_shared(
                1953720674, hashtext(v_resources[array_lower(v_resources, 1)]) & 255)::text;
    v_void := pg_advisory_xact_lock(1953720684,
                                    hashtext(v_resources[array_lower(v_resources, 1)]))::text;
  ELSIF cardinality(v_resources) > 1 THEN
    PERFORM CASE WHEN l.k = 0 THEN pg_advisory_xact_lock_shared(1953720674, l.h)
                 ELSE pg_advisory_xact_lock(1953720684, l.h) END
       FROM (SELECT 0 AS k, hashtext(r) & 255 AS h FROM unnest(v_resources) r
             UNION
             SELECT 1, hashtext(r) FROM unnest(v_resources) r
             ORDER BY 1, 2) l;
  END IF;
  WITH u AS (
    UPDATE taskmill.task tk
       SET state = CASE WHEN tk.state = 'canceling' THEN 'canceled' ELSE p_state END,
           finished_at = clock_timestamp(),
           result = CASE WHEN tk.state = 'canceling' THEN NULL ELSE p_result END,
           error = CASE WHEN tk.state = 'canceling' THEN NULL ELSE p_error END,
           -- Reports still running take the task's final state.
           progress_reports = CASE WHEN tk.progress_reports = '[]' THEN tk.progress_reports
             ELSE taskmill._final_reports(tk.progress_reports,
                    CASE WHEN tk.state = 'canceling' THEN 'canceled' ELSE p_state END) END,
           -- Only if some other task is queued on one of its resources is
           -- there anything to unblock behind it. (Our locks are held, so a
           -- dispatch on these resources has either committed, and is seen
           -- here, or will see our rows gone.)
           release_pending = EXISTS (SELECT 1 FROM taskmill.task_resource tr
                                      WHERE tr.resource = ANY (v_resources) AND tr.seq <> v_seq)
     WHERE tk.id = p_task AND tk.state = ANY (p_from)
       AND (p_owner IS NULL OR tk.app_lock = p_owner)
    RETURNING tk.state, tk.release_pending),
  -- Only if the guard matched. (Same snapshot as the UPDATE: the EXISTS
  -- above still sees our rows, and skips them by seq as before.)
  d AS (
    DELETE FROM taskmill.task_resource tr
     WHERE tr.resource = ANY (v_resources) AND tr.seq = v_seq AND EXISTS (SELECT 1 FROM u))
  SELECT u.state, u.release_pending INTO v_state, v_pending FROM u;
  IF v_pending THEN
    -- For the probes of the next claims (see taskmill.release_hint).
    v_void := setval('taskmill.release_hint', v_seq)::text;
  END IF;
  RETURN v_state;
END $$;

CREATE OR REPLACE FUNCTION taskmill.finish_and_claim(
  p_task uuid, p_app uuid, p_state text, p_result jsonb, p_error jsonb,
  -- One row, not a set: no tuplestore on the busiest path.
  OUT finished_state text, OUT id uuid, OUT seq bigint, OUT name text, OUT args jsonb,
  OUT kwargs jsonb, OUT exclusive_resources text[], OUT shared_resources text[], OUT state text,
  OUT immediate boolean, OUT deferred boolean, OUT logging_cid text, OUT task_group uuid,
  OUT parent_task uuid, OUT created_at timestamptz, OUT unblocked_at timestamptz,
  OUT started_at timestamptz)
LANGUAGE plpgsql
-- Generic plans, made once per session: a custom plan per call costs more
-- than the statement itself. The plan may be made while the queues are
-- empty, when a sequential scan looks cheapest; it is never the right plan
-- here. (And JIT compilation, which that cost estimate would trigger, only
-- adds latency.)
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
#variable_conflict use_column
DECLARE
  v_seq bigint;
  v_resources text[];
  v_void text;
  v_alive boolean;
  v_pending boolean;
  v_claimed boolean;
  v_unblocked integer := 0;
  v_floor bigint;
  v_hint bigint;
  v_rfloor bigint;
  v_left_pending boolean;
BEGIN
  IF p_state NOT IN ('completed', 'failed', 'canceled') THEN
    RAISE EXCEPTION 'a task cannot finish as %', p_state USING ERRCODE = 'TM400';
  END IF;

  -- taskmill._finalize(p_task, p_app, '{running,canceling}', p_state, ...)
  -- begins: the exclusive locks on the task's resources, before the next
  -- statement (see _finalize).
  SELECT tk.seq, tk.exclusive_resources || tk.shared_resources INTO v_seq, v_resources
    FROM taskmill.task tk WHERE tk.id = p_task;
  IF cardinality(v_resources) = 1 THEN
    v_void := pg_advisory_xact_lock_shared(
                1953720674, hashtext(v_resources[array_lower(v_resources, 1)]) & 255)::text;
    v_void := pg_advisory_xact_lock(1953720684,
                                    hashtext(v_resources[array_lower(v_resources, 1)]))::text;
  ELSIF cardinality(v_resources) > 1 THEN
    PERFORM CASE WHEN l.k = 0 THEN pg_advisory_xact_lock_shared(1953720674, l.h)
                 ELSE pg_advisory_xact_lock(1953720684, l.h) END
       FROM (SELECT 0 AS k, hashtext(r) & 255 AS h FROM unnest(v_resources) r
             UNION
             SELECT 1, hashtext(r) FROM unnest(v_resources) r
             ORDER BY 1, 2) l;
  END IF;
  -- Where the claim reads the ready index from (see taskmill._claim_floor),
  -- and where the probe for pending releases starts (taskmill._release_floor).
  v_floor := taskmill._claim_floor();
  v_hint := pg_sequence_last_value('taskmill.release_hint');
  v_rfloor := taskmill._release_floor();

  -- Then one statement, in this order (each step reads the one before):
  --   u, d  the rest of _finalize: the outcome and the release (v_seq is
  --         NULL if the task was not found: then nothing matches);
  --   s     whether the caller is still registered (a worker declared dead
  --         claims nothing: its next plain claim or heartbeat tells it so)
  --         and whether another task's release is pending (the probe of
  --         process_releases; ours is left for a later transaction, after
  --         this one committed);
  --   c, a, k  if alive and nothing pending, the claim of _claim_one: the
  --         next ready task, locked; our own row with KEY SHARE (it
  --         conflicts with the janitor's DELETE of it), only if there is a
  --         task; the update.
  -- All share one snapshot, taken after our locks. The claimed task cannot
  -- be p_task: that one is running or canceling, or untouched by u.
  WITH u AS (
    UPDATE taskmill.task tk
       SET state = CASE WHEN tk.state = 'canceling' THEN 'canceled' ELSE p_state END,
           finished_at = clock_timestamp(),
           result = CASE WHEN tk.state = 'canceling' THEN NULL ELSE p_result END,
           error = CASE WHEN tk.state = 'canceling' THEN NULL ELSE p_error END,
           progress_reports = CASE WHEN tk.progress_reports = '[]' THEN tk.progress_reports
             ELSE taskmill._final_reports(tk.progress_reports,
                    CASE WHEN tk.state = 'canceling' THEN 'canceled' ELSE p_state END) END,
           release_pending = EXISTS (SELECT 1 FROM taskmill.task_resource tr
                                      WHERE tr.resource = ANY (v_resources) AND tr.seq <> v_seq)
     WHERE tk.id = p_task AND tk.seq = v_seq AND tk.state IN ('running', 'canceling')
       AND (p_app IS NULL OR tk.app_lock = p_app)
    RETURNING tk.state, tk.release_pending),
  d AS (
    DELETE FROM taskmill.task_resource tr
     WHERE tr.resource = ANY (v_resources) AND tr.seq = v_seq AND EXISTS (SELECT 1 FROM u)),
  s AS MATERIALIZED (
    SELECT (SELECT u.state FROM u) AS finished,
           EXISTS (SELECT 1 FROM taskmill.app a WHERE a.id = p_app) AS alive,
           EXISTS (SELECT 1 FROM taskmill.task t
                    WHERE t.release_pending AND t.seq >= v_rfloor
                      AND t.id IS DISTINCT FROM p_task) AS pending,
           (SELECT u.release_pending FROM u) AS left_pending),
  ci AS (
    SELECT t.id FROM taskmill.task t
     WHERE t.state = 'waiting' AND t.unblocked_at IS NOT NULL AND t.app_lock IS NULL
       AND t.immediate AND (SELECT s.alive AND NOT s.pending FROM s)
     ORDER BY t.seq
     LIMIT 1 FOR UPDATE SKIP LOCKED),
  cn AS (
    SELECT t.id FROM taskmill.task t
     WHERE t.state = 'waiting' AND t.unblocked_at IS NOT NULL AND t.app_lock IS NULL
       AND NOT t.immediate AND t.seq >= v_floor AND (SELECT s.alive AND NOT s.pending FROM s)
       AND NOT EXISTS (SELECT 1 FROM ci)
     ORDER BY t.seq
     LIMIT 1 FOR UPDATE SKIP LOCKED),
  c AS (SELECT ci.id FROM ci UNION ALL SELECT cn.id FROM cn),
  a AS (
    SELECT a.name FROM taskmill.app a WHERE a.id = p_app AND EXISTS (SELECT 1 FROM c)
       FOR KEY SHARE),
  k AS (
    UPDATE taskmill.task t
       SET state = 'running', app_lock = p_app, worker_name = a.name,
           started_at = clock_timestamp()
      FROM c, a
     WHERE t.id = c.id
    RETURNING t.*)
  SELECT s.finished, s.alive, s.pending, s.left_pending, k.id IS NOT NULL,
         k.id, k.seq, k.name, k.args, k.kwargs, k.exclusive_resources, k.shared_resources,
         k.state, k.immediate, k.deferred, k.logging_cid, k.task_group, k.parent_task,
         k.created_at, k.unblocked_at, k.started_at
    INTO finished_state, v_alive, v_pending, v_left_pending, v_claimed,
         id, seq, name, args, kwargs, exclusive_resources, shared_resources, state, immediate,
         deferred, logging_cid, task_group, parent_task, created_at, unblocked_at, started_at
    FROM s LEFT JOIN k ON true;
  IF v_alive AND NOT v_pending THEN
    v_void := taskmill._claim_scanned(v_floor, seq);
  END IF;
  v_void := taskmill._release_probed(v_rfloor, v_hint);
  IF v_left_pending THEN
    -- Our release is for a later transaction (after this one commits): the
    -- hint makes every session's next probe look from its seq.
    v_void := setval('taskmill.release_hint', v_seq)::text;
  END IF;
  IF NOT v_alive OR v_claimed THEN
    RETURN;
  END IF;

  IF v_pending THEN
    -- The rest of _claim_one, when a release is pending: the releases first,
    -- then the same claim.
    v_unblocked := taskmill._process_releases(64, p_task, v_rfloor);
    -- (_process_releases lowered the floor to what it unblocked.)
    v_floor := taskmill._claim_floor();
    WITH ci AS (
      SELECT t.id FROM taskmill.task t
       WHERE t.state = 'waiting' AND t.unblocked_at IS NOT NULL AND t.app_lock IS NULL
         AND t.immediate
       ORDER BY t.seq
       LIMIT 1 FOR UPDATE SKIP LOCKED),
    cn AS (
      SELECT t.id FROM taskmill.task t
       WHERE t.state = 'waiting' AND t.unblocked_at IS NOT NULL AND t.app_lock IS NULL
         AND NOT t.immediate AND t.seq >= v_floor AND NOT EXISTS (SELECT 1 FROM ci)
       ORDER BY t.seq
       LIMIT 1 FOR UPDATE SKIP LOCKED),
    c AS (SELECT ci.id FROM ci UNION ALL SELECT cn.id FROM cn),
    a AS (
      SELECT a.name FROM taskmill.app a WHERE a.id = p_app AND EXISTS (SELECT 1 FROM c)
         FOR KEY SHARE),
    k AS (
      UPDATE taskmill.task t
         SET state = 'running', app_lock = p_app, worker_name = a.name,
             started_at = clock_timestamp()
        FROM c, a
       WHERE t.id = c.id
      RETURNING t.*)
    SELECT k.id, k.seq, k.name, k.args, k.kwargs, k.exclusive_resources, k.shared_resources,
           k.state, k.immediate, k.deferred, k.logging_cid, k.task_group, k.parent_task,
           k.created_at, k.unblocked_at, k.started_at
      INTO id, seq, name, args, kwargs, exclusive_resources, shared_resources, state, immediate,
           deferred, logging_cid, task_group, parent_task, created_at, unblocked_at, started_at
      FROM k;
    v_claimed := FOUND;
    v_void := taskmill._claim_scanned(v_floor, seq);
    IF v_claimed THEN
      IF v_unblocked > 1 THEN
        PERFORM taskmill._wake_idle(v_unblocked - 1);
      END IF;
      RETURN;
    END IF;
  END IF;

  -- Nothing claimed: nothing ready, or we were declared dead since our
  -- snapshot was taken.
  PERFORM FROM taskmill.app a WHERE a.id = p_app;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'worker % is not registered (or was declared dead)', p_app
      USING ERRCODE = 'TM410';
  END IF;
  IF v_unblocked > 0 THEN
    PERFORM taskmill._wake_idle(v_unblocked);
  END IF;
END $$;

-- ---------------------------------------------------------------------------
-- Batched dispatch
-- ---------------------------------------------------------------------------

-- Dispatches a JSON array of tasks in the caller's transaction, with exactly
-- the semantics of taskmill.dispatch_task called once per element in array
-- order: the tasks take consecutive places in line in that order, a task
-- waits for every earlier conflicting task (in the batch or before it), and
-- unrelated tasks never wait on each other. Each element is an object with
-- "name" (required), "args" (array), "kwargs" (object),
-- "exclusive_resources" and "shared_resources" (arrays of names),
-- "immediate" (boolean: claimed before other ready tasks; a batch is never
-- run by the dispatching process), "task_group", "parent_task" (uuids of
-- existing rows) and "logging_cid" (text). Returns the new task ids in array
-- order. An invalid element rejects the whole batch (TM400, the message
-- starts with "tasks[i]:", i counting from 0, and DETAIL is that index);
-- nothing is written.
CREATE FUNCTION taskmill.dispatch_many(p_tasks jsonb) RETURNS uuid[]
LANGUAGE plpgsql
-- As dispatch_task: generic plans, no sequential scans, no JIT.
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
DECLARE
  v_n integer;
  v_bad_index bigint;
  v_bad text;
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

  -- Every check of dispatch_task, per element; the first bad element (in
  -- array order) rejects the batch. CASE stops at the first match, so each
  -- branch may assume the ones before it passed.
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
  IF v_bad IS NULL THEN
    -- Unknown functions, then unknown groups and parents (rarely named).
    SELECT x.i - 1, format('unknown task function "%s"', x.t->>'name') INTO v_bad_index, v_bad
      FROM jsonb_array_elements(p_tasks) WITH ORDINALITY x (t, i)
     WHERE NOT EXISTS (SELECT 1 FROM taskmill.task_function f WHERE f.name = x.t->>'name')
     ORDER BY x.i LIMIT 1;
  END IF;
  IF v_bad IS NULL THEN
    v_refs := jsonb_path_exists(p_tasks, '$[*] ? (exists(@.task_group) || exists(@.parent_task))');
    IF v_refs THEN
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
  END IF;
  IF v_bad IS NOT NULL THEN
    RAISE EXCEPTION 'tasks[%]: %', v_bad_index, v_bad USING ERRCODE = 'TM400',
      DETAIL = v_bad_index::text;
  END IF;

  -- The locks (see the top of this file), all before the statement below
  -- takes its snapshot and the places in line.
  SELECT count(CASE WHEN l.k = 0 AND l.x THEN pg_advisory_xact_lock(1953720674, l.h)
                    WHEN l.k = 0 THEN pg_advisory_xact_lock_shared(1953720674, l.h)
                    WHEN l.x THEN pg_advisory_xact_lock(1953720684, l.h)
                    ELSE pg_advisory_xact_lock_shared(1953720684, l.h) END)
    INTO v_locked
    FROM (WITH r AS MATERIALIZED (
            SELECT u.name, bool_or(u.x) AS x FROM (
              SELECT jsonb_array_elements_text(coalesce(t->'exclusive_resources', '[]')) AS name,
                     true AS x
                FROM jsonb_array_elements(p_tasks) t
              UNION ALL
              SELECT jsonb_array_elements_text(coalesce(t->'shared_resources', '[]')), false
                FROM jsonb_array_elements(p_tasks) t) u
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
    SELECT x.i, x.t->>'name' AS name, coalesce(x.t->'args', '[]') AS args,
           coalesce(x.t->'kwargs', '{}') AS kwargs,
           ARRAY(SELECT DISTINCT r FROM jsonb_array_elements_text(
                   coalesce(x.t->'exclusive_resources', '[]')) r ORDER BY r) AS ex,
           ARRAY(SELECT DISTINCT r FROM jsonb_array_elements_text(
                   coalesce(x.t->'shared_resources', '[]')) r
                  WHERE NOT coalesce(x.t->'exclusive_resources', '[]') ? r ORDER BY r) AS sh,
           coalesce((x.t->>'immediate')::boolean, false) AS immediate,
           (x.t->>'task_group')::uuid AS task_group, (x.t->>'parent_task')::uuid AS parent_task,
           nullif(x.t->>'logging_cid', '') AS logging_cid
      FROM jsonb_array_elements(p_tasks) WITH ORDINALITY x (t, i)
     ORDER BY x.i),
  s AS MATERIALIZED (
    -- nextval in array order: the rows of e come sorted.
    SELECT e.*, nextval('taskmill.task_seq') AS seq, clock_timestamp() AS at,
           gen_random_uuid() AS rnd
      FROM e),
  q AS MATERIALIZED (
    SELECT s.i, s.seq, x.r, x.o <= cardinality(s.ex) AS x
      FROM s, unnest(s.ex || s.sh) WITH ORDINALITY x (r, o)),
  w AS (
    SELECT q.i, q.seq, q.r, q.x,
           bool_or(q.x) OVER p AS earlier_exclusive, count(*) OVER p AS earlier
      FROM q
    WINDOW p AS (PARTITION BY q.r ORDER BY q.seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)),
  b AS MATERIALIZED (
    SELECT w.i FROM w
     WHERE coalesce(w.earlier_exclusive, false) OR (w.x AND w.earlier > 0)
        OR EXISTS (SELECT 1 FROM taskmill.task_resource tr
                    WHERE tr.resource = w.r AND tr.seq < w.seq AND (tr.exclusive OR w.x))
     GROUP BY w.i),
  k AS MATERIALIZED (
    SELECT s.*, NOT EXISTS (SELECT 1 FROM b WHERE b.i = s.i) AS ready,
           -- A time-ordered uuid, as in dispatch_task.
           (lpad(to_hex((date_part('epoch', s.at) * 1000)::bigint), 12, '0') || '7'
            || substr(replace(s.rnd::text, '-', ''), 14))::uuid AS id
      FROM s),
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

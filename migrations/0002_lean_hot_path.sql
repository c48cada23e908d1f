-- taskmill schema, version 2: the same semantics as version 1 for the two hot
-- paths, at a smaller server-side CPU cost.
--
-- Replaces (CREATE OR REPLACE, identical signatures, so every caller keeps
-- working): taskmill.dispatch_task, taskmill.dispatch, taskmill._finalize,
-- taskmill.process_releases, taskmill._claim_one, taskmill.finish_and_claim.
-- Adds two internal helpers: taskmill._process_releases (the release work
-- itself, without SET clauses) and taskmill._final_reports.
--
-- Why: most of the cost of these functions was not the work they do (a few
-- index probes and one-row writes) but its overhead. Every SQL statement of a
-- plpgsql function pays for a snapshot and executor start-up, and start-up
-- compiles every expression and initialises every SubPlan of the statement,
-- including the ones in CASE branches that never run; every nested plpgsql
-- call pays for its own set-up, and a SET clause for a GUC save and restore.
-- pg_stat_statements shows none of this. So, in version 2:
--   * dispatch_task validates with plpgsql expressions (evaluated without an
--     executor), looking at each resource name in a loop over the few names
--     rather than in a query. Its common shape (at most one exclusive
--     resource) runs two statements: the function's existence, then (after
--     its lock, taken by an expression) one data-modifying statement for
--     nextval, the ready check (one probe instead of two), both inserts and
--     the wakeup. Other shapes run one statement for the function check, the
--     normalisation and the locks, then the same one. Version 1 ran four
--     bigger ones. Immediate dispatches (p_run_here) keep the version 1
--     steps; so do the checks of a task group or parent.
--   * taskmill.dispatch calls dispatch_task in an expression, not a query.
--   * finish_and_claim runs two statements in the common case (version 1:
--     nine, in three nested plpgsql calls, one with SET clauses): read the
--     task (its one lock is then an expression); then finalise it, delete its
--     queue rows, check that the caller is alive, probe for pending
--     releases and, if none, claim the next task, all in one statement.
--   * _finalize (finish, cancel, the janitor) likewise: two statements
--     instead of four; the progress reports are rewritten by a function
--     called only when there are some, not by a subquery set up every time.
--   * process_releases and _claim_one (claim) start with the cheapest probe
--     for pending releases (one scan of an almost always empty partial index)
--     and do nothing more when there are none: it runs at every claim.
--     _claim_one claims in one statement instead of three.
--
-- The ordering argument at the top of 0001_init.sql is unchanged: dispatch
-- still takes its locks (all checks passed) before the statement that takes
-- nextval and whose snapshot reads the queues; finishing still takes its
-- locks before the statement that reads the queues and deletes its rows. A
-- lock taken by a plpgsql expression is taken when it is evaluated, like any
-- other, and the next statement takes a new snapshot (READ COMMITTED).

-- The progress reports of a finished task: the ones still running take the
-- task's final state. Called only when there are reports (a function call
-- rather than a subquery: a subquery is initialised by every execution of
-- the statement, even when its CASE branch is not taken).
CREATE FUNCTION taskmill._final_reports(p_reports jsonb, p_state text) RETURNS jsonb
LANGUAGE sql IMMUTABLE
-- Not inlined (a SET clause prevents it), for the reason above.
SET search_path = pg_catalog AS $$
  SELECT coalesce(jsonb_agg(CASE WHEN pr->>'state' = 'running'
                                 THEN jsonb_set(pr, '{state}', to_jsonb(p_state)) ELSE pr END),
                  '[]')
    FROM jsonb_array_elements(p_reports) pr
$$;

-- ---------------------------------------------------------------------------
-- Dispatch
-- ---------------------------------------------------------------------------

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
             ELSE (SELECT count(CASE WHEN l.x THEN pg_advisory_xact_lock(1953720684, l.h)
                                     ELSE pg_advisory_xact_lock_shared(1953720684, l.h) END)
                     FROM (SELECT u.h, bool_or(u.x) AS x FROM (
                             SELECT hashtext(r) AS h, true AS x FROM unnest(p_exclusive_resources) r
                             UNION ALL
                             SELECT hashtext(r), false FROM unnest(p_shared_resources) r) u
                           GROUP BY u.h ORDER BY u.h) l)
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
      PERFORM CASE WHEN l.x THEN pg_advisory_xact_lock(1953720684, l.h)
                   ELSE pg_advisory_xact_lock_shared(1953720684, l.h) END
        FROM (SELECT h, bool_or(x) AS x FROM (
                SELECT hashtext(r) AS h, true AS x FROM unnest(v_exclusive) r
                UNION ALL
                SELECT hashtext(r), false FROM unnest(v_shared) r) u
              GROUP BY h ORDER BY h) l;
    END IF;
  END IF;

  -- A time-ordered uuid (version 7 layout: 48 bits of milliseconds, the
  -- version, then random bits): new tasks land at the right edge of the
  -- primary key index. Made from a random (version 4) uuid, whose variant
  -- bits are already right. After the locks, like the version 1 one.
  id := (lpad(to_hex((date_part('epoch', clock_timestamp()) * 1000)::bigint), 12, '0') || '7'
         || substr(replace(gen_random_uuid()::text, '-', ''), 14))::uuid;

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
      -- task that is not ready locks no idle_worker row.
      DELETE FROM taskmill.idle_worker
       WHERE app_id = (SELECT i.app_id FROM taskmill.idle_worker i
                        WHERE (SELECT k.ready FROM k)
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
       AND app_id = (SELECT i.app_id FROM taskmill.idle_worker i LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING channel)
  SELECT count(pg_notify(w.channel, 'work')) INTO v_woken FROM w;
END $$;

CREATE OR REPLACE FUNCTION taskmill.dispatch(
  name text,
  args jsonb DEFAULT '[]',
  kwargs jsonb DEFAULT '{}',
  exclusive_resources text[] DEFAULT '{}',
  shared_resources text[] DEFAULT '{}')
RETURNS uuid LANGUAGE plpgsql AS $$
BEGIN
  -- An expression, not a query: plpgsql evaluates it without an executor of
  -- its own.
  RETURN (taskmill.dispatch_task(dispatch.name, dispatch.args, dispatch.kwargs,
                                 dispatch.exclusive_resources, dispatch.shared_resources)).id;
END $$;

-- ---------------------------------------------------------------------------
-- Releasing resources and unblocking
-- ---------------------------------------------------------------------------

-- As in version 1; two statements instead of four (finish_and_claim has its
-- own copy of them).
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
    v_void := pg_advisory_xact_lock(1953720684,
                                    hashtext(v_resources[array_lower(v_resources, 1)]))::text;
  ELSIF cardinality(v_resources) > 1 THEN
    PERFORM pg_advisory_xact_lock(1953720684, l.h)
       FROM (SELECT DISTINCT hashtext(r) AS h FROM unnest(v_resources) r ORDER BY 1) l;
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
    RETURNING tk.state),
  -- Only if the guard matched. (Same snapshot as the UPDATE: the EXISTS
  -- above still sees our rows, and skips them by seq as before.)
  d AS (
    DELETE FROM taskmill.task_resource tr
     WHERE tr.resource = ANY (v_resources) AND tr.seq = v_seq AND EXISTS (SELECT 1 FROM u))
  SELECT u.state INTO v_state FROM u;
  RETURN v_state;
END $$;

-- The release work of process_releases (version 1's body), for callers that
-- found a pending release: no SET clauses (every caller sets the planner
-- options) and no wakeups (the caller decides). Returns how many tasks it
-- unblocked.
CREATE FUNCTION taskmill._process_releases(p_limit integer, p_exclude uuid)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  v_released uuid[];
  v_resource text;
  v_cands uuid[] := '{}';
  q record;
  v_first boolean;
  n integer;
BEGIN
  WITH u AS (
    UPDATE taskmill.task SET release_pending = false
     WHERE id = ANY (ARRAY(SELECT id FROM taskmill.task WHERE release_pending
                             AND id IS DISTINCT FROM p_exclude
                           ORDER BY seq LIMIT p_limit FOR UPDATE SKIP LOCKED))
    RETURNING id)
  SELECT ARRAY(SELECT id FROM u) INTO v_released;
  IF cardinality(v_released) = 0 THEN
    RETURN 0;
  END IF;
  -- The candidates on each released resource: the head of its queue, then
  -- the shared rows that follow it up to the first exclusive one. Index
  -- range scans that stop early: the work depends on these queues' heads,
  -- never on the length of the backlog.
  FOR v_resource IN
    SELECT DISTINCT r FROM taskmill.task t, unnest(t.exclusive_resources || t.shared_resources) r
     WHERE t.id = ANY (v_released)
  LOOP
    v_first := true;
    FOR q IN SELECT tr.task_id, tr.exclusive FROM taskmill.task_resource tr
              WHERE tr.resource = v_resource ORDER BY tr.seq LOOP
      IF q.exclusive AND NOT v_first THEN
        EXIT;
      END IF;
      v_cands := v_cands || q.task_id;
      EXIT WHEN q.exclusive;
      v_first := false;
    END LOOP;
  END LOOP;
  IF cardinality(v_cands) = 0 THEN
    RETURN 0;
  END IF;
  -- Row locks in seq order, waiting rather than skipping: two callers with
  -- overlapping candidates then never deadlock, and each candidate is judged
  -- by every caller, so the one whose snapshot saw all releases unblocks it.
  PERFORM 1 FROM taskmill.task t
    WHERE t.id = ANY (v_cands) AND t.state = 'waiting' AND t.unblocked_at IS NULL
    ORDER BY t.seq FOR UPDATE;
  UPDATE taskmill.task t SET unblocked_at = clock_timestamp()
   WHERE t.id = ANY (v_cands) AND t.state = 'waiting' AND t.unblocked_at IS NULL
     AND NOT EXISTS (SELECT 1 FROM taskmill.task_resource tr
                      WHERE tr.resource = ANY (t.exclusive_resources) AND tr.seq < t.seq)
     AND NOT EXISTS (SELECT 1 FROM taskmill.task_resource tr
                      WHERE tr.resource = ANY (t.shared_resources) AND tr.seq < t.seq
                        AND tr.exclusive);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;

CREATE OR REPLACE FUNCTION taskmill.process_releases(p_limit integer DEFAULT 64,
                                                     p_exclude uuid DEFAULT NULL,
                                                     p_wake boolean DEFAULT true)
RETURNS integer
LANGUAGE plpgsql
-- Generic plans, made once per session: a custom plan per call costs more
-- than the statement itself. The plan may be made while the queues are
-- empty, when a sequential scan looks cheapest; it is never the right plan
-- here. (And JIT compilation, which that cost estimate would trigger, only
-- adds latency.)
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
DECLARE
  n integer;
BEGIN
  -- Nearly always nothing is pending: one probe of the partial index of
  -- pending releases, and no write. (What it finds may be taken by another
  -- caller before the real work locks it: that work then finds less, as it
  -- would have if it had run first.)
  PERFORM 1 FROM taskmill.task t WHERE t.release_pending AND t.id IS DISTINCT FROM p_exclude
   LIMIT 1;
  IF NOT FOUND THEN
    RETURN 0;
  END IF;
  n := taskmill._process_releases(p_limit, p_exclude);
  IF p_wake AND n > 0 THEN
    PERFORM taskmill._wake_idle(n);
  END IF;
  RETURN n;
END $$;

-- ---------------------------------------------------------------------------
-- Workers: claim, finish
-- ---------------------------------------------------------------------------

-- As in version 1 (see there), without a nested call to process_releases
-- when nothing is pending, and with the claim in one statement.
CREATE OR REPLACE FUNCTION taskmill._claim_one(p_app uuid, p_idle boolean, p_exclude uuid)
RETURNS taskmill.task LANGUAGE plpgsql
-- Internal (see taskmill.claim); called from entry points that set the
-- planner options, and returns one row (all NULL if nothing was claimed).
AS $$
DECLARE
  v_channel text;
  v_unblocked integer := 0;
  v_task taskmill.task;
BEGIN
  PERFORM 1 FROM taskmill.task t WHERE t.release_pending AND t.id IS DISTINCT FROM p_exclude
   LIMIT 1;
  IF FOUND THEN
    v_unblocked := taskmill._process_releases(64, p_exclude);
  END IF;

  -- The next ready task, locked; our own row with KEY SHARE (it conflicts
  -- with the janitor's DELETE of it, so a worker being declared dead cannot
  -- claim at the same moment), only if there is a task; and the update.
  WITH c AS (
    SELECT t.id FROM taskmill.task t
     WHERE t.state = 'waiting' AND t.unblocked_at IS NOT NULL AND t.app_lock IS NULL
     ORDER BY t.immediate DESC, t.seq
     LIMIT 1 FOR UPDATE SKIP LOCKED),
  a AS (
    SELECT a.name FROM taskmill.app a WHERE a.id = p_app AND EXISTS (SELECT 1 FROM c)
       FOR KEY SHARE)
  UPDATE taskmill.task t
     SET state = 'running', app_lock = p_app, worker_name = a.name, started_at = clock_timestamp()
    FROM c, a
   WHERE t.id = c.id
  RETURNING t.* INTO v_task;

  IF v_task.id IS NULL THEN
    -- Nothing claimed: nothing ready, or (if our row is gone) we were
    -- declared dead. This path writes nothing unless it has to (no lock on
    -- our own row, no transaction id): an idle fleet's polls are reads.
    SELECT a.channel INTO v_channel FROM taskmill.app a WHERE a.id = p_app;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'worker % is not registered (or was declared dead)', p_app
        USING ERRCODE = 'TM410';
    END IF;
    IF v_unblocked > 0 THEN
      PERFORM taskmill._wake_idle(v_unblocked);
    END IF;
    IF p_idle THEN
      INSERT INTO taskmill.idle_worker (app_id, channel) VALUES (p_app, v_channel)
      ON CONFLICT (app_id) DO NOTHING;
    END IF;
    RETURN v_task;
  END IF;

  IF p_idle THEN
    DELETE FROM taskmill.idle_worker WHERE app_id = p_app;
  END IF;
  IF v_unblocked > 1 THEN
    PERFORM taskmill._wake_idle(v_unblocked - 1);
  END IF;
  RETURN v_task;
END $$;

-- As in version 1 (see there), with taskmill._finalize, the probe for
-- pending releases and the claim of taskmill._claim_one written out here: in
-- the common case (nothing pending) two statements and no nested plpgsql
-- call, where version 1 ran nine statements in three nested calls, one with
-- SET clauses.
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
    v_void := pg_advisory_xact_lock(1953720684,
                                    hashtext(v_resources[array_lower(v_resources, 1)]))::text;
  ELSIF cardinality(v_resources) > 1 THEN
    PERFORM pg_advisory_xact_lock(1953720684, l.h)
       FROM (SELECT DISTINCT hashtext(r) AS h FROM unnest(v_resources) r ORDER BY 1) l;
  END IF;

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
    RETURNING tk.state),
  d AS (
    DELETE FROM taskmill.task_resource tr
     WHERE tr.resource = ANY (v_resources) AND tr.seq = v_seq AND EXISTS (SELECT 1 FROM u)),
  s AS MATERIALIZED (
    SELECT (SELECT u.state FROM u) AS finished,
           EXISTS (SELECT 1 FROM taskmill.app a WHERE a.id = p_app) AS alive,
           EXISTS (SELECT 1 FROM taskmill.task t
                    WHERE t.release_pending AND t.id IS DISTINCT FROM p_task) AS pending),
  c AS (
    SELECT t.id FROM taskmill.task t
     WHERE t.state = 'waiting' AND t.unblocked_at IS NOT NULL AND t.app_lock IS NULL
       AND (SELECT s.alive AND NOT s.pending FROM s)
     ORDER BY t.immediate DESC, t.seq
     LIMIT 1 FOR UPDATE SKIP LOCKED),
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
  SELECT s.finished, s.alive, s.pending, k.id IS NOT NULL,
         k.id, k.seq, k.name, k.args, k.kwargs, k.exclusive_resources, k.shared_resources,
         k.state, k.immediate, k.deferred, k.logging_cid, k.task_group, k.parent_task,
         k.created_at, k.unblocked_at, k.started_at
    INTO finished_state, v_alive, v_pending, v_claimed,
         id, seq, name, args, kwargs, exclusive_resources, shared_resources, state, immediate,
         deferred, logging_cid, task_group, parent_task, created_at, unblocked_at, started_at
    FROM s LEFT JOIN k ON true;
  IF NOT v_alive OR v_claimed THEN
    RETURN;
  END IF;

  IF v_pending THEN
    -- The rest of _claim_one, when a release is pending: the releases first,
    -- then the same claim.
    v_unblocked := taskmill._process_releases(64, p_task);
    WITH c AS (
      SELECT t.id FROM taskmill.task t
       WHERE t.state = 'waiting' AND t.unblocked_at IS NOT NULL AND t.app_lock IS NULL
       ORDER BY t.immediate DESC, t.seq
       LIMIT 1 FOR UPDATE SKIP LOCKED),
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
    IF FOUND THEN
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
-- Plans that do not depend on the statistics of the moment
-- ---------------------------------------------------------------------------

-- Every entry point that reaches _finalize now sets the planner options, as
-- the entry points above always did. Without them plpgsql kept custom plans
-- for _finalize's UPDATE, and a custom plan, knowing the owner, preferred
-- task_owned_idx to the primary key: every task an API process has run
-- leaves a dead entry under that one owner id, so after some thousands of
-- immediate tasks each finish walked them all (about 8 ms, seen as 118
-- immediate tasks/s instead of 2,000).
ALTER FUNCTION taskmill.finish(uuid, uuid, text, jsonb, jsonb)
  SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off;
ALTER FUNCTION taskmill.cancel(uuid)
  SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off;
ALTER FUNCTION taskmill.finalize_orphan(uuid)
  SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off;
ALTER FUNCTION taskmill.requeue_lost(uuid, uuid)
  SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off;

-- The claim reads task_ready_idx in order and stops at the first row it can
-- lock. A generic plan is made once per session, from the statistics of that
-- moment; made while the table looked empty (a worker started on an idle
-- system, before autoanalyze saw a burst), it could instead take every
-- waiting task from task_unfinished_idx and sort them, on every claim, for
-- the life of the session (measured: about 6x slower end to end). Ready
-- waiting tasks are therefore left out of task_unfinished_idx, so the only
-- index that can answer the claim is task_ready_idx. The index still serves
-- what it is for: running and canceling tasks, and blocked waiting ones.
DROP INDEX taskmill.task_unfinished_idx;
CREATE INDEX task_unfinished_idx ON taskmill.task (state)
  WHERE state IN ('running', 'canceling') OR (state = 'waiting' AND unblocked_at IS NULL);

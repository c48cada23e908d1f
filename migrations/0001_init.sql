-- taskmill schema, version 1.
--
-- Everything lives in the schema `taskmill`. The table taskmill.schema_migrations
-- is created by the migration runner itself (src/store/migrate.cc) before
-- this file runs, in the same transaction.
--
-- How ordering works (docs/architecture.md has the long form):
--   * Every task gets `seq` from a sequence, taken after the dispatching
--     transaction holds a transaction-scoped advisory lock on each of its
--     resources (shared for shared use, exclusive for exclusive use). Two
--     conflicting dispatches therefore take their locks one after the other,
--     and the first commits before the second can read the queue: for
--     conflicting tasks, seq order is commit order. Dispatches that share no
--     resource take no common lock and never wait on each other.
--   * taskmill.task_resource holds one row per (resource, task) while the task
--     is unfinished. A task is ready ("unblocked") when no earlier row on any
--     of its resources conflicts with it: an index probe per resource.
--   * Finishing a task deletes its rows under exclusive locks on its resources
--     and marks it release_pending. After that commits, a second statement
--     (taskmill.process_releases, run by the next claim of any worker) looks
--     only at the heads of those resources' queues and unblocks what became
--     free. The work per event depends on the task's own resources, never on
--     the length of the backlog.
--   * Nothing depends on session state: advisory locks are transaction
--     scoped, ownership is a column (app_lock), liveness a heartbeat row.

CREATE TABLE taskmill.app (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  app_type text NOT NULL CHECK (app_type IN ('worker', 'api')),
  name text NOT NULL,
  hostname text NOT NULL DEFAULT '',
  pid integer NOT NULL DEFAULT 0,
  version text NOT NULL DEFAULT '',
  started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  last_heartbeat timestamptz NOT NULL DEFAULT clock_timestamp(),
  ttl interval NOT NULL DEFAULT '30 seconds',
  -- The NOTIFY channel this process listens on, for wakeups and cancels
  -- aimed at it alone.
  channel text NOT NULL
);

CREATE TABLE taskmill.task_group (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  description text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  all_tasks_dispatched boolean NOT NULL DEFAULT false
);

-- Names a dispatch may use. Workers add theirs when they start.
CREATE TABLE taskmill.task_function (
  name text PRIMARY KEY,
  first_seen timestamptz NOT NULL DEFAULT clock_timestamp(),
  last_seen timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- CACHE 1 (the default) matters: a per-session cache would hand out values
-- out of lock order.
CREATE SEQUENCE taskmill.task_seq AS bigint CACHE 1;

CREATE TABLE taskmill.task (
  id uuid PRIMARY KEY,
  seq bigint NOT NULL,
  name text NOT NULL,
  args jsonb NOT NULL DEFAULT '[]',
  kwargs jsonb NOT NULL DEFAULT '{}',
  exclusive_resources text[] NOT NULL DEFAULT '{}',
  shared_resources text[] NOT NULL DEFAULT '{}',
  state text NOT NULL DEFAULT 'waiting'
    CHECK (state IN ('waiting', 'running', 'completed', 'failed', 'canceling', 'canceled')),
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  unblocked_at timestamptz,
  started_at timestamptz,
  finished_at timestamptz,
  -- The process (taskmill.app.id) that owns the task while it runs, kept
  -- afterwards to tell who ran it. No foreign key: a dead owner's row is
  -- deleted by the janitor, which finalises its tasks explicitly.
  app_lock uuid,
  worker_name text,
  result jsonb,
  error jsonb,
  progress_reports jsonb NOT NULL DEFAULT '[]',
  immediate boolean NOT NULL DEFAULT false,
  deferred boolean NOT NULL DEFAULT true,
  parent_task uuid REFERENCES taskmill.task (id) ON DELETE SET NULL,
  task_group uuid REFERENCES taskmill.task_group (id) ON DELETE SET NULL,
  logging_cid text NOT NULL DEFAULT '',
  -- Set when the task released its resources; cleared once the tasks queued
  -- behind them were re-examined (taskmill.process_releases).
  release_pending boolean NOT NULL DEFAULT false,
  CHECK (immediate OR deferred)
);

-- Claim order: immediate first, then creation order.
CREATE INDEX task_ready_idx ON taskmill.task (immediate DESC, seq)
  WHERE state = 'waiting' AND unblocked_at IS NOT NULL AND app_lock IS NULL;
CREATE INDEX task_created_idx ON taskmill.task (created_at);
CREATE INDEX task_unfinished_idx ON taskmill.task (state)
  WHERE state IN ('waiting', 'running', 'canceling');
CREATE INDEX task_owned_idx ON taskmill.task (app_lock)
  WHERE state IN ('running', 'canceling');
CREATE INDEX task_release_idx ON taskmill.task (seq) WHERE release_pending;
CREATE INDEX task_group_idx ON taskmill.task (task_group) WHERE task_group IS NOT NULL;
CREATE INDEX task_parent_idx ON taskmill.task (parent_task) WHERE parent_task IS NOT NULL;
CREATE INDEX task_finished_idx ON taskmill.task (finished_at) WHERE finished_at IS NOT NULL;

-- The per-resource queues: one row per resource of each unfinished task.
CREATE TABLE taskmill.task_resource (
  resource text NOT NULL,
  seq bigint NOT NULL,
  task_id uuid NOT NULL,
  exclusive boolean NOT NULL,
  PRIMARY KEY (resource, seq)
);
CREATE INDEX task_resource_exclusive_idx ON taskmill.task_resource (resource, seq) WHERE exclusive;

-- Workers waiting for work, each woken by a NOTIFY on its own channel. A
-- ready task wakes one of them, not the fleet.
CREATE TABLE taskmill.idle_worker (
  app_id uuid PRIMARY KEY,
  channel text NOT NULL,
  since timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Time-limited leases for single-flight janitor duties.
CREATE TABLE taskmill.lease (
  name text PRIMARY KEY,
  holder uuid NOT NULL,
  expires_at timestamptz NOT NULL
);

-- ---------------------------------------------------------------------------
-- Errors raised on purpose use SQLSTATEs of class TM:
--   TM400 invalid argument   TM404 not found   TM409 conflict
--   TM410 the calling process was declared dead (fenced)
-- ---------------------------------------------------------------------------

-- True when no unfinished task with a smaller seq conflicts with a task of
-- this seq and these resources.
CREATE FUNCTION taskmill._is_free(p_seq bigint, p_exclusive text[], p_shared text[])
RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT NOT EXISTS (SELECT 1 FROM taskmill.task_resource
                      WHERE resource = ANY (p_exclusive) AND seq < p_seq)
     AND NOT EXISTS (SELECT 1 FROM taskmill.task_resource
                      WHERE resource = ANY (p_shared) AND seq < p_seq AND exclusive)
$$;

-- Wakes up to `p_count` idle workers (each removed from the idle list).
CREATE FUNCTION taskmill._wake_idle(p_count integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  w record;
  n integer := 0;
BEGIN
  IF p_count <= 0 THEN
    RETURN 0;
  END IF;
  FOR w IN
    DELETE FROM taskmill.idle_worker
     WHERE app_id IN (SELECT app_id FROM taskmill.idle_worker
                       LIMIT p_count FOR UPDATE SKIP LOCKED)
    RETURNING channel
  LOOP
    PERFORM pg_notify(w.channel, 'work');
    n := n + 1;
  END LOOP;
  RETURN n;
END $$;

-- ---------------------------------------------------------------------------
-- Dispatch
-- ---------------------------------------------------------------------------

-- The full dispatch. Returns the new task's id, state and whether it was
-- ready at once. With p_run_here (the dispatcher wants to run an immediate
-- task itself): a free task is inserted already running and owned by
-- p_run_here, so no worker can take it; a busy one is left waiting for a
-- worker if deferred, or ends canceled "Resources temporarily unavailable."
CREATE FUNCTION taskmill.dispatch_task(
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
  v_bad_code text;
  v_woken integer;
BEGIN
  -- Dispatch is the hot path: four statements in the common case, no nested
  -- plpgsql calls. First, every check and the normalisation at once:
  -- resources sorted and distinct, a name in both lists exclusive.
  SELECT CASE
           -- A snapshot older than our locks could miss an earlier
           -- conflicting task and start this one too early.
           WHEN current_setting('transaction_isolation') <> 'read committed' THEN
             format('taskmill.dispatch needs READ COMMITTED isolation, not %s',
                    current_setting('transaction_isolation'))
           WHEN p_name IS NULL OR p_name = '' THEN 'a task needs a function name'
           WHEN NOT EXISTS (SELECT 1 FROM taskmill.task_function f WHERE f.name = p_name) THEN
             format('unknown task function "%s"', p_name)
           WHEN p_args IS NULL OR jsonb_typeof(p_args) <> 'array' THEN 'args must be a JSON array'
           WHEN p_kwargs IS NULL OR jsonb_typeof(p_kwargs) <> 'object' THEN 'kwargs must be a JSON object'
           WHEN NOT coalesce(p_immediate, false) AND NOT coalesce(p_deferred, true) THEN
             'a task that is not immediate must be deferred'
           WHEN array_ndims(p_exclusive_resources) > 1 OR array_ndims(p_shared_resources) > 1 THEN
             'resources must be flat lists of names'
           WHEN coalesce(cardinality(p_exclusive_resources), 0) > 256
                OR coalesce(cardinality(p_shared_resources), 0) > 256 THEN
             'too many resources (at most 256 exclusive and 256 shared)'
           ELSE (SELECT CASE WHEN r IS NULL OR r = '' THEN 'empty resource name'
                             WHEN octet_length(r) > 512 THEN
                               format('resource name too long: %s bytes (at most 512)', octet_length(r))
                             ELSE format('resource name contains a control character: %s', quote_literal(r)) END
                   FROM unnest(coalesce(p_exclusive_resources, '{}') || coalesce(p_shared_resources, '{}')) r
                  WHERE r IS NULL OR r = '' OR octet_length(r) > 512 OR r ~ '[[:cntrl:]]' LIMIT 1)
         END,
         CASE
           WHEN p_task_group IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM taskmill.task_group g WHERE g.id = p_task_group) THEN
             format('task group %s does not exist', p_task_group)
           WHEN p_parent_task IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM taskmill.task t WHERE t.id = p_parent_task) THEN
             format('parent task %s does not exist', p_parent_task)
         END,
         ARRAY(SELECT DISTINCT r FROM unnest(p_exclusive_resources) r ORDER BY r),
         ARRAY(SELECT DISTINCT r FROM unnest(p_shared_resources) r
                WHERE r <> ALL (coalesce(p_exclusive_resources, '{}')) ORDER BY r)
    INTO v_bad, v_bad_code, v_exclusive, v_shared;
  IF v_bad IS NOT NULL THEN
    IF v_bad LIKE 'unknown task function%' THEN
      RAISE EXCEPTION '%', v_bad USING ERRCODE = 'TM400',
        HINT = 'Known functions are in taskmill.task_function; a worker adds its own when it starts.';
    END IF;
    RAISE EXCEPTION '%', v_bad USING ERRCODE = 'TM400';
  END IF;
  IF v_bad_code IS NOT NULL THEN
    RAISE EXCEPTION '%', v_bad_code USING ERRCODE = 'TM404';
  END IF;

  -- The insert locks (see the top of this file), in hash order.
  PERFORM CASE WHEN l.x THEN pg_advisory_xact_lock(1953720684, l.h)
               ELSE pg_advisory_xact_lock_shared(1953720684, l.h) END
    FROM (SELECT h, bool_or(x) AS x FROM (
            SELECT hashtext(r) AS h, true AS x FROM unnest(v_exclusive) r
            UNION ALL
            SELECT hashtext(r), false FROM unnest(v_shared) r) u
          GROUP BY h ORDER BY h) l;

  -- After the locks: our place in line, and whether anything before us
  -- conflicts.
  SELECT n.v,
         -- A time-ordered uuid (version 7 layout): new tasks land at the
         -- right edge of the primary key index.
         encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
           PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
           FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid,
         NOT EXISTS (SELECT 1 FROM taskmill.task_resource tr
                      WHERE tr.resource = ANY (v_exclusive) AND tr.seq < n.v)
         AND NOT EXISTS (SELECT 1 FROM taskmill.task_resource tr
                          WHERE tr.resource = ANY (v_shared) AND tr.seq < n.v AND tr.exclusive)
    INTO seq, id, ready
    FROM (SELECT nextval('taskmill.task_seq') AS v) n;

  IF p_run_here IS NOT NULL THEN
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
  END IF;
  state := CASE WHEN p_run_here IS NOT NULL AND ready THEN 'running' ELSE 'waiting' END;

  -- The task, its queue rows, and (if it is ready for a worker) one idle
  -- worker woken: one statement.
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

-- The portable entry point: dispatch from any language with plain SQL,
-- inside the caller's own transaction. Returns the task id.
CREATE FUNCTION taskmill.dispatch(
  name text,
  args jsonb DEFAULT '[]',
  kwargs jsonb DEFAULT '{}',
  exclusive_resources text[] DEFAULT '{}',
  shared_resources text[] DEFAULT '{}')
RETURNS uuid LANGUAGE plpgsql AS $$
BEGIN
  -- plpgsql rather than SQL: its plan is kept for the session.
  RETURN (SELECT d.id FROM taskmill.dispatch_task(dispatch.name, dispatch.args, dispatch.kwargs,
                                                  dispatch.exclusive_resources,
                                                  dispatch.shared_resources) d);
END $$;

-- ---------------------------------------------------------------------------
-- Releasing resources and unblocking
-- ---------------------------------------------------------------------------

-- Moves an unfinished task to a final state and releases its resources.
-- Guarded: only if its state is in p_from and (p_owner is NULL or it is the
-- owner). Returns the final state, or NULL if the guard did not match.
-- A task found 'canceling' always ends 'canceled' whatever p_state says:
-- the cancel came first.
CREATE FUNCTION taskmill._finalize(
  p_task uuid, p_owner uuid, p_from text[], p_state text, p_result jsonb, p_error jsonb)
RETURNS text LANGUAGE plpgsql
-- Internal: called only from entry points that set the planner options (see
-- taskmill.claim); SET clauses cost a little on every call.
AS $$
DECLARE
  t record;
  v_state text;
BEGIN
  SELECT tk.seq, tk.exclusive_resources || tk.shared_resources AS resources INTO t
    FROM taskmill.task tk WHERE tk.id = p_task;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  -- Exclusive locks on every resource: a dispatch that is reading these
  -- queues right now finishes first, so either it sees our rows gone or
  -- process_releases (after our commit) sees its task.
  PERFORM pg_advisory_xact_lock(1953720684, h)
    FROM (SELECT DISTINCT hashtext(r) AS h FROM unnest(t.resources) r ORDER BY 1) l;
  UPDATE taskmill.task tk
     SET state = CASE WHEN tk.state = 'canceling' THEN 'canceled' ELSE p_state END,
         finished_at = clock_timestamp(),
         result = CASE WHEN tk.state = 'canceling' THEN NULL ELSE p_result END,
         error = CASE WHEN tk.state = 'canceling' THEN NULL ELSE p_error END,
         -- Reports still running take the task's final state.
         progress_reports = CASE WHEN tk.progress_reports = '[]' THEN tk.progress_reports ELSE
           (SELECT coalesce(jsonb_agg(CASE WHEN pr->>'state' = 'running'
              THEN jsonb_set(pr, '{state}', to_jsonb(
                CASE WHEN tk.state = 'canceling' THEN 'canceled' ELSE p_state END))
              ELSE pr END), '[]') FROM jsonb_array_elements(tk.progress_reports) pr) END,
         -- Only if some other task is queued on one of its resources is
         -- there anything to unblock behind it. (Our locks are held, so a
         -- dispatch on these resources has either committed, and is seen
         -- here, or will see our rows gone.)
         release_pending = EXISTS (SELECT 1 FROM taskmill.task_resource tr
                                    WHERE tr.resource = ANY (t.resources) AND tr.seq <> t.seq)
   WHERE tk.id = p_task AND tk.state = ANY (p_from)
     AND (p_owner IS NULL OR tk.app_lock = p_owner)
  RETURNING tk.state INTO v_state;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  DELETE FROM taskmill.task_resource tr WHERE tr.resource = ANY (t.resources) AND tr.seq = t.seq;
  RETURN v_state;
END $$;

-- Re-examines the queues behind tasks that released their resources and
-- unblocks every task that became free. Call it in a transaction that starts
-- after the releasing one committed (the claim does). Processes at most
-- p_limit released tasks, skipping ones another caller is processing and
-- p_exclude (released by the calling transaction itself, not yet committed).
-- With p_wake, wakes as many idle workers as it unblocked tasks (a claim
-- passes false: it takes one itself). Returns how many tasks it unblocked.
CREATE FUNCTION taskmill.process_releases(p_limit integer DEFAULT 64, p_exclude uuid DEFAULT NULL,
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
  IF p_wake AND n > 0 THEN
    PERFORM taskmill._wake_idle(n);
  END IF;
  RETURN n;
END $$;

-- ---------------------------------------------------------------------------
-- Workers: registration, heartbeat, claim, finish
-- ---------------------------------------------------------------------------

CREATE FUNCTION taskmill.register_app(
  p_app_type text, p_name text, p_hostname text, p_pid integer, p_version text,
  p_ttl_seconds double precision, p_functions text[], OUT id uuid, OUT channel text)
LANGUAGE plpgsql AS $$
BEGIN
  id := gen_random_uuid();
  channel := 'taskmill_' || replace(id::text, '-', '');
  INSERT INTO taskmill.app AS a (id, app_type, name, hostname, pid, version, ttl, channel)
  VALUES (id, p_app_type, p_name, p_hostname, p_pid, p_version,
          make_interval(secs => p_ttl_seconds), channel);
  INSERT INTO taskmill.task_function AS f (name)
  SELECT DISTINCT unnest(coalesce(p_functions, '{}'))
  ON CONFLICT (name) DO UPDATE SET last_seen = clock_timestamp();
END $$;

-- Returns false if the app row is gone: the caller was declared dead and
-- must stop writing as that identity.
CREATE FUNCTION taskmill.heartbeat(p_app uuid) RETURNS boolean
LANGUAGE sql AS $$
  WITH u AS (UPDATE taskmill.app SET last_heartbeat = clock_timestamp() WHERE id = p_app RETURNING 1)
  SELECT EXISTS (SELECT 1 FROM u)
$$;

CREATE FUNCTION taskmill.deregister_app(p_app uuid) RETURNS void
LANGUAGE sql AS $$
  DELETE FROM taskmill.idle_worker WHERE app_id = p_app;
  DELETE FROM taskmill.app WHERE id = p_app;
$$;

-- Claims the next ready task for worker p_app: immediate tasks first, then
-- creation order. It first re-examines queues behind recently released tasks
-- and wakes idle workers for any extra ready work. If nothing is ready and
-- p_idle, the worker is put on the idle list to be woken by a NOTIFY on its
-- channel. Raises TM410 if p_app was declared dead. p_exclude: a release
-- made by the calling transaction, which must not be examined by it.
CREATE FUNCTION taskmill._claim_one(p_app uuid, p_idle boolean, p_exclude uuid)
RETURNS taskmill.task LANGUAGE plpgsql
-- Internal (see taskmill.claim); called from entry points that set the
-- planner options, and returns one row (all NULL if nothing was claimed).
AS $$
DECLARE
  v_name text;
  v_channel text;
  v_unblocked integer;
  v_id uuid;
  v_task taskmill.task;
BEGIN
  v_unblocked := taskmill.process_releases(64, p_exclude, false);

  SELECT c.id INTO v_id FROM taskmill.task c
   WHERE c.state = 'waiting' AND c.unblocked_at IS NOT NULL AND c.app_lock IS NULL
   ORDER BY c.immediate DESC, c.seq
   LIMIT 1 FOR UPDATE SKIP LOCKED;

  IF v_id IS NULL THEN
    -- Nothing ready. This path writes nothing unless it has to (no lock on
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

  -- KEY SHARE on our own row conflicts with the janitor's DELETE of it, so a
  -- worker being declared dead cannot claim at the same moment.
  SELECT a.name INTO v_name FROM taskmill.app a WHERE a.id = p_app FOR KEY SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'worker % is not registered (or was declared dead)', p_app USING ERRCODE = 'TM410';
  END IF;
  UPDATE taskmill.task t
     SET state = 'running', app_lock = p_app, worker_name = v_name, started_at = clock_timestamp()
   WHERE t.id = v_id
  RETURNING t.* INTO v_task;
  IF p_idle THEN
    DELETE FROM taskmill.idle_worker WHERE app_id = p_app;
  END IF;
  IF v_unblocked > 1 THEN
    PERFORM taskmill._wake_idle(v_unblocked - 1);
  END IF;
  RETURN v_task;
END $$;

CREATE FUNCTION taskmill.claim(p_app uuid, p_idle boolean DEFAULT true, p_exclude uuid DEFAULT NULL)
RETURNS SETOF taskmill.task LANGUAGE plpgsql
-- Generic plans, made once per session: a custom plan per call costs more
-- than the statement itself. The plan may be made while the queues are
-- empty, when a sequential scan looks cheapest; it is never the right plan
-- here. (And JIT compilation, which that cost estimate would trigger, only
-- adds latency.)
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
DECLARE
  v_task taskmill.task;
BEGIN
  v_task := taskmill._claim_one(p_app, p_idle, p_exclude);
  IF v_task.id IS NOT NULL THEN
    RETURN NEXT v_task;
  END IF;
END $$;

-- The busy worker's round trip: records the outcome of p_task (as
-- taskmill.finish) and claims the next ready task (as taskmill.claim, without
-- going idle) in one transaction. The release of p_task itself is left
-- pending: it must be examined by a later transaction (the next claim, of
-- this worker or any other), after this one committed. Always one row:
-- finished_state is NULL if p_app no longer owns p_task; the task columns are
-- NULL if nothing was ready.
CREATE FUNCTION taskmill.finish_and_claim(
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
  v_task taskmill.task;
BEGIN
  IF p_state NOT IN ('completed', 'failed', 'canceled') THEN
    RAISE EXCEPTION 'a task cannot finish as %', p_state USING ERRCODE = 'TM400';
  END IF;
  finished_state := taskmill._finalize(p_task, p_app, ARRAY['running', 'canceling'], p_state,
                                       p_result, p_error);
  -- A worker declared dead claims nothing (its next plain claim or heartbeat
  -- tells it so).
  IF EXISTS (SELECT 1 FROM taskmill.app a WHERE a.id = p_app) THEN
    v_task := taskmill._claim_one(p_app, false, p_task);
  END IF;
  id := v_task.id; seq := v_task.seq; name := v_task.name; args := v_task.args;
  kwargs := v_task.kwargs; exclusive_resources := v_task.exclusive_resources;
  shared_resources := v_task.shared_resources; state := v_task.state;
  immediate := v_task.immediate; deferred := v_task.deferred;
  logging_cid := v_task.logging_cid; task_group := v_task.task_group;
  parent_task := v_task.parent_task; created_at := v_task.created_at;
  unblocked_at := v_task.unblocked_at; started_at := v_task.started_at;
END $$;

-- Records the outcome of a task run by p_app. p_state is 'completed' or
-- 'failed'. Returns the final state ('canceled' if a cancel came first), or
-- NULL if p_app no longer owns the task (it was declared dead meanwhile):
-- then nothing is written.
CREATE FUNCTION taskmill.finish(p_task uuid, p_app uuid, p_state text, p_result jsonb, p_error jsonb)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  IF p_state NOT IN ('completed', 'failed', 'canceled') THEN
    RAISE EXCEPTION 'a task cannot finish as %', p_state USING ERRCODE = 'TM400';
  END IF;
  RETURN taskmill._finalize(p_task, p_app, ARRAY['running', 'canceling'], p_state, p_result, p_error);
END $$;

-- Progress of a running task owned by p_app: replaces the report with the
-- same code, or appends it.
CREATE FUNCTION taskmill.report_progress(p_task uuid, p_app uuid, p_report jsonb)
RETURNS boolean LANGUAGE sql AS $$
  WITH u AS (
    UPDATE taskmill.task t
       SET progress_reports = coalesce((SELECT jsonb_agg(pr) FROM jsonb_array_elements(t.progress_reports) pr
                                         WHERE pr->>'code' IS DISTINCT FROM p_report->>'code'), '[]')
                              || jsonb_build_array(p_report)
     WHERE t.id = p_task AND t.app_lock = p_app AND t.state IN ('running', 'canceling')
    RETURNING 1)
  SELECT EXISTS (SELECT 1 FROM u)
$$;

-- ---------------------------------------------------------------------------
-- Cancellation
-- ---------------------------------------------------------------------------

-- Cancels a task. A waiting task ends 'canceled' at once and its resources
-- pass to the next in line; a running one becomes 'canceling' and its owner
-- is told on its channel. Returns the new state. Raises TM404 for an unknown
-- id and TM409 for a finished task (nothing is changed).
CREATE FUNCTION taskmill.cancel(p_task uuid) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  t record;
  v_state text;
  v_owner uuid;
  v_channel text;
BEGIN
  SELECT tk.state, tk.app_lock INTO t FROM taskmill.task tk WHERE tk.id = p_task;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'task % not found', p_task USING ERRCODE = 'TM404';
  END IF;
  LOOP
    IF t.state IN ('completed', 'failed', 'canceled') THEN
      RAISE EXCEPTION 'task % is already %', p_task, t.state USING ERRCODE = 'TM409';
    ELSIF t.state = 'canceling' THEN
      RETURN 'canceling';
    ELSIF t.state = 'waiting' THEN
      v_state := taskmill._finalize(p_task, NULL, ARRAY['waiting'], 'canceled', NULL, NULL);
      IF v_state IS NOT NULL THEN
        -- Someone must re-examine the queues behind it: wake an idle worker
        -- (busy ones do it at their next claim anyway).
        PERFORM taskmill._wake_idle(1);
        RETURN v_state;
      END IF;
    ELSE  -- running
      UPDATE taskmill.task tk SET state = 'canceling'
       WHERE tk.id = p_task AND tk.state = 'running' RETURNING tk.app_lock INTO v_owner;
      IF FOUND THEN
        SELECT a.channel INTO v_channel FROM taskmill.app a WHERE a.id = v_owner;
        IF v_channel IS NOT NULL THEN
          PERFORM pg_notify(v_channel, 'cancel ' || p_task::text);
        END IF;
        RETURN 'canceling';
      END IF;
    END IF;
    -- The state changed under us (claimed, finished): look again.
    SELECT tk.state, tk.app_lock INTO t FROM taskmill.task tk WHERE tk.id = p_task;
  END LOOP;
END $$;

-- Cancels every unfinished task of a group. Returns how many were canceled
-- or are being canceled.
CREATE FUNCTION taskmill.cancel_group(p_group uuid) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  v_id uuid;
  n integer := 0;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM taskmill.task_group WHERE id = p_group) THEN
    RAISE EXCEPTION 'task group % not found', p_group USING ERRCODE = 'TM404';
  END IF;
  UPDATE taskmill.task_group SET all_tasks_dispatched = true WHERE id = p_group;
  FOR v_id IN SELECT id FROM taskmill.task WHERE task_group = p_group
                AND state IN ('waiting', 'running') ORDER BY seq LOOP
    BEGIN
      PERFORM taskmill.cancel(v_id);
      n := n + 1;
    EXCEPTION WHEN SQLSTATE 'TM409' THEN
      NULL;  -- finished meanwhile
    END;
  END LOOP;
  RETURN n;
END $$;

-- ---------------------------------------------------------------------------
-- Janitor duties
-- ---------------------------------------------------------------------------

-- Takes or renews the lease `p_name` for p_holder if it is free, expired or
-- already ours. Returns true if p_holder holds it now.
CREATE FUNCTION taskmill.try_lease(p_name text, p_holder uuid, p_seconds double precision)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO taskmill.lease AS l (name, holder, expires_at)
  VALUES (p_name, p_holder, clock_timestamp() + make_interval(secs => p_seconds))
  ON CONFLICT (name) DO UPDATE
     SET holder = excluded.holder, expires_at = excluded.expires_at
   WHERE l.holder = excluded.holder OR l.expires_at < clock_timestamp();
  RETURN FOUND;
END $$;

-- Deletes the rows of processes whose heartbeat is older than their TTL.
-- Returns their ids and names.
CREATE FUNCTION taskmill.delete_missing_apps()
RETURNS TABLE (id uuid, name text, app_type text) LANGUAGE sql AS $$
  WITH d AS (
    DELETE FROM taskmill.app a WHERE a.last_heartbeat < clock_timestamp() - a.ttl
    RETURNING a.id, a.name, a.app_type)
  , i AS (DELETE FROM taskmill.idle_worker w USING d WHERE w.app_id = d.id)
  SELECT d.id, d.name, d.app_type FROM d
$$;

-- Unfinished tasks whose owner process no longer exists.
CREATE FUNCTION taskmill.orphaned_tasks(p_limit integer DEFAULT 100)
RETURNS TABLE (id uuid, state text) LANGUAGE sql STABLE AS $$
  SELECT t.id, t.state FROM taskmill.task t
   WHERE t.state IN ('running', 'canceling') AND t.app_lock IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM taskmill.app a WHERE a.id = t.app_lock)
   ORDER BY t.seq LIMIT p_limit
$$;

-- Finalises one orphaned task: running -> failed "Worker has gone missing.",
-- canceling -> canceled. Returns the final state or NULL if it was not an
-- orphan any more.
CREATE FUNCTION taskmill.finalize_orphan(p_task uuid) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  v_owner uuid;
BEGIN
  SELECT t.app_lock INTO v_owner FROM taskmill.task t
   WHERE t.id = p_task AND t.state IN ('running', 'canceling');
  IF NOT FOUND OR EXISTS (SELECT 1 FROM taskmill.app a WHERE a.id = v_owner) THEN
    RETURN NULL;
  END IF;
  RETURN taskmill._finalize(p_task, v_owner, ARRAY['running', 'canceling'], 'failed', NULL,
                            jsonb_build_object('reason', 'Worker has gone missing.'));
END $$;

-- After a database fault a worker may have claimed a task without learning
-- it (the claim committed, the answer was lost). Such a task never started:
-- put it back in line (it keeps its place and its unblocked_at). Tasks being
-- canceled end canceled. p_current is the task the worker really runs.
CREATE FUNCTION taskmill.requeue_lost(p_app uuid, p_current uuid) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  v_id uuid;
  n integer := 0;
BEGIN
  UPDATE taskmill.task t
     SET state = 'waiting', app_lock = NULL, worker_name = NULL, started_at = NULL
   WHERE t.app_lock = p_app AND t.state = 'running' AND t.id IS DISTINCT FROM p_current;
  GET DIAGNOSTICS n = ROW_COUNT;
  FOR v_id IN SELECT t.id FROM taskmill.task t WHERE t.app_lock = p_app AND t.state = 'canceling'
                 AND t.id IS DISTINCT FROM p_current LOOP
    PERFORM taskmill._finalize(v_id, p_app, ARRAY['canceling'], 'canceled', NULL, NULL);
    n := n + 1;
  END LOOP;
  RETURN n;
END $$;

-- Re-examines every blocked waiting task. Not needed in normal operation
-- (releases are recorded durably and processed by the next claim); run at
-- worker start as a guard against anything left behind by older versions or
-- manual edits. Returns how many tasks it unblocked.
CREATE FUNCTION taskmill.unblock_all() RETURNS integer
LANGUAGE sql AS $$
  WITH upd AS (
    UPDATE taskmill.task t SET unblocked_at = clock_timestamp()
     WHERE t.state = 'waiting' AND t.unblocked_at IS NULL
       AND taskmill._is_free(t.seq, t.exclusive_resources, t.shared_resources)
    RETURNING 1)
  SELECT count(*)::integer FROM upd
$$;

-- ---------------------------------------------------------------------------
-- Reading
-- ---------------------------------------------------------------------------

-- Tasks with their timestamps rendered as ISO 8601 UTC text (the JSON shape
-- Pulp clients expect); the raw columns stay available for filtering.
CREATE VIEW taskmill.task_view AS
SELECT t.*,
       to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_text,
       to_char(t.unblocked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS unblocked_text,
       to_char(t.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS started_text,
       to_char(t.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS finished_text
  FROM taskmill.task t;

CREATE VIEW taskmill.app_view AS
SELECT a.*,
       a.last_heartbeat >= clock_timestamp() - a.ttl AS online,
       to_char(a.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS started_text,
       to_char(a.last_heartbeat AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS heartbeat_text,
       (SELECT t.id FROM taskmill.task t WHERE t.app_lock = a.id AND t.state IN ('running', 'canceling')
         ORDER BY t.seq LIMIT 1) AS current_task
  FROM taskmill.app a;

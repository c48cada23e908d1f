-- taskmill schema: claims and outcomes in batches, for workers that run
-- several tasks at once (worker slots).
--
--   taskmill.claim_many(app, n, idle, exclude)  up to n ready tasks at once
--   taskmill.finish_many(app, outcomes)         many outcomes in one statement
--
-- A worker sends BEGIN; finish_many; claim_many; COMMIT in one round trip
-- (libpq pipeline mode): one commit records every outcome and claims the
-- next tasks, as finish_and_claim does for one.
--
-- Why any subset of the ready set may run together: a task is ready
-- (unblocked_at set, state waiting) only when no earlier unfinished task
-- conflicts with it on any resource, and a ready task stays ready until it
-- runs or is canceled. Two ready tasks A (earlier) and B that conflicted
-- would make B's earlier unfinished conflicting task A block B; so the ready
-- tasks are pairwise conflict-free at every moment, and claiming any number
-- of them, in any order, starts no two conflicting tasks.

-- _process_releases for callers that must leave several of their own
-- releases for a later transaction (see finish_and_claim for why a release
-- is never examined by the transaction that made it): the body of the
-- one-uuid form with an array of exclusions; that form now calls this one.
CREATE FUNCTION taskmill._process_releases(p_limit integer, p_exclude uuid[], p_from bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  v_released uuid[];
  v_resource text;
  v_cands uuid[] := '{}';
  q record;
  v_first boolean;
  n integer;
  v_min bigint;
  v_void text;
BEGIN
  WITH u AS (
    UPDATE taskmill.task SET release_pending = false
     WHERE id = ANY (ARRAY(SELECT id FROM taskmill.task WHERE release_pending
                             AND id <> ALL (coalesce(p_exclude, '{}')) AND seq >= p_from
                           ORDER BY seq LIMIT p_limit FOR UPDATE SKIP LOCKED))
    RETURNING id)
  SELECT ARRAY(SELECT id FROM u) INTO v_released;
  IF cardinality(v_released) = 0 THEN
    RETURN 0;
  END IF;
  -- The candidates on each released resource: the head of its queue, then
  -- the shared rows that follow it up to the first exclusive one.
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
  -- Row locks in seq order, waiting rather than skipping (no deadlocks; the
  -- caller whose snapshot saw every release unblocks).
  PERFORM 1 FROM taskmill.task t
    WHERE t.id = ANY (v_cands) AND t.state = 'waiting' AND t.unblocked_at IS NULL
    ORDER BY t.seq FOR UPDATE;
  WITH u AS (
    UPDATE taskmill.task t SET unblocked_at = clock_timestamp()
     WHERE t.id = ANY (v_cands) AND t.state = 'waiting' AND t.unblocked_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM taskmill.task_resource tr
                        WHERE tr.resource = ANY (t.exclusive_resources) AND tr.seq < t.seq)
       AND NOT EXISTS (SELECT 1 FROM taskmill.task_resource tr
                        WHERE tr.resource = ANY (t.shared_resources) AND tr.seq < t.seq
                          AND tr.exclusive)
    RETURNING t.seq)
  SELECT count(*), min(u.seq) INTO n, v_min FROM u;
  -- The claim that follows in this transaction reads from what it unblocked
  -- (see taskmill._claim_floor).
  IF n > 0 THEN
    v_void := taskmill._lower_claim_floor(v_min);
  END IF;
  RETURN n;
END $$;

CREATE OR REPLACE FUNCTION taskmill._process_releases(p_limit integer, p_exclude uuid,
                                                      p_from bigint)
RETURNS integer LANGUAGE sql AS $$
  SELECT taskmill._process_releases(
           p_limit, CASE WHEN p_exclude IS NULL THEN '{}'::uuid[] ELSE ARRAY[p_exclude] END, p_from)
$$;

-- Claims up to p_limit ready tasks (1-1000) for p_app, immediate ones
-- first, then from this session's claim floor in creation order (see
-- taskmill._claim_floor), skipping rows other claimers hold. First examines
-- pending releases other than those of p_exclude (the caller's own, made in
-- this transaction). With p_idle, a caller that got fewer than p_limit stays
-- on (or joins) the idle list, to be woken when a task becomes ready; one
-- that got p_limit leaves it. Raises TM410 if p_app was declared dead.
-- Writes nothing when nothing is claimed and nothing changes.
CREATE FUNCTION taskmill.claim_many(p_app uuid, p_limit integer, p_idle boolean DEFAULT true,
                                    p_exclude uuid[] DEFAULT '{}')
RETURNS SETOF taskmill.task LANGUAGE plpgsql
-- Generic plans, no sequential scans, no JIT (see dispatch_task).
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
DECLARE
  v_channel text;
  v_unblocked integer := 0;
  n integer := 0;
  v_floor bigint;
  v_max bigint;
  v_void text;
  v_ticket bigint;
  v_hint bigint;
  v_rfloor bigint;
  r taskmill.task;
BEGIN
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1000 THEN
    RAISE EXCEPTION 'claim_many claims 1 to 1000 tasks, not %', p_limit USING ERRCODE = 'TM400';
  END IF;
  -- Pending releases, probed from this session's release floor.
  v_hint := pg_sequence_last_value('taskmill.release_hint');
  v_rfloor := taskmill._release_floor();
  IF v_rfloor < 9223372036854775807 THEN
    PERFORM 1 FROM taskmill.task t WHERE t.release_pending AND t.seq >= v_rfloor
       AND t.id <> ALL (coalesce(p_exclude, '{}'))
     LIMIT 1;
    IF FOUND THEN
      v_unblocked := taskmill._process_releases(64 + p_limit, p_exclude, v_rfloor);
    END IF;
    -- The caller's own releases (p_exclude, left pending by finish_many in
    -- this transaction) moved the hint: this probe, which skipped them, must
    -- not mark it seen, so that the next transaction's probe looks from it.
    IF coalesce(cardinality(p_exclude), 0) = 0 THEN
      v_void := taskmill._release_probed(v_rfloor, v_hint);
    END IF;
  END IF;

  -- As _claim_one, with a LIMIT of p_limit: our own row with KEY SHARE (it
  -- conflicts with the janitor's DELETE of it) only if there is a task.
  v_floor := taskmill._claim_floor();
  <<scan>>
  LOOP
    FOR r IN
      WITH ci AS (
        SELECT t.id FROM taskmill.task t
         WHERE t.state = 'waiting' AND t.unblocked_at IS NOT NULL AND t.app_lock IS NULL
           AND t.immediate
         ORDER BY t.seq
         LIMIT p_limit FOR UPDATE SKIP LOCKED),
      cn AS (
        SELECT t.id FROM taskmill.task t
         WHERE t.state = 'waiting' AND t.unblocked_at IS NOT NULL AND t.app_lock IS NULL
           AND NOT t.immediate AND t.seq >= v_floor
         ORDER BY t.seq
         LIMIT p_limit FOR UPDATE SKIP LOCKED),
      c AS (SELECT ci.id FROM ci UNION ALL SELECT cn.id FROM cn LIMIT p_limit),
      a AS (
        SELECT a.name FROM taskmill.app a WHERE a.id = p_app AND EXISTS (SELECT 1 FROM c)
           FOR KEY SHARE)
      UPDATE taskmill.task t
         SET state = 'running', app_lock = p_app, worker_name = a.name,
             started_at = clock_timestamp()
        FROM c, a
       WHERE t.id = c.id
      RETURNING t.*
    LOOP
      RETURN NEXT r;
      n := n + 1;
      v_max := greatest(v_max, r.seq);
    END LOOP;
    v_void := taskmill._claim_scanned(v_floor, v_max);
    EXIT scan WHEN n > 0 OR v_floor = 0
                   OR coalesce(current_setting('taskmill.claim_idle', true), '') <> 'on';
    v_floor := 0;
  END LOOP;

  IF n = 0 THEN
    SELECT a.channel INTO v_channel FROM taskmill.app a WHERE a.id = p_app;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'worker % is not registered (or was declared dead)', p_app
        USING ERRCODE = 'TM410';
    END IF;
  END IF;
  IF p_idle AND n < p_limit THEN
    IF v_channel IS NULL THEN
      SELECT a.channel INTO v_channel FROM taskmill.app a WHERE a.id = p_app;
    END IF;
    -- On the idle list, once (as in _claim_one): a new registration unless
    -- this session's is still there and within reach of wakeups.
    v_ticket := nullif(current_setting('taskmill.idle_ticket', true), '')::bigint;
    WITH o AS (
      SELECT i.ticket FROM taskmill.idle_worker i WHERE i.ticket = v_ticket AND i.app_id = p_app),
    d AS (
      DELETE FROM taskmill.idle_worker i
       WHERE i.ticket = v_ticket AND i.app_id = p_app AND i.ticket <= taskmill._idle_floor() + 800
      RETURNING 1),
    ins AS (
      INSERT INTO taskmill.idle_worker (app_id, channel)
      SELECT p_app, v_channel WHERE NOT EXISTS (SELECT 1 FROM o) OR EXISTS (SELECT 1 FROM d)
      RETURNING ticket)
    SELECT ins.ticket INTO v_ticket FROM ins;
    IF v_ticket IS NOT NULL THEN
      v_void := set_config('taskmill.idle_ticket', v_ticket::text, false)
                || set_config('taskmill.idle_app', p_app::text, false);
    END IF;
    IF n = 0 THEN
      v_void := taskmill._claim_went_idle();
    END IF;
  ELSIF n > 0 AND p_idle THEN
    -- Every slot taken: off the idle list.
    v_ticket := nullif(current_setting('taskmill.idle_ticket', true), '')::bigint;
    IF v_ticket IS NULL
       OR current_setting('taskmill.idle_app', true) IS DISTINCT FROM p_app::text THEN
      DELETE FROM taskmill.idle_worker WHERE app_id = p_app;
    ELSE
      DELETE FROM taskmill.idle_worker WHERE ticket = v_ticket;
    END IF;
    v_void := set_config('taskmill.idle_ticket', '', false);
  END IF;
  IF v_unblocked > n THEN
    PERFORM taskmill._wake_idle(v_unblocked - n);
  END IF;
END $$;

-- Records many outcomes of p_app's tasks in one statement, each as
-- taskmill.finish would: guarded by ownership (app_lock = p_app) and an
-- unfinished state, a task found canceling ends canceled, the task's queue
-- rows are deleted and its release is left pending for a later transaction.
-- p_outcomes: a JSON array of {"id": uuid, "state": "completed" | "failed" |
-- "canceled", "result": json, "error": json}. Returns the final states in
-- the order of p_outcomes, NULL where p_app does not own the task (it was
-- declared dead, or the task was finalised by someone else): nothing was
-- written for that one.
CREATE FUNCTION taskmill.finish_many(p_app uuid, p_outcomes jsonb) RETURNS text[]
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
DECLARE
  v_bad text;
  v_ids uuid[];
  v_resources text[];
  v_states text[];
  v_hint bigint;
  v_void text;
BEGIN
  IF p_outcomes IS NULL OR jsonb_typeof(p_outcomes) <> 'array' THEN
    RAISE EXCEPTION 'outcomes must be a JSON array' USING ERRCODE = 'TM400';
  END IF;
  SELECT format('outcomes[%s]: %s', x.i - 1, CASE
           WHEN jsonb_typeof(x.o) <> 'object' THEN 'an outcome must be a JSON object'
           WHEN (x.o->>'id') IS NULL
                OR (x.o->>'id') !~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$' THEN
             'id must be a task uuid'
           ELSE format('a task cannot finish as %s', coalesce(x.o->>'state', 'nothing')) END)
    INTO v_bad
    FROM jsonb_array_elements(p_outcomes) WITH ORDINALITY x (o, i)
   WHERE jsonb_typeof(x.o) <> 'object' OR (x.o->>'id') IS NULL
      OR (x.o->>'id') !~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
      OR (x.o->>'state') IS NULL OR (x.o->>'state') NOT IN ('completed', 'failed', 'canceled')
   ORDER BY x.i LIMIT 1;
  IF v_bad IS NOT NULL THEN
    RAISE EXCEPTION '%', v_bad USING ERRCODE = 'TM400';
  END IF;
  v_ids := ARRAY(SELECT (o->>'id')::uuid FROM jsonb_array_elements(p_outcomes) o);

  -- The locks of a finish (bucket shared, then resource exclusive, see
  -- 0004_dispatch_many.sql) on the resources of every task we still own,
  -- before the statement below takes its snapshot.
  SELECT ARRAY(SELECT DISTINCT r FROM taskmill.task t,
                      unnest(t.exclusive_resources || t.shared_resources) r
                WHERE t.id = ANY (v_ids) AND t.app_lock = p_app
                  AND t.state IN ('running', 'canceling'))
    INTO v_resources;
  IF cardinality(v_resources) > 0 THEN
    PERFORM CASE WHEN l.k = 0 THEN pg_advisory_xact_lock_shared(1953720674, l.h)
                 ELSE pg_advisory_xact_lock(1953720684, l.h) END
       FROM (SELECT 0 AS k, hashtext(r) & 255 AS h FROM unnest(v_resources) r
             UNION
             SELECT 1, hashtext(r) FROM unnest(v_resources) r
             ORDER BY 1, 2) l;
  END IF;

  WITH o AS (
    SELECT x.i, (x.o->>'id')::uuid AS id, x.o->>'state' AS state,
           CASE WHEN jsonb_typeof(x.o->'result') = 'null' THEN NULL ELSE x.o->'result' END AS result,
           CASE WHEN jsonb_typeof(x.o->'error') = 'null' THEN NULL ELSE x.o->'error' END AS error
      FROM jsonb_array_elements(p_outcomes) WITH ORDINALITY x (o, i)),
  u AS (
    UPDATE taskmill.task tk
       SET state = CASE WHEN tk.state = 'canceling' THEN 'canceled' ELSE o.state END,
           finished_at = clock_timestamp(),
           result = CASE WHEN tk.state = 'canceling' THEN NULL ELSE o.result END,
           error = CASE WHEN tk.state = 'canceling' THEN NULL ELSE o.error END,
           progress_reports = CASE WHEN tk.progress_reports = '[]' THEN tk.progress_reports
             ELSE taskmill._final_reports(tk.progress_reports,
                    CASE WHEN tk.state = 'canceling' THEN 'canceled' ELSE o.state END) END,
           -- Anything else queued on its resources (ours are held) is
           -- examined later, after this commits.
           release_pending = EXISTS (SELECT 1 FROM taskmill.task_resource tr
                                      WHERE tr.resource = ANY (tk.exclusive_resources
                                                               || tk.shared_resources)
                                        AND tr.seq <> tk.seq)
      FROM o
     WHERE tk.id = o.id AND tk.state IN ('running', 'canceling') AND tk.app_lock = p_app
    RETURNING tk.id, tk.seq, tk.state, tk.release_pending,
              tk.exclusive_resources || tk.shared_resources AS resources),
  d AS (
    DELETE FROM taskmill.task_resource tr USING u
     WHERE tr.resource = ANY (u.resources) AND tr.seq = u.seq)
  SELECT array_agg(u.state ORDER BY o.i), min(u.seq) FILTER (WHERE u.release_pending)
    INTO v_states, v_hint
    FROM o LEFT JOIN u ON u.id = o.id;
  IF v_hint IS NOT NULL THEN
    -- Our releases are for a later transaction: the hint makes every
    -- session's next probe look from there (see taskmill._release_floor).
    v_void := setval('taskmill.release_hint', v_hint)::text;
  END IF;
  RETURN coalesce(v_states, '{}');
END $$;

-- ---------------------------------------------------------------------------
-- Leases that cost nothing to lose
-- ---------------------------------------------------------------------------

-- As before, but a process that would lose reads first and returns: with
-- every idle process trying the janitor lease, the losers must write nothing
-- (no row lock, no transaction id), or an idle fleet burns transaction ids
-- and vacuum work in proportion to its size.
CREATE OR REPLACE FUNCTION taskmill.try_lease(p_name text, p_holder uuid, p_seconds double precision)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM taskmill.lease l
   WHERE l.name = p_name AND l.holder <> p_holder AND l.expires_at >= clock_timestamp();
  IF FOUND THEN
    RETURN false;
  END IF;
  INSERT INTO taskmill.lease AS l (name, holder, expires_at)
  VALUES (p_name, p_holder, clock_timestamp() + make_interval(secs => p_seconds))
  ON CONFLICT (name) DO UPDATE
     SET holder = excluded.holder, expires_at = excluded.expires_at
   WHERE l.holder = excluded.holder OR l.expires_at < clock_timestamp();
  RETURN FOUND;
END $$;

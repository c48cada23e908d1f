-- taskmill schema, version 3: the hot paths stay off dead tuples while an old
-- snapshot keeps vacuum from removing them, and the janitor can see who holds
-- one.
--
-- While any session of the database holds a snapshot (an idle-in-transaction
-- REPEATABLE READ session, a long query, a forgotten prepared transaction, a
-- replication slot with an xmin), no row version that died after it can be
-- removed, and an index entry that points at one cannot be marked dead. Every
-- task leaves such versions behind (dispatched, claimed, finished), and
-- every idle cycle of a worker one idle_worker row. A statement that starts a
-- scan where these pile up visits each of them, and the pile grows for as
-- long as the snapshot lasts: the work per claim grew linearly with the age
-- of the snapshot, until the workers could not keep up with the offered load.
-- Version 3 keeps the scans of the hot paths away from the pile (see each
-- part below) and adds taskmill.horizon_holders, which the janitor uses to
-- warn about it.

-- ---------------------------------------------------------------------------
-- Who holds back the xmin horizon
-- ---------------------------------------------------------------------------

-- What keeps vacuum from removing the dead rows of this database's tables
-- for longer than p_older_than: sessions whose transaction (and so, at
-- worst, its snapshot) is older, prepared transactions, and inactive
-- replication slots that hold an xmin (their age is unknown: -1). The oldest
-- first. `key` names the episode: it stays the same while the same holder
-- lasts. Sessions of other roles are visible only with pg_read_all_stats (or
-- as superuser); other databases' sessions do not hold back this one's
-- tables (PostgreSQL 14 and later).
CREATE FUNCTION taskmill.horizon_holders(p_older_than interval DEFAULT '1 minute')
RETURNS TABLE (key text, kind text, pid integer, name text, state text, age_seconds float8,
               xmin_age bigint)
LANGUAGE sql STABLE AS $$
  SELECT h.* FROM (
    SELECT format('session %s %s', a.pid, a.xact_start) AS key, 'session' AS kind, a.pid,
           coalesce(a.application_name, '') AS name, coalesce(a.state, '') AS state,
           extract(epoch FROM clock_timestamp() - a.xact_start)::float8 AS age_seconds,
           greatest(age(a.backend_xmin), age(a.backend_xid))::bigint AS xmin_age
      FROM pg_stat_activity a
     WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
       AND a.backend_type <> 'autovacuum worker'
       AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
       AND a.xact_start < clock_timestamp() - p_older_than
    UNION ALL
    SELECT format('prepared %s %s', p.gid, p.prepared), 'prepared transaction', 0, p.gid,
           'prepared', extract(epoch FROM clock_timestamp() - p.prepared)::float8,
           age(p.transaction)::bigint
      FROM pg_prepared_xacts p
     WHERE p.database = current_database() AND p.prepared < clock_timestamp() - p_older_than
    UNION ALL
    SELECT format('slot %s', s.slot_name), 'replication slot', 0, s.slot_name::text,
           'inactive', -1::float8, age(s.xmin)::bigint
      FROM pg_replication_slots s
     WHERE s.xmin IS NOT NULL AND NOT s.active
       AND (s.database IS NULL OR s.database = current_database())) h
   ORDER BY h.age_seconds DESC, h.xmin_age DESC
$$;

-- ---------------------------------------------------------------------------
-- The claim: a scan of the ready queue that starts past the dead entries
-- ---------------------------------------------------------------------------

-- The claim takes the first ready task of task_ready_idx, read in order. A
-- claimed task leaves its entry there (its new version is no longer ready),
-- and while an old snapshot lasts, the entry can neither be removed nor
-- marked dead: a scan from the oldest end visited the entry and the heap row
-- of every task claimed since the snapshot began, on every claim. Now each
-- session remembers, in session settings (no table rows, nothing to
-- vacuum), where its last claim was (taskmill.claim_floor), and the claim
-- reads from there:
--   * ready tasks behind the floor exist: tasks unblocked after the floor
--     moved past them, tasks whose dispatch committed late, tasks put back
--     in line. The session that unblocks lowers its own floor to them
--     (taskmill._lower_claim_floor); for every other case there is a full
--     read of the queue at least every 0.25 s per session
--     (taskmill.claim_rescan_at), and a claim by a worker that had gone idle
--     and finds nothing from its floor reads everything before it gives up
--     (taskmill.claim_idle). So a ready task is never left behind, and the
--     oldest is still preferred; one behind every floor may wait up to 0.25 s
--     (or a poll interval, if every worker is idle and just looked).
--   * the ready set is conflict-free, so which ready task a claim takes
--     changes no ordering guarantee: conflicting tasks still become ready
--     one at a time, in seq order.
-- Immediate tasks (rare among deferred ones) are read first, in full.
-- Behind a transaction pooler these settings may pass from one client to
-- another on the same server session: still hints only.

-- Where this session's next claim starts reading the ready queue: 0 (from
-- the start) when a full read is due, else the seq of its last claim.
-- (Written as one expression so that plpgsql inlines it.)
CREATE FUNCTION taskmill._claim_floor() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
  SELECT CASE
           WHEN coalesce(nullif(current_setting('taskmill.claim_rescan_at', true), '')::float8, 0)
                <= extract(epoch FROM clock_timestamp()) THEN 0::bigint
           ELSE coalesce(nullif(current_setting('taskmill.claim_floor', true), '')::bigint, 0)
         END
$$;

-- After a claim's scan from p_floor: a full read (p_floor 0) sets the time
-- of the next one; a claimed task (p_claimed) moves the floor to it and
-- clears the idle mark. Returns text, to be assigned (an expression, not a
-- statement).
CREATE FUNCTION taskmill._claim_scanned(p_floor bigint, p_claimed bigint) RETURNS text
LANGUAGE sql VOLATILE AS $$
  SELECT concat(
    CASE WHEN p_floor = 0 THEN
      set_config('taskmill.claim_rescan_at',
                 (extract(epoch FROM clock_timestamp()) + 0.25)::text, false) END,
    CASE WHEN p_claimed IS NOT NULL THEN
      set_config('taskmill.claim_floor', p_claimed::text, false)
      || set_config('taskmill.claim_idle', '', false) END)
$$;

-- Tasks from p_seq on were just made ready by this session: its next claim
-- reads from there.
CREATE FUNCTION taskmill._lower_claim_floor(p_seq bigint) RETURNS text
LANGUAGE sql VOLATILE AS $$
  SELECT set_config('taskmill.claim_floor',
                    least(coalesce(nullif(current_setting('taskmill.claim_floor', true),
                                          '')::bigint, 0), p_seq)::text, false)
$$;

-- This session's worker found nothing and went idle: when it is woken, a
-- claim that finds nothing from the floor reads the whole queue.
CREATE FUNCTION taskmill._claim_went_idle() RETURNS text
LANGUAGE sql VOLATILE AS $$
  SELECT set_config('taskmill.claim_idle', 'on', false)
$$;


-- ---------------------------------------------------------------------------
-- The probe for pending releases: from a hint, not from the oldest end
-- ---------------------------------------------------------------------------

-- Every claim first probes task_release_idx (tasks whose release is
-- pending). Each release leaves a dead entry there, and while an old
-- snapshot lasts a probe from the start of the index visited all of them,
-- twice per task. Now a finish that leaves its release pending records the
-- task's seq in the sequence taskmill.release_hint (non-transactional: no
-- row version); a claim probes from that seq when the hint changed since
-- this session last looked (taskmill.release_seen), from the start at least
-- every 0.25 s (taskmill.release_rescan_at: for two finishes whose hints
-- crossed, or a hint read before its finish committed), and not at all
-- otherwise. The release work reads from the same place. A release found
-- late waits for the next full probe of a claiming worker (busy workers
-- claim often; idle ones at their poll), as any release did before for a
-- fleet that was not claiming.
CREATE SEQUENCE taskmill.release_hint AS bigint;

-- Where this session's probe starts: 0 (everything) when a full probe is
-- due, the hint when it changed, else past every seq (nothing to probe).
CREATE FUNCTION taskmill._release_floor() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
  SELECT CASE
           WHEN coalesce(nullif(current_setting('taskmill.release_rescan_at', true), '')::float8, 0)
                <= extract(epoch FROM clock_timestamp()) THEN 0::bigint
           WHEN coalesce(pg_sequence_last_value('taskmill.release_hint'), 0)::text
                IS DISTINCT FROM nullif(current_setting('taskmill.release_seen', true), '')
             THEN coalesce(pg_sequence_last_value('taskmill.release_hint'), 0)
           ELSE 9223372036854775807
         END
$$;

-- After a probe from p_floor: remember the hint it covered, and the time of
-- the next full probe. p_hint is the hint read before the probe.
CREATE FUNCTION taskmill._release_probed(p_floor bigint, p_hint bigint) RETURNS text
LANGUAGE sql VOLATILE AS $$
  SELECT concat(
    CASE WHEN p_floor = 0 THEN
      set_config('taskmill.release_rescan_at',
                 (extract(epoch FROM clock_timestamp()) + 0.25)::text, false) END,
    CASE WHEN p_floor < 9223372036854775807 THEN
      set_config('taskmill.release_seen', coalesce(p_hint, 0)::text, false) END)
$$;

-- As in version 2, setting the release hint when it leaves a release pending.
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

-- As in version 2, from a release floor, lowering this session's claim floor to what it unblocked.
CREATE FUNCTION taskmill._process_releases(p_limit integer, p_exclude uuid, p_from bigint)
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
                             AND id IS DISTINCT FROM p_exclude AND seq >= p_from
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
  -- What it unblocked is older than what this session last claimed: the
  -- claim that follows (in this transaction) must read from there.
  IF n > 0 THEN
    v_void := taskmill._lower_claim_floor(v_min);
  END IF;
  RETURN n;
END $$;

-- The version 2 signature (the janitor's taskmill.process_releases): every
-- pending release.
CREATE OR REPLACE FUNCTION taskmill._process_releases(p_limit integer, p_exclude uuid)
RETURNS integer LANGUAGE sql AS $$
  SELECT taskmill._process_releases(p_limit, p_exclude, 0)
$$;

CREATE OR REPLACE FUNCTION taskmill._claim_one(p_app uuid, p_idle boolean, p_exclude uuid)
RETURNS taskmill.task LANGUAGE plpgsql
-- Internal (see taskmill.claim); called from entry points that set the
-- planner options, and returns one row (all NULL if nothing was claimed).
-- As in version 2, reading the ready queue from this session's floor.
AS $$
DECLARE
  v_channel text;
  v_unblocked integer := 0;
  v_task taskmill.task;
  v_floor bigint;
  v_void text;
  v_ticket bigint;
  v_hint bigint;
  v_rfloor bigint;
BEGIN
  -- Pending releases, probed from this session's release floor.
  v_hint := pg_sequence_last_value('taskmill.release_hint');
  v_rfloor := taskmill._release_floor();
  IF v_rfloor < 9223372036854775807 THEN
    PERFORM 1 FROM taskmill.task t WHERE t.release_pending AND t.seq >= v_rfloor
       AND t.id IS DISTINCT FROM p_exclude
     LIMIT 1;
    IF FOUND THEN
      v_unblocked := taskmill._process_releases(64, p_exclude, v_rfloor);
    END IF;
    v_void := taskmill._release_probed(v_rfloor, v_hint);
  END IF;

  -- The next ready task, locked; our own row with KEY SHARE (it conflicts
  -- with the janitor's DELETE of it, so a worker being declared dead cannot
  -- claim at the same moment), only if there is a task; and the update.
  v_floor := taskmill._claim_floor();
  <<scan>>
  LOOP
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
         FOR KEY SHARE)
    UPDATE taskmill.task t
       SET state = 'running', app_lock = p_app, worker_name = a.name,
           started_at = clock_timestamp()
      FROM c, a
     WHERE t.id = c.id
    RETURNING t.* INTO v_task;
    v_void := taskmill._claim_scanned(v_floor, v_task.seq);
    -- A worker woken from idle that finds nothing from its floor reads the
    -- whole queue before it gives up (it may have been woken for a task
    -- behind its floor).
    EXIT scan WHEN v_task.id IS NOT NULL OR v_floor = 0
                   OR coalesce(current_setting('taskmill.claim_idle', true), '') <> 'on';
    v_floor := 0;
  END LOOP;

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
      -- On the idle list, once: a new registration unless this session's
      -- is still there and within reach of wakeups (see idle_worker).
      v_ticket := nullif(current_setting('taskmill.idle_ticket', true), '')::bigint;
      WITH o AS (
        SELECT i.ticket FROM taskmill.idle_worker i WHERE i.ticket = v_ticket AND i.app_id = p_app),
      d AS (
        DELETE FROM taskmill.idle_worker i
         WHERE i.ticket = v_ticket AND i.app_id = p_app AND i.ticket <= taskmill._idle_floor() + 800
        RETURNING 1),
      r AS (
        INSERT INTO taskmill.idle_worker (app_id, channel)
        SELECT p_app, v_channel WHERE NOT EXISTS (SELECT 1 FROM o) OR EXISTS (SELECT 1 FROM d)
        RETURNING ticket)
      SELECT r.ticket INTO v_ticket FROM r;
      IF v_ticket IS NOT NULL THEN
        v_void := set_config('taskmill.idle_ticket', v_ticket::text, false)
                  || set_config('taskmill.idle_app', p_app::text, false);
      END IF;
      v_void := taskmill._claim_went_idle();
    END IF;
    RETURN v_task;
  END IF;

  IF p_idle THEN
    -- Off the idle list (a wakeup usually took us off already). Without a
    -- ticket of this session (behind a pooler, say), by our id.
    v_ticket := nullif(current_setting('taskmill.idle_ticket', true), '')::bigint;
    IF v_ticket IS NULL
       OR current_setting('taskmill.idle_app', true) IS DISTINCT FROM p_app::text THEN
      DELETE FROM taskmill.idle_worker WHERE app_id = p_app;
    ELSE
      DELETE FROM taskmill.idle_worker WHERE ticket = v_ticket;
    END IF;
    v_void := set_config('taskmill.idle_ticket', '', false);
  END IF;
  IF v_unblocked > 1 THEN
    PERFORM taskmill._wake_idle(v_unblocked - 1);
  END IF;
  RETURN v_task;
END $$;
-- As in version 2, reading the ready queue from this session's floor.
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
    v_void := pg_advisory_xact_lock(1953720684,
                                    hashtext(v_resources[array_lower(v_resources, 1)]))::text;
  ELSIF cardinality(v_resources) > 1 THEN
    PERFORM pg_advisory_xact_lock(1953720684, l.h)
       FROM (SELECT DISTINCT hashtext(r) AS h FROM unnest(v_resources) r ORDER BY 1) l;
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
-- The idle list: a new key per registration
-- ---------------------------------------------------------------------------

-- A worker puts itself on idle_worker each time it runs out of work, and a
-- dispatch (or an unblock) takes it off again: one row inserted and deleted
-- per idle cycle. Keyed by app_id, all of a worker's dead rows shared its
-- key, and while an old snapshot lasted each registration's unique check,
-- and each removal by app_id, visited every one of them; a dispatch looking
-- for any idle worker visited the dead rows of all of them. Now each
-- registration gets a new key (ticket, from a sequence; no two share one),
-- the worker remembers its ticket in session settings (taskmill.idle_ticket,
-- and taskmill.idle_app for whom: behind a pooler another client may
-- inherit them) and removes its row by it, and a wakeup takes the
-- newest registration among the last 1000 tickets: dead rows of older cycles
-- are never visited. An idle worker whose ticket falls 200 behind (others
-- cycle while it waits) registers again on its next poll, so it stays in
-- reach; a fleet at rest writes nothing.
DELETE FROM taskmill.idle_worker;  -- idle workers register again at their next poll
CREATE SEQUENCE taskmill.idle_ticket AS bigint;
ALTER TABLE taskmill.idle_worker DROP CONSTRAINT idle_worker_pkey;
ALTER TABLE taskmill.idle_worker
  ADD COLUMN ticket bigint NOT NULL DEFAULT nextval('taskmill.idle_ticket') PRIMARY KEY;
ALTER SEQUENCE taskmill.idle_ticket OWNED BY taskmill.idle_worker.ticket;
-- For removals by process (deregistration, the janitor): rare paths.
CREATE INDEX idle_worker_app_idx ON taskmill.idle_worker (app_id);

-- Wakeups consider tickets above this: the newest 1000 registrations.
CREATE FUNCTION taskmill._idle_floor() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
  SELECT coalesce(pg_sequence_last_value('taskmill.idle_ticket'), 0) - 1000
$$;

-- As in version 1, the newest registrations first, within reach.
CREATE OR REPLACE FUNCTION taskmill._wake_idle(p_count integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  w record;
  n integer := 0;
  v_idle_floor bigint;
BEGIN
  IF p_count <= 0 THEN
    RETURN 0;
  END IF;
  v_idle_floor := taskmill._idle_floor();
  FOR w IN
    DELETE FROM taskmill.idle_worker
     WHERE ticket IN (SELECT i.ticket FROM taskmill.idle_worker i WHERE i.ticket > v_idle_floor
                       ORDER BY i.ticket DESC LIMIT p_count FOR UPDATE SKIP LOCKED)
    RETURNING channel
  LOOP
    PERFORM pg_notify(w.channel, 'work');
    n := n + 1;
  END LOOP;
  RETURN n;
END $$;

-- As in version 2, waking the newest idle registration within reach.
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
-- ---------------------------------------------------------------------------
-- Vacuum that keeps up with the churn, and room for HOT updates
-- ---------------------------------------------------------------------------

-- The default trigger (20% of the table dead) is wrong for both kinds of
-- table here: the queue tables are tiny and rewritten many times a second
-- (a vacuum after a fixed number of dead rows, without cost-based sleeps:
-- each run is a few pages), and task grows without bound (1% of a table of
-- millions is still thousands of dead entries in the ready queue between
-- two runs). app and lease rows are rewritten in place by heartbeats and
-- lease renewals: with free room in their page (fillfactor) these updates
-- are HOT, touch no index, and the page prunes itself.
ALTER TABLE taskmill.task_resource SET (autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0,
  autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000);
ALTER TABLE taskmill.idle_worker SET (autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 500, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE taskmill.app SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 200, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE taskmill.lease SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 50, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE taskmill.task SET (autovacuum_vacuum_scale_factor = 0.01,
  autovacuum_vacuum_threshold = 2000, autovacuum_analyze_scale_factor = 0.02,
  autovacuum_vacuum_cost_delay = 1);

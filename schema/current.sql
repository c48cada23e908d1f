--
-- PostgreSQL database dump
--

--
-- Name: taskmill; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA taskmill;

--
-- Name: _claim_floor(); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill._claim_floor() RETURNS bigint
    LANGUAGE sql
    AS $$
  SELECT CASE
           WHEN coalesce(nullif(current_setting('taskmill.claim_rescan_at', true), '')::float8, 0)
                <= extract(epoch FROM clock_timestamp()) THEN 0::bigint
           ELSE coalesce(nullif(current_setting('taskmill.claim_floor', true), '')::bigint, 0)
         END
$$;

--
-- Name: task; Type: TABLE; Schema: taskmill; Owner: -
--

CREATE TABLE taskmill.task (
    id uuid NOT NULL,
    seq bigint NOT NULL,
    name text NOT NULL,
    args jsonb DEFAULT '[]'::jsonb NOT NULL,
    kwargs jsonb DEFAULT '{}'::jsonb NOT NULL,
    exclusive_resources text[] DEFAULT '{}'::text[] NOT NULL,
    shared_resources text[] DEFAULT '{}'::text[] NOT NULL,
    state text DEFAULT 'waiting'::text NOT NULL,
    created_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    unblocked_at timestamp with time zone,
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    app_lock uuid,
    worker_name text,
    result jsonb,
    error jsonb,
    progress_reports jsonb DEFAULT '[]'::jsonb NOT NULL,
    immediate boolean DEFAULT false NOT NULL,
    deferred boolean DEFAULT true NOT NULL,
    parent_task uuid,
    task_group uuid,
    logging_cid text DEFAULT ''::text NOT NULL,
    release_pending boolean DEFAULT false NOT NULL,
    CONSTRAINT task_check CHECK ((immediate OR deferred)),
    CONSTRAINT task_state_check CHECK ((state = ANY (ARRAY['waiting'::text, 'running'::text, 'completed'::text, 'failed'::text, 'canceling'::text, 'canceled'::text])))
)
WITH (autovacuum_vacuum_scale_factor='0.01', autovacuum_vacuum_threshold='2000', autovacuum_analyze_scale_factor='0.02', autovacuum_vacuum_cost_delay='1');

--
-- Name: _claim_one(uuid, boolean, uuid); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill._claim_one(p_app uuid, p_idle boolean, p_exclude uuid) RETURNS taskmill.task
    LANGUAGE plpgsql
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

--
-- Name: _claim_scanned(bigint, bigint); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill._claim_scanned(p_floor bigint, p_claimed bigint) RETURNS text
    LANGUAGE sql
    AS $$
  SELECT concat(
    CASE WHEN p_floor = 0 THEN
      set_config('taskmill.claim_rescan_at',
                 (extract(epoch FROM clock_timestamp()) + 0.25)::text, false) END,
    CASE WHEN p_claimed IS NOT NULL THEN
      set_config('taskmill.claim_floor', p_claimed::text, false)
      || set_config('taskmill.claim_idle', '', false) END)
$$;

--
-- Name: _claim_went_idle(); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill._claim_went_idle() RETURNS text
    LANGUAGE sql
    AS $$
  SELECT set_config('taskmill.claim_idle', 'on', false)
$$;

--
-- Name: _final_reports(jsonb, text); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill._final_reports(p_reports jsonb, p_state text) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    SET search_path TO 'pg_catalog'
    AS $$
  SELECT coalesce(jsonb_agg(CASE WHEN pr->>'state' = 'running'
                                 THEN jsonb_set(pr, '{state}', to_jsonb(p_state)) ELSE pr END),
                  '[]')
    FROM jsonb_array_elements(p_reports) pr
$$;

--
-- Name: _finalize(uuid, uuid, text[], text, jsonb, jsonb); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill._finalize(p_task uuid, p_owner uuid, p_from text[], p_state text, p_result jsonb, p_error jsonb) RETURNS text
    LANGUAGE plpgsql
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

--
-- Name: _idle_floor(); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill._idle_floor() RETURNS bigint
    LANGUAGE sql
    AS $$
  SELECT coalesce(pg_sequence_last_value('taskmill.idle_ticket'), 0) - 1000
$$;

--
-- Name: _is_free(bigint, text[], text[]); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill._is_free(p_seq bigint, p_exclusive text[], p_shared text[]) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
  SELECT NOT EXISTS (SELECT 1 FROM taskmill.task_resource
                      WHERE resource = ANY (p_exclusive) AND seq < p_seq)
     AND NOT EXISTS (SELECT 1 FROM taskmill.task_resource
                      WHERE resource = ANY (p_shared) AND seq < p_seq AND exclusive)
$$;

--
-- Name: _lower_claim_floor(bigint); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill._lower_claim_floor(p_seq bigint) RETURNS text
    LANGUAGE sql
    AS $$
  SELECT set_config('taskmill.claim_floor',
                    least(coalesce(nullif(current_setting('taskmill.claim_floor', true),
                                          '')::bigint, 0), p_seq)::text, false)
$$;

--
-- Name: _process_releases(integer, uuid); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill._process_releases(p_limit integer, p_exclude uuid) RETURNS integer
    LANGUAGE sql
    AS $$
  SELECT taskmill._process_releases(p_limit, p_exclude, 0)
$$;

--
-- Name: _process_releases(integer, uuid[], bigint); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill._process_releases(p_limit integer, p_exclude uuid[], p_from bigint) RETURNS integer
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: _process_releases(integer, uuid, bigint); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill._process_releases(p_limit integer, p_exclude uuid, p_from bigint) RETURNS integer
    LANGUAGE sql
    AS $$
  SELECT taskmill._process_releases(
           p_limit, CASE WHEN p_exclude IS NULL THEN '{}'::uuid[] ELSE ARRAY[p_exclude] END, p_from)
$$;

--
-- Name: _release_floor(); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill._release_floor() RETURNS bigint
    LANGUAGE sql
    AS $$
  SELECT CASE
           WHEN coalesce(nullif(current_setting('taskmill.release_rescan_at', true), '')::float8, 0)
                <= extract(epoch FROM clock_timestamp()) THEN 0::bigint
           WHEN coalesce(pg_sequence_last_value('taskmill.release_hint'), 0)::text
                IS DISTINCT FROM nullif(current_setting('taskmill.release_seen', true), '')
             THEN coalesce(pg_sequence_last_value('taskmill.release_hint'), 0)
           ELSE 9223372036854775807
         END
$$;

--
-- Name: _release_probed(bigint, bigint); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill._release_probed(p_floor bigint, p_hint bigint) RETURNS text
    LANGUAGE sql
    AS $$
  SELECT concat(
    CASE WHEN p_floor = 0 THEN
      set_config('taskmill.release_rescan_at',
                 (extract(epoch FROM clock_timestamp()) + 0.25)::text, false) END,
    CASE WHEN p_floor < 9223372036854775807 THEN
      set_config('taskmill.release_seen', coalesce(p_hint, 0)::text, false) END)
$$;

--
-- Name: _wake_idle(integer); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill._wake_idle(p_count integer) RETURNS integer
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: cancel(uuid); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.cancel(p_task uuid) RETURNS text
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $$
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

--
-- Name: cancel_group(uuid); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.cancel_group(p_group uuid) RETURNS integer
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: claim(uuid, boolean, uuid); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.claim(p_app uuid, p_idle boolean DEFAULT true, p_exclude uuid DEFAULT NULL::uuid) RETURNS SETOF taskmill.task
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $$
DECLARE
  v_task taskmill.task;
BEGIN
  v_task := taskmill._claim_one(p_app, p_idle, p_exclude);
  IF v_task.id IS NOT NULL THEN
    RETURN NEXT v_task;
  END IF;
END $$;

--
-- Name: claim_many(uuid, integer, boolean, uuid[]); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.claim_many(p_app uuid, p_limit integer, p_idle boolean DEFAULT true, p_exclude uuid[] DEFAULT '{}'::uuid[]) RETURNS SETOF taskmill.task
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $$
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

--
-- Name: delete_missing_apps(); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.delete_missing_apps() RETURNS TABLE(id uuid, name text, app_type text)
    LANGUAGE sql
    AS $$
  WITH d AS (
    DELETE FROM taskmill.app a WHERE a.last_heartbeat < clock_timestamp() - a.ttl
    RETURNING a.id, a.name, a.app_type)
  , i AS (DELETE FROM taskmill.idle_worker w USING d WHERE w.app_id = d.id)
  SELECT d.id, d.name, d.app_type FROM d
$$;

--
-- Name: deregister_app(uuid); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.deregister_app(p_app uuid) RETURNS void
    LANGUAGE sql
    AS $$
  DELETE FROM taskmill.idle_worker WHERE app_id = p_app;
  DELETE FROM taskmill.app WHERE id = p_app;
$$;

--
-- Name: dispatch(text, jsonb, jsonb, text[], text[]); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.dispatch(name text, args jsonb DEFAULT '[]'::jsonb, kwargs jsonb DEFAULT '{}'::jsonb, exclusive_resources text[] DEFAULT '{}'::text[], shared_resources text[] DEFAULT '{}'::text[]) RETURNS uuid
    LANGUAGE plpgsql
    AS $$
BEGIN
  -- An expression, not a query: plpgsql evaluates it without an executor of
  -- its own.
  RETURN (taskmill.dispatch_task(dispatch.name, dispatch.args, dispatch.kwargs,
                                 dispatch.exclusive_resources, dispatch.shared_resources)).id;
END $$;

--
-- Name: dispatch_many(jsonb); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.dispatch_many(p_tasks jsonb) RETURNS uuid[]
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $_$
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
END $_$;

--
-- Name: dispatch_task(text, jsonb, jsonb, text[], text[], boolean, boolean, uuid, uuid, text, uuid); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.dispatch_task(p_name text, p_args jsonb DEFAULT '[]'::jsonb, p_kwargs jsonb DEFAULT '{}'::jsonb, p_exclusive_resources text[] DEFAULT '{}'::text[], p_shared_resources text[] DEFAULT '{}'::text[], p_immediate boolean DEFAULT false, p_deferred boolean DEFAULT true, p_task_group uuid DEFAULT NULL::uuid, p_parent_task uuid DEFAULT NULL::uuid, p_logging_cid text DEFAULT NULL::text, p_run_here uuid DEFAULT NULL::uuid, OUT id uuid, OUT state text, OUT ready boolean, OUT seq bigint) RETURNS record
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $$
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

--
-- Name: finalize_orphan(uuid); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.finalize_orphan(p_task uuid) RETURNS text
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $$
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

--
-- Name: finish(uuid, uuid, text, jsonb, jsonb); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.finish(p_task uuid, p_app uuid, p_state text, p_result jsonb, p_error jsonb) RETURNS text
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $$
BEGIN
  IF p_state NOT IN ('completed', 'failed', 'canceled') THEN
    RAISE EXCEPTION 'a task cannot finish as %', p_state USING ERRCODE = 'TM400';
  END IF;
  RETURN taskmill._finalize(p_task, p_app, ARRAY['running', 'canceling'], p_state, p_result, p_error);
END $$;

--
-- Name: finish_and_claim(uuid, uuid, text, jsonb, jsonb); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.finish_and_claim(p_task uuid, p_app uuid, p_state text, p_result jsonb, p_error jsonb, OUT finished_state text, OUT id uuid, OUT seq bigint, OUT name text, OUT args jsonb, OUT kwargs jsonb, OUT exclusive_resources text[], OUT shared_resources text[], OUT state text, OUT immediate boolean, OUT deferred boolean, OUT logging_cid text, OUT task_group uuid, OUT parent_task uuid, OUT created_at timestamp with time zone, OUT unblocked_at timestamp with time zone, OUT started_at timestamp with time zone) RETURNS record
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $$
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

--
-- Name: finish_many(uuid, jsonb); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.finish_many(p_app uuid, p_outcomes jsonb) RETURNS text[]
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $_$
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
END $_$;

--
-- Name: heartbeat(uuid); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.heartbeat(p_app uuid) RETURNS boolean
    LANGUAGE sql
    AS $$
  WITH u AS (UPDATE taskmill.app SET last_heartbeat = clock_timestamp() WHERE id = p_app RETURNING 1)
  SELECT EXISTS (SELECT 1 FROM u)
$$;

--
-- Name: heartbeat_fleet(uuid); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.heartbeat_fleet(p_app uuid, OUT alive boolean, OUT idle_processes integer) RETURNS record
    LANGUAGE plpgsql
    AS $$
BEGIN
  alive := taskmill.heartbeat(p_app);
  SELECT count(DISTINCT i.app_id)::integer INTO idle_processes FROM taskmill.idle_worker i;
END $$;

--
-- Name: horizon_holders(interval); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.horizon_holders(p_older_than interval DEFAULT '00:01:00'::interval) RETURNS TABLE(key text, kind text, pid integer, name text, state text, age_seconds double precision, xmin_age bigint)
    LANGUAGE sql STABLE
    AS $$
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

--
-- Name: orphaned_tasks(integer); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.orphaned_tasks(p_limit integer DEFAULT 100) RETURNS TABLE(id uuid, state text)
    LANGUAGE sql STABLE
    AS $$
  SELECT t.id, t.state FROM taskmill.task t
   WHERE t.state IN ('running', 'canceling') AND t.app_lock IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM taskmill.app a WHERE a.id = t.app_lock)
   ORDER BY t.seq LIMIT p_limit
$$;

--
-- Name: process_releases(integer, uuid, boolean); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.process_releases(p_limit integer DEFAULT 64, p_exclude uuid DEFAULT NULL::uuid, p_wake boolean DEFAULT true) RETURNS integer
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $$
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

--
-- Name: register_app(text, text, text, integer, text, double precision, text[], integer); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.register_app(p_app_type text, p_name text, p_hostname text, p_pid integer, p_version text, p_ttl_seconds double precision, p_functions text[], p_slots integer DEFAULT 1, OUT id uuid, OUT channel text) RETURNS record
    LANGUAGE plpgsql
    AS $$
BEGIN
  id := gen_random_uuid();
  channel := 'taskmill_' || replace(id::text, '-', '');
  INSERT INTO taskmill.app AS a (id, app_type, name, hostname, pid, version, ttl, channel, slots)
  VALUES (id, p_app_type, p_name, p_hostname, p_pid, p_version,
          make_interval(secs => p_ttl_seconds), channel, coalesce(p_slots, 1));
  INSERT INTO taskmill.task_function AS f (name)
  SELECT DISTINCT unnest(coalesce(p_functions, '{}'))
  ON CONFLICT (name) DO UPDATE SET last_seen = clock_timestamp();
END $$;

--
-- Name: report_progress(uuid, uuid, jsonb); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.report_progress(p_task uuid, p_app uuid, p_report jsonb) RETURNS boolean
    LANGUAGE sql
    AS $$
  WITH u AS (
    UPDATE taskmill.task t
       SET progress_reports = coalesce((SELECT jsonb_agg(pr) FROM jsonb_array_elements(t.progress_reports) pr
                                         WHERE pr->>'code' IS DISTINCT FROM p_report->>'code'), '[]')
                              || jsonb_build_array(p_report)
     WHERE t.id = p_task AND t.app_lock = p_app AND t.state IN ('running', 'canceling')
    RETURNING 1)
  SELECT EXISTS (SELECT 1 FROM u)
$$;

--
-- Name: requeue_lost(uuid, uuid[]); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.requeue_lost(p_app uuid, p_current uuid[]) RETURNS integer
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $$
DECLARE
  v_id uuid;
  n integer := 0;
  m integer := 0;
BEGIN
  UPDATE taskmill.task t
     SET state = 'waiting', app_lock = NULL, worker_name = NULL, started_at = NULL
   WHERE t.app_lock = p_app AND t.state = 'running' AND t.id <> ALL (coalesce(p_current, '{}'));
  GET DIAGNOSTICS n = ROW_COUNT;
  FOR v_id IN SELECT t.id FROM taskmill.task t WHERE t.app_lock = p_app AND t.state = 'canceling'
                 AND t.id <> ALL (coalesce(p_current, '{}')) LOOP
    PERFORM taskmill._finalize(v_id, p_app, ARRAY['canceling'], 'canceled', NULL, NULL);
    m := m + 1;
  END LOOP;
  -- Tasks put back are ready again: someone idle should look.
  IF n > 0 THEN
    PERFORM taskmill._wake_idle(n);
  END IF;
  RETURN n + m;
END $$;

--
-- Name: requeue_lost(uuid, uuid); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.requeue_lost(p_app uuid, p_current uuid) RETURNS integer
    LANGUAGE sql
    AS $$
  SELECT taskmill.requeue_lost(p_app, CASE WHEN p_current IS NULL THEN '{}'::uuid[]
                                           ELSE ARRAY[p_current] END)
$$;

--
-- Name: try_lease(text, uuid, double precision); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.try_lease(p_name text, p_holder uuid, p_seconds double precision) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: unblock_all(); Type: FUNCTION; Schema: taskmill; Owner: -
--

CREATE FUNCTION taskmill.unblock_all() RETURNS integer
    LANGUAGE sql
    AS $$
  WITH upd AS (
    UPDATE taskmill.task t SET unblocked_at = clock_timestamp()
     WHERE t.state = 'waiting' AND t.unblocked_at IS NULL
       AND taskmill._is_free(t.seq, t.exclusive_resources, t.shared_resources)
    RETURNING 1)
  SELECT count(*)::integer FROM upd
$$;

--
-- Name: app; Type: TABLE; Schema: taskmill; Owner: -
--

CREATE TABLE taskmill.app (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    app_type text NOT NULL,
    name text NOT NULL,
    hostname text DEFAULT ''::text NOT NULL,
    pid integer DEFAULT 0 NOT NULL,
    version text DEFAULT ''::text NOT NULL,
    started_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    last_heartbeat timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    ttl interval DEFAULT '00:00:30'::interval NOT NULL,
    channel text NOT NULL,
    slots integer DEFAULT 1 NOT NULL,
    CONSTRAINT app_app_type_check CHECK ((app_type = ANY (ARRAY['worker'::text, 'api'::text]))),
    CONSTRAINT app_slots_check CHECK (((slots >= 1) AND (slots <= 1000)))
)
WITH (fillfactor='50', autovacuum_vacuum_scale_factor='0', autovacuum_vacuum_threshold='200', autovacuum_vacuum_cost_delay='0');

--
-- Name: app_view; Type: VIEW; Schema: taskmill; Owner: -
--

CREATE VIEW taskmill.app_view AS
 SELECT a.id,
    a.app_type,
    a.name,
    a.hostname,
    a.pid,
    a.version,
    a.started_at,
    a.last_heartbeat,
    a.ttl,
    a.channel,
    (a.last_heartbeat >= (clock_timestamp() - a.ttl)) AS online,
    to_char((a.started_at AT TIME ZONE 'UTC'::text), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'::text) AS started_text,
    to_char((a.last_heartbeat AT TIME ZONE 'UTC'::text), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'::text) AS heartbeat_text,
    ( SELECT t.id
           FROM taskmill.task t
          WHERE ((t.app_lock = a.id) AND (t.state = ANY (ARRAY['running'::text, 'canceling'::text])))
          ORDER BY t.seq
         LIMIT 1) AS current_task,
    a.slots,
    ARRAY( SELECT t.id
           FROM taskmill.task t
          WHERE ((t.app_lock = a.id) AND (t.state = ANY (ARRAY['running'::text, 'canceling'::text])))
          ORDER BY t.seq) AS current_tasks
   FROM taskmill.app a;

--
-- Name: idle_worker; Type: TABLE; Schema: taskmill; Owner: -
--

CREATE TABLE taskmill.idle_worker (
    app_id uuid NOT NULL,
    channel text NOT NULL,
    since timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    ticket bigint NOT NULL
)
WITH (autovacuum_vacuum_scale_factor='0', autovacuum_vacuum_threshold='500', autovacuum_vacuum_cost_delay='0');

--
-- Name: idle_ticket; Type: SEQUENCE; Schema: taskmill; Owner: -
--

CREATE SEQUENCE taskmill.idle_ticket
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

--
-- Name: idle_ticket; Type: SEQUENCE OWNED BY; Schema: taskmill; Owner: -
--

ALTER SEQUENCE taskmill.idle_ticket OWNED BY taskmill.idle_worker.ticket;

--
-- Name: lease; Type: TABLE; Schema: taskmill; Owner: -
--

CREATE TABLE taskmill.lease (
    name text NOT NULL,
    holder uuid NOT NULL,
    expires_at timestamp with time zone NOT NULL
)
WITH (fillfactor='50', autovacuum_vacuum_scale_factor='0', autovacuum_vacuum_threshold='50', autovacuum_vacuum_cost_delay='0');

--
-- Name: release_hint; Type: SEQUENCE; Schema: taskmill; Owner: -
--

CREATE SEQUENCE taskmill.release_hint
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

--
-- Name: schema_migrations; Type: TABLE; Schema: taskmill; Owner: -
--

CREATE TABLE taskmill.schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: task_function; Type: TABLE; Schema: taskmill; Owner: -
--

CREATE TABLE taskmill.task_function (
    name text NOT NULL,
    first_seen timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    last_seen timestamp with time zone DEFAULT clock_timestamp() NOT NULL
);

--
-- Name: task_group; Type: TABLE; Schema: taskmill; Owner: -
--

CREATE TABLE taskmill.task_group (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    description text DEFAULT ''::text NOT NULL,
    created_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    all_tasks_dispatched boolean DEFAULT false NOT NULL
);

--
-- Name: task_resource; Type: TABLE; Schema: taskmill; Owner: -
--

CREATE TABLE taskmill.task_resource (
    resource text NOT NULL,
    seq bigint NOT NULL,
    task_id uuid NOT NULL,
    exclusive boolean NOT NULL
)
WITH (autovacuum_vacuum_scale_factor='0', autovacuum_vacuum_threshold='1000', autovacuum_vacuum_cost_delay='0', autovacuum_vacuum_insert_scale_factor='0', autovacuum_vacuum_insert_threshold='10000');

--
-- Name: task_seq; Type: SEQUENCE; Schema: taskmill; Owner: -
--

CREATE SEQUENCE taskmill.task_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

--
-- Name: task_view; Type: VIEW; Schema: taskmill; Owner: -
--

CREATE VIEW taskmill.task_view AS
 SELECT t.id,
    t.seq,
    t.name,
    t.args,
    t.kwargs,
    t.exclusive_resources,
    t.shared_resources,
    t.state,
    t.created_at,
    t.unblocked_at,
    t.started_at,
    t.finished_at,
    t.app_lock,
    t.worker_name,
    t.result,
    t.error,
    t.progress_reports,
    t.immediate,
    t.deferred,
    t.parent_task,
    t.task_group,
    t.logging_cid,
    t.release_pending,
    to_char((t.created_at AT TIME ZONE 'UTC'::text), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'::text) AS created_text,
    to_char((t.unblocked_at AT TIME ZONE 'UTC'::text), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'::text) AS unblocked_text,
    to_char((t.started_at AT TIME ZONE 'UTC'::text), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'::text) AS started_text,
    to_char((t.finished_at AT TIME ZONE 'UTC'::text), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'::text) AS finished_text
   FROM taskmill.task t;

--
-- Name: idle_worker ticket; Type: DEFAULT; Schema: taskmill; Owner: -
--

ALTER TABLE ONLY taskmill.idle_worker ALTER COLUMN ticket SET DEFAULT nextval('taskmill.idle_ticket'::regclass);

--
-- Name: app app_pkey; Type: CONSTRAINT; Schema: taskmill; Owner: -
--

ALTER TABLE ONLY taskmill.app
    ADD CONSTRAINT app_pkey PRIMARY KEY (id);

--
-- Name: idle_worker idle_worker_pkey; Type: CONSTRAINT; Schema: taskmill; Owner: -
--

ALTER TABLE ONLY taskmill.idle_worker
    ADD CONSTRAINT idle_worker_pkey PRIMARY KEY (ticket);

--
-- Name: lease lease_pkey; Type: CONSTRAINT; Schema: taskmill; Owner: -
--

ALTER TABLE ONLY taskmill.lease
    ADD CONSTRAINT lease_pkey PRIMARY KEY (name);

--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: taskmill; Owner: -
--

ALTER TABLE ONLY taskmill.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);

--
-- Name: task_function task_function_pkey; Type: CONSTRAINT; Schema: taskmill; Owner: -
--

ALTER TABLE ONLY taskmill.task_function
    ADD CONSTRAINT task_function_pkey PRIMARY KEY (name);

--
-- Name: task_group task_group_pkey; Type: CONSTRAINT; Schema: taskmill; Owner: -
--

ALTER TABLE ONLY taskmill.task_group
    ADD CONSTRAINT task_group_pkey PRIMARY KEY (id);

--
-- Name: task task_pkey; Type: CONSTRAINT; Schema: taskmill; Owner: -
--

ALTER TABLE ONLY taskmill.task
    ADD CONSTRAINT task_pkey PRIMARY KEY (id);

--
-- Name: task_resource task_resource_pkey; Type: CONSTRAINT; Schema: taskmill; Owner: -
--

ALTER TABLE ONLY taskmill.task_resource
    ADD CONSTRAINT task_resource_pkey PRIMARY KEY (resource, seq);

--
-- Name: idle_worker_app_idx; Type: INDEX; Schema: taskmill; Owner: -
--

CREATE INDEX idle_worker_app_idx ON taskmill.idle_worker USING btree (app_id);

--
-- Name: task_created_idx; Type: INDEX; Schema: taskmill; Owner: -
--

CREATE INDEX task_created_idx ON taskmill.task USING btree (created_at);

--
-- Name: task_finished_idx; Type: INDEX; Schema: taskmill; Owner: -
--

CREATE INDEX task_finished_idx ON taskmill.task USING btree (finished_at) WHERE (finished_at IS NOT NULL);

--
-- Name: task_group_idx; Type: INDEX; Schema: taskmill; Owner: -
--

CREATE INDEX task_group_idx ON taskmill.task USING btree (task_group) WHERE (task_group IS NOT NULL);

--
-- Name: task_owned_idx; Type: INDEX; Schema: taskmill; Owner: -
--

CREATE INDEX task_owned_idx ON taskmill.task USING btree (app_lock) WHERE (state = ANY (ARRAY['running'::text, 'canceling'::text]));

--
-- Name: task_parent_idx; Type: INDEX; Schema: taskmill; Owner: -
--

CREATE INDEX task_parent_idx ON taskmill.task USING btree (parent_task) WHERE (parent_task IS NOT NULL);

--
-- Name: task_ready_idx; Type: INDEX; Schema: taskmill; Owner: -
--

CREATE INDEX task_ready_idx ON taskmill.task USING btree (immediate DESC, seq) WHERE ((state = 'waiting'::text) AND (unblocked_at IS NOT NULL) AND (app_lock IS NULL));

--
-- Name: task_release_idx; Type: INDEX; Schema: taskmill; Owner: -
--

CREATE INDEX task_release_idx ON taskmill.task USING btree (seq) WHERE release_pending;

--
-- Name: task_resource_exclusive_idx; Type: INDEX; Schema: taskmill; Owner: -
--

CREATE INDEX task_resource_exclusive_idx ON taskmill.task_resource USING btree (resource, seq) WHERE exclusive;

--
-- Name: task_unfinished_idx; Type: INDEX; Schema: taskmill; Owner: -
--

CREATE INDEX task_unfinished_idx ON taskmill.task USING btree (state) WHERE ((state = ANY (ARRAY['running'::text, 'canceling'::text])) OR ((state = 'waiting'::text) AND (unblocked_at IS NULL)));

--
-- Name: task task_parent_task_fkey; Type: FK CONSTRAINT; Schema: taskmill; Owner: -
--

ALTER TABLE ONLY taskmill.task
    ADD CONSTRAINT task_parent_task_fkey FOREIGN KEY (parent_task) REFERENCES taskmill.task(id) ON DELETE SET NULL;

--
-- Name: task task_task_group_fkey; Type: FK CONSTRAINT; Schema: taskmill; Owner: -
--

ALTER TABLE ONLY taskmill.task
    ADD CONSTRAINT task_task_group_fkey FOREIGN KEY (task_group) REFERENCES taskmill.task_group(id) ON DELETE SET NULL;

--
-- PostgreSQL database dump complete
--


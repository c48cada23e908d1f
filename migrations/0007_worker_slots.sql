-- taskmill schema: workers with slots (one process running several tasks).
--
--   taskmill.app.slots                       how many tasks the process runs at once
--   taskmill.register_app(..., p_slots)      registers it
--   taskmill.app_view.current_tasks          every task the process is running
--   taskmill.requeue_lost(app, uuid[])       a lost claim put back, all slots kept
--   taskmill.heartbeat_fleet(app)            heartbeat plus the size of the idle fleet

ALTER TABLE taskmill.app
  ADD COLUMN slots integer NOT NULL DEFAULT 1 CONSTRAINT app_slots_check CHECK (slots BETWEEN 1 AND 1000);

DROP FUNCTION taskmill.register_app(text, text, text, integer, text, double precision, text[]);
CREATE FUNCTION taskmill.register_app(p_app_type text, p_name text, p_hostname text, p_pid integer,
                                      p_version text, p_ttl_seconds double precision,
                                      p_functions text[], p_slots integer DEFAULT 1,
                                      OUT id uuid, OUT channel text)
RETURNS record LANGUAGE plpgsql AS $$
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

-- current_task (the oldest) stays for Pulp's worker JSON; current_tasks
-- lists all of a multi-slot worker's tasks in claim order.
CREATE OR REPLACE VIEW taskmill.app_view AS
SELECT a.id, a.app_type, a.name, a.hostname, a.pid, a.version, a.started_at, a.last_heartbeat,
       a.ttl, a.channel,
       a.last_heartbeat >= clock_timestamp() - a.ttl AS online,
       to_char(a.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS started_text,
       to_char(a.last_heartbeat AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS heartbeat_text,
       (SELECT t.id FROM taskmill.task t
         WHERE t.app_lock = a.id AND t.state IN ('running', 'canceling')
         ORDER BY t.seq LIMIT 1) AS current_task,
       a.slots,
       ARRAY(SELECT t.id FROM taskmill.task t
              WHERE t.app_lock = a.id AND t.state IN ('running', 'canceling')
              ORDER BY t.seq) AS current_tasks
  FROM taskmill.app a;

-- After a database fault a worker does not know whether its last claim
-- committed: tasks it owns but is not running (p_current) go back in line
-- (running ones) or are finalised (canceling ones), as the one-uuid form did
-- for a worker with one slot; that form now calls this one.
CREATE FUNCTION taskmill.requeue_lost(p_app uuid, p_current uuid[]) RETURNS integer
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
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

CREATE OR REPLACE FUNCTION taskmill.requeue_lost(p_app uuid, p_current uuid) RETURNS integer
LANGUAGE sql AS $$
  SELECT taskmill.requeue_lost(p_app, CASE WHEN p_current IS NULL THEN '{}'::uuid[]
                                           ELSE ARRAY[p_current] END)
$$;

-- The heartbeat of a worker, and how many processes are on the idle list:
-- idle workers space their polls by the size of the idle fleet, so that
-- the fleet as a whole polls at about the same rate however many there are.
CREATE FUNCTION taskmill.heartbeat_fleet(p_app uuid, OUT alive boolean, OUT idle_processes integer)
RETURNS record LANGUAGE plpgsql AS $$
BEGIN
  alive := taskmill.heartbeat(p_app);
  SELECT count(DISTINCT i.app_id)::integer INTO idle_processes FROM taskmill.idle_worker i;
END $$;

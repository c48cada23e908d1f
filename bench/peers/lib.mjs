// Shared by the peer drivers of scripts/bench-peers.sh: options, result lines
// (the format of apps/bench_results.h), and the timed drain of a backlog by
// worker processes that report which jobs they ran.
import { fork } from "node:child_process";
import { appendFileSync } from "node:fs";
import pg from "pg";

// Milliseconds since the epoch, sub-millisecond, comparable across processes.
export const now = () => performance.timeOrigin + performance.now();
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// --key value and --flag (true); numbers stay strings until the caller asks.
export function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    const key = a.slice(2);
    if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) out[key] = argv[++i];
    else out[key] = true;
  }
  return out;
}

export function required(args, key) {
  if (args[key] === undefined || args[key] === true) throw new Error(`--${key} is required`);
  return args[key];
}

export function intArg(args, key, dflt) {
  const v = args[key] === undefined ? dflt : Number(args[key]);
  if (!Number.isInteger(v) || v < 0) throw new Error(`--${key} must be a whole number`);
  return v;
}

// Appends one result line; params keys sorted so that equal params compare equal.
export function writeResult(path, kind, scenario, params, figures, run) {
  if (!path) return;
  const sorted = Object.fromEntries(Object.entries(params).sort(([a], [b]) => (a < b ? -1 : 1)));
  const line = {
    kind,
    scenario,
    params: sorted,
    commit: process.env.TASKMILL_BENCH_COMMIT || "unknown",
    timestamp: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    figures,
  };
  if (run) line.run = run;
  appendFileSync(path, JSON.stringify(line) + "\n");
}

export async function withClient(url, fn) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

// Starts `processes` copies of `script` (each gets JSON options as its one
// argument and must call workerMain), waits until every job has been run by a
// handler and `doneSql` (one row, one boolean column "done") says the system
// has recorded them all complete, then stops the workers and counts how often
// each job ran. The drain is timed from the first handler call in any worker
// to the first poll that saw `doneSql` true; the database is polled (every
// 2 ms) only once the handlers have run nearly every job, so that the poll
// costs the workers nothing while they drain.
export async function drain({ script, options, processes, jobs, url, doneSql, timeoutMs }) {
  const poller = new pg.Client({ connectionString: url });
  await poller.connect();
  const ran = new Array(processes).fill(0);
  const firsts = new Array(processes).fill(0);
  const seen = new Array(processes).fill(null);
  let failure = null;
  let stopping = false;
  const children = [];
  const start = now();
  for (let i = 0; i < processes; i++) {
    const child = fork(script, [JSON.stringify({ ...options, jobs, index: i })], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    child.on("message", (m) => {
      if (m.type === "progress") {
        ran[i] = m.ran;
        if (m.first) firsts[i] = m.first;
      } else if (m.type === "seen") {
        seen[i] = Buffer.from(m.seen, "base64");
      }
    });
    child.exited = new Promise((resolve) =>
      child.on("exit", (code, signal) => {
        if (!stopping || code !== 0)
          failure ??= new Error(`worker ${i} exited (code ${code}, signal ${signal})`);
        resolve();
      }),
    );
    children.push(child);
  }
  const sum = () => ran.reduce((a, b) => a + b, 0);
  const deadline = start + timeoutMs;
  let end = 0;
  try {
    while (!failure) {
      if (now() > deadline) throw new Error(`not drained in ${timeoutMs / 1000} s: ran ${sum()}`);
      if (sum() < jobs * 0.98) {
        await sleep(5);
        continue;
      }
      const res = await poller.query(doneSql);
      if (res.rows[0].done) {
        end = now();
        break;
      }
      await sleep(2);
    }
    if (failure) throw failure;
  } finally {
    stopping = true;
    for (const c of children) if (c.connected) c.send({ type: "stop" });
    const killer = setTimeout(() => children.forEach((c) => c.kill("SIGKILL")), 30000);
    await Promise.all(children.map((c) => c.exited));
    clearTimeout(killer);
    await poller.end();
  }
  if (failure) throw failure;
  const counts = new Uint8Array(jobs);
  for (const part of seen) {
    if (!part) throw new Error("a worker did not report the jobs it ran");
    for (let j = 0; j < jobs; j++) counts[j] = Math.min(255, counts[j] + part[j]);
  }
  let missing = 0,
    twice = 0;
  for (let j = 0; j < jobs; j++) {
    if (counts[j] === 0) missing++;
    else if (counts[j] > 1) twice++;
  }
  const first = Math.min(...firsts.filter((f) => f > 0));
  return { drainS: (end - first) / 1000, wallS: (end - start) / 1000, missing, twice, ran: sum() };
}

// The worker side of drain(): `start(options, onJob)` starts the system's
// worker, calls onJob(i) in the handler of job i, and resolves to an async
// function that stops it gracefully.
export async function workerMain(start) {
  const options = JSON.parse(process.argv[2]);
  const seen = new Uint8Array(options.jobs);
  let ran = 0,
    first = 0,
    sent = -1;
  const onJob = (i) => {
    if (!first) first = now();
    if (seen[i] < 255) seen[i]++;
    ran++;
  };
  const timer = setInterval(() => {
    if (ran !== sent) {
      sent = ran;
      process.send({ type: "progress", ran, first });
    }
  }, 5);
  let stop = null;
  let stopRequested = false;
  const finish = async () => {
    clearInterval(timer);
    await stop();
    process.send({ type: "progress", ran, first });
    process.send({ type: "seen", seen: Buffer.from(seen).toString("base64") }, () =>
      process.exit(0),
    );
  };
  process.on("message", (m) => {
    if (m.type !== "stop") return;
    stopRequested = true;
    if (stop) finish();
  });
  try {
    stop = await start(options, onJob);
  } catch (e) {
    console.error(`worker ${options.index}:`, e);
    process.exit(1);
  }
  if (stopRequested) finish();
}

// Median of numbers.
export function median(v) {
  const s = [...v].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

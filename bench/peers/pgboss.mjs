// One burn-down of pg-boss: --jobs no-op jobs added with insert() in batches
// of 1,000 (a timed phase of its own), then --processes worker processes, each
// with one work() of --batch-size, drain them. Appends one result line to
// --json-out.
//   node pgboss.mjs --url URL --jobs N [--processes 4] [--batch-size 500]
//     [--json-out F] [--round R]
import { PgBoss } from "pg-boss";
import { drain, intArg, now, parseArgs, required, withClient, writeResult } from "./lib.mjs";

const args = parseArgs(process.argv.slice(2));
const url = required(args, "url");
const jobs = intArg(args, "jobs", 50000);
const processes = intArg(args, "processes", 4);
const batchSize = intArg(args, "batch-size", 500);
const queue = "bench";

const boss = new PgBoss({ connectionString: url });
boss.on("error", (e) => console.error("pg-boss:", e));
await boss.start();
await boss.createQueue(queue);
const insertStart = now();
for (let i = 0; i < jobs; i += 1000) {
  const batch = [];
  for (let j = i; j < Math.min(jobs, i + 1000); j++) batch.push({ data: { i: j } });
  await boss.insert(queue, batch);
}
const insertS = (now() - insertStart) / 1000;
await boss.stop({ graceful: true, wait: true });
// The drain does not pay for the insertion's WAL.
await withClient(url, (c) => c.query("CHECKPOINT"));

const result = await drain({
  script: new URL("./pgboss-child.mjs", import.meta.url).pathname,
  options: { url, queue, batchSize },
  processes,
  jobs,
  url,
  doneSql:
    "SELECT NOT EXISTS (SELECT 1 FROM pgboss.job WHERE name = 'bench' AND state <> 'completed') AS done",
  timeoutMs: 600000,
});
const counts = await withClient(url, async (c) => {
  const r = await c.query(
    "SELECT count(*) AS total, count(*) FILTER (WHERE state = 'completed' AND retry_count = 0) AS once " +
      "FROM pgboss.job WHERE name = $1",
    [queue],
  );
  return { total: Number(r.rows[0].total), once: Number(r.rows[0].once) };
});
const ok =
  counts.total === jobs && counts.once === jobs && result.missing === 0 && result.twice === 0;
const rate = counts.once / result.drainS;
console.log(
  `pg-boss batchSize ${batchSize}: inserted in ${insertS.toFixed(2)} s (${(jobs / insertS).toFixed(0)}/s); ` +
    `${counts.once} of ${counts.total} completed on the first try (${result.missing} never ran, ` +
    `${result.twice} ran twice), drained in ${result.drainS.toFixed(2)} s = ${rate.toFixed(0)} jobs/s ` +
    `(workers' start to the end: ${result.wallS.toFixed(2)} s)`,
);
if (!ok) {
  console.error("pg-boss: not every job ran exactly once");
  process.exit(1);
}
writeResult(
  args["json-out"],
  "run",
  "burndown",
  {
    system: "pg-boss",
    version: "12.38.0",
    shape: `batch${batchSize}`,
    tasks: jobs,
    processes,
    batch_size: batchSize,
  },
  {
    tasks_per_s: rate,
    drain_s: result.drainS,
    wall_s: result.wallS,
    insert_per_s: jobs / insertS,
    completed: counts.once,
  },
  args.round ? Number(args.round) : 1,
);

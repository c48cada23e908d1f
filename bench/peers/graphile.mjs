// One burn-down of graphile-worker: --jobs no-op jobs added with addJobs (a
// timed phase of its own), then --processes worker processes of
// --concurrency each drain them. Appends one result line to --json-out.
//   node graphile.mjs --url URL --jobs N --shape batched|unbatched
//     [--processes 4] [--concurrency 24] [--local-queue 500] [--json-out F] [--round R]
import { Logger, makeWorkerUtils } from "graphile-worker";
import { drain, intArg, now, parseArgs, required, withClient, writeResult } from "./lib.mjs";

const args = parseArgs(process.argv.slice(2));
const url = required(args, "url");
const jobs = intArg(args, "jobs", 50000);
const shape = required(args, "shape");
if (shape !== "batched" && shape !== "unbatched") throw new Error("--shape: batched or unbatched");
const processes = intArg(args, "processes", 4);
const concurrency = intArg(args, "concurrency", 24);
const localQueue = shape === "batched" ? intArg(args, "local-queue", 500) : -1;
const completeJobBatchDelay = shape === "batched" ? 0 : -1;
const quiet = new Logger(() => (level, message) => {
  if (level === "error") console.error(`graphile-worker: ${message}`);
});

const utils = await makeWorkerUtils({ connectionString: url, logger: quiet });
await utils.migrate();
const insertStart = now();
for (let i = 0; i < jobs; i += 1000) {
  const specs = [];
  for (let j = i; j < Math.min(jobs, i + 1000); j++)
    specs.push({ identifier: "noop", payload: { i: j } });
  await utils.addJobs(specs);
}
const insertS = (now() - insertStart) / 1000;
await utils.release();
// The drain does not pay for the insertion's WAL.
await withClient(url, (c) => c.query("CHECKPOINT"));

const result = await drain({
  script: new URL("./graphile-child.mjs", import.meta.url).pathname,
  options: { url, concurrency, localQueue, completeJobBatchDelay },
  processes,
  jobs,
  url,
  // Completing a job deletes its row; a failed one would stay.
  doneSql: "SELECT NOT EXISTS (SELECT 1 FROM graphile_worker._private_jobs) AS done",
  timeoutMs: 600000,
});
const left = await withClient(url, async (c) =>
  Number((await c.query("SELECT count(*) AS n FROM graphile_worker._private_jobs")).rows[0].n),
);
const completed = jobs - left;
const ok = left === 0 && result.missing === 0 && result.twice === 0;
const rate = completed / result.drainS;
console.log(
  `graphile-worker ${shape}: inserted in ${insertS.toFixed(2)} s (${(jobs / insertS).toFixed(0)}/s); ` +
    `${completed} completed (${result.missing} never ran, ${result.twice} ran twice), drained in ` +
    `${result.drainS.toFixed(2)} s = ${rate.toFixed(0)} jobs/s (workers' start to the end: ` +
    `${result.wallS.toFixed(2)} s)`,
);
if (!ok) {
  console.error(`graphile-worker ${shape}: not every job ran exactly once`);
  process.exit(1);
}
writeResult(
  args["json-out"],
  "run",
  "burndown",
  {
    system: "graphile-worker",
    version: "0.18.0",
    shape,
    tasks: jobs,
    processes,
    concurrency,
    local_queue: localQueue,
    complete_job_batch_delay: completeJobBatchDelay,
  },
  {
    tasks_per_s: rate,
    drain_s: result.drainS,
    wall_s: result.wallS,
    insert_per_s: jobs / insertS,
    completed,
  },
  args.round ? Number(args.round) : 1,
);

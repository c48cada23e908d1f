// A pg-boss process for pgboss.mjs: works no-op jobs in batches until told to stop.
import { PgBoss } from "pg-boss";
import { workerMain } from "./lib.mjs";

await workerMain(async (o, onJob) => {
  const boss = new PgBoss({ connectionString: o.url });
  boss.on("error", (e) => console.error("pg-boss:", e));
  await boss.start();
  await boss.work(
    o.queue,
    // Without a burst setting a worker waits its polling interval after every
    // batch, even a full one; this keeps fetching while batches come back full.
    { batchSize: o.batchSize, burstWhenBatchFull: true, pollingIntervalSeconds: 0.5 },
    async (batch) => {
      for (const job of batch) onJob(job.data.i);
    },
  );
  return () => boss.stop({ graceful: true, wait: true });
});

// A graphile-worker process for graphile.mjs: runs no-op jobs until told to stop.
import { Logger, run } from "graphile-worker";
import { workerMain } from "./lib.mjs";

const quiet = new Logger(() => (level, message) => {
  if (level === "error") console.error(`graphile-worker: ${message}`);
});

await workerMain(async (o, onJob) => {
  const worker = {
    connectionString: o.url,
    concurrentJobs: o.concurrency,
    // A connection for every concurrent job, as a busy pool wants.
    maxPoolSize: o.concurrency + 2,
    completeJobBatchDelay: o.completeJobBatchDelay,
  };
  if (o.localQueue > 1) worker.localQueue = { size: o.localQueue };
  const runner = await run({
    logger: quiet,
    noHandleSignals: true,
    taskList: {
      noop: async (payload) => {
        onJob(payload.i);
      },
    },
    preset: { worker },
  });
  return () => runner.stop();
});

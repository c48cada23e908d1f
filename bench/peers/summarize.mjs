// The end of scripts/bench-peers.sh: reads the run lines of every round
// (--in), appends them to --out numbered by round, then one median line per
// scenario and params, then one "ratio" line per taskmill shape and peer
// shape, and prints the medians and the taskmill/peer ratios.
//   node summarize.mjs --in RAW.jsonl --out RESULTS.jsonl
import { appendFileSync, readFileSync } from "node:fs";
import { median, parseArgs, required, writeResult } from "./lib.mjs";

const args = parseArgs(process.argv.slice(2));
const lines = readFileSync(required(args, "in"), "utf8")
  .split("\n")
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l))
  // taskmill-bench also writes a median for its one run; medians are ours.
  .filter((j) => (j.kind ?? "run") === "run");
const out = required(args, "out");

const groups = new Map();
for (const j of lines) {
  const key = j.scenario + " " + JSON.stringify(j.params);
  if (!groups.has(key)) groups.set(key, { scenario: j.scenario, params: j.params, runs: [] });
  const g = groups.get(key);
  g.runs.push(j);
  appendFileSync(out, JSON.stringify({ ...j, run: g.runs.length }) + "\n");
}

const label = (p) => {
  if (p.system === "taskmill") {
    const extra = p.worker_args?.length ? " " + p.worker_args.join(" ") : "";
    const res = p.resources === "fresh" ? ", fresh exclusive resource each" : ", no resources";
    return `taskmill ${p.workers} workers ${p.mode}${res}${extra}`;
  }
  if (p.system === "graphile-worker")
    return `graphile-worker ${p.version} ${p.shape} (${p.processes} x ${p.concurrency}` +
      (p.shape === "batched" ? `, localQueue ${p.local_queue}, completeJobBatchDelay ${p.complete_job_batch_delay})` : ")");
  if (p.system === "pg-boss")
    return `pg-boss ${p.version} batchSize ${p.batch_size}, ${p.processes} workers`;
  return JSON.stringify(p);
};
const fmt = (v) => Math.round(v).toLocaleString("en-US");

const medians = [];
for (const g of groups.values()) {
  const figures = {};
  for (const name of Object.keys(g.runs[0].figures))
    figures[name] = median(g.runs.map((r) => r.figures[name]).filter((v) => typeof v === "number"));
  writeResult(out, "median", g.scenario, g.params, figures);
  medians.push({ ...g, figures });
}

const commits = medians.filter((m) => m.scenario === "commit_rate");
const burns = medians.filter((m) => m.scenario === "burndown");
console.log("\nRaw commit rate (a one-row INSERT per transaction, pgbench), median of rounds:");
for (const m of commits)
  console.log(
    `  ${m.params.clients} client(s): ${fmt(m.figures.commits_per_s)} commits/s ` +
      `(runs ${m.runs.map((r) => fmt(r.figures.commits_per_s)).join(" / ")})`,
  );
const oneClient = commits.find((m) => m.params.clients === 1)?.figures.commits_per_s;
console.log("\nBurn-down, tasks/s (median of rounds; runs; insertion/s; tasks per 1-client commit):");
for (const m of burns)
  console.log(
    `  ${label(m.params).padEnd(78)} ${fmt(m.figures.tasks_per_s).padStart(7)}  ` +
      `(${m.runs.map((r) => fmt(r.figures.tasks_per_s)).join(" / ")}; insert ${fmt(m.figures.insert_per_s)}/s` +
      (oneClient ? `; ${(m.figures.tasks_per_s / oneClient).toFixed(2)}x commit rate)` : ")"),
  );
const ours = burns.filter((m) => m.params.system === "taskmill");
const peers = burns.filter((m) => m.params.system !== "taskmill");
if (ours.length && peers.length) {
  console.log("\ntaskmill / peer (ratio of median tasks/s):");
  for (const t of ours) {
    console.log(`  ${label(t.params)}`);
    for (const p of peers) {
      const ratio = t.figures.tasks_per_s / p.figures.tasks_per_s;
      console.log(`    vs ${label(p.params).padEnd(74)} ${ratio.toFixed(2)}x`);
      writeResult(
        out,
        "ratio",
        "burndown",
        { taskmill: t.params, peer: p.params },
        { taskmill_per_peer: ratio },
      );
    }
  }
}

// cluster_client.js - ioredis Cluster (npm) pointed at meltemi: `node cluster_client.js
// <host> <port>` discovers the "cluster" through meltemi's CLUSTER SLOTS, writes and reads
// 100 keys spread over the slots, and prints one JSON line: the nodes ioredis knows, the
// local ports of its open connections (the test checks no backend sees one), what it read.
'use strict';
const Redis = require('ioredis');

const [host, port] = process.argv.slice(2);
const watchdog = setTimeout(() => { console.error('watchdog: no result in 30 s'); process.exit(2); },
  30000);

async function main() {
  const cluster = new Redis.Cluster([{ host, port: Number(port) }], {
    redisOptions: { commandTimeout: 5000, maxRetriesPerRequest: 0 },
    clusterRetryStrategy: () => null,
  });
  const keys = Array.from({ length: 100 }, (_, i) => `ioc:${i}`);
  for (const k of keys) await cluster.set(k, `v-${k}`);
  const values = await Promise.all(keys.map((k) => cluster.get(k)));
  const nodes = cluster.nodes('all').map((n) => `${n.options.host}:${n.options.port}`);
  const localPorts = cluster.nodes('all').map((n) => n.stream && n.stream.localPort)
    .filter((p) => p);
  const out = { nodes, localPorts, ok: values.every((v, i) => v === `v-${keys[i]}`) };
  cluster.disconnect();
  return out;
}

main().then((out) => {
  clearTimeout(watchdog);
  console.log(JSON.stringify(out));
}, (e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});

// pubsub_client.js - ioredis (npm) subscribers and a publisher through meltemi:
// `node pubsub_client.js <host> <port>` subscribes one client to two channels and another to
// a pattern, publishes three messages, unsubscribes, then runs a GET on the first client
// (out of the subscribed state), and prints what happened as one JSON line. Every command is
// bounded by commandTimeout and the whole run by a watchdog.
'use strict';
const Redis = require('ioredis');

const [host, port] = process.argv.slice(2);
const opts = { host, port: Number(port), commandTimeout: 5000, maxRetriesPerRequest: 0,
  retryStrategy: () => null };
const watchdog = setTimeout(() => { console.error('watchdog: no result in 30 s'); process.exit(2); },
  30000);

async function main() {
  const sub = new Redis(opts);
  const psub = new Redis(opts);
  const pub = new Redis(opts);
  const out = { messages: [], pmessages: [], published: [] };
  const want = 6;
  let seen = 0;
  let done;
  const all = new Promise((res) => { done = res; });
  sub.on('message', (ch, msg) => { out.messages.push([ch, msg]); if (++seen === want) done(); });
  psub.on('pmessage', (pat, ch, msg) => { out.pmessages.push([pat, ch, msg]); if (++seen === want) done(); });
  out.subscribed = await sub.subscribe('chan-a', 'chan-b');
  await psub.psubscribe('chan-*');
  for (const [ch, m] of [['chan-a', 'm0'], ['chan-a', 'm1'], ['chan-b', 'm2']])
    out.published.push(await pub.publish(ch, m));
  await all;
  await sub.unsubscribe();
  await pub.set('k', 'v');
  out.get_after_unsubscribe = await sub.get('k');
  sub.disconnect();
  psub.disconnect();
  pub.disconnect();
  return out;
}

main().then((out) => {
  clearTimeout(watchdog);
  console.log(JSON.stringify(out));
}, (e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});

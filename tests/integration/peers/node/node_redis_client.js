// node_redis_client.js - node-redis (the npm `redis` package, RESP3 with HELLO 3) through
// meltemi: `node node_redis_client.js <host> <port>` connects with RESP: 3, runs string,
// hash and sorted-set commands (whose RESP3 replies are typed: map, double), subscribes on a
// second connection, publishes, and prints what it saw as one JSON line. Bounded by a
// watchdog; errors are printed and exit 1.
'use strict';
const { createClient } = require('redis');

const [host, port] = process.argv.slice(2);
const watchdog = setTimeout(() => { console.error('watchdog: no result in 30 s'); process.exit(2); },
  30000);

async function main() {
  const url = `redis://${host}:${port}`;
  const opts = { url, RESP: 3, socket: { reconnectStrategy: false, connectTimeout: 5000 } };
  const client = createClient(opts);
  client.on('error', (e) => { console.error('client error', e.message); });
  await client.connect();
  const out = {};
  out.hello = await client.sendCommand(['HELLO', '3']);
  await client.set('nr:k', 'v');
  out.get = await client.get('nr:k');
  out.missing = await client.get('nr:missing');
  await client.del('nr:h');
  await client.hSet('nr:h', { a: '1', b: '2' });
  out.hgetall = await client.hGetAll('nr:h');
  await client.del('nr:z');
  await client.zAdd('nr:z', { score: 1.5, value: 'm' });
  out.zscore = await client.zScore('nr:z', 'm');
  const sub = client.duplicate();
  sub.on('error', (e) => { console.error('sub error', e.message); });
  await sub.connect();
  const got = [];
  let done;
  const all = new Promise((res) => { done = res; });
  await sub.subscribe('nr:chan', (message, channel) => {
    got.push([channel, message]);
    if (got.length === 2) done();
  });
  // RESP3: a subscribed connection still runs commands
  out.ping_while_subscribed = await sub.ping();
  out.published = [await client.publish('nr:chan', 'one'), await client.publish('nr:chan', 'two')];
  await all;
  out.messages = got;
  await sub.unsubscribe('nr:chan');
  await sub.quit();
  await client.quit();
  return out;
}

main().then((out) => {
  clearTimeout(watchdog);
  console.log(JSON.stringify(out));
}, (e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});

// ioredis_client.js - ioredis (the npm package, a real Node Redis client) driven by meltemi's
// integration tests: `node ioredis_client.js <scenario> <host> <port>` runs one scenario and
// prints its outcome as one JSON line. Every command is bounded by commandTimeout, so a hang
// becomes a reported error, never a stuck test.
'use strict';
const Redis = require('ioredis');

const [scenario, host, port] = process.argv.slice(2);

function client() {
  return new Redis({
    host,
    port: Number(port),
    commandTimeout: 5000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
}

const settle = (p) => p.then((value) => ({ value }), (e) => ({ error: e.message }));
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

// MULTI / INCR counter / SET tx-key / EXEC as ioredis sends them (one write), then a GET on
// the same connection: the transaction must be over, the connection usable.
async function transaction() {
  const r = client();
  const out = {};
  try {
    // 'transaction-ping': a PING first, which makes the transaction one that needs a lease
    // (one of keyed data commands only, written whole, runs on a shared connection)
    const m = scenario === 'transaction-ping' ? r.multi().ping() : r.multi();
    out.exec = await m.incr('counter').set('tx-key', 'v').exec();
  } catch (e) {
    out.error = e.message;
    out.previous = (e.previousErrors || []).map((x) => x.message);
  }
  out.after = await settle(r.get('counter'));
  r.disconnect();
  return out;
}

// XREAD BLOCK 0 from one client, then a GET from another client of the same listener (and
// so, with one worker, of the same upstream connection).
async function xreadBlock() {
  const blocker = client();
  const other = client();
  const blocked = settle(blocker.xread('BLOCK', 0, 'STREAMS', 'stream', '$'));
  // Let the XREAD go first: it is answered at once if refused, never if forwarded.
  const first = await Promise.race([blocked, sleep(1000).then(() => null)]);
  const out = { xread: first, get: await settle(other.get('probe')) };
  blocker.disconnect();
  other.disconnect();
  return out;
}

const scenarios = { transaction, 'transaction-ping': transaction, 'xread-block': xreadBlock };
scenarios[scenario]().then(
  (out) => process.stdout.write(JSON.stringify(out) + '\n'),
  (e) => {
    process.stdout.write(JSON.stringify({ crashed: String(e && e.stack) }) + '\n');
    process.exitCode = 1;
  });

#!/usr/bin/env node
'use strict';
/*
 * consumer.js - a Dubbo consumer for meltemi's integration tests, built on dubbo2.js
 * (DirectlyDubbo: one long-lived connection to an address, no registry).
 *
 *   node consumer.js --address 127.0.0.10:20880 [--timeout 5]
 *
 * Driven over stdin/stdout, one JSON object per line, so a test can keep one connection
 * open across a config reload. Requests:
 *   {"op":"call","interface":"org.apache.dubbo.samples.Hello","method":"sayHello",
 *    "version":"1.0.0","group":null,"args":["x"],"attachments":{"user":"alice"},
 *    "n":1,"concurrency":1}
 *   {"op":"stats"}
 *   {"op":"quit"}
 * Answers (one line each): {"ok":true,"servers":{"v1":2,...},"results":[{"ok":true,"value":{...provider reply...}}
 * | {"ok":false,"error":"..."}], "connects":N, "closes":M}. `connects`/`closes` count the
 * TCP connections dubbo2.js opened and lost, so a test can prove a connection survived.
 * The first line written is {"ready":true,...} once the connection is up (or
 * {"ready":false,"error":...} after --timeout seconds).
 *
 * Every argument is sent as java.lang.String, with "{i}" replaced by the call's index (so
 * concurrent calls on one connection can be told apart); a call's attachments are merged by dubbo2.js
 * with path/interface/version (and group, timeout, application) as a Java consumer does.
 */
const readline = require('readline');
const socketWorkerMod = require('dubbo2.js/es7/socket-worker');
const { DirectlyDubbo, java } = require('dubbo2.js');

function parseArgs(argv) {
  const o = { address: null, timeout: 5 };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    if (!(k in o)) throw new Error(`unknown option ${argv[i]}`);
    o[k] = k === 'timeout' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!o.address) throw new Error('usage: consumer.js --address HOST:PORT');
  return o;
}

const counts = { connects: 0, closes: 0 };
let onFirstConnect = null;

// Count the connections dubbo2.js makes: wrap the subscriber it hands to its SocketWorker.
const SocketWorker = socketWorkerMod.default;
const origFrom = SocketWorker.from.bind(SocketWorker);
SocketWorker.from = (addr) => {
  const w = origFrom(addr);
  const origSubscribe = w.subscribe.bind(w);
  w.subscribe = (sub) => origSubscribe(Object.assign({}, sub, {
    onConnect: (...a) => {
      counts.connects++;
      if (onFirstConnect) { onFirstConnect(); onFirstConnect = null; }
      return sub.onConnect(...a);
    },
    onClose: (...a) => { counts.closes++; return sub.onClose(...a); },
  }));
  return w;
};

// DirectlyDubbo has no middleware; per-call attachments are put on the context as it is queued
// (synchronously, inside the proxy method call).
class Consumer extends DirectlyDubbo {
  addQueue(ctx) {
    if (this.nextAttachments) ctx.attachments = this.nextAttachments;
    return super.addQueue(ctx);
  }
}

function out(o) {
  process.stdout.write(JSON.stringify(o) + '\n');
}

function errText(err) {
  if (!err) return 'error';
  return String(err.message || err);
}

async function callOnce(dubbo, proxies, req, index) {
  const key = `${req.interface}|${req.version || ''}|${req.group || ''}|${req.method}`;
  let proxy = proxies.get(key);
  if (!proxy) {
    proxy = dubbo.proxyService({
      dubboInterface: req.interface,
      version: req.version || undefined,
      group: req.group || undefined,
      methods: { [req.method]: (...args) => args.map((a) => java.String(String(a))) },
    });
    proxies.set(key, proxy);
  }
  dubbo.nextAttachments = req.attachments || null;
  const args = (req.args || []).map((a) => String(a).split('{i}').join(String(index)));
  const p = proxy[req.method](...args);
  dubbo.nextAttachments = null;
  const { res, err } = await p;
  if (err) return { ok: false, error: errText(err) };
  let value = res;
  try { value = JSON.parse(res); } catch (e) { /* not one of our providers: keep it raw */ }
  return { ok: true, value };
}

async function handle(dubbo, proxies, req) {
  if (req.op === 'stats') return Object.assign({ ok: true }, counts);
  if (req.op !== 'call') return { ok: false, error: `unknown op ${req.op}` };
  const n = req.n || 1;
  const conc = Math.max(1, Math.min(req.concurrency || 1, n));
  const results = new Array(n);
  let next = 0;
  async function lane() {
    while (next < n) {
      const i = next++;
      results[i] = await callOnce(dubbo, proxies, req, i);
    }
  }
  await Promise.all(Array.from({ length: conc }, lane));
  const servers = {}; // replies per provider name, for people reading the output
  for (const r of results) {
    const who = r.ok ? (r.value && r.value.server) || '?' : 'error';
    servers[who] = (servers[who] || 0) + 1;
  }
  return Object.assign({ ok: true, servers, results }, counts);
}

function main() {
  const opt = parseArgs(process.argv.slice(2));
  const dubbo = new Consumer({ dubboAddress: opt.address, dubboVersion: '2.0.2',
                                dubboInvokeTimeout: opt.timeout });
  const proxies = new Map();
  const readyTimer = setTimeout(() => {
    out({ ready: false, error: `no connection to ${opt.address} within ${opt.timeout}s` });
    process.exit(2);
  }, opt.timeout * 1000);
  onFirstConnect = () => {
    clearTimeout(readyTimer);
    out(Object.assign({ ready: true }, counts));
  };
  const rl = readline.createInterface({ input: process.stdin });
  let chain = Promise.resolve();
  rl.on('line', (line) => {
    if (!line.trim()) return;
    chain = chain.then(async () => {
      let req;
      try { req = JSON.parse(line); } catch (e) { out({ ok: false, error: `bad json: ${e.message}` }); return; }
      if (req.op === 'quit') process.exit(0);
      try {
        out(await handle(dubbo, proxies, req));
      } catch (e) {
        out({ ok: false, error: errText(e) });
      }
    });
  });
  rl.on('close', () => chain.then(() => process.exit(0)));
}

main();

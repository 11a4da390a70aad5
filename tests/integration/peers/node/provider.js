#!/usr/bin/env node
'use strict';
/*
 * provider.js - a Dubbo 2 provider for meltemi's integration tests.
 *
 *   node provider.js --port P --name v1 --record FILE [--host 127.0.0.1]
 *
 * A small TCP server that speaks Dubbo 2 framing (16-byte header, magic 0xdabb) with
 * Hessian2 bodies decoded and encoded by hessian.js, as a Java provider would: it reads
 * dubbo version, service path, service version, method, parameter descriptor, the
 * arguments and the attachments map, and answers RESPONSE_VALUE with a JSON string
 * {server, interface, method, args, attachments} so the consumer sees who served it.
 *
 * Every request (and heartbeat) is appended to FILE as one JSON line:
 *   {"server","conn","kind":"request"|"heartbeat","id","interface","method","version",
 *    "args","attachments","twoWay"}
 * Heartbeats (event flag) are answered as Dubbo does (flag 0x22, status 20, body N).
 * A body that does not decode gets status 40 BAD_REQUEST; bad magic closes the connection.
 */
const fs = require('fs');
const net = require('net');
const hessian = require('hessian.js');

const HEADER = 16;
const MAGIC_HI = 0xda;
const MAGIC_LO = 0xbb;
const FLAG_REQUEST = 0x80;
const FLAG_TWOWAY = 0x40;
const FLAG_EVENT = 0x20;
const HESSIAN2 = 2;
const STATUS_OK = 20;
const STATUS_BAD_REQUEST = 40;
const MAX_BODY = 8 * 1024 * 1024;

function parseArgs(argv) {
  const o = { host: '127.0.0.1', port: 0, name: 'provider', record: null };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    if (!(k in o)) throw new Error(`unknown option ${argv[i]}`);
    o[k] = k === 'port' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!o.port || !o.record) throw new Error('usage: provider.js --port P --name N --record FILE');
  return o;
}

// Number of arguments in a JVM method descriptor such as "Ljava/lang/String;I[J".
function countParams(desc) {
  let n = 0;
  for (let i = 0; i < desc.length; i++) {
    while (desc[i] === '[') i++;
    if (desc[i] === 'L') {
      const end = desc.indexOf(';', i);
      if (end < 0) throw new Error(`bad parameter descriptor ${JSON.stringify(desc)}`);
      i = end;
    } else if (!'ZBCDFIJSV'.includes(desc[i])) {
      throw new Error(`bad parameter descriptor ${JSON.stringify(desc)}`);
    }
    n++;
  }
  return n;
}

function plain(v) {
  // hessian.js may hand back Long objects, Maps or class wrappers; JSON needs plain values.
  if (v === null || v === undefined) return null;
  if (typeof v === 'bigint') return v.toString();
  if (Buffer.isBuffer(v)) return v.toString('base64');
  if (v instanceof Map) {
    const o = {};
    for (const [k, x] of v) o[String(k)] = plain(x);
    return o;
  }
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === 'object') {
    if (typeof v.toNumber === 'function' && 'low' in v && 'high' in v) return v.toString();
    const o = {};
    for (const k of Object.keys(v)) o[k] = plain(v[k]);
    return o;
  }
  return v;
}

function decodeRequest(body) {
  const d = new hessian.DecoderV2(body);
  const dubboVersion = d.read();
  const path = d.read();
  const version = d.read();
  const method = d.read();
  const desc = d.read() || '';
  const n = countParams(desc);
  const args = [];
  for (let i = 0; i < n; i++) args.push(plain(d.read()));
  let attachments = {};
  if (d.byteBuffer.position() < body.length) attachments = plain(d.read()) || {};
  return { dubboVersion, interface: path, version, method, desc, args, attachments };
}

function header(flag, status, idBytes, bodyLen) {
  const h = Buffer.alloc(HEADER);
  h[0] = MAGIC_HI;
  h[1] = MAGIC_LO;
  h[2] = flag;
  h[3] = status;
  idBytes.copy(h, 4);
  h.writeUInt32BE(bodyLen, 12);
  return h;
}

function okResponse(idBytes, value) {
  const e = new hessian.EncoderV2();
  e.write(1); // RESPONSE_VALUE
  e.write(value);
  const body = e.get();
  return Buffer.concat([header(HESSIAN2, STATUS_OK, idBytes, body.length), body]);
}

function errorResponse(idBytes, status, text) {
  const e = new hessian.EncoderV2();
  e.write(text);
  const body = e.get();
  return Buffer.concat([header(HESSIAN2, status, idBytes, body.length), body]);
}

function heartbeatResponse(idBytes) {
  const body = Buffer.from([0x4e]); // hessian null
  return Buffer.concat([header(FLAG_EVENT | HESSIAN2, STATUS_OK, idBytes, 1), body]);
}

function main() {
  const opt = parseArgs(process.argv.slice(2));
  const rec = fs.openSync(opt.record, 'a');
  const record = (o) => fs.writeSync(rec, JSON.stringify(Object.assign({ server: opt.name }, o)) + '\n');
  let conns = 0;

  const server = net.createServer((sock) => {
    const conn = ++conns;
    let buf = Buffer.alloc(0);
    sock.setNoDelay(true);
    sock.on('error', () => {});
    sock.on('data', (chunk) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= HEADER) {
        if (buf[0] !== MAGIC_HI || buf[1] !== MAGIC_LO) {
          record({ conn, kind: 'garbage', bytes: buf.slice(0, 16).toString('hex') });
          sock.destroy();
          return;
        }
        const len = buf.readUInt32BE(12);
        if (len > MAX_BODY) {
          record({ conn, kind: 'oversize', length: len });
          sock.destroy();
          return;
        }
        if (buf.length < HEADER + len) break;
        const flag = buf[2];
        const idBytes = Buffer.from(buf.slice(4, 12));
        const id = idBytes.readBigUInt64BE(0).toString();
        const body = buf.slice(HEADER, HEADER + len);
        buf = buf.slice(HEADER + len);
        const twoWay = (flag & FLAG_TWOWAY) !== 0;
        if (!(flag & FLAG_REQUEST)) {
          record({ conn, kind: 'response', id }); // nobody should send us responses
          continue;
        }
        if (flag & FLAG_EVENT) {
          record({ conn, kind: 'heartbeat', id, twoWay });
          if (twoWay) sock.write(heartbeatResponse(idBytes));
          continue;
        }
        let req;
        try {
          req = decodeRequest(body);
        } catch (err) {
          record({ conn, kind: 'bad-request', id, error: String(err && err.message) });
          if (twoWay) sock.write(errorResponse(idBytes, STATUS_BAD_REQUEST, `provider: ${err.message}`));
          continue;
        }
        record({ conn, kind: 'request', id, interface: req.interface, method: req.method,
                 version: req.version, args: req.args, attachments: req.attachments, twoWay });
        if (twoWay) {
          const value = JSON.stringify({ server: opt.name, interface: req.interface, method: req.method,
                                         args: req.args, attachments: req.attachments });
          sock.write(okResponse(idBytes, value));
        }
      }
    });
  });
  server.on('error', (err) => {
    process.stderr.write(`provider ${opt.name}: ${err.message}\n`);
    process.exit(1);
  });
  server.listen(opt.port, opt.host, () => {
    process.stdout.write(`dubbo provider ${opt.name} on ${opt.host}:${opt.port}\n`);
  });
  const stop = () => { server.close(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();

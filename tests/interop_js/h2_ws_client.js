'use strict';
// An RFC 8441 WebSocket client on Node's built-in http2 (no npm package):
// the peer our HTTP/2 server is tested against (tests/test_interop_h2.py).
//
//   node h2_ws_client.js URL [--ca ca.pem] [--count N] [--protocol P]...
//                        [--close-code C] [--close-reason R] [--server-closes]
//                        [--big BYTES] [--stagger MS] [--timeout SECONDS]
//
// URL is https://host:port/path (TLS, ALPN h2; the server's certificate
// must chain to --ca) or http://host:port/path (h2c, prior knowledge). It
// opens ONE HTTP/2 session, waits for the server's SETTINGS to allow
// extended CONNECT, and opens N WebSockets (default 3) on it at once, each
// an extended CONNECT stream to URL's path with "?ws=I" added. On each, with
// ws_framer.js and masked frames, it sends and expects back as echoes:
//   a text message, a binary message of --big random bytes (default 70000,
//   so the 64-bit length form is used), a text message in 3 frames, and a
//   ping (expecting a pong with its payload);
// then it closes with --close-code/--close-reason (default 1000, "bye")
// and expects the same code and reason back; with --server-closes it sends
// "cmd:close CODE REASON" instead and answers the server's close.
// Then one more text, "still open #I", echoed too; with --stagger MS,
// WebSocket I sends it (and so closes) I*MS later than WebSocket 0, so the
// others must go on working while one closes.
// A ping from the server is answered with a pong. Each stream must end
// cleanly after the close handshake.
//
// It prints one JSON line: {"ok": bool, "alpn", "sessions": 1,
// "websockets": [{status, protocol, echoes, pong, close, rstCode,
// resetByClient, errors}], "errors"} (rstCode: the stream's RST_STREAM code,
// 0 when it ended cleanly; resetByClient: the server had not ended the stream
// a second after the close handshake, so the client reset it)
// and exits 0 when ok, else 1. The whole run is bounded by --timeout
// (default 20 s).

const fs = require('fs');
const http2 = require('http2');
const crypto = require('crypto');
const { OP, FrameError, FrameReader, encodeFrame, closePayload, sha256, emit, parseArgs } = require('./ws_framer');

const options = parseArgs(process.argv.slice(2), ['protocol'], ['server-closes']);
const url = new URL(options._[0]);
const count = Number(options.count || 3);
const closeCode = Number(options['close-code'] || 1000);
const closeReason = options['close-reason'] === undefined ? 'bye' : options['close-reason'];
const bigSize = Number(options.big || 70000);
const stagger = Number(options.stagger || 0);
const TEXT = 'héllo wörld — ✓ 日本語 😀 end';

const result = { ok: false, alpn: null, sessions: 1, websockets: [], errors: [] };

function finish(ok) {
  finished = true;
  result.ok = ok && result.errors.length === 0 && result.websockets.every((w) => w.errors.length === 0);
  emit(result);
  process.exit(result.ok ? 0 : 1);
}

setTimeout(() => {
  result.errors.push(`timed out after ${options.timeout || 20} s`);
  finish(false);
}, Number(options.timeout || 20) * 1000).unref();

let finished = false;
process.on('exit', () => {
  if (!finished) {
    // Node stops when nothing is left to wait for: the session closed
    // before every WebSocket was done.
    result.errors.push('the session ended before the WebSockets were done');
    result.ok = false;
    emit(result);
    process.exitCode = 1;
  }
});

const connectOptions = {};
if (url.protocol === 'https:') {
  connectOptions.ca = fs.readFileSync(options.ca);
  connectOptions.servername = url.hostname === '127.0.0.1' ? undefined : url.hostname;
}
const session = http2.connect(url.origin, connectOptions);
session.on('error', (error) => {
  result.errors.push(`session: ${error.message}`);
  finish(false);
});

session.on('remoteSettings', (settings) => {
  if (result.websockets.length > 0) {
    return; // a later SETTINGS frame
  }
  result.alpn = session.alpnProtocol || null;
  if (!settings.enableConnectProtocol) {
    result.errors.push('the server did not send SETTINGS_ENABLE_CONNECT_PROTOCOL=1');
    finish(false);
    return;
  }
  const runs = [];
  for (let i = 0; i < count; i++) {
    const record = {
      index: i, status: null, protocol: null, echoes: [], pong: null, close: null,
      rstCode: null, resetByClient: false, errors: [],
    };
    result.websockets.push(record);
    runs.push(runWebSocket(i, record).catch((error) => record.errors.push(String(error && error.stack))));
  }
  Promise.all(runs).then(() => {
    if (session.closed || session.destroyed) {
      finish(true);
    } else {
      session.close(() => finish(true));
    }
  });
});

function runWebSocket(index, record) {
  return new Promise((resolve) => {
    const separator = url.search ? '&' : '?';
    const headers = {
      ':method': 'CONNECT',
      ':protocol': 'websocket',
      ':scheme': url.protocol === 'https:' ? 'https' : 'http',
      ':path': `${url.pathname}${url.search}${separator}ws=${index}`,
      ':authority': url.host,
      'sec-websocket-version': '13',
      'origin': url.origin,
    };
    if (options.protocol.length) {
      headers['sec-websocket-protocol'] = options.protocol.join(', ');
    }
    const stream = session.request(headers, { endStream: false });
    const reader = new FrameReader({ expectMasked: false });
    const big = crypto.randomBytes(bigSize);
    const fragmented = `${TEXT} in three frames #${index}`;
    const expected = [
      { type: 'text', text: `${TEXT} #${index}` },
      { type: 'binary', length: big.length, sha256: sha256(big) },
      { type: 'text', text: fragmented },
      { type: 'text', text: `still open #${index}` },
    ];
    let closeSent = false;
    const send = (opcode, payload, fin = true) => stream.write(encodeFrame(opcode, payload, { fin, mask: true }));
    // Nothing may follow a close frame, so the stream's sending side ends
    // with it (one write; Node may still put END_STREAM in a DATA frame of
    // its own).
    const sendClose = (code, reason) => {
      if (!closeSent) {
        closeSent = true;
        stream.end(encodeFrame(OP.close, closePayload(code, reason), { mask: true }));
      }
    };

    stream.on('response', (response) => {
      record.status = response[':status'];
      record.protocol = response['sec-websocket-protocol'] || null;
      if (record.status !== 200) {
        record.errors.push(`status ${record.status}`);
        stream.close();
        return;
      }
      send(OP.text, Buffer.from(expected[0].text, 'utf8'));
      send(OP.binary, big);
      const data = Buffer.from(fragmented, 'utf8');
      const third = Math.ceil(data.length / 3);
      send(OP.text, data.subarray(0, third), false);
      send(OP.continuation, data.subarray(third, 2 * third), false);
      send(OP.continuation, data.subarray(2 * third), true);
      send(OP.ping, Buffer.from(`ping #${index}`, 'utf8'));
    });

    // When the first three echoes and the pong are in: wait index*stagger
    // ms, send one more text (its echo shows the stream still works while
    // others have closed), and close when it comes back.
    let lastSent = false;
    const maybeClose = () => {
      if (record.echoes.length === 3 && record.pong !== null && !lastSent) {
        lastSent = true;
        setTimeout(() => send(OP.text, Buffer.from(expected[3].text, 'utf8')), index * stagger);
      } else if (record.echoes.length === expected.length && !closeSent) {
        if (options['server-closes']) {
          send(OP.text, Buffer.from(`cmd:close ${closeCode} ${closeReason}`, 'utf8'));
        } else {
          sendClose(closeCode, closeReason);
        }
      }
    };

    stream.on('data', (chunk) => {
      if (record.status !== 200) {
        return; // an error page, not WebSocket frames
      }
      let events;
      try {
        events = reader.feed(chunk);
      } catch (error) {
        if (!(error instanceof FrameError)) {
          throw error;
        }
        record.errors.push(`bad frame from the server: ${error.message}`);
        sendClose(error.code, '');
        return;
      }
      for (const event of events) {
        if (event.type === 'ping') {
          send(OP.pong, event.data);
        } else if (event.type === 'pong') {
          record.pong = event.data.toString('utf8');
          if (record.pong !== `ping #${index}`) {
            record.errors.push(`pong payload ${JSON.stringify(record.pong)}`);
          }
        } else if (event.type === 'close') {
          record.close = { code: event.code, reason: event.reason };
          if (!closeSent) {
            sendClose(event.code, event.reason); // the server closed first
          }
          if (event.code !== closeCode || event.reason !== closeReason) {
            record.errors.push(`close ${event.code} ${JSON.stringify(event.reason)}`);
          }
          // Both close frames have passed: the server should end its side
          // of the stream now. One that never does (Hypercorn, for a close
          // the client started) gets its stream reset after a second, as a
          // TCP client would drop the connection (RFC 8441: RST_STREAM with
          // CANCEL).
          setTimeout(() => {
            if (!stream.closed) {
              record.resetByClient = true;
              stream.close(http2.constants.NGHTTP2_CANCEL);
            }
          }, 1000).unref();
        } else {
          const got = event.type === 'text'
            ? { type: 'text', text: event.text }
            : { type: 'binary', length: event.data.length, sha256: sha256(event.data) };
          const want = expected[record.echoes.length];
          record.echoes.push(got);
          if (JSON.stringify(got) !== JSON.stringify(want)) {
            record.errors.push(`echo ${record.echoes.length}: got ${JSON.stringify(got).slice(0, 200)}`);
          }
        }
      }
      maybeClose();
    });
    stream.on('error', (error) => record.errors.push(`stream: ${error.message}`));
    stream.on('close', () => {
      // RFC 8441 maps a TCP reset to RST_STREAM (CANCEL): harmless once both
      // close frames have passed (Hypercorn never ends the stream of a
      // WebSocket the client closed, and resets it later), an error before.
      record.rstCode = stream.rstCode;
      if (record.close === null && record.errors.length === 0) {
        record.errors.push(`stream closed without a close handshake (rst ${stream.rstCode})`);
      }
      resolve();
    });
    stream.resume();
  });
}

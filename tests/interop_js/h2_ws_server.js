'use strict';
// An RFC 8441 WebSocket echo server on Node's built-in http2 (no npm
// package): the peer our HTTP/2 client is tested against
// (tests/test_interop_h2.py), and nghttpx's HTTP/2 backend.
//
//   node h2_ws_server.js [--cert cert.pem --key key.pem] [--protocol P]...
//                        [--page FILE]
//
// With --cert/--key it serves TLS (ALPN h2 only), else h2c (prior
// knowledge). It listens on 127.0.0.1, a free port, advertises
// SETTINGS_ENABLE_CONNECT_PROTOCOL and prints {"event":"listening","port":N}.
//
// A WebSocket is an extended CONNECT (:method CONNECT, :protocol
// websocket) with sec-websocket-version 13; anything else gets 400 (a
// CONNECT) or 404 (but with --page, a GET gets FILE as HTML). The answer is
// 200, with sec-websocket-protocol when the client offered one of
// --protocol (the first of ours it offered wins).
// Then, on that stream, with ws_framer.js:
// - a text or binary message (fragmented or not) is echoed as one frame of
//   the same type, except the commands below;
// - a ping is answered with a pong of the same payload;
// - a close is echoed with its code and reason, then the stream ends;
// - the text "cmd:close CODE REASON" makes the server close with that code
//   and reason (it ends the stream when the client's close comes back);
// - "cmd:ping DATA" makes the server send a ping (the pong is reported);
// - "cmd:fragments N TEXT" makes the server send TEXT in N frames;
// - a frame that breaks RFC 6455 gets a close with the fitting code.
// Each session, WebSocket, message and close is reported as a JSON line on
// stdout (with its session number and stream id), so a test can tell how
// many HTTP/2 connections carried its WebSockets. Exits when stdin ends.

const fs = require('fs');
const http2 = require('http2');
const { OP, FrameError, FrameReader, encodeFrame, closePayload, sha256, emit, parseArgs } = require('./ws_framer');

const options = parseArgs(process.argv.slice(2), ['protocol']);
const settings = { enableConnectProtocol: true };

const server = options.cert
  ? http2.createSecureServer({
    cert: fs.readFileSync(options.cert),
    key: fs.readFileSync(options.key),
    settings,
    allowHTTP1: false,
  })
  : http2.createServer({ settings });

let sessions = 0;

server.on('session', (session) => {
  const number = ++sessions;
  session.number = number;
  emit({ event: 'session', session: number, alpn: session.alpnProtocol || null });
  session.on('error', (error) => emit({ event: 'error', session: number, message: String(error.message) }));
});

server.on('stream', (stream, headers) => {
  const where = { session: stream.session.number, stream: stream.id };
  stream.on('error', (error) => emit({ event: 'error', ...where, message: String(error.message) }));
  if (headers[':method'] !== 'CONNECT') {
    if (options.page && headers[':method'] === 'GET') {
      emit({ event: 'page', ...where, path: headers[':path'] });
      stream.respond({ ':status': 200, 'content-type': 'text/html; charset=utf-8' });
      stream.end(fs.readFileSync(options.page));
      return;
    }
    stream.respond({ ':status': 404 });
    stream.end();
    return;
  }
  if (headers[':protocol'] !== 'websocket' || headers['sec-websocket-version'] !== '13') {
    emit({ event: 'rejected', ...where, protocol: headers[':protocol'] || null });
    stream.respond({ ':status': 400 });
    stream.end();
    return;
  }
  const offered = (headers['sec-websocket-protocol'] || '')
    .split(',').map((p) => p.trim()).filter((p) => p);
  const chosen = options.protocol.find((p) => offered.includes(p)) || null;
  const response = { ':status': 200 };
  if (chosen) {
    response['sec-websocket-protocol'] = chosen;
  }
  stream.respond(response);
  emit({
    event: 'websocket', ...where,
    path: headers[':path'], authority: headers[':authority'] || null,
    scheme: headers[':scheme'] || null, offered, chosen,
    origin: headers.origin || null, userAgent: headers['user-agent'] || null,
  });
  serveWebSocket(stream, where);
});

function serveWebSocket(stream, where) {
  const reader = new FrameReader({ expectMasked: true });
  let closeSent = false;
  let closeReceived = false;

  const send = (opcode, payload, fin = true) => {
    if (!closeSent && !stream.destroyed && stream.writable) {
      stream.write(encodeFrame(opcode, payload, { fin }));
    }
  };
  const close = (code, reason) => {
    if (closeSent) {
      return;
    }
    send(OP.close, closePayload(code, reason));
    closeSent = true;
    if (closeReceived) {
      stream.end();
    }
  };

  const onEvent = (event) => {
    if (event.type === 'ping') {
      emit({ event: 'ping', ...where, data: event.data.toString('utf8') });
      send(OP.pong, event.data);
    } else if (event.type === 'pong') {
      emit({ event: 'pong', ...where, data: event.data.toString('utf8') });
    } else if (event.type === 'close') {
      emit({ event: 'close', ...where, code: event.code, reason: event.reason });
      closeReceived = true;
      if (closeSent) {
        stream.end();
      } else {
        close(event.code, event.reason);
      }
    } else if (event.type === 'text') {
      emit({ event: 'message', ...where, type: 'text', text: event.text, frames: event.frames });
      onText(event.text);
    } else {
      emit({
        event: 'message', ...where, type: 'binary',
        length: event.data.length, sha256: sha256(event.data), frames: event.frames,
      });
      send(OP.binary, event.data);
    }
  };

  const onText = (text) => {
    const command = /^cmd:(\w+) ?(\S*) ?([\s\S]*)$/.exec(text);
    if (command === null) {
      send(OP.text, Buffer.from(text, 'utf8'));
    } else if (command[1] === 'close') {
      close(Number(command[2]), command[3]);
    } else if (command[1] === 'ping') {
      send(OP.ping, Buffer.from(command[2], 'utf8'));
    } else if (command[1] === 'fragments') {
      const data = Buffer.from(command[3], 'utf8');
      const count = Math.max(1, Number(command[2]));
      const step = Math.ceil(data.length / count);
      for (let i = 0; i < count; i++) {
        const part = data.subarray(i * step, (i + 1) * step);
        send(i === 0 ? OP.text : OP.continuation, part, i === count - 1);
      }
    } else {
      send(OP.text, Buffer.from(text, 'utf8'));
    }
  };

  stream.on('data', (chunk) => {
    if (closeReceived) {
      return; // nothing may follow a close frame; ignore it
    }
    let events;
    try {
      events = reader.feed(chunk);
    } catch (error) {
      if (!(error instanceof FrameError)) {
        throw error;
      }
      emit({ event: 'protocol-error', ...where, code: error.code, message: error.message });
      close(error.code, error.message.slice(0, 100));
      closeReceived = true; // no more reading: end the stream at once
      stream.end();
      return;
    }
    for (const event of events) {
      onEvent(event);
    }
  });
  stream.on('end', () => {
    emit({ event: 'end', ...where, closeReceived });
    if (!stream.writableEnded) {
      stream.end();
    }
  });
  stream.on('close', () => emit({ event: 'stream-closed', ...where, rstCode: stream.rstCode }));
}

server.listen(0, '127.0.0.1', () => {
  emit({ event: 'listening', port: server.address().port });
});

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));

'use strict';
// Shared by ws_server.js and ws_client.js, the Node.js `ws` peers of
// tests/test_interop_node.py.
//
// The test drives a peer with JSON commands, one per line on stdin, and
// reads what the peer saw as JSON events, one per line on stdout:
//   {"op": "send", "text": "..."}          a text message
//   {"op": "send", "base64": "..."}        a binary message ("" = empty)
//   {"op": "ping", "data": "..."}          a ping with UTF-8 payload
//   {"op": "pong", "data": "..."}          an unsolicited pong
//   {"op": "close", "code": N, "reason": "..."}
// Events: message (text, or binary length + sha256), ping, pong, close,
// error, plus the ones each script adds. With --echo every data message is
// sent back as it came (same type, same bytes).

const crypto = require('crypto');
const readline = require('readline');

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

function sha256(buffer) {
  return crypto.createHash('sha256').update(buffer).digest('hex');
}

function describeMessage(data, isBinary) {
  if (isBinary) {
    return { event: 'message', type: 'binary', length: data.length, sha256: sha256(data) };
  }
  return { event: 'message', type: 'text', text: data.toString('utf8') };
}

// Reports everything that happens on `ws` and, with `echo`, sends data
// messages back.
function watch(ws, echo) {
  ws.on('message', (data, isBinary) => {
    emit(describeMessage(data, isBinary));
    if (echo) {
      ws.send(data, { binary: isBinary });
    }
  });
  ws.on('ping', (data) => emit({ event: 'ping', data: data.toString('utf8') }));
  ws.on('pong', (data) => emit({ event: 'pong', data: data.toString('utf8') }));
  ws.on('close', (code, reason) => {
    emit({ event: 'close', code, reason: reason.toString('utf8') });
  });
  ws.on('error', (error) => emit({ event: 'error', message: String(error && error.message) }));
}

function runCommand(ws, command) {
  switch (command.op) {
    case 'send':
      if (typeof command.text === 'string') {
        ws.send(command.text);
      } else {
        ws.send(Buffer.from(command.base64, 'base64'), { binary: true });
      }
      break;
    case 'ping':
      ws.ping(Buffer.from(command.data, 'utf8'));
      break;
    case 'pong':
      ws.pong(Buffer.from(command.data, 'utf8'));
      break;
    case 'close':
      ws.close(command.code, command.reason);
      break;
    default:
      emit({ event: 'error', message: `unknown command ${JSON.stringify(command.op)}` });
  }
}

// Calls onCommand(command) for each JSON line on stdin, onEnd() at its end.
function readCommands(onCommand, onEnd) {
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  lines.on('line', (line) => {
    if (line.trim() !== '') {
      onCommand(JSON.parse(line));
    }
  });
  lines.on('close', onEnd);
  return lines;
}

// Parses "--name value" options; names listed in `repeated` collect arrays,
// `flags` take no value. Other arguments are returned in `positional`.
function parseArgs(argv, repeated, flags) {
  const options = { positional: [] };
  for (const name of repeated) {
    options[name] = [];
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) {
      options.positional.push(arg);
      continue;
    }
    const name = arg.slice(2);
    if (flags.includes(name)) {
      options[name] = true;
    } else if (repeated.includes(name)) {
      options[name].push(argv[++i]);
    } else {
      options[name] = argv[++i];
    }
  }
  return options;
}

// "Name: value" strings from --header options.
function splitHeader(header) {
  const colon = header.indexOf(':');
  return [header.slice(0, colon).trim(), header.slice(colon + 1).trim()];
}

module.exports = { emit, watch, runCommand, readCommands, parseArgs, splitHeader };

'use strict';
// A small RFC 6455 framer for the HTTP/2 peers (h2_ws_server.js,
// h2_ws_client.js): over RFC 8441 a WebSocket is the DATA of one HTTP/2
// stream, so these peers do the framing themselves, with no npm package.
//
// Rules it keeps (and checks in what it reads):
// - frames from a client are masked, frames from a server are not
//   (`expectMasked` says which the reader wants; a wrong one is an error);
// - reserved bits are 0 (no extension is ever agreed here);
// - control frames (close, ping, pong) are final and at most 125 bytes;
// - a continuation frame only inside a fragmented message, a new data frame
//   only outside one;
// - text messages are valid UTF-8;
// - a close payload is empty or a 2-byte code and a UTF-8 reason.
// Any breach becomes a FrameError carrying the close code to answer with.
// Sizes are bounded: a frame or message over `maxSize` bytes is an error.

const crypto = require('crypto');

const OP = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 };

class FrameError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// One frame as bytes. `mask` true: a random masking key (a client's frame).
function encodeFrame(opcode, payload, { fin = true, mask = false } = {}) {
  const data = Buffer.from(payload);
  let header;
  if (data.length < 126) {
    header = Buffer.from([0, data.length]);
  } else if (data.length < 65536) {
    header = Buffer.alloc(4);
    header[1] = 126;
    header.writeUInt16BE(data.length, 2);
  } else {
    header = Buffer.alloc(10);
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(data.length), 2);
  }
  header[0] = (fin ? 0x80 : 0) | opcode;
  if (!mask) {
    return Buffer.concat([header, data]);
  }
  header[1] |= 0x80;
  const key = crypto.randomBytes(4);
  const masked = Buffer.alloc(data.length);
  for (let i = 0; i < data.length; i++) {
    masked[i] = data[i] ^ key[i & 3];
  }
  return Buffer.concat([header, key, masked]);
}

function closePayload(code, reason) {
  if (code === undefined || code === null) {
    return Buffer.alloc(0);
  }
  const reasonBytes = Buffer.from(reason || '', 'utf8');
  const payload = Buffer.alloc(2 + reasonBytes.length);
  payload.writeUInt16BE(code, 0);
  reasonBytes.copy(payload, 2);
  return payload;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeUtf8(buffer) {
  try {
    return utf8.decode(buffer);
  } catch (error) {
    throw new FrameError(1007, 'invalid UTF-8');
  }
}

// Reads frames from bytes fed to it and turns them into events:
//   {type: 'text', text}, {type: 'binary', data}, {type: 'ping', data},
//   {type: 'pong', data}, {type: 'close', code, reason}
// plus, for data messages, `frames`: how many frames the message came in.
class FrameReader {
  constructor({ expectMasked, maxSize = 64 * 1024 * 1024 }) {
    this.expectMasked = expectMasked;
    this.maxSize = maxSize;
    this.buffer = Buffer.alloc(0);
    this.message = null; // {opcode, parts, size} while a message is fragmented
  }

  // Returns the events that the bytes so far complete; throws FrameError.
  feed(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    const events = [];
    for (;;) {
      const frame = this.nextFrame();
      if (frame === null) {
        return events;
      }
      const event = this.handle(frame);
      if (event !== null) {
        events.push(event);
      }
    }
  }

  nextFrame() {
    const buf = this.buffer;
    if (buf.length < 2) {
      return null;
    }
    const fin = (buf[0] & 0x80) !== 0;
    if ((buf[0] & 0x70) !== 0) {
      throw new FrameError(1002, 'reserved bits set');
    }
    const opcode = buf[0] & 0x0f;
    const masked = (buf[1] & 0x80) !== 0;
    if (masked !== this.expectMasked) {
      throw new FrameError(1002, masked ? 'a masked frame from the server' : 'an unmasked frame from the client');
    }
    let length = buf[1] & 0x7f;
    let offset = 2;
    if (length === 126) {
      if (buf.length < 4) {
        return null;
      }
      length = buf.readUInt16BE(2);
      offset = 4;
    } else if (length === 127) {
      if (buf.length < 10) {
        return null;
      }
      const big = buf.readBigUInt64BE(2);
      if (big > BigInt(this.maxSize)) {
        throw new FrameError(1009, 'frame too big');
      }
      length = Number(big);
      offset = 10;
    }
    if (length > this.maxSize) {
      throw new FrameError(1009, 'frame too big');
    }
    const keyLength = masked ? 4 : 0;
    if (buf.length < offset + keyLength + length) {
      return null;
    }
    const payload = Buffer.from(buf.subarray(offset + keyLength, offset + keyLength + length));
    if (masked) {
      const key = buf.subarray(offset, offset + 4);
      for (let i = 0; i < payload.length; i++) {
        payload[i] ^= key[i & 3];
      }
    }
    this.buffer = buf.subarray(offset + keyLength + length);
    return { fin, opcode, payload };
  }

  handle({ fin, opcode, payload }) {
    if (opcode >= 8) {
      if (!fin || payload.length > 125) {
        throw new FrameError(1002, 'a fragmented or oversized control frame');
      }
      if (opcode === OP.ping) {
        return { type: 'ping', data: payload };
      }
      if (opcode === OP.pong) {
        return { type: 'pong', data: payload };
      }
      if (opcode === OP.close) {
        if (payload.length === 1) {
          throw new FrameError(1002, 'a 1-byte close payload');
        }
        if (payload.length === 0) {
          return { type: 'close', code: null, reason: '' };
        }
        return { type: 'close', code: payload.readUInt16BE(0), reason: decodeUtf8(payload.subarray(2)) };
      }
      throw new FrameError(1002, `unknown opcode ${opcode}`);
    }
    if (opcode === OP.continuation) {
      if (this.message === null) {
        throw new FrameError(1002, 'a continuation frame outside a message');
      }
    } else if (opcode === OP.text || opcode === OP.binary) {
      if (this.message !== null) {
        throw new FrameError(1002, 'a new message inside a fragmented one');
      }
      this.message = { opcode, parts: [], size: 0 };
    } else {
      throw new FrameError(1002, `unknown opcode ${opcode}`);
    }
    const message = this.message;
    message.parts.push(payload);
    message.size += payload.length;
    if (message.size > this.maxSize) {
      throw new FrameError(1009, 'message too big');
    }
    if (!fin) {
      return null;
    }
    this.message = null;
    const data = Buffer.concat(message.parts);
    const frames = message.parts.length;
    if (message.opcode === OP.text) {
      return { type: 'text', text: decodeUtf8(data), frames };
    }
    return { type: 'binary', data, frames };
  }
}

function sha256(buffer) {
  return crypto.createHash('sha256').update(buffer).digest('hex');
}

// Prints one JSON object as a line on stdout (how the peers report).
function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

// --name value / --flag arguments; `lists` are the names that may repeat.
function parseArgs(argv, lists = [], flags = []) {
  const options = { _: [] };
  for (const name of lists) {
    options[name] = [];
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) {
      options._.push(arg);
      continue;
    }
    const name = arg.slice(2);
    if (flags.includes(name)) {
      options[name] = true;
    } else if (lists.includes(name)) {
      options[name].push(argv[++i]);
    } else {
      options[name] = argv[++i];
    }
  }
  return options;
}

module.exports = { OP, FrameError, FrameReader, encodeFrame, closePayload, sha256, emit, parseArgs };

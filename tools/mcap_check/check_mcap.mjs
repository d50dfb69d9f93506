// Independent check of MCAP files with Foxglove's TypeScript stack (not the Python code that wrote them):
//   node tools/mcap_check/check_mcap.mjs FILE.mcap...
// For each file: every chunk CRC, the data section CRC and the summary CRC must be present (non-zero) and
// correct; chunks are decompressed (zstd, lz4 or none); every message is decoded with
// @foxglove/rosmsg2-serialization from the schema text stored in the file (nothing else). Prints one JSON
// line per file (profile, library, compressions, per-topic counts, log/publish time ranges, metadata records,
// a few decoded header stamps); the first failure is printed to stderr and the exit code is 1.
import { readFileSync } from "node:fs";

import { crc32 } from "@foxglove/crc";
import { parse as parseMessageDefinition } from "@foxglove/rosmsg";
import { MessageReader } from "@foxglove/rosmsg2-serialization";
import { McapIndexedReader, McapStreamReader } from "@mcap/core";
import { decompress as zstdDecompress } from "fzstd";
import lz4 from "lz4js";

const OP_CHUNK = 0x06;
const OP_DATA_END = 0x0f;
const MAGIC_LENGTH = 8;

const decompressHandlers = {
  zstd: (data, size) => zstdDecompress(data, new Uint8Array(Number(size))),
  lz4: (data, size) => {
    const out = new Uint8Array(Number(size));
    const length = lz4.decompressFrame(data, out);
    if (length !== out.length) throw new Error(`lz4 chunk: ${length} bytes, expected ${out.length}`);
    return out;
  },
};

function fail(file, message) {
  throw new Error(`${file}: ${message}`);
}

// Walk the data section record by record (opcode u8, length u64, content): chunk CRC fields must be
// non-zero, and the DataEnd record's CRC must be the CRC32 of every byte before it.
function checkDataSection(file, bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = MAGIC_LENGTH;
  let chunks = 0;
  while (offset + 9 <= bytes.length) {
    const opcode = view.getUint8(offset);
    const length = Number(view.getBigUint64(offset + 1, true));
    const content = offset + 9;
    if (opcode === OP_CHUNK) {
      // start u64, end u64, uncompressed_size u64, uncompressed_crc u32
      if (view.getUint32(content + 24, true) === 0) fail(file, `chunk at byte ${offset} has no CRC (0)`);
      chunks += 1;
    } else if (opcode === OP_DATA_END) {
      const stored = view.getUint32(content, true);
      if (stored === 0) fail(file, "data section CRC is 0 (not written)");
      const actual = crc32(bytes.subarray(0, offset));
      if (actual !== stored) fail(file, `data section CRC ${actual} != stored ${stored}`);
      return chunks;
    }
    offset = content + length;
  }
  fail(file, "no DataEnd record (file not closed)");
}

async function checkFile(file) {
  const bytes = new Uint8Array(readFileSync(file));
  const chunkRecords = checkDataSection(file, bytes);

  // Summary: footer CRC must be non-zero; McapIndexedReader verifies it against the summary bytes.
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const footerCrc = view.getUint32(bytes.length - MAGIC_LENGTH - 4, true);
  if (footerCrc === 0) fail(file, "summary CRC is 0 (not written)");
  const readable = {
    size: async () => BigInt(bytes.length),
    read: async (offset, length) => bytes.subarray(Number(offset), Number(offset + length)),
  };
  const indexed = await McapIndexedReader.Initialize({ readable, decompressHandlers });
  const metadata = {};
  for await (const record of indexed.readMetadata()) {
    metadata[record.name] = Object.fromEntries(record.metadata);
  }

  // Every record in file order; chunk CRCs validated by the reader (validateCrcs) and decompressed.
  const stream = new McapStreamReader({ includeChunks: true, decompressHandlers, validateCrcs: true });
  stream.append(bytes);
  const schemas = new Map();
  const channels = new Map();
  const topics = {};
  const compressions = new Set();
  let chunks = 0;
  let logMin = null;
  let logMax = null;
  let publishMin = null;
  let publishMax = null;
  const stamps = {};
  for (let record; (record = stream.nextRecord()); ) {
    switch (record.type) {
      case "Header":
        topics.__profile = record.profile;
        topics.__library = record.library;
        break;
      case "Chunk":
        if (record.uncompressedCrc === 0) fail(file, "chunk without CRC");
        compressions.add(record.compression || "none");
        chunks += 1;
        break;
      case "Schema":
        if (record.encoding !== "ros2msg") fail(file, `schema ${record.name}: encoding ${record.encoding}`);
        schemas.set(record.id, {
          name: record.name,
          reader: new MessageReader(
            parseMessageDefinition(new TextDecoder().decode(record.data), { ros2: true }),
          ),
        });
        break;
      case "Channel": {
        const schema = schemas.get(record.schemaId);
        if (!schema) fail(file, `channel ${record.topic}: unknown schema ${record.schemaId}`);
        if (record.messageEncoding !== "cdr") fail(file, `channel ${record.topic}: ${record.messageEncoding}`);
        if (!record.metadata.has("offered_qos_profiles")) fail(file, `channel ${record.topic}: no QoS`);
        channels.set(record.id, { topic: record.topic, type: schema.name, schema, metadata: record.metadata });
        break;
      }
      case "Message": {
        const channel = channels.get(record.channelId);
        if (!channel) fail(file, `message on unknown channel ${record.channelId}`);
        let message;
        try {
          message = channel.schema.reader.readMessage(record.data);
        } catch (error) {
          fail(file, `cannot decode a ${channel.type} on ${channel.topic}: ${error}`);
        }
        const entry = (topics[channel.topic] ??= { type: channel.type, count: 0 });
        entry.count += 1;
        const log = record.logTime;
        const pub = record.publishTime;
        logMin = logMin === null || log < logMin ? log : logMin;
        logMax = logMax === null || log > logMax ? log : logMax;
        publishMin = publishMin === null || pub < publishMin ? pub : publishMin;
        publishMax = publishMax === null || pub > publishMax ? pub : publishMax;
        const stamp = message?.header?.stamp ?? message?.clock;
        if (stamp && !(channel.topic in stamps)) {
          stamps[channel.topic] = (BigInt(stamp.sec) * 1000000000n + BigInt(stamp.nanosec)).toString();
        }
        break;
      }
      default:
        break;
    }
  }
  if (!stream.done()) fail(file, "trailing bytes after the footer");
  if (chunks !== chunkRecords) fail(file, `stream reader saw ${chunks} chunks, the walk ${chunkRecords}`);
  const stats = indexed.statistics;
  const decoded = Object.entries(topics).filter(([k]) => !k.startsWith("__"));
  const total = decoded.reduce((sum, [, v]) => sum + v.count, 0);
  if (stats && BigInt(total) !== stats.messageCount) {
    fail(file, `decoded ${total} messages, statistics say ${stats.messageCount}`);
  }
  const { __profile: profile, __library: library } = topics;
  return {
    file,
    profile,
    library,
    chunks,
    compressions: [...compressions].sort(),
    chunk_indexes: indexed.chunkIndexes.length,
    summary_crc: footerCrc,
    topics: Object.fromEntries(decoded),
    topic_type_hashes: Object.fromEntries(
      [...channels.values()].map((c) => [c.topic, c.metadata.get("topic_type_hash") ?? ""]),
    ),
    messages: total,
    log_time_ns: [logMin?.toString() ?? null, logMax?.toString() ?? null],
    publish_time_ns: [publishMin?.toString() ?? null, publishMax?.toString() ?? null],
    first_stamp_ns: stamps,
    metadata,
  };
}

let code = 0;
for (const file of process.argv.slice(2)) {
  try {
    console.log(JSON.stringify(await checkFile(file)));
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    code = 1;
    break;
  }
}
process.exit(code);

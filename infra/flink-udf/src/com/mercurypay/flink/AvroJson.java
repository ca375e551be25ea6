package com.mercurypay.flink;

import java.io.IOException;
import java.io.StringWriter;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonGenerator;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * AVRO_JSON(payload, writer_schemas): a Kafka record in the Confluent wire format (magic byte
 * 0, a 4-byte big-endian schema id, the Avro binary body) as the JSON object a producer on the
 * file event log would have written, decoded with the writer's schema.
 *
 * <p>{@code writer_schemas} is a JSON object from schema id to Avro schema: the ids the Schema
 * Registry gave the contract's versions, looked up once when the job is deployed
 * (docs/STREAMING.md, "Sources by binding"), never per record. Unions give their branch's
 * value, enums their symbol, logical types their underlying value (timestamps stay epoch
 * milliseconds, as in the JSON log).
 *
 * <p>NULL for anything this function does not render exactly: a payload that is not in the
 * wire format, an id it was not given (a version registered after the deploy), a damaged body
 * or bytes after it, bytes or fixed values, a non-finite float. The job then hands the raw
 * payload to the contract's own validator, which decodes it through the registry and names
 * the rule, so the verdicts stay the validator's.
 */
public class AvroJson extends ScalarFunction {
    private static final ObjectMapper MAPPER = new ObjectMapper();
    private static final JsonFactory FACTORY = new JsonFactory();

    private String schemasText;
    private Map<Integer, Reader> readers;

    public String eval(byte[] payload, String writerSchemas) {
        if (payload == null || payload.length < 5 || payload[0] != 0) {
            return null;
        }
        Reader reader = readers(writerSchemas).get(ByteBuffer.wrap(payload, 1, 4).getInt());
        if (reader == null) {
            return null;
        }
        Body body = new Body(payload, 5);
        StringWriter text = new StringWriter(payload.length * 2);
        try (JsonGenerator out = FACTORY.createGenerator(text)) {
            reader.read(body, out);
            out.flush();
            return body.position == payload.length ? text.toString() : null;
        } catch (IOException | RuntimeException e) {
            return null;
        }
    }

    /** The literal never changes within a job: parsed on first use. */
    private Map<Integer, Reader> readers(String writerSchemas) {
        if (readers == null || !writerSchemas.equals(schemasText)) {
            try {
                Map<Integer, Reader> parsed = new HashMap<>();
                Iterator<Map.Entry<String, JsonNode>> entries =
                        MAPPER.readTree(writerSchemas).fields();
                while (entries.hasNext()) {
                    Map.Entry<String, JsonNode> entry = entries.next();
                    parsed.put(Integer.valueOf(entry.getKey()),
                               compile(entry.getValue(), new HashMap<>()));
                }
                readers = parsed;
                schemasText = writerSchemas;
            } catch (IOException e) {
                throw new IllegalArgumentException("writer_schemas is not a JSON object of "
                                                   + "Avro schemas", e);
            }
        }
        return readers;
    }

    /** Reads one value of its schema from the body and writes it as JSON. */
    interface Reader {
        void read(Body in, JsonGenerator out) throws IOException;
    }

    /** Schema -> reader; {@code named} holds the records and enums seen so far by full name. */
    static Reader compile(JsonNode schema, Map<String, Reader[]> named) {
        if (schema.isArray()) {
            Reader[] branches = new Reader[schema.size()];
            for (int i = 0; i < branches.length; i++) {
                branches[i] = compile(schema.get(i), named);
            }
            return (in, out) -> {
                long branch = in.readLong();
                if (branch < 0 || branch >= branches.length) {
                    throw new IOException("union branch " + branch + " out of range");
                }
                branches[(int) branch].read(in, out);
            };
        }
        String type = schema.isTextual() ? schema.asText() : schema.path("type").asText();
        if (schema.isObject() && schema.path("type").isContainerNode()) {
            return compile(schema.get("type"), named);
        }
        switch (type) {
            case "null":
                return (in, out) -> out.writeNull();
            case "boolean":
                return (in, out) -> out.writeBoolean(in.readByte() != 0);
            case "int":
            case "long":
                return (in, out) -> out.writeNumber(in.readLong());
            case "float":
                return (in, out) -> writeFinite(out, Float.intBitsToFloat(in.readFixedInt()));
            case "double":
                return (in, out) -> writeFinite(out, Double.longBitsToDouble(in.readFixedLong()));
            case "string":
                return (in, out) -> out.writeString(in.readString());
            case "record":
                return record(schema, named);
            case "enum":
                return enumeration(schema, named);
            case "array":
                Reader item = compile(schema.get("items"), named);
                return (in, out) -> {
                    out.writeStartArray();
                    for (long n = in.readBlockCount(); n != 0; n = in.readBlockCount()) {
                        for (long i = 0; i < n; i++) {
                            item.read(in, out);
                        }
                    }
                    out.writeEndArray();
                };
            case "map":
                Reader value = compile(schema.get("values"), named);
                return (in, out) -> {
                    out.writeStartObject();
                    for (long n = in.readBlockCount(); n != 0; n = in.readBlockCount()) {
                        for (long i = 0; i < n; i++) {
                            out.writeFieldName(in.readString());
                            value.read(in, out);
                        }
                    }
                    out.writeEndObject();
                };
            default:
                Reader[] reference = named.get(fullName(type, ""));
                if (reference != null) {
                    return (in, out) -> reference[0].read(in, out);
                }
                // bytes, fixed, or an unknown name: JSON cannot hold it as the log does
                return (in, out) -> {
                    throw new IOException("type " + type + " is left to the validator");
                };
        }
    }

    private static Reader record(JsonNode schema, Map<String, Reader[]> named) {
        Reader[] self = register(schema, named);
        List<String> names = new ArrayList<>();
        List<Reader> fields = new ArrayList<>();
        for (JsonNode field : schema.get("fields")) {
            names.add(field.get("name").asText());
            fields.add(compile(field.get("type"), named));
        }
        self[0] = (in, out) -> {
            out.writeStartObject();
            for (int i = 0; i < fields.size(); i++) {
                out.writeFieldName(names.get(i));
                fields.get(i).read(in, out);
            }
            out.writeEndObject();
        };
        return self[0];
    }

    private static Reader enumeration(JsonNode schema, Map<String, Reader[]> named) {
        Reader[] self = register(schema, named);
        List<String> symbols = new ArrayList<>();
        schema.get("symbols").forEach(symbol -> symbols.add(symbol.asText()));
        self[0] = (in, out) -> {
            long index = in.readLong();
            if (index < 0 || index >= symbols.size()) {
                throw new IOException("enum index " + index + " out of range");
            }
            out.writeString(symbols.get((int) index));
        };
        return self[0];
    }

    /** A named type's slot, filled once compiled: a record may refer to itself. */
    private static Reader[] register(JsonNode schema, Map<String, Reader[]> named) {
        Reader[] slot = new Reader[1];
        named.put(fullName(schema.get("name").asText(), schema.path("namespace").asText("")),
                  slot);
        return slot;
    }

    private static String fullName(String name, String namespace) {
        return name.contains(".") || namespace.isEmpty() ? name : namespace + "." + name;
    }

    private static void writeFinite(JsonGenerator out, double value) throws IOException {
        if (!Double.isFinite(value)) {
            throw new IOException("non-finite float: the validator judges it");
        }
        out.writeNumber(value);
    }

    /** The Avro binary body, read from {@code position} on. */
    static final class Body {
        final byte[] bytes;
        int position;

        Body(byte[] bytes, int position) {
            this.bytes = bytes;
            this.position = position;
        }

        byte readByte() throws IOException {
            if (position >= bytes.length) {
                throw new IOException("body ends early");
            }
            return bytes[position++];
        }

        /** Zig-zag varint, as Avro writes int and long. */
        long readLong() throws IOException {
            long raw = 0;
            for (int shift = 0; shift < 64; shift += 7) {
                byte b = readByte();
                raw |= (long) (b & 0x7f) << shift;
                if ((b & 0x80) == 0) {
                    return (raw >>> 1) ^ -(raw & 1);
                }
            }
            throw new IOException("varint longer than 10 bytes");
        }

        int readFixedInt() throws IOException {
            return ByteBuffer.wrap(take(4)).order(ByteOrder.LITTLE_ENDIAN).getInt();
        }

        long readFixedLong() throws IOException {
            return ByteBuffer.wrap(take(8)).order(ByteOrder.LITTLE_ENDIAN).getLong();
        }

        String readString() throws IOException {
            long length = readLong();
            if (length < 0 || length > bytes.length - position) {
                throw new IOException("string length " + length + " beyond the body");
            }
            // Strict: a malformed sequence is an error (as in the validator), not a U+FFFD.
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(take((int) length))).toString();
        }

        /** An array or map block's item count; a negative count is followed by its size.
         *  A count beyond the bytes left is damage (every item of our schemas takes a byte),
         *  and refusing it keeps a forged count from spinning. */
        long readBlockCount() throws IOException {
            long count = readLong();
            if (count < 0) {
                readLong();
                count = -count;
            }
            if (count < 0 || count > bytes.length - position) {
                throw new IOException("block of " + count + " items beyond the body");
            }
            return count;
        }

        private byte[] take(int n) throws IOException {
            if (n > bytes.length - position) {
                throw new IOException("body ends early");
            }
            byte[] out = new byte[n];
            System.arraycopy(bytes, position, out, 0, n);
            position += n;
            return out;
        }
    }
}

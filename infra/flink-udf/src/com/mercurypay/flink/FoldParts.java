package com.mercurypay.flink;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.io.JsonStringEncoder;
import org.apache.flink.table.annotation.ArgumentHint;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.functions.AggregateFunction;
import org.apache.flink.types.Row;

/**
 * FOLD_PARTS(target, kind, name, part, op, num, txt, keep_ms): every part of every field of one entity,
 * folded in one state value, and the fields the latest changes touched, each whole.
 *
 * <p>A row is one part of one online-store field an event updates, as the plan's
 * {@code parts_<stream>} views compute it from the compiled specs: the field is (target, kind,
 * name), {@code op} says how the part folds ({@code tiles.add}: count, sum, min, max, avg;
 * exists; min_text and max_text for ordered picks), {@code num} and {@code txt} are the
 * event's value. Grouped by entity, all the parts of an entity fold with one state access per
 * mini-batch, where one aggregation per part and one per field took two dozen.
 *
 * <p>The value is the fields the rows folded since the previous read changed, each as
 * {@code (target, kind, name, payload)} with the payload FIELD_JSON prints: a JSON object of
 * the field's parts, each value as JSON text in a string. Flink reads the value before a
 * mini-batch's rows fold into an entity (for the retraction it sends) and after (the update):
 * a read with no fold since the last one is empty, so the retraction carries nothing to write
 * and the update the fields this batch changed, each whole. Every value written is state, so
 * a replay from a checkpoint rewrites the same.
 *
 * <p>A field no event has changed for {@code keep_ms} of processing time is dropped from
 * state (looked for once a day per entity): the state TTL that each part had as a group of its
 * own, kept per field here, since the entity's state lives as long as the entity is active.
 *
 * <p>The input only inserts (the plan deduplicates before it): there is no retract.
 */
@FunctionHint(
        arguments = {
            @ArgumentHint(name = "target", type = @DataTypeHint("STRING")),
            @ArgumentHint(name = "kind", type = @DataTypeHint("STRING")),
            @ArgumentHint(name = "name", type = @DataTypeHint("STRING")),
            @ArgumentHint(name = "part", type = @DataTypeHint("STRING")),
            @ArgumentHint(name = "op", type = @DataTypeHint("STRING")),
            @ArgumentHint(name = "num", type = @DataTypeHint("DOUBLE")),
            @ArgumentHint(name = "txt", type = @DataTypeHint("STRING")),
            @ArgumentHint(name = "keep_ms", type = @DataTypeHint("BIGINT"))},
        accumulator = @DataTypeHint(value = "RAW", bridgedTo = FoldParts.Entity.class),
        output = @DataTypeHint(
                "ARRAY<ROW<target STRING, kind STRING, name STRING, payload STRING>>"))
public class FoldParts extends AggregateFunction<Row[], FoldParts.Entity> {

    private static final char SEP = '\u001f';

    /** One part's folded value: a count, a number, or an ordered pick, and its op. */
    public static class Part {
        public String op;
        public long count;
        public double number;
        public String text;
    }

    /** A field's parts (part -> value) and when an event last changed it (processing time). */
    public static class Field {
        public HashMap<String, Part> parts = new HashMap<>();
        public long touched;
    }

    /** An entity's fields (target SEP kind SEP name -> field), what changed, and when its
     * fields were last looked over for expiry. */
    public static class Entity {
        public HashMap<String, Field> fields = new HashMap<>();
        public LinkedHashSet<String> changed = new LinkedHashSet<>();
        public boolean printed = true;
        public long swept;
    }

    private static final long SWEEP_EVERY_MS = 86_400_000L;

    @Override
    public Entity createAccumulator() {
        return new Entity();
    }

    public void accumulate(Entity entity, String target, String kind, String name, String part,
                           String op, Double num, String txt, Long keepMs) {
        long now = System.currentTimeMillis();
        if (entity.printed) {
            entity.changed.clear();
            entity.printed = false;
            if (now - entity.swept > SWEEP_EVERY_MS) {
                entity.fields.values().removeIf(f -> now - f.touched > keepMs);
                entity.swept = now;
            }
        }
        String key = target + SEP + kind + SEP + name;
        Field field = entity.fields.computeIfAbsent(key, k -> new Field());
        field.touched = now;
        HashMap<String, Part> parts = field.parts;
        Part value = parts.get(part);
        boolean first = value == null;
        if (first) {
            value = new Part();
            value.op = op.intern();  // a handful of distinct ops: one copy of each
            parts.put(part, value);
        }
        if (fold(value, first, op, num, txt)) {
            entity.changed.add(key);
        }
    }

    /** ``tiles.add`` and the ordered picks; whether the part's value changed. */
    static boolean fold(Part value, boolean first, String op, Double num, String txt) {
        switch (op) {
            case "count":
                value.count += 1;
                return true;
            case "sum":
                value.number = first ? num : value.number + num;
                return true;
            case "avg":
                value.number = first ? num : value.number + num;
                value.count += 1;
                return true;
            case "min":
                if (first || num < value.number) {
                    value.number = num;
                    return true;
                }
                return false;
            case "max":
                if (first || num > value.number) {
                    value.number = num;
                    return true;
                }
                return false;
            case "exists":
                return first;
            case "min_text":
                if (txt != null && (value.text == null || byCodePoint(txt, value.text) < 0)) {
                    value.text = txt;
                    return true;
                }
                return first;
            case "max_text":
                if (txt != null && (value.text == null || byCodePoint(txt, value.text) > 0)) {
                    value.text = txt;
                    return true;
                }
                return first;
            default:
                throw new IllegalArgumentException("FOLD_PARTS: unknown op " + op);
        }
    }

    /** The order of Flink's MIN/MAX on strings (UTF-8 bytes, i.e. code points). */
    static int byCodePoint(String a, String b) {
        int i = 0;
        int j = 0;
        while (i < a.length() && j < b.length()) {
            int x = a.codePointAt(i);
            int y = b.codePointAt(j);
            if (x != y) {
                return Integer.compare(x, y);
            }
            i += Character.charCount(x);
            j += Character.charCount(y);
        }
        return Integer.compare(a.length() - i, b.length() - j);
    }

    @Override
    public Row[] getValue(Entity entity) {
        if (entity.printed) {
            return new Row[0];  // nothing folded since the last read
        }
        entity.printed = true;
        List<Row> out = new ArrayList<>(entity.changed.size());
        for (String key : entity.changed) {
            Field field = entity.fields.get(key);
            if (field == null) {
                continue;  // expired since it changed
            }
            int first = key.indexOf(SEP);
            int second = key.indexOf(SEP, first + 1);
            out.add(Row.of(key.substring(0, first), key.substring(first + 1, second),
                    key.substring(second + 1), payload(field.parts)));
        }
        return out.toArray(new Row[0]);
    }

    /** FIELD_JSON's print: {"<part>": "<value as JSON text>", ...}. */
    static String payload(Map<String, Part> parts) {
        JsonStringEncoder encoder = JsonStringEncoder.getInstance();
        StringBuilder out = new StringBuilder("{");
        for (Map.Entry<String, Part> entry : parts.entrySet()) {
            String value = text(entry.getValue());
            if (value == null) {
                continue;
            }
            if (out.length() > 1) {
                out.append(',');
            }
            out.append('"').append(encoder.quoteAsString(entry.getKey())).append("\":\"")
                    .append(encoder.quoteAsString(value)).append('"');
        }
        return out.append('}').toString();
    }

    /** A part's value as the SQL printed it (CAST(... AS STRING) of COUNT(*), SUM(num),
     * ...); null for a pick that never had a value (printed by no part). */
    static String text(Part value) {
        switch (value.op) {
            case "count":
                return Long.toString(value.count);
            case "sum":
            case "min":
            case "max":
                return Double.toString(value.number);
            case "avg":
                return "[" + value.number + "," + value.count + "]";
            case "exists":
                return "1";
            default:
                return value.text;
        }
    }
}

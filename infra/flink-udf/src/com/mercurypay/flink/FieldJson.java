package com.mercurypay.flink;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.io.JsonStringEncoder;
import org.apache.flink.table.annotation.ArgumentHint;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.functions.AggregateFunction;

/**
 * FIELD_JSON(part, value, newest): one online-store field as a JSON object of its parts'
 * values, each as a JSON string: {@code {"<part>": "<value>", ...}}.
 *
 * <p>It replaces JSON_OBJECTAGG, which keeps each part as its own entry of a map in keyed
 * state and walks all of them (with their TTL stamps) to print the field at every change:
 * that walk was most of the job's CPU (docs/PERFORMANCE.md). Here a field's parts are one
 * value in state, printed without a state access per part.
 *
 * <p>{@code newest > 0} is for a last-N field, whose values are JSON arrays that start with
 * the item's first event time: only the {@code newest} items by (time, item) descending are
 * printed (the writer keeps those, in that order), so a long history is not sent to the
 * writer at every change. Older items stay in state: a late event can make one newest again.
 *
 * <p>A changed part arrives as a retraction of its old value, then its new value.
 */
// Arguments named here: Flink cannot read them from a class loaded through USING JAR.
@FunctionHint(
        arguments = {
            @ArgumentHint(name = "part", type = @DataTypeHint("STRING")),
            @ArgumentHint(name = "part_value", type = @DataTypeHint("STRING")),
            @ArgumentHint(name = "newest", type = @DataTypeHint("INT"))},
        accumulator = @DataTypeHint(value = "RAW", bridgedTo = FieldJson.Parts.class),
        output = @DataTypeHint("STRING"))
public class FieldJson extends AggregateFunction<String, FieldJson.Parts> {

    /** A field's parts: part -> value, and how many of the newest items to print. */
    public static class Parts {
        public HashMap<String, String> values = new HashMap<>();
        public int newest;
    }

    @Override
    public Parts createAccumulator() {
        return new Parts();
    }

    public void accumulate(Parts parts, String part, String value, Integer newest) {
        parts.values.put(part, value);
        parts.newest = newest == null ? 0 : newest;
    }

    public void retract(Parts parts, String part, String value, Integer newest) {
        parts.values.remove(part, value);
    }

    @Override
    public String getValue(Parts parts) {
        List<Map.Entry<String, String>> printed = new ArrayList<>(parts.values.entrySet());
        if (parts.newest > 0 && printed.size() > parts.newest) {
            printed.sort((a, b) -> {
                int byTime = Long.compare(firstNumber(b.getValue()), firstNumber(a.getValue()));
                return byTime != 0 ? byTime : b.getKey().compareTo(a.getKey());
            });
            printed = printed.subList(0, parts.newest);
        }
        JsonStringEncoder encoder = JsonStringEncoder.getInstance();
        StringBuilder out = new StringBuilder("{");
        for (Map.Entry<String, String> entry : printed) {
            if (out.length() > 1) {
                out.append(',');
            }
            out.append('"').append(encoder.quoteAsString(entry.getKey())).append("\":\"")
                    .append(encoder.quoteAsString(entry.getValue())).append('"');
        }
        return out.append('}').toString();
    }

    /** The integer an item's value starts with: {@code [<first event time>, ...]}. */
    static long firstNumber(String array) {
        int end = array.indexOf(',');
        return Long.parseLong(array.substring(1, end < 0 ? array.length() - 1 : end).trim());
    }
}

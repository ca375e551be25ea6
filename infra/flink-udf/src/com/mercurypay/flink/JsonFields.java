package com.mercurypay.flink;

import java.io.IOException;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.functions.TableFunction;
import org.apache.flink.types.Row;

/**
 * JSON_FIELDS(line): one row holding the top-level fields of a JSON object, parsed once.
 *
 * <p>Each value is tagged by its JSON kind in its first character, so SQL can check types
 * without parsing again: {@code s} string (then the decoded text), {@code n} number (then its
 * text as written), {@code t} true, {@code f} false, {@code z} null, {@code o} object,
 * {@code a} array (their contents are not kept). A line that is not one JSON object or that
 * has anything after it gives a NULL map; a repeated key keeps the last value (as the Python
 * validator's parser does) and adds the key {@code #repeated}. The job hands every line its
 * fast check does not pass to the contract's own validator, which names the rule
 * (docs/STREAMING.md, "Validation in the job").
 *
 * <p>A table function, not a scalar one: the planner copies a scalar call into every use of
 * its result, which would parse the line once per field.
 */
@FunctionHint(output = @DataTypeHint("ROW<f MAP<STRING, STRING>>"))
public class JsonFields extends TableFunction<Row> {
    private static final JsonFactory FACTORY = new JsonFactory();

    public void eval(String line) {
        collect(Row.of(parse(line)));
    }

    static Map<String, String> parse(String line) {
        if (line == null) {
            return null;
        }
        try (JsonParser parser = FACTORY.createParser(line)) {
            if (parser.nextToken() != JsonToken.START_OBJECT) {
                return null;
            }
            Map<String, String> fields = new HashMap<>();
            JsonToken token;
            while ((token = parser.nextToken()) == JsonToken.FIELD_NAME) {
                String name = parser.currentName();
                String value = tagged(parser, parser.nextToken());
                if (fields.put(name, value) != null) {
                    fields.put("#repeated", name);
                }
            }
            if (token != JsonToken.END_OBJECT || parser.nextToken() != null) {
                return null;
            }
            return fields;
        } catch (IOException | RuntimeException e) {
            return null;
        }
    }

    private static String tagged(JsonParser parser, JsonToken token) throws IOException {
        switch (token) {
            case VALUE_STRING:
                return "s" + parser.getText();
            case VALUE_NUMBER_INT:
            case VALUE_NUMBER_FLOAT:
                return "n" + parser.getText();
            case VALUE_TRUE:
                return "t";
            case VALUE_FALSE:
                return "f";
            case VALUE_NULL:
                return "z";
            case START_OBJECT:
                parser.skipChildren();
                return "o";
            case START_ARRAY:
                parser.skipChildren();
                return "a";
            default:
                throw new IOException("unexpected token " + token);
        }
    }
}

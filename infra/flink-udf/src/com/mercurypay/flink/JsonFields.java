package com.mercurypay.flink;

import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.api.ValidationException;
import org.apache.flink.table.catalog.DataTypeFactory;
import org.apache.flink.table.functions.TableFunction;
import org.apache.flink.table.types.inference.TypeInference;
import org.apache.flink.types.Row;

/**
 * JSON_FIELDS(line, 'name,name,...'): one row holding one column {@code f}, a ROW of the
 * named top-level fields of a JSON object, parsed once, plus {@code #keys} (how many
 * keys the object has, named or not, a repeated one each time) and {@code #repeated}.
 *
 * <p>The names are the contract's fields, a literal the plan writes: SQL then reads a field
 * as {@code f.`amount`}, a position in a row, where a map of every key (this function's
 * first form) cost a search by name for each of the twenty-odd reads of a line.
 *
 * <p>Each value is tagged by its JSON kind in its first character, so SQL can check types
 * without parsing again: {@code s} string (then the decoded text), {@code n} number (then its
 * text as written), {@code t} true, {@code f} false, {@code z} null, {@code o} object,
 * {@code a} array (their contents are not kept); an absent field is NULL. A line that is not
 * one JSON object or that has anything after it gives a NULL {@code f}; a repeated named key
 * keeps the last value (as the Python validator's parser does) and sets {@code #repeated} to
 * its name (a repeated other key makes {@code #keys} more than the named ones present). The job hands every line its fast check does not pass to the contract's own
 * validator, which names the rule (docs/STREAMING.md, "Validation in the job").
 *
 * <p>A table function, not a scalar one: the planner copies a scalar call into every use of
 * its result, which would parse the line once per field.
 */
public class JsonFields extends TableFunction<Row> {
    private static final JsonFactory FACTORY = new JsonFactory();
    public static final String KEYS = "#keys";
    public static final String REPEATED = "#repeated";

    // the names of the last call (a literal: one per call site) and their positions
    private transient String names;
    private transient Map<String, Integer> positions;

    public void eval(String line, String names) {
        collect(Row.of(parse(line, positions(names))));
    }

    private Map<String, Integer> positions(String names) {
        if (!names.equals(this.names)) {
            Map<String, Integer> at = new HashMap<>();
            for (String name : names.split(",")) {
                at.put(name, at.size());
            }
            this.positions = at;
            this.names = names;
        }
        return positions;
    }

    /** The named fields' tagged values in order, then #keys and #repeated; null when the
     * line is not one JSON object. */
    static Row parse(String line, Map<String, Integer> positions) {
        if (line == null) {
            return null;
        }
        int size = positions.size();
        Object[] values = new Object[size + 2];
        try (JsonParser parser = FACTORY.createParser(line)) {
            if (parser.nextToken() != JsonToken.START_OBJECT) {
                return null;
            }
            int keys = 0;
            JsonToken token;
            while ((token = parser.nextToken()) == JsonToken.FIELD_NAME) {
                String name = parser.currentName();
                String value = tagged(parser, parser.nextToken());
                keys += 1;
                Integer at = positions.get(name);
                if (at != null) {
                    if (values[at] != null) {
                        values[size + 1] = name;
                    }
                    values[at] = value;
                }
            }
            if (token != JsonToken.END_OBJECT || parser.nextToken() != null) {
                return null;
            }
            values[size] = keys;
            return Row.of(values);
        } catch (IOException | RuntimeException e) {
            return null;
        }
    }

    /** ROW<f ROW<`name` STRING, ..., `#keys` INT, `#repeated` STRING>>, from the names. */
    @Override
    public TypeInference getTypeInference(DataTypeFactory typeFactory) {
        return TypeInference.newBuilder()
                .typedArguments(DataTypes.STRING(), DataTypes.STRING())
                .outputTypeStrategy(call -> {
                    String names = call.getArgumentValue(1, String.class).orElseThrow(
                            () -> new ValidationException(
                                    "JSON_FIELDS: the field names must be a literal"));
                    List<DataTypes.Field> fields = new ArrayList<>();
                    for (String name : names.split(",")) {
                        fields.add(DataTypes.FIELD(name, DataTypes.STRING()));
                    }
                    fields.add(DataTypes.FIELD(KEYS, DataTypes.INT()));
                    fields.add(DataTypes.FIELD(REPEATED, DataTypes.STRING()));
                    return Optional.of(DataTypes.ROW(
                            DataTypes.FIELD("f", DataTypes.ROW(fields))));
                })
                .build();
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

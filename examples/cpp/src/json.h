// A small JSON reader: enough for spec.json and plan records, no dependency.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace iqart::json
{

struct Value
{
    enum class Type
    {
        Null,
        Bool,
        Number,
        String,
        Array,
        Object
    };
    Type type = Type::Null;
    bool boolean = false;
    double number = 0.0;
    bool integral = false; // a number written without fraction or exponent
    std::string string;
    std::vector<Value> array;
    std::vector<std::pair<std::string, Value>> object; // in file order

    // The member `key` of an object, or nullptr (also when this is not an object).
    Value const* find(std::string const& key) const;
};

// Parses a whole JSON document; std::runtime_error("line L, column C: what") when malformed.
Value parse(std::string const& text);

} // namespace iqart::json

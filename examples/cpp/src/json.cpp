#include "json.h"

#include <cstdint>
#include <cstdlib>
#include <stdexcept>

namespace iqart::json
{

Value const* Value::find(std::string const& key) const
{
    for (auto const& member : object)
        if (member.first == key)
            return &member.second;
    return nullptr;
}

namespace
{

constexpr int kMaxDepth = 64; // deeper nesting is no spec.json: refuse it rather than recurse without bound

class Parser
{
public:
    explicit Parser(std::string const& text) : text_(text) {}

    Value document()
    {
        Value value = parseValue(0);
        skipSpace();
        if (pos_ != text_.size())
            fail("unexpected text after the JSON value");
        return value;
    }

private:
    std::string const& text_;
    std::size_t pos_ = 0;

    [[noreturn]] void fail(std::string const& what) const
    {
        std::size_t line = 1, column = 1;
        for (std::size_t i = 0; i < pos_ && i < text_.size(); ++i)
        {
            column = text_[i] == '\n' ? 1 : column + 1;
            line += text_[i] == '\n';
        }
        throw std::runtime_error("line " + std::to_string(line) + ", column " + std::to_string(column) + ": " + what);
    }

    void skipSpace()
    {
        while (pos_ < text_.size()
            && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
            ++pos_;
    }

    char peek()
    {
        skipSpace();
        if (pos_ >= text_.size())
            fail("unexpected end of file");
        return text_[pos_];
    }

    void expect(char c)
    {
        if (peek() != c)
            fail(std::string("expected '") + c + "'");
        ++pos_;
    }

    bool consumeWord(char const* word)
    {
        std::string const w(word);
        if (text_.compare(pos_, w.size(), w) != 0)
            return false;
        pos_ += w.size();
        return true;
    }

    Value parseValue(int depth)
    {
        if (depth > kMaxDepth)
            fail("nested too deeply");
        Value value;
        char const c = peek();
        if (c == '{')
        {
            value.type = Value::Type::Object;
            ++pos_;
            if (peek() == '}')
            {
                ++pos_;
                return value;
            }
            while (true)
            {
                if (peek() != '"')
                    fail("expected a string key");
                std::string key = parseString();
                expect(':');
                value.object.emplace_back(std::move(key), parseValue(depth + 1));
                char const next = peek();
                ++pos_;
                if (next == '}')
                    return value;
                if (next != ',')
                    fail("expected ',' or '}'");
            }
        }
        if (c == '[')
        {
            value.type = Value::Type::Array;
            ++pos_;
            if (peek() == ']')
            {
                ++pos_;
                return value;
            }
            while (true)
            {
                value.array.push_back(parseValue(depth + 1));
                char const next = peek();
                ++pos_;
                if (next == ']')
                    return value;
                if (next != ',')
                    fail("expected ',' or ']'");
            }
        }
        if (c == '"')
        {
            value.type = Value::Type::String;
            value.string = parseString();
            return value;
        }
        bool const is_true = consumeWord("true");
        if (is_true || consumeWord("false"))
        {
            value.type = Value::Type::Bool;
            value.boolean = is_true;
            return value;
        }
        if (consumeWord("null"))
            return value;
        if (c == '-' || (c >= '0' && c <= '9'))
            return parseNumber();
        fail("unexpected character");
    }

    Value parseNumber()
    {
        std::size_t const start = pos_;
        auto digits = [&] {
            std::size_t const first = pos_;
            while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9')
                ++pos_;
            if (pos_ == first)
                fail("malformed number");
        };
        Value value;
        value.type = Value::Type::Number;
        value.integral = true;
        if (text_[pos_] == '-')
            ++pos_;
        digits();
        if (pos_ < text_.size() && text_[pos_] == '.')
        {
            ++pos_;
            digits();
            value.integral = false;
        }
        if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E'))
        {
            ++pos_;
            if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-'))
                ++pos_;
            digits();
            value.integral = false;
        }
        value.number = std::strtod(text_.substr(start, pos_ - start).c_str(), nullptr);
        return value;
    }

    unsigned hex4()
    {
        if (pos_ + 4 > text_.size())
            fail("truncated \\u escape");
        unsigned code = 0;
        for (int i = 0; i < 4; ++i)
        {
            char const h = text_[pos_++];
            code <<= 4;
            if (h >= '0' && h <= '9')
                code |= static_cast<unsigned>(h - '0');
            else if (h >= 'a' && h <= 'f')
                code |= static_cast<unsigned>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F')
                code |= static_cast<unsigned>(h - 'A' + 10);
            else
                fail("bad \\u escape");
        }
        return code;
    }

    static void appendUtf8(std::string& out, uint32_t code)
    {
        if (code < 0x80)
            out.push_back(static_cast<char>(code));
        else if (code < 0x800)
        {
            out.push_back(static_cast<char>(0xC0 | (code >> 6)));
            out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
        }
        else if (code < 0x10000)
        {
            out.push_back(static_cast<char>(0xE0 | (code >> 12)));
            out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
            out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
        }
        else
        {
            out.push_back(static_cast<char>(0xF0 | (code >> 18)));
            out.push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
            out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
            out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
        }
    }

    std::string parseString()
    {
        ++pos_; // the opening quote
        std::string out;
        while (true)
        {
            if (pos_ >= text_.size())
                fail("unterminated string");
            char const c = text_[pos_++];
            if (c == '"')
                return out;
            if (static_cast<unsigned char>(c) < 0x20)
                fail("control character in a string");
            if (c != '\\')
            {
                out.push_back(c);
                continue;
            }
            if (pos_ >= text_.size())
                fail("unterminated string");
            char const e = text_[pos_++];
            switch (e)
            {
            case '"': out.push_back('"'); break;
            case '\\': out.push_back('\\'); break;
            case '/': out.push_back('/'); break;
            case 'b': out.push_back('\b'); break;
            case 'f': out.push_back('\f'); break;
            case 'n': out.push_back('\n'); break;
            case 'r': out.push_back('\r'); break;
            case 't': out.push_back('\t'); break;
            case 'u':
            {
                uint32_t code = hex4();
                if (code >= 0xD800 && code < 0xDC00 && text_.compare(pos_, 2, "\\u") == 0)
                {
                    pos_ += 2;
                    uint32_t const low = hex4();
                    if (low < 0xDC00 || low >= 0xE000)
                        fail("bad surrogate pair");
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                }
                appendUtf8(out, code);
                break;
            }
            default: fail("bad escape in a string");
            }
        }
    }
};

} // namespace

Value parse(std::string const& text)
{
    return Parser(text).document();
}

} // namespace iqart::json

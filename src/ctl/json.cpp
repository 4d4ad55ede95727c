// SPDX-License-Identifier: MIT
// json.cpp - JSON output for relayguardctl (json.hpp).
#include "ctl/json.hpp"

#include <cassert>

namespace relayguard::ctl {
namespace {

// utf8_length - the length of the valid UTF-8 sequence at s[i] (RFC 3629: no overlongs, no
// surrogates, nothing above U+10FFFF), or 0 if the byte there does not start one.
std::size_t utf8_length(std::string_view s, std::size_t i) noexcept
{
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char c = byte(i);
    std::size_t n;
    unsigned char lo = 0x80, hi = 0xbf; // allowed range of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        return 0;
    }
    if (i + n > s.size()) return 0;
    if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
    for (std::size_t k = 2; k < n; ++k)
        if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) return 0;
    return n;
}

} // namespace

void append_json_string(std::string& out, std::string_view s)
{
    static constexpr char hex[] = "0123456789abcdef";
    out += '"';
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            if (const std::size_t n = utf8_length(s, i); n > 0) {
                out.append(s.substr(i, n));
                i += n;
                continue;
            }
        }
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (c < 0x20 || c >= 0x7f) {
                out += "\\u00";
                out += hex[c >> 4];
                out += hex[c & 0xf];
            } else {
                out += static_cast<char>(c);
            }
        }
        ++i;
    }
    out += '"';
}

Json& Json::push(Json value)
{
    assert(std::holds_alternative<Array>(v_));
    auto& a = std::get<Array>(v_);
    a.push_back(std::move(value));
    return a.back();
}

Json& Json::set(std::string key, Json value)
{
    assert(std::holds_alternative<Object>(v_));
    auto& o = std::get<Object>(v_);
    o.emplace_back(std::move(key), std::move(value));
    return o.back().second;
}

std::string Json::dump() const
{
    std::string out;
    dump_to(out);
    return out;
}

void Json::dump_to(std::string& out) const
{
    struct Visitor {
        std::string& out;
        void operator()(std::nullptr_t) const { out += "null"; }
        void operator()(bool b) const { out += b ? "true" : "false"; }
        void operator()(std::int64_t n) const { out += std::to_string(n); }
        void operator()(std::uint64_t n) const { out += std::to_string(n); }
        void operator()(const std::string& s) const { append_json_string(out, s); }
        void operator()(const Array& a) const
        {
            out += '[';
            for (std::size_t i = 0; i < a.size(); ++i) {
                if (i) out += ',';
                a[i].dump_to(out);
            }
            out += ']';
        }
        void operator()(const Object& o) const
        {
            out += '{';
            for (std::size_t i = 0; i < o.size(); ++i) {
                if (i) out += ',';
                append_json_string(out, o[i].first);
                out += ':';
                o[i].second.dump_to(out);
            }
            out += '}';
        }
    };
    std::visit(Visitor{out}, v_);
}

} // namespace relayguard::ctl

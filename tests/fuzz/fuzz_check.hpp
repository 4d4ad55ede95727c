// SPDX-License-Identifier: MIT
// fuzz_check.hpp - property checks for the fuzz targets: on failure, print why and abort().
//
// abort() is what libFuzzer (and ctest, for the replay tests) recognise as a crash, and unlike
// assert() it stays on in release builds. Messages read "got=... want=..." with bytes escaped.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace relayguard::fuzz {

// Bytes of a value shown in a failure message; the rest is elided.
inline constexpr std::size_t max_shown_bytes = 200;

// fail - report a broken property and abort.
[[noreturn]] inline void fail(const char* file, int line, const std::string& what)
{
    std::fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what.c_str());
    std::abort();
}

// escaped - `bytes` as a quoted C-like string, so that CR, LF, NUL and binary input stay visible.
inline std::string escaped(std::string_view bytes)
{
    static constexpr char hex[] = "0123456789abcdef";
    std::string out = "\"";
    for (std::size_t i = 0; i < bytes.size() && i < max_shown_bytes; ++i) {
        const auto c = static_cast<unsigned char>(bytes[i]);
        if (c == '\r') {
            out += "\\r";
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20 || c >= 0x7f) {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xf];
        } else {
            out += static_cast<char>(c);
        }
    }
    if (bytes.size() > max_shown_bytes) out += "...";
    out += '"';
    return out;
}

} // namespace relayguard::fuzz

// FUZZ_CHECK - abort with `message` (built only on failure) unless `cond` holds.
#define FUZZ_CHECK(cond, message)                                                                  \
    do {                                                                                           \
        if (!(cond)) ::relayguard::fuzz::fail(__FILE__, __LINE__, std::string(#cond " -- ") + (message)); \
    } while (false)

// SPDX-License-Identifier: MIT
// request_parser.hpp - incremental, bounded parser for the Postfix policy delegation protocol.
//
// No I/O: the caller feeds bytes (or reads straight into prepare()/commit()) and pulls complete
// requests with next(). Requests are `name=value` lines ended by "\n"; an empty line ends the
// request (SMTPD_POLICY_README). A trailing "\r" before "\n" is tolerated and dropped.
// SECURITY: input is untrusted; buffered bytes never exceed max_request_bytes (+ one read).
// Errors are sticky (hiredis reader style): after one, next() keeps returning it.
// Not thread-safe; one parser per connection.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include <relayguard/request.hpp>

namespace relayguard {

// Longest line, "name=value" without its "\n". Fits Postfix's longest values: an xtext-encoded
// ccert_subject of a 64-character UTF-8 CN is under 400 bytes; 4 KiB leaves room for odd clients.
inline constexpr std::size_t default_max_line_bytes = 4096;
// Longest request, every line and newline included. Postfix 3.7 sends about 0.6-1.3 KiB.
inline constexpr std::size_t default_max_request_bytes = 32768;
// Most attribute lines in one request, unknown ones included. Postfix 3.7 sends 29.
inline constexpr std::size_t default_max_attributes = 128;

struct ParserLimits {
    std::size_t max_line_bytes = default_max_line_bytes;
    std::size_t max_request_bytes = default_max_request_bytes;
    std::size_t max_attributes = default_max_attributes;
};

// Why a connection's input was refused. Each ends the connection without a reply.
enum class ParseError {
    line_too_long = 1,    // a line over max_line_bytes (detected before its "\n" arrives)
    request_too_large,    // a request over max_request_bytes
    too_many_attributes,  // more than max_attributes lines in one request
    missing_equals,       // a non-empty line without "="
    empty_name,           // a line starting with "="
    nul_byte,             // a NUL byte anywhere
    missing_request_type, // a request without `request=`
    unknown_request_type, // `request=` other than smtpd_access_policy
};
const std::error_category& parse_error_category() noexcept;
std::error_code make_error_code(ParseError e) noexcept;

class RequestParser {
public:
    enum class Status { need_more, request, error };

    explicit RequestParser(ParserLimits limits = {});

    // feed - append bytes received from the peer.
    void feed(std::string_view bytes);

    // prepare/commit - read straight into the parser: prepare(n) returns space for at least
    // n bytes (valid until the next non-const call); commit(k) adds the first k of them.
    std::span<char> prepare(std::size_t n);
    void commit(std::size_t k);

    // next - parse buffered bytes. `request`: `out` holds the next complete request (cleared
    // first). `need_more`: no complete request buffered yet. `error`: see error(); sticky.
    Status next(Request& out);

    std::error_code error() const noexcept { return error_; }

    // sample - up to max bytes of raw input, for a log line: after an error, from the start of
    // the offending line to the byte that revealed the error; otherwise the buffered input.
    // Valid until the next non-const call. Untrusted: sanitize before printing.
    std::string_view sample(std::size_t max = 64) const noexcept;

    // idle - nothing of a next request has been received yet (the connection is between
    // requests), as opposed to a half-received request. False after an error.
    bool idle() const noexcept;

    // buffered - bytes received and not yet consumed.
    std::size_t buffered() const noexcept { return end_ - pos_; }

    // release - between requests (idle()), give the read buffer's memory back; the next
    // prepare() allocates it again. An idle connection then costs no buffer. No-op otherwise.
    void release() noexcept;

    // holds_buffer - whether a read buffer is allocated (false before the first prepare() and
    // after release()).
    bool holds_buffer() const noexcept { return !buf_.empty(); }

private:
    // Where a known attribute's value lies in buf_, as an offset from pos_ (so that moving the
    // unconsumed bytes to the front of buf_ keeps it valid).
    struct Span {
        std::size_t offset = 0;
        std::size_t size = 0;
    };

    Status fail(ParseError e, std::size_t line, std::size_t seen);
    Status finish_request(Request& out, std::size_t next_pos);

    ParserLimits limits_;
    std::string buf_;           // received bytes; [pos_, end_) not yet consumed
    std::size_t pos_ = 0;       // start of the current request in buf_
    std::size_t end_ = 0;       // end of valid data in buf_
    std::size_t scan_ = 0;      // where to look for the next "\n" (offset from pos_)
    std::size_t line_ = 0;      // start of the current line (offset from pos_)
    std::size_t lines_ = 0;     // attribute lines of the current request so far
    std::size_t checked_ = 0;   // bytes from pos_ on already searched for NUL
    std::size_t nul_;           // offset from pos_ of the first NUL found there, or none
    std::uint32_t seen_ = 0;    // bit i set: the current request has a line for Attr i
    std::array<Span, attr_count> values_{}; // the last line of each attribute seen
    std::size_t error_at_ = 0;  // start of the offending line in buf_
    std::size_t error_end_ = 0; // one past the byte that revealed the error
    std::error_code error_;
};

} // namespace relayguard

template <>
struct std::is_error_code_enum<relayguard::ParseError> : std::true_type {};

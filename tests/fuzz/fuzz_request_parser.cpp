// SPDX-License-Identifier: MIT
// fuzz_request_parser.cpp - libFuzzer target: RequestParser against a plain model of the protocol.
//
// Each input is parsed under several limit sets, fed whole and in irregular reads through
// prepare()/commit(), and every run must give what a naive reading of SMTPD_POLICY_README and
// request_parser.hpp gives: the same requests, or the same error with the same sample, no matter
// how the input was split. Built as libFuzzer binary fuzz_request_parser and, with
// replay_main.cpp, as the unit test fuzz_replay_request_parser.
#include <relayguard/request_parser.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"

namespace relayguard::fuzz {
namespace {

// The only request type (SMTPD_POLICY_README).
constexpr std::string_view access_policy_request = "smtpd_access_policy";

// Bytes of sample() compared after an error (the session logs 64).
constexpr std::size_t sample_bytes = 64;

constexpr std::size_t no_limit = std::numeric_limits<std::size_t>::max();

// Limit sets each input is parsed under: small ones so that mutations reach every limit, the
// defaults, and none at all (the parser's arithmetic must saturate, not wrap).
constexpr std::array<ParserLimits, 5> limit_sets{{
    {.max_line_bytes = 8, .max_request_bytes = 32, .max_attributes = 2},
    {.max_line_bytes = 32, .max_request_bytes = 128, .max_attributes = 6},
    {.max_line_bytes = 256, .max_request_bytes = 1024, .max_attributes = 31},
    {},
    {.max_line_bytes = no_limit, .max_request_bytes = no_limit, .max_attributes = no_limit},
}};

// Read sizes cycled through by the split run, from a place that the input's size picks; odd
// sizes put read boundaries inside "\r\n", inside names and right after a limit. (Reads of one
// byte for the whole input, and every split point of the samples, are in request_parser_test.)
constexpr std::array<std::size_t, 8> read_sizes{1, 7, 2, 64, 3, 509, 13, 1};

// Extra room asked of prepare() beyond what is then committed, as a socket read that returns
// less than the buffer it was given.
constexpr std::size_t read_slack = 100;

// What parsing a whole input gives.
struct Outcome {
    std::vector<Request> requests;
    std::error_code error; // empty: the input ended with the parser wanting more
    std::string sample;    // after an error: sample(sample_bytes)
};

constexpr std::size_t saturating_add(std::size_t a, std::size_t b)
{
    return b > no_limit - a ? no_limit : a + b;
}

// model - the outcome by the rules, read off the whole input line by line.
Outcome model(std::string_view in, const ParserLimits& limits)
{
    Outcome o;
    std::size_t start = 0; // first byte of the current request
    std::size_t line = 0;  // first byte of the current line
    std::size_t lines = 0; // attribute lines so far in the current request
    std::array<std::optional<std::string_view>, attr_count> values{};
    std::size_t request_line = 0; // where the last request= line of this request starts

    auto error = [&](ParseError e, std::size_t from, std::size_t revealed_by) {
        o.error = make_error_code(e);
        o.sample = std::string(in.substr(from, std::min(sample_bytes, revealed_by + 1 - from)));
        return o;
    };

    for (;;) {
        const std::size_t nl = in.find('\n', line);
        const bool complete = nl != std::string_view::npos;
        const std::size_t stop = complete ? nl : in.size();

        // An error is reported at the first byte that proves it; on one byte, NUL is checked
        // first, then the line, then the request.
        std::optional<std::pair<std::size_t, ParseError>> first;
        auto consider = [&](std::size_t at, ParseError e) {
            if (!first || at < first->first) first = {at, e};
        };
        if (const auto nul = in.find('\0', line); nul < stop) consider(nul, ParseError::nul_byte);
        // The line is over the limit once it has max_line_bytes + 1 bytes, not counting a "\r"
        // that turns out to end it ("\r\n"); so a "\r" there is proven content by the next byte.
        const std::size_t over = saturating_add(line, limits.max_line_bytes);
        if (over < stop) {
            if (in[over] != '\r') {
                consider(over, ParseError::line_too_long);
            } else if (over + 1 < stop) {
                consider(over + 1, ParseError::line_too_long);
            }
        }
        // The request is over the limit at its byte max_request_bytes + 1, newlines included.
        const std::size_t too_far = saturating_add(start, limits.max_request_bytes);
        if (too_far < stop || (complete && too_far == stop)) consider(too_far, ParseError::request_too_large);
        if (first) return error(first->second, line, first->first);

        if (!complete) return o;

        std::size_t content_end = stop;
        if (content_end > line && in[content_end - 1] == '\r') --content_end;
        const std::string_view content = in.substr(line, content_end - line);
        const std::size_t line_start = line;
        line = stop + 1;

        if (content.empty()) {
            // The empty line: the request is complete.
            const auto& type = values[static_cast<std::size_t>(Attr::request)];
            if (!type) return error(ParseError::missing_request_type, start, stop);
            if (*type != access_policy_request) return error(ParseError::unknown_request_type, request_line, stop);
            Request& r = o.requests.emplace_back();
            for (std::size_t i = 0; i < attr_count; ++i)
                if (values[i]) r.set(static_cast<Attr>(i), *values[i]);
            start = line;
            lines = 0;
            values = {};
            continue;
        }
        if (content.front() == '=') return error(ParseError::empty_name, line_start, stop);
        const std::size_t eq = content.find('=');
        if (eq == std::string_view::npos) return error(ParseError::missing_equals, line_start, stop);
        if (++lines > limits.max_attributes) return error(ParseError::too_many_attributes, line_start, stop);
        if (const auto attr = attr_from_name(content.substr(0, eq))) {
            values[static_cast<std::size_t>(*attr)] = content.substr(eq + 1);
            if (*attr == Attr::request) request_line = line_start;
        }
    }
}

// drain - pull requests until the parser wants more input or fails; true on failure.
bool drain(RequestParser& p, Outcome& o, const ParserLimits& limits, std::string_view fed)
{
    for (;;) {
        Request r;
        switch (p.next(r)) {
        case RequestParser::Status::request:
            for (std::size_t i = 0; i < attr_count; ++i) {
                const std::string& v = r[static_cast<Attr>(i)];
                // SMTPD_POLICY_README: values never contain NUL or newline.
                FUZZ_CHECK(v.find('\0') == std::string::npos && v.find('\n') == std::string::npos,
                           "got=" + escaped(v) + " want=no NUL or newline");
            }
            o.requests.push_back(std::move(r));
            break;
        case RequestParser::Status::need_more: {
            // request_parser.hpp: what is kept between reads stays within one request.
            FUZZ_CHECK(p.buffered() <= limits.max_request_bytes,
                       "got=" + std::to_string(p.buffered()) + " want<=" + std::to_string(limits.max_request_bytes));
            FUZZ_CHECK(p.idle() == (p.buffered() == 0), "got idle()=" + std::to_string(p.idle()) +
                                                             " with buffered()=" + std::to_string(p.buffered()));
            // Without an error the sample is the start of what is buffered: the last bytes fed.
            const std::string_view pending = fed.substr(fed.size() - p.buffered());
            FUZZ_CHECK(p.sample(sample_bytes) == pending.substr(0, sample_bytes),
                       "got=" + escaped(p.sample(sample_bytes)) + " want=" + escaped(pending.substr(0, sample_bytes)));
            return false;
        }
        case RequestParser::Status::error:
            o.error = p.error();
            o.sample = std::string(p.sample(sample_bytes));
            FUZZ_CHECK(!p.idle(), "got idle() after an error");
            return true;
        }
    }
}

// parse_whole - feed() everything at once, then parse.
Outcome parse_whole(std::string_view in, const ParserLimits& limits)
{
    RequestParser p(limits);
    Outcome o;
    p.feed(in);
    drain(p, o, limits, in);
    return o;
}

// parse_split - read through prepare()/commit() in the given sizes, parsing after each read as a
// session does; after an error, go on feeding and check that the error and sample stay put.
Outcome parse_split(std::string_view in, const ParserLimits& limits)
{
    RequestParser p(limits);
    Outcome o;
    std::size_t fed = 0;
    std::size_t turn = in.size();
    bool failed = false;
    while (fed < in.size()) {
        const std::size_t n = std::min(read_sizes[turn++ % read_sizes.size()], in.size() - fed);
        const auto space = p.prepare(n + read_slack);
        FUZZ_CHECK(space.size() >= n + read_slack,
                   "prepare() got=" + std::to_string(space.size()) + " want>=" + std::to_string(n + read_slack));
        std::memcpy(space.data(), in.data() + fed, n);
        p.commit(n);
        fed += n;
        if (failed) {
            Request r;
            FUZZ_CHECK(p.next(r) == RequestParser::Status::error, "error not sticky after more input");
            FUZZ_CHECK(p.error() == o.error, "error changed after more input: got=" + p.error().message() +
                                                 " want=" + o.error.message());
            FUZZ_CHECK(p.sample(sample_bytes) == o.sample, "sample changed after more input: got=" +
                                                               escaped(p.sample(sample_bytes)) + " want=" + escaped(o.sample));
        } else {
            failed = drain(p, o, limits, in.substr(0, fed));
        }
    }
    return o;
}

std::string describe(const ParserLimits& l)
{
    auto n = [](std::size_t v) { return v == no_limit ? std::string("none") : std::to_string(v); };
    return "limits{line=" + n(l.max_line_bytes) + " request=" + n(l.max_request_bytes) +
           " attributes=" + n(l.max_attributes) + "}";
}

// expect_same - `got` (a parser run named `how`) must equal `want` (the model).
void expect_same(const Outcome& got, const Outcome& want, const std::string& how)
{
    FUZZ_CHECK(got.requests.size() == want.requests.size(),
               how + ": requests got=" + std::to_string(got.requests.size()) + " want=" + std::to_string(want.requests.size()));
    for (std::size_t k = 0; k < want.requests.size(); ++k) {
        for (std::size_t i = 0; i < attr_count; ++i) {
            const auto attr = static_cast<Attr>(i);
            FUZZ_CHECK(got.requests[k][attr] == want.requests[k][attr],
                       how + ": request " + std::to_string(k) + " " + std::string(attr_name(attr)) +
                           " got=" + escaped(got.requests[k][attr]) + " want=" + escaped(want.requests[k][attr]));
        }
    }
    FUZZ_CHECK(got.error == want.error, how + ": error got=" + (got.error ? got.error.message() : "none") +
                                            " want=" + (want.error ? want.error.message() : "none"));
    FUZZ_CHECK(got.sample == want.sample, how + ": sample got=" + escaped(got.sample) + " want=" + escaped(want.sample));
}

} // namespace
} // namespace relayguard::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace relayguard::fuzz;
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    for (const auto& limits : limit_sets) {
        const Outcome want = model(in, limits);
        expect_same(parse_whole(in, limits), want, "whole, " + describe(limits));
        expect_same(parse_split(in, limits), want, "split reads, " + describe(limits));
    }
    return 0;
}

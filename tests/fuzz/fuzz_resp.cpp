// SPDX-License-Identifier: MIT
// fuzz_resp.cpp - libFuzzer target: the RESP reply reader and command encoder (redis/resp_codec).
//
// Two properties per input. (1) As server output: ReplyReader, under small and default limits,
// fed whole and in irregular reads, gives the same replies and the same error (but see
// expect_consistent), and every reply it gives is within its limits. (2) As command arguments (the input split at its first byte):
// append_command() then ReplyReader gives back exactly those arguments, as Redis would read them.
// Built as libFuzzer binary fuzz_resp and, with replay_main.cpp, as the test fuzz_replay_resp.
#include "redis/resp_codec.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"

namespace relayguard::fuzz {
namespace {

using redis::Reply;
using redis::detail::ReplyReader;

// Limit sets each input is read under: small ones that mutations can reach, and the defaults.
const std::array<ReplyReader::Limits, 3> limit_sets{{
    {.max_elements = 4, .max_bytes = 16},
    {.max_elements = 64, .max_bytes = 512},
    {},
}};

// Read sizes cycled through by the split run, so that reads end inside "\r\n", inside a length
// and inside a payload.
constexpr std::array<std::size_t, 7> read_sizes{1, 5, 2, 64, 3, 17, 1};

// Deepest nesting of a reply, the root being level 1: hiredis 0.14 reads arrays up to depth 7
// (rstack of 9 tasks), whose elements are one level further.
constexpr std::size_t max_reply_levels = 9;

struct Outcome {
    std::vector<Reply> replies;
    bool failed = false;
    std::string error;
};

std::string type_name(Reply::Type t)
{
    switch (t) {
    case Reply::Type::string: return "string";
    case Reply::Type::status: return "status";
    case Reply::Type::error: return "error";
    case Reply::Type::integer: return "integer";
    case Reply::Type::nil: return "nil";
    case Reply::Type::array: return "array";
    }
    return "?";
}

// describe - a reply as text for failure messages.
std::string describe(const Reply& r)
{
    switch (r.type) {
    case Reply::Type::integer: return "integer " + std::to_string(r.integer);
    case Reply::Type::nil: return "nil";
    case Reply::Type::array: {
        std::string s = "array[" + std::to_string(r.elements.size()) + "]{";
        for (const auto& e : r.elements) s += describe(e) + ", ";
        return s + "}";
    }
    default: return type_name(r.type) + " " + escaped(r.str);
    }
}

bool same(const Reply& a, const Reply& b)
{
    if (a.type != b.type) return false;
    switch (a.type) {
    case Reply::Type::integer: return a.integer == b.integer;
    case Reply::Type::nil: return true;
    case Reply::Type::array:
        return a.elements.size() == b.elements.size() &&
               std::equal(a.elements.begin(), a.elements.end(), b.elements.begin(), same);
    default: return a.str == b.str;
    }
}

// Totals over a reply tree, to hold against the reader's limits.
struct Size {
    std::size_t elements = 0;
    std::size_t bytes = 0;
    std::size_t levels = 0;
};

Size measure(const Reply& r)
{
    Size s{.elements = 0, .bytes = r.str.size(), .levels = 1};
    if (r.type == Reply::Type::array) s.elements = r.elements.size();
    for (const auto& e : r.elements) {
        const Size c = measure(e);
        s.elements += c.elements;
        s.bytes += c.bytes;
        s.levels = std::max(s.levels, c.levels + 1);
    }
    return s;
}

// drain - take replies until the reader wants more input or fails.
void drain(ReplyReader& reader, Outcome& o, const ReplyReader::Limits& limits)
{
    for (;;) {
        Reply r;
        switch (reader.next(r)) {
        case ReplyReader::Status::reply: {
            const Size s = measure(r);
            FUZZ_CHECK(s.elements <= limits.max_elements,
                       "elements got=" + std::to_string(s.elements) + " want<=" + std::to_string(limits.max_elements));
            FUZZ_CHECK(s.bytes <= limits.max_bytes,
                       "bytes got=" + std::to_string(s.bytes) + " want<=" + std::to_string(limits.max_bytes));
            FUZZ_CHECK(s.levels <= max_reply_levels,
                       "levels got=" + std::to_string(s.levels) + " want<=" + std::to_string(max_reply_levels));
            o.replies.push_back(std::move(r));
            break;
        }
        case ReplyReader::Status::need_more: return;
        case ReplyReader::Status::error:
            o.failed = true;
            o.error = reader.error();
            FUZZ_CHECK(!o.error.empty(), "got an error without a message");
            return;
        }
    }
}

// read_replies - feed `in` in reads of the given sizes (all of it at once if none), taking
// replies after each read as the client does; after an error, feeding must keep failing.
Outcome read_replies(std::string_view in, const ReplyReader::Limits& limits, bool split)
{
    ReplyReader reader(limits);
    Outcome o;
    std::size_t fed = 0;
    std::size_t turn = in.size();
    while (fed < in.size()) {
        const std::size_t n = split ? std::min(read_sizes[turn++ % read_sizes.size()], in.size() - fed) : in.size();
        const bool accepted = reader.feed(in.data() + fed, n);
        fed += n;
        if (o.failed) {
            FUZZ_CHECK(!accepted, "feed() accepted input after an error");
            Reply r;
            FUZZ_CHECK(reader.next(r) == ReplyReader::Status::error, "error not sticky after more input");
            FUZZ_CHECK(reader.error() == o.error, "error changed: got=" + escaped(reader.error()) + " want=" + escaped(o.error));
            continue;
        }
        FUZZ_CHECK(accepted, "feed() refused input before any error");
        drain(reader, o, limits);
    }
    return o;
}

// A bytes-limit error; the reader's message (resp_codec.cpp) starts with this.
constexpr std::string_view bytes_limit_error = "reply over the bytes limit";

// expect_consistent - a split read (`got`) against a whole one (`want`). The same replies and the
// same error, with one exception: the unparsed rest of a reply counts against the bytes limit as
// it arrives, so a reader fed a little at a time may stop at that limit early, before the rest of
// a line shows it to be a protocol error, or to be an integer with 100 leading zeros.
void expect_consistent(const Outcome& got, const Outcome& want, const std::string& how)
{
    const bool early_stop = got.failed && got.error.starts_with(bytes_limit_error);
    FUZZ_CHECK(got.replies.size() <= want.replies.size(),
               how + ": replies got=" + std::to_string(got.replies.size()) + " want=" + std::to_string(want.replies.size()));
    for (std::size_t i = 0; i < got.replies.size(); ++i)
        FUZZ_CHECK(same(got.replies[i], want.replies[i]), how + ": reply " + std::to_string(i) +
                                                              " got=" + describe(got.replies[i]) + " want=" + describe(want.replies[i]));
    if (early_stop) return;
    FUZZ_CHECK(got.replies.size() == want.replies.size(),
               how + ": replies got=" + std::to_string(got.replies.size()) + " want=" + std::to_string(want.replies.size()));
    FUZZ_CHECK(got.failed == want.failed && got.error == want.error,
               how + ": error got=" + escaped(got.error) + " want=" + escaped(want.error));
}

// round_trip - the input's first byte separates arguments in the rest; encoded and read back,
// they must come out as one array of bulk strings, byte for byte.
void round_trip(std::string_view in)
{
    if (in.empty()) return;
    const char separator = in.front();
    std::vector<std::string_view> args;
    std::string_view rest = in.substr(1);
    for (;;) {
        const std::size_t at = rest.find(separator);
        args.push_back(rest.substr(0, at));
        if (at == std::string_view::npos) break;
        rest.remove_prefix(at + 1);
    }
    std::string wire;
    redis::detail::append_command(wire, args);

    ReplyReader reader;
    FUZZ_CHECK(reader.feed(wire.data(), wire.size()), "feed() refused an encoded command: " + escaped(reader.error()));
    Reply r;
    const auto status = reader.next(r);
    FUZZ_CHECK(status == ReplyReader::Status::reply, "encoded command did not read back: " + escaped(reader.error()) +
                                                         " wire=" + escaped(wire));
    FUZZ_CHECK(r.type == Reply::Type::array && r.elements.size() == args.size(),
               "got=" + describe(r) + " want=array[" + std::to_string(args.size()) + "]");
    for (std::size_t i = 0; i < args.size(); ++i)
        FUZZ_CHECK(r.elements[i].type == Reply::Type::string && r.elements[i].str == args[i],
                   "argument " + std::to_string(i) + " got=" + describe(r.elements[i]) + " want=" + escaped(args[i]));
    Reply extra;
    FUZZ_CHECK(reader.next(extra) == ReplyReader::Status::need_more, "bytes left over after one command: " + describe(extra));
}

} // namespace
} // namespace relayguard::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace relayguard::fuzz;
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    for (const auto& limits : limit_sets) {
        const Outcome whole = read_replies(in, limits, false);
        expect_consistent(read_replies(in, limits, true), whole,
                    "split reads vs whole, limits{elements=" + std::to_string(limits.max_elements) +
                        " bytes=" + std::to_string(limits.max_bytes) + "}");
    }
    round_trip(in);
    return 0;
}

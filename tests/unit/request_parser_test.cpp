// SPDX-License-Identifier: MIT
// request_parser_test.cpp - RequestParser against the captured samples and the wire rules of
// SMTPD_POLICY_README; attribute and protocol_state names (request.hpp).
#include <relayguard/request_parser.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "testing/test_support.hpp"

namespace relayguard {
namespace {

using namespace std::literals;

// Every attribute and its wire name, written out independently of request.cpp.
struct Known {
    Attr attr;
    std::string_view name;
};
constexpr Known known_attrs[] = {
    {Attr::request, "request"},
    {Attr::protocol_state, "protocol_state"},
    {Attr::protocol_name, "protocol_name"},
    {Attr::client_address, "client_address"},
    {Attr::client_name, "client_name"},
    {Attr::client_port, "client_port"},
    {Attr::reverse_client_name, "reverse_client_name"},
    {Attr::server_address, "server_address"},
    {Attr::server_port, "server_port"},
    {Attr::helo_name, "helo_name"},
    {Attr::sender, "sender"},
    {Attr::recipient, "recipient"},
    {Attr::recipient_count, "recipient_count"},
    {Attr::queue_id, "queue_id"},
    {Attr::instance, "instance"},
    {Attr::size, "size"},
    {Attr::etrn_domain, "etrn_domain"},
    {Attr::stress, "stress"},
    {Attr::sasl_method, "sasl_method"},
    {Attr::sasl_username, "sasl_username"},
    {Attr::sasl_sender, "sasl_sender"},
    {Attr::ccert_subject, "ccert_subject"},
    {Attr::ccert_issuer, "ccert_issuer"},
    {Attr::ccert_fingerprint, "ccert_fingerprint"},
    {Attr::ccert_pubkey_fingerprint, "ccert_pubkey_fingerprint"},
    {Attr::encryption_protocol, "encryption_protocol"},
    {Attr::encryption_cipher, "encryption_cipher"},
    {Attr::encryption_keysize, "encryption_keysize"},
    {Attr::policy_context, "policy_context"},
};
static_assert(std::size(known_attrs) == attr_count);

// A request as plain values, for comparing and printing.
using Values = std::array<std::string, attr_count>;

Values values_of(const Request& r)
{
    Values v;
    for (const auto& k : known_attrs) v[static_cast<std::size_t>(k.attr)] = r[k.attr];
    return v;
}

// describe_difference - "" if equal, else the first attribute that differs, as got=/want=.
std::string describe_difference(const Values& got, const Values& want)
{
    for (const auto& k : known_attrs) {
        const auto i = static_cast<std::size_t>(k.attr);
        if (got[i] != want[i])
            return std::string(k.name) + ": got=\"" + got[i] + "\" want=\"" + want[i] + "\"";
    }
    return {};
}

// naive_split - the expected requests of a well-formed file: split into lines, cut at the
// empty lines, each line at its first '='; last value wins; names as in known_attrs.
std::vector<Values> naive_split(const std::string& text)
{
    std::vector<Values> out;
    std::map<std::string, std::string> current;
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        const std::string line = text.substr(start, end - start);
        start = end + 1;
        if (line.empty()) {
            Values v;
            for (const auto& k : known_attrs) {
                const auto it = current.find(std::string(k.name));
                if (it != current.end()) v[static_cast<std::size_t>(k.attr)] = it->second;
            }
            out.push_back(v);
            current.clear();
            continue;
        }
        const std::size_t eq = line.find('=');
        current[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return out;
}

// Outcome of running input through a parser: the requests, then how it stopped.
struct Outcome {
    std::vector<Values> requests;
    std::error_code error;
    std::string sample;
};

// drain - call next() until it stops returning requests.
void drain(RequestParser& p, Request& r, Outcome& o)
{
    for (;;) {
        const auto status = p.next(r);
        if (status == RequestParser::Status::request) {
            o.requests.push_back(values_of(r));
            continue;
        }
        if (status == RequestParser::Status::error) {
            o.error = p.error();
            o.sample = std::string(p.sample(1u << 20));
        }
        return;
    }
}

// parse_chunks - feed the chunks one after another, draining after each.
Outcome parse_chunks(const std::vector<std::string_view>& chunks, ParserLimits limits = {})
{
    RequestParser p(limits);
    Request r;
    Outcome o;
    for (const auto chunk : chunks) {
        p.feed(chunk);
        drain(p, r, o);
    }
    return o;
}

Outcome parse_all(std::string_view input, ParserLimits limits = {}) { return parse_chunks({input}, limits); }

// same_outcome - "" if equal, else what differs.
std::string same_outcome(const Outcome& got, const Outcome& want)
{
    if (got.requests.size() != want.requests.size())
        return "requests: got=" + std::to_string(got.requests.size()) +
               " want=" + std::to_string(want.requests.size());
    for (std::size_t i = 0; i < got.requests.size(); ++i) {
        const std::string diff = describe_difference(got.requests[i], want.requests[i]);
        if (!diff.empty()) return "request " + std::to_string(i) + " " + diff;
    }
    if (got.error != want.error) return "error: got=" + got.error.message() + " want=" + want.error.message();
    if (got.sample != want.sample) return "sample: got=\"" + got.sample + "\" want=\"" + want.sample + "\"";
    return {};
}

// check_chunks - feed the chunks one after another and compare what comes out with `want` as
// it comes, without copying requests (the grind tests run this thousands of times); "" if same.
std::string check_chunks(const std::vector<std::string_view>& chunks, const Outcome& want,
                         ParserLimits limits = {})
{
    RequestParser p(limits);
    Request r;
    std::size_t n = 0;
    for (const auto chunk : chunks) {
        p.feed(chunk);
        for (auto status = p.next(r); status != RequestParser::Status::need_more; status = p.next(r)) {
            if (status == RequestParser::Status::error) {
                if (n != want.requests.size())
                    return "requests before error: got=" + std::to_string(n) +
                           " want=" + std::to_string(want.requests.size());
                if (p.error() != want.error)
                    return "error: got=" + p.error().message() +
                           " want=" + (want.error ? want.error.message() : "no error");
                if (p.sample(1u << 20) != want.sample)
                    return "sample: got=\"" + std::string(p.sample(1u << 20)) + "\" want=\"" + want.sample + "\"";
                return {};
            }
            if (n == want.requests.size()) return "got an extra request " + std::to_string(n);
            for (const auto& k : known_attrs) {
                const auto& wanted = want.requests[n][static_cast<std::size_t>(k.attr)];
                if (r[k.attr] != wanted)
                    return "request " + std::to_string(n) + " " + std::string(k.name) + ": got=\"" +
                           r[k.attr] + "\" want=\"" + wanted + "\"";
            }
            ++n;
        }
    }
    if (n != want.requests.size())
        return "requests: got=" + std::to_string(n) + " want=" + std::to_string(want.requests.size());
    if (want.error) return "error: got=no error want=" + want.error.message();
    return {};
}

// one_byte_chunks - the input as one chunk per byte.
std::vector<std::string_view> one_byte_chunks(std::string_view all)
{
    std::vector<std::string_view> bytes;
    for (std::size_t i = 0; i < all.size(); ++i) bytes.push_back(all.substr(i, 1));
    return bytes;
}

std::string value(const Values& v, Attr a) { return v[static_cast<std::size_t>(a)]; }

// A small valid request, for the rule tests.
constexpr std::string_view minimal = "request=smtpd_access_policy\nprotocol_state=RCPT\n\n";

// --- names -----------------------------------------------------------------------------------

TEST(AttrNames, RoundTripEveryAttribute)
{
    for (const auto& k : known_attrs) {
        EXPECT_EQ(attr_name(k.attr), k.name) << "got=" << attr_name(k.attr) << " want=" << k.name;
        const auto got = attr_from_name(k.name);
        ASSERT_TRUE(got.has_value()) << "name=" << k.name << " got=nullopt";
        EXPECT_EQ(*got, k.attr) << "name=" << k.name;
    }
}

TEST(AttrNames, UnknownOrNearMissNamesAreNotFound)
{
    const std::string_view unknown[] = {
        "", "Request", "REQUEST", "request ", " request", "requests", "reques", "sasl_user",
        "client_addr", "ccert_pubkey_fingerprintx", "mail_version", "compatibility_level", "x",
        "a_very_long_attribute_name_longer_than_any_known_one", "size\0"sv, "policy-context",
    };
    for (const auto name : unknown) {
        const auto got = attr_from_name(name);
        EXPECT_FALSE(got.has_value()) << "name=" << name << " got=" << attr_name(got.value_or(Attr::request));
    }
}

TEST(ProtocolState, ParsesEveryStateCaseInsensitively)
{
    struct Case {
        std::string_view value;
        ProtocolState want;
    };
    const Case cases[] = {
        {"CONNECT", ProtocolState::connect},
        {"EHLO", ProtocolState::ehlo},
        {"HELO", ProtocolState::helo},
        {"MAIL", ProtocolState::mail},
        {"RCPT", ProtocolState::rcpt},
        {"rcpt", ProtocolState::rcpt},
        {"Rcpt", ProtocolState::rcpt},
        {"DATA", ProtocolState::data},
        {"END-OF-MESSAGE", ProtocolState::end_of_message},
        {"end-of-message", ProtocolState::end_of_message},
        {"VRFY", ProtocolState::vrfy},
        {"ETRN", ProtocolState::etrn},
        {"", ProtocolState::unknown},
        {"RCPT ", ProtocolState::unknown},
        {"END_OF_MESSAGE", ProtocolState::unknown},
        {"BDAT", ProtocolState::unknown},
        {"unknown", ProtocolState::unknown},
    };
    for (const auto& c : cases) {
        const auto got = parse_protocol_state(c.value);
        EXPECT_EQ(got, c.want) << "value=" << c.value << " got=" << protocol_state_name(got)
                               << " want=" << protocol_state_name(c.want);
    }
}

TEST(ProtocolState, NameRoundTrips)
{
    for (int s = 0; s < static_cast<int>(ProtocolState::unknown); ++s) {
        const auto state = static_cast<ProtocolState>(s);
        EXPECT_EQ(parse_protocol_state(protocol_state_name(state)), state)
            << "name=" << protocol_state_name(state);
    }
    EXPECT_EQ(protocol_state_name(ProtocolState::end_of_message), "END-OF-MESSAGE");
    EXPECT_EQ(parse_protocol_state(protocol_state_name(ProtocolState::unknown)), ProtocolState::unknown);
}

// --- the captured samples --------------------------------------------------------------------

TEST(RequestParser, ParsesEverySampleLikeANaiveSplit)
{
    const auto files = testing::sample_files();
    ASSERT_GE(files.size(), 21u) << "samples missing from " << testing::samples_dir();
    for (const auto& file : files) {
        const std::string text = testing::read_file(file);
        const auto want = naive_split(text);
        const auto got = parse_all(text);
        EXPECT_FALSE(got.error) << file << " got error=" << got.error.message() << " at " << got.sample;
        ASSERT_EQ(got.requests.size(), want.size()) << file;
        ASSERT_EQ(static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')) -
                      static_cast<std::size_t>(std::count(text.begin(), text.end(), '=')),
                  want.size())
            << file << ": expected one empty line per request and one '=' per attribute line";
        for (std::size_t i = 0; i < want.size(); ++i) {
            const std::string diff = describe_difference(got.requests[i], want[i]);
            EXPECT_TRUE(diff.empty()) << file << " request " << i << ": " << diff;
            EXPECT_EQ(value(got.requests[i], Attr::request), "smtpd_access_policy") << file;
        }
    }
}

TEST(RequestParser, SampleSpotChecks)
{
    struct Case {
        std::string_view file;
        std::size_t request;
        Attr attr;
        std::string_view want;
    };
    const Case cases[] = {
        {"postfix-3.7/auth_plain.policy", 0, Attr::sasl_username, "alice@test.local"},
        {"postfix-3.7/auth_plain.policy", 0, Attr::sasl_method, "PLAIN"},
        {"postfix-3.7/auth_plain.policy", 1, Attr::protocol_state, "END-OF-MESSAGE"},
        {"postfix-3.7/tls_client_cert.policy", 0, Attr::ccert_subject,
         "alice+20submission+20client,+20M+C3+BCller+20&+20S+C3+B6hne,+20ticketing+20host+2001"},
        {"postfix-3.7/tls_client_cert.policy", 0, Attr::encryption_protocol, "TLSv1.3"},
        {"postfix-3.7/ipv6_client.policy", 0, Attr::client_address, "::1"},
        {"postfix-3.7/ipv6_client.policy", 0, Attr::client_name, "unknown"},
        {"postfix-3.7/null_sender_unauthenticated.policy", 0, Attr::sender, ""},
        {"postfix-3.7/rcpt_unauthenticated.policy", 0, Attr::sasl_username, ""},
        {"exim-4.96/readsocket_rcpt_and_data.policy", 0, Attr::server_port, "-1"},
        {"exim-4.96/readsocket_rcpt_and_data.policy", 0, Attr::policy_context, "exim"},
        {"exim-4.96/readsocket_rcpt_and_data.policy", 0, Attr::instance,
         "659C6780900F99CE20868D703D4C3F5AF5445EFB"},
    };
    for (const auto& c : cases) {
        const auto got = parse_all(testing::read_file(testing::samples_dir() / c.file));
        ASSERT_FALSE(got.error) << c.file << ": " << got.error.message();
        ASSERT_LT(c.request, got.requests.size()) << c.file;
        EXPECT_EQ(value(got.requests[c.request], c.attr), c.want)
            << c.file << " " << attr_name(c.attr) << ": got=" << value(got.requests[c.request], c.attr)
            << " want=" << c.want;
    }
}

TEST(RequestParser, SampleProtocolStatesAndAuthentication)
{
    RequestParser p;
    Request r;
    p.feed(testing::read_file(testing::samples_dir() / "postfix-3.7/auth_plain.policy"));
    ASSERT_EQ(p.next(r), RequestParser::Status::request);
    EXPECT_EQ(r.protocol_state(), ProtocolState::rcpt);
    EXPECT_TRUE(r.authenticated());
    ASSERT_EQ(p.next(r), RequestParser::Status::request);
    EXPECT_EQ(r.protocol_state(), ProtocolState::end_of_message);
    EXPECT_EQ(p.next(r), RequestParser::Status::need_more);
    EXPECT_TRUE(p.idle());
}

// connections - the byte streams of one sample file as they arrived: Postfix sent a whole file
// over one connection, Exim opened a new connection per request (samples/README.md).
std::vector<std::string> connections(const std::filesystem::path& file, const std::string& text)
{
    if (file.parent_path().filename() != "exim-4.96") return {text};
    std::vector<std::string> out;
    for (std::size_t start = 0; start < text.size();) {
        const std::size_t end = text.find("\n\n", start);
        if (end == std::string::npos) {
            out.push_back(text.substr(start));
            break;
        }
        out.push_back(text.substr(start, end + 2 - start));
        start = end + 2;
    }
    return out;
}

// Beast's parsegrind: any split of a connection's input gives the same requests.
TEST(RequestParser, EverySampleSplitAtEveryOffsetGivesSameRequests)
{
    for (const auto& file : testing::sample_files()) {
        const std::string text = testing::read_file(file);
        const auto streams = connections(file, text);
        ASSERT_GE(streams.size(), 1u) << file;
        for (const std::string_view all : streams) {
            const Outcome want = parse_all(all);
            ASSERT_FALSE(want.error) << file;
            ASSERT_FALSE(want.requests.empty()) << file;
            for (std::size_t cut = 0; cut <= all.size(); ++cut) {
                const std::string diff = check_chunks({all.substr(0, cut), all.substr(cut)}, want);
                ASSERT_TRUE(diff.empty()) << file << " split at " << cut << ": " << diff;
            }
        }
    }
}

TEST(RequestParser, EverySampleFedOneByteAtATimeGivesSameRequests)
{
    for (const auto& file : testing::sample_files()) {
        const std::string text = testing::read_file(file);
        const Outcome want = parse_all(text);
        ASSERT_FALSE(want.error) << file;
        const std::string diff = check_chunks(one_byte_chunks(text), want);
        EXPECT_TRUE(diff.empty()) << file << ": " << diff;
    }
}

TEST(RequestParser, PrepareCommitReadsStraightIntoTheParser)
{
    // Like a session: ask for room for a read, "read" fewer bytes than asked, commit them.
    const std::string text =
        testing::read_file(testing::samples_dir() / "postfix-3.7/multi_recipient_unauthenticated.policy");
    const Outcome want = parse_all(text);
    for (const std::size_t read_size : {1u, 7u, 64u, 500u, 4096u}) {
        RequestParser p;
        Request r;
        Outcome got;
        std::size_t off = 0;
        while (off < text.size()) {
            const auto space = p.prepare(read_size);
            ASSERT_GE(space.size(), read_size);
            const std::size_t n = std::min({read_size, text.size() - off, read_size / 2 + 1});
            std::memcpy(space.data(), text.data() + off, n);
            p.commit(n);
            off += n;
            drain(p, r, got);
        }
        const std::string diff = same_outcome(got, want);
        EXPECT_TRUE(diff.empty()) << "read_size=" << read_size << ": " << diff;
        EXPECT_TRUE(p.idle());
    }
}

TEST(RequestParser, ManyPipelinedRequestsThroughSmallReads)
{
    // Many requests buffered at once, read in sizes that never line up with them, exercise
    // moving the unconsumed bytes to the front of the buffer.
    std::string text;
    constexpr int count = 500;
    for (int i = 0; i < count; ++i)
        text += "request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=r" + std::to_string(i) +
                "@example.com\nsize=" + std::string(static_cast<std::size_t>(i % 97), '7') + "\n\n";
    RequestParser p;
    Request r;
    Outcome got;
    std::size_t off = 0;
    for (std::size_t step = 1; off < text.size(); step = step % 613 + 37) {
        const std::size_t n = std::min(step, text.size() - off);
        const auto space = p.prepare(n);
        std::memcpy(space.data(), text.data() + off, n);
        p.commit(n);
        off += n;
        // Drain only every other read, so that several requests pile up in the buffer.
        if (step % 2 == 0 || off == text.size()) drain(p, r, got);
    }
    ASSERT_FALSE(got.error) << got.error.message();
    ASSERT_EQ(got.requests.size(), static_cast<std::size_t>(count));
    for (int i = 0; i < count; ++i) {
        const auto& v = got.requests[static_cast<std::size_t>(i)];
        EXPECT_EQ(value(v, Attr::recipient), "r" + std::to_string(i) + "@example.com") << "request " << i;
        EXPECT_EQ(value(v, Attr::size), std::string(static_cast<std::size_t>(i % 97), '7')) << "request " << i;
    }
    EXPECT_EQ(p.buffered(), 0u);
}

// --- wire rules ------------------------------------------------------------------------------

TEST(RequestParser, WireRules)
{
    struct Case {
        std::string_view name;
        std::string_view input;
        std::size_t requests;
        Attr attr;          // checked in the last request
        std::string_view want;
    };
    const Case cases[] = {
        {"crlf dropped", "request=smtpd_access_policy\r\nsender=a@b\r\n\r\n", 1, Attr::sender, "a@b"},
        {"crlf request type", "request=smtpd_access_policy\r\n\r\n", 1, Attr::request, "smtpd_access_policy"},
        {"lone cr kept inside", "request=smtpd_access_policy\nsender=a\rb\n\n", 1, Attr::sender, "a\rb"},
        {"only last cr dropped", "request=smtpd_access_policy\nsender=a\r\r\n\n", 1, Attr::sender, "a\r"},
        {"equals in value", "request=smtpd_access_policy\nsender=a=b==\n\n", 1, Attr::sender, "a=b=="},
        {"value is only equals", "request=smtpd_access_policy\nsender==\n\n", 1, Attr::sender, "="},
        {"empty value", "request=smtpd_access_policy\nsender=\n\n", 1, Attr::sender, ""},
        {"repeated keeps last", "request=smtpd_access_policy\nsender=a\nsender=b\n\n", 1, Attr::sender, "b"},
        {"repeated empty last", "request=smtpd_access_policy\nsender=a\nsender=\n\n", 1, Attr::sender, ""},
        {"unknown ignored", "request=smtpd_access_policy\nmail_version=3.8.1\nx=y\nsender=s\n\n", 1,
         Attr::sender, "s"},
        {"unknown like known", "request=smtpd_access_policy\nSender=X\nsender =Y\n\n", 1, Attr::sender, ""},
        {"spaces kept", "request=smtpd_access_policy\nsender= a b \n\n", 1, Attr::sender, " a b "},
        {"8-bit kept", "request=smtpd_access_policy\nsender=M\xC3\xBCller\n\n", 1, Attr::sender, "M\xC3\xBCller"},
        {"type not first", "sender=s\nrequest=smtpd_access_policy\n\n", 1, Attr::sender, "s"},
        {"several requests", "request=smtpd_access_policy\nsender=1\n\nrequest=smtpd_access_policy\nsender=2\n\n"
                             "request=smtpd_access_policy\nsender=3\n\n", 3, Attr::sender, "3"},
        {"values do not leak", "request=smtpd_access_policy\nsender=1\nsize=9\n\nrequest=smtpd_access_policy\n"
                               "sender=2\n\n", 2, Attr::size, ""},
        {"partial next request", "request=smtpd_access_policy\nsender=1\n\nrequest=smtpd_acc", 1, Attr::sender, "1"},
    };
    for (const auto& c : cases) {
        const auto got = parse_all(c.input);
        EXPECT_FALSE(got.error) << c.name << ": got error=" << got.error.message();
        ASSERT_EQ(got.requests.size(), c.requests) << c.name;
        EXPECT_EQ(value(got.requests.back(), c.attr), c.want)
            << c.name << ": got=" << value(got.requests.back(), c.attr) << " want=" << c.want;
    }
}

TEST(RequestParser, ClearsRequestBeforeFillingIt)
{
    RequestParser p;
    Request r;
    r.set(Attr::sasl_username, "stale");
    p.feed(minimal);
    ASSERT_EQ(p.next(r), RequestParser::Status::request);
    EXPECT_EQ(r[Attr::sasl_username], "") << "got=" << r[Attr::sasl_username];
    EXPECT_EQ(r[Attr::protocol_state], "RCPT");
}

TEST(RequestParser, LeavesRequestAloneWhenIncomplete)
{
    RequestParser p;
    Request r;
    r.set(Attr::sender, "kept");
    p.feed("request=smtpd_access_policy\nsender=new\n");
    ASSERT_EQ(p.next(r), RequestParser::Status::need_more);
    EXPECT_EQ(r[Attr::sender], "kept");
}

TEST(RequestParser, IdleOnlyBetweenRequests)
{
    RequestParser p;
    Request r;
    EXPECT_TRUE(p.idle()) << "fresh parser";
    p.feed("r");
    EXPECT_FALSE(p.idle()) << "one byte of a request buffered";
    p.feed(std::string(minimal.substr(1)) + "req");
    ASSERT_EQ(p.next(r), RequestParser::Status::request);
    EXPECT_FALSE(p.idle()) << "start of the next request buffered";
    EXPECT_EQ(p.buffered(), 3u);
    p.feed(minimal.substr(3));
    ASSERT_EQ(p.next(r), RequestParser::Status::request);
    EXPECT_TRUE(p.idle()) << "everything consumed";
    EXPECT_EQ(p.buffered(), 0u);
    EXPECT_EQ(p.next(r), RequestParser::Status::need_more);
    EXPECT_TRUE(p.idle());
}

// --- errors ----------------------------------------------------------------------------------

struct ErrorCase {
    std::string_view name;
    std::string input;
    ParserLimits limits;
    std::size_t requests;        // complete requests before the error
    std::optional<ParseError> want;
    std::string_view want_sample; // prefix of sample(); "" to skip
};

std::string line_of(std::string_view name, std::size_t total)
{
    return std::string(name) + "=" + std::string(total - name.size() - 1, 'v');
}

ParserLimits line_limit(std::size_t n) { return {.max_line_bytes = n}; }
ParserLimits request_limit(std::size_t n) { return {.max_request_bytes = n}; }
ParserLimits attribute_limit(std::size_t n) { return {.max_attributes = n}; }

std::vector<ErrorCase> error_cases()
{
    const std::string head = "request=smtpd_access_policy\n";
    const std::string m(minimal);
    std::string attrs3 = head + "a=1\nb=2\n";         // 3 attribute lines
    std::string big = m + head + "sender=" + std::string(100, 's') + "\n\n";
    return {
        // line_too_long: 40 bytes of content fit a limit of 40, 41 do not; "\r\n" is not content.
        {"line at limit", head + line_of("sender", 40) + "\n\n", line_limit(40), 1, {}, ""},
        {"line at limit crlf", head + line_of("sender", 40) + "\r\n\n", line_limit(40), 1, {}, ""},
        {"line over limit", head + line_of("sender", 41) + "\n\n", line_limit(40), 0,
         ParseError::line_too_long, "sender=vvv"},
        {"line over limit crlf", head + line_of("sender", 41) + "\r\n\n", line_limit(40), 0,
         ParseError::line_too_long, "sender=vvv"},
        {"line over limit by cr", head + line_of("sender", 40) + "\r\r\n\n", line_limit(40), 0,
         ParseError::line_too_long, "sender=vvv"},
        {"line over limit, no newline yet", head + line_of("sender", 41), line_limit(40), 0,
         ParseError::line_too_long, "sender=vvv"},
        {"line at limit, no newline yet", head + line_of("sender", 40), line_limit(40), 0, {}, ""},
        {"line at limit then cr, no newline yet", head + line_of("sender", 40) + "\r", line_limit(40), 0, {}, ""},
        {"line at limit then cr and more", head + line_of("sender", 40) + "\rx", line_limit(40), 0,
         ParseError::line_too_long, "sender=vvv"},
        {"huge line without newline", head + std::string(1 << 20, 'x'), {}, 0, ParseError::line_too_long, "xxx"},
        {"line too long in second request", m + line_of("request", 41) + "\n", line_limit(40), 1,
         ParseError::line_too_long, "request=vv"},
        // request_too_large: all bytes count, the final empty line's "\n" too.
        {"request at limit", m + m, request_limit(m.size()), 2, {}, ""},
        {"request over limit", m + m, request_limit(m.size() - 1), 0, ParseError::request_too_large, ""},
        {"request over limit on last newline", m, request_limit(m.size() - 1), 0,
         ParseError::request_too_large, "\n"},
        {"request at limit minus last newline", m.substr(0, m.size() - 1), request_limit(m.size() - 1), 0, {}, ""},
        {"request over limit, never ends", head + std::string(200, 'x'), request_limit(64), 0,
         ParseError::request_too_large, "xxx"},
        {"second request over limit", big, request_limit(m.size() + 20), 1, ParseError::request_too_large,
         "sender=sss"},
        {"limit is per request", m + m + m + m, request_limit(m.size()), 4, {}, ""},
        // too_many_attributes: unknown names count.
        {"attributes at limit", attrs3 + "\n", attribute_limit(3), 1, {}, ""},
        {"attributes over limit", attrs3 + "c=3\n\n", attribute_limit(3), 0, ParseError::too_many_attributes,
         "c=3"},
        {"attribute limit is per request", attrs3 + "\n" + attrs3 + "\n", attribute_limit(3), 2, {}, ""},
        {"repeated attributes count", head + "sender=1\nsender=2\nsender=3\n\n", attribute_limit(3), 0,
         ParseError::too_many_attributes, "sender=3"},
        // line syntax
        {"missing equals", head + "sender\n\n", {}, 0, ParseError::missing_equals, "sender\n"},
        {"missing equals crlf", head + "sender\r\n\r\n", {}, 0, ParseError::missing_equals, "sender\r\n"},
        {"missing equals, lone cr", head + "\r\r\n\n", {}, 0, ParseError::missing_equals, "\r\r\n"},
        {"empty name", head + "=value\n\n", {}, 0, ParseError::empty_name, "=value"},
        {"only equals", head + "=\n\n", {}, 0, ParseError::empty_name, "=\n"},
        {"missing equals after a request", m + "garbage\n", {}, 1, ParseError::missing_equals, "garbage"},
        {"http request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", {}, 0, ParseError::missing_equals, "GET / HTTP"},
        // NUL anywhere
        {"nul in value", head + "sender=a\0b\n\n"s, {}, 0, ParseError::nul_byte, "sender=a\0"sv},
        {"nul in name", head + "sen\0der=a\n\n"s, {}, 0, ParseError::nul_byte, "sen\0"sv},
        {"nul alone", head + "\0\n\n"s, {}, 0, ParseError::nul_byte, "\0"sv},
        {"nul before newline arrives", head + "sender=\0"s, {}, 0, ParseError::nul_byte, "sender=\0"sv},
        {"nul before an overlong line is", head + "sender=\0"s + std::string(100, 'x'), line_limit(40), 0,
         ParseError::nul_byte, "sender=\0"sv},
        {"overlong line before a nul", head + std::string(100, 'x') + '\0', line_limit(40), 0,
         ParseError::line_too_long, "xxx"},
        {"nul in a bad line", head + "bad\0\n"s, {}, 0, ParseError::nul_byte, "bad\0"sv},
        // A NUL read together with good requests before it: those are answered first.
        {"nul in the second request", m + head + "sender=a\0b\n\n"s, {}, 1, ParseError::nul_byte, "sender=a\0"sv},
        {"nul in the third request", m + m + "sender=\0\n"s + m, {}, 2, ParseError::nul_byte, "sender=\0"sv},
        {"nul after a line too long", m + head + std::string(50, 'x') + "\0\n"s, line_limit(40), 1,
         ParseError::line_too_long, "xxx"},
        // request type
        {"no request attribute", "sender=a\n\n", {}, 0, ParseError::missing_request_type, "sender=a"},
        {"lone empty line", "\n", {}, 0, ParseError::missing_request_type, "\n"},
        {"lone crlf", "\r\n", {}, 0, ParseError::missing_request_type, "\r\n"},
        {"empty line after a request", m + "\n", {}, 1, ParseError::missing_request_type, "\n"},
        {"unknown request type", "sender=a\nrequest=junk\n\n", {}, 0, ParseError::unknown_request_type,
         "request=junk"},
        {"empty request type", "request=\n\n", {}, 0, ParseError::unknown_request_type, "request=\n"},
        {"request type case matters", "request=SMTPD_ACCESS_POLICY\n\n", {}, 0,
         ParseError::unknown_request_type, "request=SMTPD"},
        {"request type exact", "request=smtpd_access_policy \n\n", {}, 0, ParseError::unknown_request_type,
         "request=smtpd"},
        {"last request type counts", "request=junk\nrequest=smtpd_access_policy\n\n", {}, 1, {}, ""},
    };
}

TEST(RequestParser, ErrorsAtAndJustPastEachLimit)
{
    for (const auto& c : error_cases()) {
        const auto got = parse_all(c.input, c.limits);
        EXPECT_EQ(got.requests.size(), c.requests) << c.name;
        if (!c.want) {
            EXPECT_FALSE(got.error) << c.name << ": got=" << got.error.message() << " want=no error";
            continue;
        }
        EXPECT_EQ(got.error, make_error_code(*c.want))
            << c.name << ": got=" << (got.error ? got.error.message() : "no error")
            << " want=" << make_error_code(*c.want).message();
        EXPECT_TRUE(got.sample.starts_with(c.want_sample))
            << c.name << ": sample got=\"" << got.sample << "\" want prefix=\"" << c.want_sample << "\"";
    }
}

// The reported error and sample must not depend on how the input arrived.
TEST(RequestParser, ErrorsDoNotDependOnHowInputIsSplit)
{
    for (const auto& c : error_cases()) {
        if (c.input.size() > 4096) continue; // the 1 MiB case is covered by the test above
        const std::string_view all = c.input;
        const Outcome want = parse_all(all, c.limits);
        for (std::size_t cut = 0; cut <= all.size(); ++cut) {
            const std::string diff = check_chunks({all.substr(0, cut), all.substr(cut)}, want, c.limits);
            ASSERT_TRUE(diff.empty()) << c.name << " split at " << cut << ": " << diff;
        }
        const std::string diff = check_chunks(one_byte_chunks(all), want, c.limits);
        EXPECT_TRUE(diff.empty()) << c.name << " byte at a time: " << diff;
    }
}

TEST(RequestParser, DetectsOverlongLineBeforeItsNewline)
{
    RequestParser p(line_limit(40));
    Request r;
    p.feed("request=smtpd_access_policy\n");
    p.feed(std::string(40, 'x'));
    EXPECT_EQ(p.next(r), RequestParser::Status::need_more) << "40 bytes fit";
    p.feed("x");
    EXPECT_EQ(p.next(r), RequestParser::Status::error) << "41st byte, no newline";
    EXPECT_EQ(p.error(), ParseError::line_too_long);
}

TEST(RequestParser, DetectsOverlargeRequestBeforeItEnds)
{
    RequestParser p(request_limit(64));
    Request r;
    const std::string text = "request=smtpd_access_policy\n" + std::string(36, 'x');
    ASSERT_EQ(text.size(), 64u);
    p.feed(text);
    EXPECT_EQ(p.next(r), RequestParser::Status::need_more) << "64 bytes fit";
    p.feed("=");
    EXPECT_EQ(p.next(r), RequestParser::Status::error) << "65th byte";
    EXPECT_EQ(p.error(), ParseError::request_too_large);
}

TEST(RequestParser, ErrorsAreSticky)
{
    RequestParser p;
    Request r;
    p.feed("sender\n");
    ASSERT_EQ(p.next(r), RequestParser::Status::error);
    const auto first = p.error();
    const std::string sample(p.sample());
    p.feed(minimal);
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(p.next(r), RequestParser::Status::error) << "call " << i;
        EXPECT_EQ(p.error(), first);
    }
    const auto space = p.prepare(16);
    std::memcpy(space.data(), "request=x\n\n\n\n\n\n", 16);
    p.commit(16);
    EXPECT_EQ(p.next(r), RequestParser::Status::error);
    EXPECT_EQ(p.error(), ParseError::missing_equals);
    EXPECT_EQ(p.sample(), sample) << "sample still shows the offending line";
    EXPECT_FALSE(p.idle());
}

TEST(RequestParser, SampleIsBoundedAndStartsAtOffendingLine)
{
    RequestParser p;
    Request r;
    p.feed(std::string(minimal) + "request=smtpd_access_policy\nbad line without equals\n\n");
    ASSERT_EQ(p.next(r), RequestParser::Status::request);
    ASSERT_EQ(p.next(r), RequestParser::Status::error);
    EXPECT_EQ(p.sample(8), "bad line");
    EXPECT_EQ(p.sample(), "bad line without equals\n") << "ends with the line that revealed the error";
    EXPECT_EQ(p.sample(0), "");
}

TEST(RequestParser, SampleWithoutErrorIsBufferedInput)
{
    RequestParser p;
    Request r;
    p.feed(std::string(minimal) + "request=smtpd");
    ASSERT_EQ(p.next(r), RequestParser::Status::request);
    ASSERT_EQ(p.next(r), RequestParser::Status::need_more);
    EXPECT_EQ(p.sample(), "request=smtpd");
    EXPECT_EQ(p.sample(3), "req");
}

TEST(ParseError, CategoryAndMessages)
{
    EXPECT_STREQ(parse_error_category().name(), "relayguard.request");
    struct Case {
        ParseError e;
        std::string_view want;
    };
    const Case cases[] = {
        {ParseError::line_too_long, "line too long"},
        {ParseError::request_too_large, "request too large"},
        {ParseError::too_many_attributes, "too many attributes"},
        {ParseError::missing_equals, "line without '='"},
        {ParseError::empty_name, "empty attribute name"},
        {ParseError::nul_byte, "NUL byte in input"},
        {ParseError::missing_request_type, "request without request type"},
        {ParseError::unknown_request_type, "unknown request type"},
    };
    for (const auto& c : cases) {
        const std::error_code ec = c.e; // implicit: ParseError is an error code enum
        EXPECT_EQ(&ec.category(), &parse_error_category());
        EXPECT_EQ(ec.value(), static_cast<int>(c.e));
        EXPECT_EQ(ec.message(), c.want) << "got=" << ec.message() << " want=" << c.want;
        EXPECT_TRUE(ec) << "a ParseError is never success";
    }
}

} // namespace
} // namespace relayguard

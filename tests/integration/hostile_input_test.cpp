// SPDX-License-Identifier: MIT
// hostile_input_test.cpp - the real relayguard binary against bad requests and broken clients
// over loopback TCP: each bad request on its own connection gets its documented reaction (an
// answer, or a log line with a sanitized sample and a close without reply), and a valid request on
// a new connection is answered right after each; slowloris, idle, half-close, RST, a client that
// never reads (daemon RSS bounded), more clients than max_connections. Every wait is bounded.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/core.h>
#include <gtest/gtest.h>

#include <relayguard/request_parser.hpp>

#include "testing/daemon_process.hpp"
#include "testing/test_support.hpp"

namespace {

namespace fs = std::filesystem;
using relayguard::testing::count_of;
using relayguard::testing::DaemonProcess;
using relayguard::testing::remaining_ms;
using relayguard::testing::SteadyClock;
using relayguard::testing::TempDir;
using relayguard::testing::write_file;
using std::chrono::milliseconds;
using namespace std::chrono_literals;
using namespace std::string_literals;

// The documented protocol limits (README "Bounded input"); the daemons here run with them.
constexpr std::size_t max_line = relayguard::default_max_line_bytes;
constexpr std::size_t max_request = relayguard::default_max_request_bytes;
constexpr std::size_t max_attributes = relayguard::default_max_attributes;

// How long one read or one log line may take before the test fails instead of hanging.
constexpr milliseconds step_limit{10000};
// Replies to a valid request come well within this on a loaded 2-core machine.
constexpr milliseconds reply_limit{2000};

constexpr std::string_view relay_reply = "554 5.7.1 hostile test: relaying denied";
constexpr std::string_view auth_reply = "530 5.7.0 Authentication required";
const std::string dunno = "action=DUNNO\n\n";

std::string action(std::string_view text) { return fmt::format("action={}\n\n", text); }

// daemon_config - one TCP listener on a free port; test.local is local; 192.0.2.0/24 and
// 2001:db8::/32 are exempt; a bytes limit so that `size` is really read; `server_extra` goes
// into [server].
std::string daemon_config(std::string_view server_extra = "")
{
    return fmt::format(R"([server]
listen = ["inet:127.0.0.1:0"]
threads = 2
shutdown_timeout = "1s"
{}

[log]
level = "info"

[domains]
local = ["test.local"]

[checks.exempt]
networks = ["192.0.2.0/24", "2001:db8::/32"]

[checks.auth_required]
ports = [587]
reply = "{}"

[checks.relay]
reply = "{}"

[rate_limits]
hooked_at = ["RCPT", "END-OF-MESSAGE"]

[[limit]]
name = "eom_bytes"
key = "global"
unit = "bytes"
rates = "1000000/1h"
)",
                       server_extra, auth_reply, relay_reply);
}

// A Postfix 3.7-like request; fields replaced by name. Unauthenticated, untrusted client,
// foreign sender: to test.local it passes (DUNNO), elsewhere the relay check refuses.
struct Fields {
    std::string state = "RCPT";
    std::string client = "198.51.100.7";
    std::string sender = "x@example.org";
    std::string recipient = "bob@test.local";
    std::string size = "0";
    std::string recipient_count = "0";
    std::string server_port = "25";
};

std::string request(const Fields& f, std::string_view eol = "\n")
{
    const std::vector<std::pair<std::string_view, std::string_view>> lines = {
        {"request", "smtpd_access_policy"}, {"protocol_state", f.state}, {"protocol_name", "ESMTP"},
        {"client_address", f.client},       {"client_name", "unknown"},  {"server_port", f.server_port},
        {"helo_name", "client.example.org"}, {"sender", f.sender},       {"recipient", f.recipient},
        {"recipient_count", f.recipient_count}, {"queue_id", ""},        {"instance", "5521.6b0a03a5.a0244.0"},
        {"size", f.size},                   {"sasl_username", ""},
    };
    std::string out;
    for (const auto& [name, value] : lines) out += fmt::format("{}={}{}", name, value, eol);
    out += eol;
    return out;
}

const std::string local_request = request({});
const std::string foreign_request = request({.recipient = "victim@example.net"});

// padded - local_request grown by "x_pad=ppp..." lines (unknown, ignored; each at most
// max_line bytes) to exactly `total` bytes, the final empty line included.
std::string padded(std::size_t total)
{
    constexpr std::size_t shortest = 7; // "x_pad=\n"
    std::string body = local_request.substr(0, local_request.size() - 1); // without the empty line
    std::size_t room = total - body.size() - 1;                         // for pad lines, "\n" included
    while (room > 0) {
        std::size_t take = std::min(room, max_line + 1);
        if (room - take > 0 && room - take < shortest) take -= shortest; // leave room for one more line
        body += "x_pad=" + std::string(take - shortest, 'p') + "\n";
        room -= take;
    }
    body += "\n";
    return body;
}

// with_attributes - a valid local request with exactly `n` attribute lines.
std::string with_attributes(std::size_t n)
{
    std::string out = local_request.substr(0, local_request.size() - 1);
    const std::size_t have = static_cast<std::size_t>(std::count(out.begin(), out.end(), '\n'));
    for (std::size_t i = have; i < n; ++i) out += fmt::format("a{}=b\n", i);
    out += "\n";
    return out;
}

// ---- a raw TCP client: what PolicyClient does not do (RST, no reading, non-blocking sends) ----

struct Received {
    std::string data;
    bool closed = false; // EOF or reset
};

class RawClient {
public:
    explicit RawClient(std::uint16_t port)
    {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
            ::close(fd_);
            fd_ = -1;
        }
    }
    ~RawClient() { close(); }
    RawClient(const RawClient&) = delete;
    RawClient& operator=(const RawClient&) = delete;

    bool ok() const noexcept { return fd_ >= 0; }

    void close()
    {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

    // send_all - everything, blocking; false if the peer closed first (expected for input it
    // refuses while we still write).
    bool send_all(std::string_view bytes)
    {
        while (!bytes.empty()) {
            const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return false;
            bytes.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }

    // send_some - what the kernel takes now without blocking; -1 on an error (peer gone).
    ssize_t send_some(std::string_view bytes)
    {
        const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
        return n;
    }

    void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

    // reset - close with SO_LINGER 0: the kernel sends RST instead of FIN.
    void reset()
    {
        const linger l{1, 0};
        ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        close();
    }

    // read_until_closed - everything until EOF/reset or the deadline.
    Received read_until_closed(milliseconds limit = step_limit) { return read_while([](const std::string&) { return true; }, limit); }

    // read_replies - until `count` replies ("\n\n") arrived, EOF, or the deadline.
    Received read_replies(std::size_t count, milliseconds limit = reply_limit)
    {
        return read_while([count](const std::string& d) { return count_of(d, "\n\n") < count; }, limit);
    }

    // readable_within - whether a byte or EOF arrives within `wait`; reads nothing.
    bool readable_within(milliseconds wait)
    {
        pollfd p{fd_, POLLIN, 0};
        return ::poll(&p, 1, static_cast<int>(wait.count())) > 0;
    }

private:
    template <class More>
    Received read_while(More more, milliseconds limit)
    {
        Received got;
        const auto deadline = SteadyClock::now() + limit;
        while (more(got.data) && !got.closed) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, remaining_ms(deadline)) <= 0) break;
            char buf[4096];
            const ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0)
                got.data.append(buf, static_cast<std::size_t>(n));
            else if (n == 0 || (errno != EAGAIN && errno != EINTR))
                got.closed = true;
        }
        return got;
    }

    int fd_ = -1;
};

// ---- the daemon ----

// Daemon - the real binary with daemon_config(extra), started, and its TCP port.
class Daemon {
public:
    explicit Daemon(std::string_view server_extra = "")
    {
        write_file(dir_ / "relayguard.toml", daemon_config(server_extra));
        process_.emplace(dir_ / "relayguard.toml", dir_.path());
        started_ = process_->wait_started();
        // "... started: 2 threads, listening on inet:127.0.0.1:PORT"
        const std::string log = process_->log();
        const std::string marker = "listening on inet:127.0.0.1:";
        if (const auto at = log.find(marker); started_ && at != std::string::npos)
            port_ = static_cast<std::uint16_t>(std::stoi(log.substr(at + marker.size())));
    }

    bool ready() const noexcept { return started_ && port_ != 0; }
    std::uint16_t port() const noexcept { return port_; }
    DaemonProcess& process() { return *process_; }
    std::string log() const { return process_->log(); }

    // log_count - lines (occurrences) of `needle` in the log so far.
    std::size_t log_count(std::string_view needle) const { return count_of(log(), needle); }

    // vm_rss_kib - the daemon's resident set (VmRSS of /proc/PID/status), in KiB; -1 unknown.
    long vm_rss_kib() const
    {
        const std::string status = relayguard::testing::slurp(fmt::format("/proc/{}/status", process_->pid()));
        const auto at = status.find("VmRSS:");
        if (at == std::string::npos) return -1;
        return std::strtol(status.c_str() + at + 6, nullptr, 10);
    }

    // valid_request_answered - a new connection gets the right answer to a valid request.
    ::testing::AssertionResult valid_request_answered()
    {
        RawClient c(port_);
        if (!c.ok()) return ::testing::AssertionFailure() << "cannot connect";
        if (!c.send_all(foreign_request)) return ::testing::AssertionFailure() << "send failed";
        const Received got = c.read_replies(1);
        if (got.data != action(relay_reply))
            return ::testing::AssertionFailure() << "valid request after it: got=\"" << got.data
                                                 << "\" want=\"" << action(relay_reply) << "\"";
        return ::testing::AssertionSuccess();
    }

private:
    TempDir dir_;
    std::optional<DaemonProcess> process_;
    bool started_ = false;
    std::uint16_t port_ = 0;
};

// ---- 1. the table of bad (and odd but valid) requests ----

struct Case {
    std::string name;
    std::string bytes;
    // Answered: the exact replies. Refused: empty, and the log shows `log` (reason and
    // sanitized sample) in a "closing connection from 127.0.0.1:PORT: ..." line.
    std::string want_reply;
    std::string log;
};

std::vector<Case> cases()
{
    std::string attrs_10000 = "request=smtpd_access_policy\n";
    for (int i = 0; i < 10000; ++i) attrs_10000 += fmt::format("a{}=b\n", i);
    attrs_10000 += "\n";
    const std::string over_line = "x_pad=" + std::string(max_line - 6 + 1, 'L');
    const std::string eom = "END-OF-MESSAGE";
    const std::string closed = "";

    return {
        // Parser refusals: README "Bounded input"; request_parser.hpp ParseError.
        {"no '='", "request=smtpd_access_policy\nno equals sign\n\n", closed,
         "line without '=' (sample \"no equals sign\\x0a\")"},
        {"empty name", "request=smtpd_access_policy\n=value\n\n", closed, "empty attribute name (sample \"=value\\x0a\")"},
        {"NUL in a name", "request=smtpd_access_policy\nsen\0der=a@example.org\n\n"s, closed,
         "NUL byte in input (sample \"sen\\x00\")"},
        {"NUL in a value", "request=smtpd_access_policy\nsender=a\0b@example.org\n\n"s, closed,
         "NUL byte in input (sample \"sender=a\\x00\")"},
        {"line of max_line_bytes + 1", "request=smtpd_access_policy\n" + over_line + "\n\n", closed,
         "line too long (sample \"x_pad=LLLL"},
        // Its byte max_request_bytes + 1 is the "\n" of the final empty line: that line is the sample.
        {"request of max_request_bytes + 1", padded(max_request + 1), closed, "request too large (sample \"\\x0a\")"},
        {"max_attributes + 1 lines", with_attributes(max_attributes + 1), closed,
         fmt::format("too many attributes (sample \"a{}=b", max_attributes)},
        {"10000 attributes", attrs_10000, closed, fmt::format("too many attributes (sample \"a{}=b", max_attributes - 1)},
        {"missing request=", "protocol_state=RCPT\nrecipient=bob@test.local\n\n", closed,
         "request without request type (sample \"protocol_state=RCPT\\x0arecipient=bob@test.local\\x0a\\x0a\")"},
        {"wrong request=", "request=junk_policy\nprotocol_state=RCPT\n\n", closed,
         "unknown request type (sample \"request=junk_policy\\x0aprotocol_state=RCPT\\x0a\\x0a\")"},
        {"empty request= value", "request=\nprotocol_state=RCPT\n\n", closed, "unknown request type (sample \"request=\\x0a"},
        // Bare CR is not a line end: the first line runs to the first LF, so request= holds the
        // whole request and is not smtpd_access_policy.
        {"bare CR line ends", "request=smtpd_access_policy\rprotocol_state=RCPT\rrecipient=bob@test.local\r\n\n", closed,
         "unknown request type (sample \"request=smtpd_access_policy\\x0dprotocol_state=RCPT"},

        // Answered. CR LF: one "\r" before "\n" is dropped (hand-typed input).
        {"CRLF line ends", request({}, "\r\n"), dunno, ""},
        {"CRLF line ends, foreign recipient", request({.recipient = "victim@example.net"}, "\r\n"), action(relay_reply), ""},
        // Only one "\r" is dropped: the recipient's domain is "test.local\r", not local.
        {"CR CR LF", "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=198.51.100.7\n"
                     "sender=x@example.org\nrecipient=bob@test.local\r\r\n\n",
         action(relay_reply), ""},
        // LF CR: each "\r" starts the next line: "\rrecipient" is an unknown attribute, and the
        // "\r" line (an empty line once its "\r" is dropped) ends the request early. What is
        // left has no recipient at RCPT: nothing to refuse.
        {"LF CR line ends", "request=smtpd_access_policy\n\rprotocol_state=RCPT\n\rrecipient=victim@example.net\n\r\n",
         dunno, ""},
        {"line of exactly max_line_bytes", local_request.substr(0, local_request.size() - 1) + "x_pad=" +
                                                std::string(max_line - 6, 'p') + "\n\n",
         dunno, ""},
        {"line of max_line_bytes plus CR LF", local_request.substr(0, local_request.size() - 1) + "x_pad=" +
                                                  std::string(max_line - 6, 'p') + "\r\n\n",
         dunno, ""},
        {"request of exactly max_request_bytes", padded(max_request), dunno, ""},
        {"exactly max_attributes lines", with_attributes(max_attributes), dunno, ""},
        // Values are data: answered, and logged sanitized (the refusal line quotes the sender).
        {"non-UTF-8 and control bytes in values",
         request({.sender = "\xff\xfe\x1b[31m\x7f@example.org", .recipient = "victim\x01@example.net"}),
         action(relay_reply), "sender=<\\xff\\xfe\\x1b[31m\\x7f@example.org> recipient=<victim\\x01@example.net>"},
        {"invalid UTF-8 in the recipient's domain", request({.recipient = "bob@test.local\xc3\x28"}), action(relay_reply),
         "recipient=<bob@test.local\\xc3(>"},
        // Numbers: `size` that is not a plain decimal of at most 18 digits does not count (bytes
        // limit not applied); a real one does: 2,000,000 bytes never fit in 1,000,000/1h.
        {"huge size", request({.state = eom, .size = "99999999999999999999999999"}), dunno, ""},
        {"negative size", request({.state = eom, .size = "-1"}), dunno, ""},
        {"size with a sign", request({.state = eom, .size = "+2000000"}), dunno, ""},
        {"size over the bytes limit", request({.state = eom, .size = "2000000"}),
         action("450 4.7.1 Rate limit eom_bytes exceeded, retry in 3600 seconds"), ""},
        {"huge recipient_count", request({.recipient_count = "184467440737095516160"}), dunno, ""},
        {"negative recipient_count", request({.recipient_count = "-5"}), dunno, ""},
        // server_port: only a decimal 0..65535 is a port; 66123 (587 + 65536) must not wrap to 587.
        {"server_port 587", request({.server_port = "587"}), action(auth_reply), ""},
        {"server_port 0587", request({.server_port = "0587"}), action(auth_reply), ""},
        {"server_port 587 + 65536", request({.server_port = "66123"}), dunno, ""},
        {"negative server_port", request({.server_port = "-587"}), dunno, ""},
        {"huge server_port", request({.server_port = "99999999999999999999587"}), dunno, ""},
        // Client addresses: exempt (2001:db8::/32, 192.0.2.0/24) when parsed, so a foreign
        // recipient gets DUNNO; an address that does not parse is nobody's: relay refused.
        {"IPv4-mapped IPv6 in an exempt IPv4 network", request({.client = "::ffff:192.0.2.1", .recipient = "v@example.net"}),
         dunno, ""},
        {"IPv4-mapped IPv6 outside it", request({.client = "::ffff:198.51.100.1", .recipient = "v@example.net"}),
         action(relay_reply), ""},
        {"IPv6 upper case", request({.client = "2001:DB8::1", .recipient = "v@example.net"}), dunno, ""},
        {"IPv6 zero-padded", request({.client = "2001:0db8:0000:0000:0000:0000:0000:0001", .recipient = "v@example.net"}),
         dunno, ""},
        {"IPv6 in brackets", request({.client = "[2001:db8::1]", .recipient = "v@example.net"}), dunno, ""},
        {"IPv6 with a zone id", request({.client = "2001:db8::1%eth0", .recipient = "v@example.net"}), action(relay_reply), ""},
        {"IPv6 with two ::", request({.client = "2001:db8::1::2", .recipient = "v@example.net"}), action(relay_reply), ""},
        {"IPv6 with a group over 16 bits", request({.client = "2001:db8::10000", .recipient = "v@example.net"}),
         action(relay_reply), ""},
        {"IPv4 with a leading zero", request({.client = "192.0.2.01", .recipient = "v@example.net"}), action(relay_reply), ""},
        {"client_address unknown", request({.client = "unknown", .recipient = "v@example.net"}), action(relay_reply), ""},
    };
}

TEST(HostileInput, EveryCaseGetsItsDocumentedReactionAndTheDaemonGoesOn)
{
    Daemon daemon;
    ASSERT_TRUE(daemon.ready()) << daemon.log();
    for (const auto& c : cases()) {
        SCOPED_TRACE(c.name);
        const std::size_t closes_before = daemon.log_count("closing connection from 127.0.0.1:");
        const std::size_t log_before = c.log.empty() ? 0 : daemon.log_count(c.log);
        {
            RawClient client(daemon.port());
            ASSERT_TRUE(client.ok());
            client.send_all(c.bytes); // may fail when the daemon closes first (10000 attributes)
            if (c.want_reply.empty()) {
                const Received got = client.read_until_closed();
                EXPECT_TRUE(got.closed) << "connection still open after a refused request";
                EXPECT_EQ(got.data, "") << "got=\"" << got.data << "\" want=no reply";
            } else {
                const Received got = client.read_replies(count_of(c.want_reply, "\n\n"));
                EXPECT_EQ(got.data, c.want_reply) << "got=\"" << got.data << "\" want=\"" << c.want_reply << "\"";
                EXPECT_FALSE(got.closed) << "an answered connection stays open for the next request";
            }
        }
        if (!c.log.empty()) {
            EXPECT_TRUE(daemon.process().wait_for_log(c.log, log_before + 1))
                << "want a log line with: " << c.log << "\nlog tail: " << daemon.log().substr(daemon.log().size() > 2000 ? daemon.log().size() - 2000 : 0);
        }
        if (c.want_reply.empty()) {
            EXPECT_TRUE(daemon.process().wait_for_log("closing connection from 127.0.0.1:", closes_before + 1));
        }
        EXPECT_TRUE(daemon.valid_request_answered());
    }
    // Log lines are sanitized: no raw control or non-ASCII byte of the inputs reaches the log.
    const std::string log = daemon.log();
    for (const char bad : {'\0', '\x01', '\x1b', '\x7f', '\r', '\xff', '\xc3'})
        EXPECT_EQ(log.find(bad), std::string::npos) << "raw byte 0x" << std::hex << (static_cast<unsigned>(bad) & 0xff)
                                                    << " in the log";
    EXPECT_TRUE(relayguard::testing::process_running(daemon.process().pid()));
}

// ---- 2. broken clients ----

TEST(BrokenClients, SlowlorisIsClosedAtRequestTimeoutAndOthersAreServedMeanwhile)
{
    constexpr milliseconds request_timeout{1000};
    constexpr milliseconds byte_gap{100};
    Daemon daemon(R"(request_timeout = "1s")");
    ASSERT_TRUE(daemon.ready()) << daemon.log();

    RawClient slow(daemon.port());
    ASSERT_TRUE(slow.ok());
    const auto start = SteadyClock::now();
    bool closed = false;
    std::size_t sent = 0;
    // One byte per 100 ms: the request (some 300 bytes) would take half a minute.
    while (!closed && sent < local_request.size() && SteadyClock::now() - start < step_limit) {
        if (slow.send_some(local_request.substr(sent, 1)) == 1) ++sent;
        if (slow.readable_within(byte_gap)) {
            const Received got = slow.read_until_closed(byte_gap);
            EXPECT_EQ(got.data, "") << "the slow client got a reply";
            closed = got.closed;
        }
        // Meanwhile, everyone else is served promptly.
        if (sent % 3 == 0 && !closed) {
            EXPECT_TRUE(daemon.valid_request_answered()) << "after " << sent << " slow bytes";
        }
    }
    const auto elapsed = SteadyClock::now() - start;
    EXPECT_TRUE(closed);
    EXPECT_GE(elapsed, request_timeout - 100ms);
    EXPECT_LT(elapsed, request_timeout + 1500ms) << "got="
                                                  << std::chrono::duration_cast<milliseconds>(elapsed).count() << "ms";
    EXPECT_TRUE(daemon.process().wait_for_log("request not complete within request_timeout (1000ms)"))
        << daemon.log();
    EXPECT_TRUE(daemon.valid_request_answered());
}

TEST(BrokenClients, IdleConnectionIsClosedAfterIdleTimeoutWithoutReply)
{
    Daemon daemon(R"(idle_timeout = "1s"
request_timeout = "300ms")");
    ASSERT_TRUE(daemon.ready()) << daemon.log();
    RawClient idle(daemon.port());
    ASSERT_TRUE(idle.ok());
    const auto start = SteadyClock::now();
    const Received got = idle.read_until_closed(5s);
    const auto elapsed = SteadyClock::now() - start;
    EXPECT_TRUE(got.closed);
    EXPECT_EQ(got.data, "");
    EXPECT_GE(elapsed, 900ms);
    EXPECT_LT(elapsed, 3s) << "got=" << std::chrono::duration_cast<milliseconds>(elapsed).count() << "ms";
    EXPECT_TRUE(daemon.process().wait_for_log("no request within idle_timeout (1000ms)")) << daemon.log();
    EXPECT_TRUE(daemon.valid_request_answered());
}

TEST(BrokenClients, HalfCloseWithoutRequestIsClosedAtOnceWithoutReply)
{
    Daemon daemon;
    ASSERT_TRUE(daemon.ready()) << daemon.log();
    for (int i = 0; i < 20; ++i) {
        RawClient c(daemon.port());
        ASSERT_TRUE(c.ok());
        const auto start = SteadyClock::now();
        c.shutdown_write();
        const Received got = c.read_until_closed(5s);
        EXPECT_TRUE(got.closed);
        EXPECT_EQ(got.data, "");
        EXPECT_LT(SteadyClock::now() - start, 1s) << "closed at once, not at a timeout";
    }
    // Nothing went wrong, so nothing is logged about it.
    EXPECT_EQ(daemon.log_count("closing connection from"), 0u) << daemon.log();
    EXPECT_TRUE(daemon.valid_request_answered());
}

TEST(BrokenClients, ResetInTheMiddleOfARequestIsLoggedAndHarmless)
{
    Daemon daemon;
    ASSERT_TRUE(daemon.ready()) << daemon.log();
    constexpr int resets = 20;
    for (int i = 0; i < resets; ++i) {
        RawClient c(daemon.port());
        ASSERT_TRUE(c.ok());
        ASSERT_TRUE(c.send_all(local_request.substr(0, local_request.size() / 2)));
        // The daemon must have read the half request before the RST, or it sees no request.
        EXPECT_FALSE(c.readable_within(20ms));
        c.reset();
    }
    // Each is either a reset ("read failed") or, if the RST beat the read, an end of input in
    // the middle of a request: logged, never a crash or a reply.
    const auto logged = [&] {
        return daemon.log_count("read failed: Connection reset by peer") +
               daemon.log_count("end of input in the middle of a request");
    };
    const auto deadline = SteadyClock::now() + step_limit;
    while (logged() < static_cast<std::size_t>(resets) && SteadyClock::now() < deadline)
        daemon.process().wait_for_log("closing connection from", daemon.log_count("closing connection from") + 1, 200ms);
    EXPECT_EQ(logged(), static_cast<std::size_t>(resets)) << daemon.log();
    EXPECT_TRUE(daemon.valid_request_answered());
    EXPECT_TRUE(relayguard::testing::process_running(daemon.process().pid()));
}

// A client that writes requests and never reads its replies: the daemon stops reading once
// its reply write blocks (session.cpp serve(): one read, its replies written, then the next
// read), so what it holds for the client is one read's worth (4 KiB) of requests and their
// replies, not what the client sent; the rest waits in the kernel's socket buffers, which do
// not count in the daemon's RSS. After request_timeout of unread replies it closes.
TEST(BrokenClients, ClientThatNeverReadsCostsBoundedMemoryAndIsClosed)
{
    // What the client may push before the kernel buffers on both sides are full: far more
    // than loopback's buffers (a few MiB); a daemon that kept reading would take all of it.
    constexpr std::size_t send_cap = 256u << 20;
    // RSS growth allowed: per connection the daemon holds a few KiB; the rest is allocator
    // and thread-stack noise of a 2-thread daemon. A daemon buffering the client's input
    // (or its replies) would grow by about what the client sent: tens of MiB at least.
    constexpr long rss_growth_limit_kib = 4 * 1024;
    // No progress for this long: the daemon has stopped reading.
    constexpr milliseconds stall{500};

    Daemon daemon(R"(request_timeout = "3s")");
    ASSERT_TRUE(daemon.ready()) << daemon.log();
    // Warm up: every worker thread has served a few requests (arenas, buffers).
    for (int i = 0; i < 8; ++i) ASSERT_TRUE(daemon.valid_request_answered());
    const long rss_before = daemon.vm_rss_kib();
    ASSERT_GT(rss_before, 0);

    std::string batch;
    for (int i = 0; i < 1000; ++i) batch += i % 2 ? local_request : foreign_request;
    // It takes a while: the daemon answers until its socket's send buffer (autotuned up to
    // tcp_wmem's 4 MiB) is full of replies, some 100k requests (30-40 MiB sent); all of that is
    // kernel memory, and the daemon's RSS stays flat.
    RawClient greedy(daemon.port());
    ASSERT_TRUE(greedy.ok());
    std::size_t sent = 0;
    std::size_t offset = 0;
    long rss_peak = rss_before;
    auto last_progress = SteadyClock::now();
    while (sent < send_cap && SteadyClock::now() - last_progress < stall) {
        const ssize_t n = greedy.send_some(std::string_view(batch).substr(offset));
        ASSERT_GE(n, 0) << "the daemon closed before it stalled (after " << sent << " bytes)";
        if (n > 0) {
            sent += static_cast<std::size_t>(n);
            offset = (offset + static_cast<std::size_t>(n)) % batch.size();
            last_progress = SteadyClock::now();
        } else {
            greedy.readable_within(10ms); // never true: we do not read; a 10 ms pause
        }
        rss_peak = std::max(rss_peak, daemon.vm_rss_kib());
    }
    rss_peak = std::max(rss_peak, daemon.vm_rss_kib());
    EXPECT_LT(sent, send_cap) << "the daemon kept reading from a client that reads nothing";
    EXPECT_GT(sent, 100 * local_request.size()) << "thousands of requests pipelined";
    EXPECT_LT(rss_peak - rss_before, rss_growth_limit_kib)
        << "got=" << rss_peak - rss_before << " KiB growth after " << sent << " bytes sent, want < " << rss_growth_limit_kib;
    // Meanwhile others are served, and after request_timeout the greedy client is dropped.
    EXPECT_TRUE(daemon.valid_request_answered());
    EXPECT_TRUE(daemon.process().wait_for_log("replies not read within request_timeout (3000ms)")) << daemon.log();
    EXPECT_TRUE(daemon.valid_request_answered());
}

TEST(BrokenClients, ConnectionsOverMaxConnectionsWaitAndAreServedOnceOthersClose)
{
    Daemon daemon(R"(max_connections = 2)");
    ASSERT_TRUE(daemon.ready()) << daemon.log();
    std::optional<RawClient> first(std::in_place, daemon.port());
    RawClient second(daemon.port());
    for (RawClient* c : {&*first, &second}) {
        ASSERT_TRUE(c->send_all(local_request));
        ASSERT_EQ(c->read_replies(1).data, dunno);
    }
    // README: beyond max_connections new connections wait in the listen backlog.
    RawClient third(daemon.port());
    ASSERT_TRUE(third.ok()) << "the kernel completes the handshake";
    ASSERT_TRUE(third.send_all(foreign_request));
    EXPECT_FALSE(third.readable_within(500ms)) << "served beyond max_connections";
    EXPECT_TRUE(daemon.process().wait_for_log("max_connections (2) reached")) << daemon.log();
    // The two open ones are still served as usual.
    ASSERT_TRUE(second.send_all(foreign_request));
    EXPECT_EQ(second.read_replies(1).data, action(relay_reply));

    first.reset(); // one closes: the waiting one is taken and answered
    EXPECT_EQ(third.read_replies(1, step_limit).data, action(relay_reply));
}

} // namespace

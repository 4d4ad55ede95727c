// SPDX-License-Identifier: MIT
// server_test.cpp - the Server over real sockets: TCP (IPv4, IPv6), UNIX, timeouts, limits,
// reload and shutdown. Every read has a deadline (poll), so a broken server fails, never hangs.
#include <relayguard/server.hpp>

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <grp.h>
#include <memory>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <pwd.h>
#include <stdexcept>
#include <string>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <relayguard/action.hpp>
#include <relayguard/policy.hpp>
#include <relayguard/request_parser.hpp>

#include "testing/test_support.hpp"

namespace relayguard {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using relayguard::testing::TempDir;

// Longest any single wait in these tests may take before the test fails instead.
constexpr auto io_deadline = 5s;

const std::string relay_reply = "554 5.7.1 Relay access denied";

std::string wire(std::string_view action)
{
    std::string out;
    append_reply(out, action);
    return out;
}

// rcpt_request - a minimal unauthenticated RCPT request; a recipient outside test.local is
// refused by the relay check, one inside passes.
std::string rcpt_request(std::string_view recipient)
{
    std::string r = "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
                    "client_address=192.0.2.10\nclient_name=unknown\nhelo_name=client.test\n"
                    "sender=x@example.org\nrecipient=";
    r += recipient;
    r += "\ninstance=1a2b.3c4d.5e6f.0\nqueue_id=\nsasl_username=\n\n";
    return r;
}

const std::string local_request = rcpt_request("bob@test.local");
const std::string foreign_request = rcpt_request("bob@example.com");

Endpoint inet_endpoint(std::string host)
{
    Endpoint ep;
    ep.kind = Endpoint::Kind::inet;
    ep.host = std::move(host);
    ep.port = 0;
    ep.text = ep.host.find(':') != std::string::npos ? "inet:[" + ep.host + "]:0" : "inet:" + ep.host + ":0";
    return ep;
}

Endpoint unix_endpoint(const std::filesystem::path& path)
{
    Endpoint ep;
    ep.kind = Endpoint::Kind::unix_socket;
    ep.path = path.string();
    ep.text = "unix:" + ep.path;
    return ep;
}

// test_config - every check set up to match the samples: local domain test.local, so an
// unauthenticated client writing to example.com is refused by the relay check.
Config test_config(std::vector<Endpoint> listen)
{
    Config c;
    c.path = "server_test";
    c.server.listen = std::move(listen);
    c.server.threads = 2;
    c.server.idle_timeout = 60s;
    c.server.request_timeout = 10s;
    c.server.shutdown_timeout = 2s;
    c.protocol.max_line_bytes = 256;
    c.protocol.max_request_bytes = 2048;
    c.protocol.max_attributes = 32;
    c.domains.local = {"test.local"};
    c.auth_required.ports = {587};
    c.auth_required.reply = "530 5.7.0 Authentication required";
    c.plaintext_auth.mechanisms = {"PLAIN", "LOGIN"};
    c.plaintext_auth.reply = "538 5.7.11 Encryption required for requested authentication mechanism";
    c.relay.reply = relay_reply;
    c.sender_ownership.reply = "553 5.7.1 Sender address rejected: not owned by authenticated user";
    c.sender_ownership.unauthenticated_reply = "553 5.7.1 Sender address rejected: authentication required";
    c.sender_ownership.null_sender_reply = "553 5.7.1 Sender address rejected: null sender not allowed";
    return c;
}

std::shared_ptr<const Snapshot> snapshot_of(Config config)
{
    auto snap = build_snapshot(std::move(config));
    if (!snap) throw std::runtime_error("build_snapshot: " + snap.error().to_string());
    return *snap;
}

std::unique_ptr<Server> start_server(const Config& config)
{
    auto server = std::make_unique<Server>(snapshot_of(config));
    server->bind();
    server->start();
    return server;
}

// port_of - the port of an "inet:ADDR:PORT" endpoint.
std::uint16_t port_of(const std::string& endpoint)
{
    return static_cast<std::uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1)));
}

// wait_until - poll a condition that other threads make true; false after the deadline.
template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds deadline = io_deadline)
{
    const auto end = Clock::now() + deadline;
    while (!pred()) {
        if (Clock::now() > end) return false;
        ::poll(nullptr, 0, 5);
    }
    return true;
}

// What a client saw: the bytes, and whether the server closed (EOF or reset).
struct Received {
    std::string data;
    bool closed = false;
};

// A blocking client socket whose every read is bounded by poll().
class Client {
public:
    static Client tcp(const std::string& address, std::uint16_t port)
    {
        sockaddr_storage ss{};
        socklen_t len = 0;
        if (address.find(':') != std::string::npos) {
            auto& sin6 = reinterpret_cast<sockaddr_in6&>(ss);
            sin6.sin6_family = AF_INET6;
            sin6.sin6_port = htons(port);
            if (::inet_pton(AF_INET6, address.c_str(), &sin6.sin6_addr) != 1) throw std::runtime_error("bad address");
            len = sizeof sin6;
        } else {
            auto& sin = reinterpret_cast<sockaddr_in&>(ss);
            sin.sin_family = AF_INET;
            sin.sin_port = htons(port);
            if (::inet_pton(AF_INET, address.c_str(), &sin.sin_addr) != 1) throw std::runtime_error("bad address");
            len = sizeof sin;
        }
        Client c(::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (::connect(c.fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0)
            throw std::runtime_error("connect " + address + ": " + std::strerror(errno));
        return c;
    }

    // unconnected_v4 / connect_v4 - a socket made now and connected later (see the EMFILE test).
    static Client unconnected_v4() { return Client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)); }
    void connect_v4(std::uint16_t port)
    {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(port);
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd_, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0)
            throw std::runtime_error(std::string("connect: ") + std::strerror(errno));
    }

    static Client local(const std::filesystem::path& path)
    {
        sockaddr_un sun{};
        sun.sun_family = AF_UNIX;
        std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
        Client c(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (::connect(c.fd_, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0)
            throw std::runtime_error("connect " + path.string() + ": " + std::strerror(errno));
        return c;
    }

    Client(Client&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    ~Client() { close(); }

    void close()
    {
        if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    }

    void send(std::string_view data)
    {
        while (!data.empty()) {
            const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
            if (n < 0) throw std::runtime_error(std::string("send: ") + std::strerror(errno));
            data.remove_prefix(static_cast<std::size_t>(n));
        }
    }

    void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

    // read_replies - read until `count` replies ("\n\n"-terminated) have arrived, the server
    // closed, or the deadline passed.
    Received read_replies(std::size_t count, std::chrono::milliseconds deadline = io_deadline)
    {
        return read_while([count](const std::string& data) { return replies_in(data) < count; }, deadline);
    }

    // read_to_close - everything until the server closes (or the deadline passes).
    Received read_to_close(std::chrono::milliseconds deadline = io_deadline)
    {
        return read_while([](const std::string&) { return true; }, deadline);
    }

    // readable_within - whether any byte (or EOF) arrives within `wait`; reads nothing.
    bool readable_within(std::chrono::milliseconds wait)
    {
        pollfd p{fd_, POLLIN, 0};
        return ::poll(&p, 1, static_cast<int>(wait.count())) > 0;
    }

    // exchange - send `data` while reading, until `count` replies came back: for batches bigger
    // than the socket buffers, where writing everything first would deadlock both sides.
    Received exchange(std::string_view data, std::size_t count, std::chrono::milliseconds deadline = io_deadline)
    {
        Received got;
        const auto end = Clock::now() + deadline;
        while (replies_in(got.data) < count && !got.closed) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
            if (left.count() <= 0) break;
            pollfd p{fd_, static_cast<short>(POLLIN | (data.empty() ? 0 : POLLOUT)), 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
            if (p.revents & POLLOUT) {
                const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n > 0) data.remove_prefix(static_cast<std::size_t>(n));
            }
            if (p.revents & (POLLIN | POLLHUP | POLLERR)) read_once(got);
        }
        return got;
    }

    static std::size_t replies_in(const std::string& data)
    {
        std::size_t count = 0;
        for (std::size_t at = data.find("\n\n"); at != std::string::npos; at = data.find("\n\n", at + 2)) ++count;
        return count;
    }

private:
    explicit Client(int fd) : fd_(fd)
    {
        if (fd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    }

    template <class More>
    Received read_while(More more, std::chrono::milliseconds deadline)
    {
        Received got;
        const auto end = Clock::now() + deadline;
        while (more(got.data) && !got.closed) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
            if (left.count() <= 0) break;
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
            read_once(got);
        }
        return got;
    }

    void read_once(Received& got)
    {
        char buf[65536];
        const ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0)
            got.data.append(buf, static_cast<std::size_t>(n));
        else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            got.closed = true;
    }

    int fd_ = -1;
};

// Captures log lines while alive; install it before a Server starts and let it go after the
// Server is gone (the default logger must not change under running threads).
class LogCapture {
public:
    LogCapture()
        : previous_(spdlog::default_logger()),
          sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(capacity))
    {
        auto logger = std::make_shared<spdlog::logger>("server_test", sink_);
        logger->set_level(spdlog::level::debug);
        spdlog::set_default_logger(logger);
    }
    ~LogCapture() { spdlog::set_default_logger(previous_); }
    LogCapture(const LogCapture&) = delete;
    LogCapture& operator=(const LogCapture&) = delete;

    // count - lines containing every one of `parts`.
    std::size_t count(std::initializer_list<std::string_view> parts) const
    {
        std::size_t n = 0;
        for (const auto& line : sink_->last_formatted()) {
            bool all = true;
            for (auto p : parts) all = all && line.find(p) != std::string::npos;
            n += all ? 1 : 0;
        }
        return n;
    }

    std::string dump() const
    {
        std::string out;
        for (const auto& line : sink_->last_formatted()) out += line;
        return out;
    }

private:
    static constexpr std::size_t capacity = 4096;
    std::shared_ptr<spdlog::logger> previous_;
    std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
};

// expected_replies - what the server must answer to `input`: decide() on each request, in order.
std::pair<std::size_t, std::string> expected_replies(std::string_view input, const Snapshot& snapshot)
{
    RequestParser parser(snapshot.config.protocol);
    parser.feed(input);
    Request request;
    std::size_t count = 0;
    std::string out;
    while (parser.next(request) == RequestParser::Status::request) {
        ++count;
        append_reply(out, decide(request, snapshot).reply);
    }
    EXPECT_TRUE(parser.idle()) << "sample has trailing bytes or a parse error: " << parser.error().message();
    return {count, out};
}

// split_requests - the requests of a sample file, each with its terminating empty line.
std::vector<std::string> split_requests(const std::string& input)
{
    std::vector<std::string> out;
    std::size_t start = 0;
    for (std::size_t at = input.find("\n\n"); at != std::string::npos; at = input.find("\n\n", start)) {
        out.push_back(input.substr(start, at + 2 - start));
        start = at + 2;
    }
    return out;
}

TEST(Server, AnswersEverySampleOverOneConnection)
{
    const auto snapshot = snapshot_of(test_config({inet_endpoint("127.0.0.1")}));
    Server server(snapshot);
    server.bind();
    server.start();
    const auto port = port_of(server.endpoints().at(0));

    const auto files = relayguard::testing::sample_files();
    ASSERT_FALSE(files.empty());
    std::size_t refused = 0;
    for (const auto& file : files) {
        SCOPED_TRACE(file.filename().string());
        const std::string input = relayguard::testing::read_file(file);
        const auto [count, want] = expected_replies(input, *snapshot);
        ASSERT_GT(count, 0u);
        for (const auto& reply : split_requests(want)) refused += reply != wire(action_dunno) ? 1 : 0;

        auto client = Client::tcp("127.0.0.1", port);
        client.send(input);
        const auto got = client.read_replies(count);
        EXPECT_EQ(got.data, want) << "got=" << got.data << " want=" << want;
        EXPECT_FALSE(got.closed);
    }
    // The config refuses some sample requests (relay to example.com): the replies are not all DUNNO.
    EXPECT_GT(refused, 0u);
}

TEST(Server, AnswersEximHalfClosedRequestsThenClosesAtOnce)
{
    TempDir dir;
    const auto snapshot = snapshot_of(test_config({unix_endpoint(dir / "policy")}));
    Server server(snapshot);
    server.bind();
    server.start();

    const std::string input =
        relayguard::testing::read_file(relayguard::testing::samples_dir() / "exim-4.96" / "readsocket_rcpt_and_data.policy");
    const auto requests = split_requests(input);
    ASSERT_FALSE(requests.empty());
    for (const auto& request : requests) {
        // ${readsocket}: connect, write one request, shut down writing, read until EOF.
        auto client = Client::local(dir / "policy");
        const auto start = Clock::now();
        client.send(request);
        client.shutdown_write();
        const auto got = client.read_to_close();
        const auto elapsed = Clock::now() - start;
        EXPECT_EQ(got.data, expected_replies(request, *snapshot).second);
        EXPECT_TRUE(got.closed);
        EXPECT_LT(elapsed, 500ms) << "got=" << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()
                                  << "ms want=well under 1 s";
    }
}

TEST(Server, AnswersSeveralRequestsInOneWriteInOrder)
{
    auto server = start_server(test_config({inet_endpoint("127.0.0.1")}));
    auto client = Client::tcp("127.0.0.1", port_of(server->endpoints().at(0)));

    const std::vector<bool> foreign = {true, false, false, true, false, true};
    std::string batch, want;
    for (bool f : foreign) {
        batch += f ? foreign_request : local_request;
        want += wire(f ? relay_reply : action_dunno);
    }
    client.send(batch);
    const auto got = client.read_replies(foreign.size());
    EXPECT_EQ(got.data, want);
}

TEST(Server, AnswersThousandRequestsOneAtATime)
{
    auto server = start_server(test_config({inet_endpoint("127.0.0.1")}));
    auto client = Client::tcp("127.0.0.1", port_of(server->endpoints().at(0)));
    for (int i = 0; i < 1000; ++i) {
        const bool foreign = i % 3 == 0;
        client.send(foreign ? foreign_request : local_request);
        const auto got = client.read_replies(1);
        ASSERT_EQ(got.data, wire(foreign ? relay_reply : action_dunno)) << "request " << i;
    }
}

TEST(Server, AnswersThousandPipelinedRequests)
{
    TempDir dir;
    auto server = start_server(test_config({unix_endpoint(dir / "policy")}));
    auto client = Client::local(dir / "policy");
    std::string batch, want;
    for (int i = 0; i < 1000; ++i) {
        const bool foreign = i % 7 == 0;
        batch += foreign ? foreign_request : local_request;
        want += wire(foreign ? relay_reply : action_dunno);
    }
    const auto got = client.exchange(batch, 1000);
    EXPECT_EQ(Client::replies_in(got.data), 1000u);
    EXPECT_TRUE(got.data == want) << "replies differ from the expected sequence";
}

TEST(Server, DropsStalledRequestAfterRequestTimeoutWithoutReply)
{
    auto config = test_config({inet_endpoint("127.0.0.1")});
    config.server.request_timeout = 200ms;
    config.server.idle_timeout = 5s;
    LogCapture logs;
    {
        auto server = start_server(config);
        auto client = Client::tcp("127.0.0.1", port_of(server->endpoints().at(0)));
        const auto start = Clock::now();
        client.send(local_request.substr(0, 60));
        const auto got = client.read_to_close();
        const auto elapsed = Clock::now() - start;
        EXPECT_TRUE(got.closed);
        EXPECT_EQ(got.data, "");
        EXPECT_GE(elapsed, 150ms);
        EXPECT_LT(elapsed, 2s);
    }
    EXPECT_EQ(logs.count({"request not complete within request_timeout"}), 1u) << logs.dump();
}

TEST(Server, DropsTricklingClientAfterRequestTimeoutFromFirstByte)
{
    auto config = test_config({inet_endpoint("127.0.0.1")});
    config.server.request_timeout = 200ms;
    auto server = start_server(config);
    auto client = Client::tcp("127.0.0.1", port_of(server->endpoints().at(0)));

    // One byte every 20 ms: each read arrives well within request_timeout, but the request
    // as a whole does not (it would take over 10 s).
    const std::string slow = rcpt_request(std::string(200, 'a') + "@test.local");
    const auto start = Clock::now();
    bool closed = false;
    for (std::size_t i = 0; i < slow.size() - 2 && !closed; ++i) {
        client.send(slow.substr(i, 1));
        if (client.readable_within(20ms)) closed = client.read_to_close().closed;
        if (Clock::now() - start > io_deadline) break;
    }
    const auto elapsed = Clock::now() - start;
    EXPECT_TRUE(closed);
    EXPECT_LT(elapsed, 1s) << "got=" << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()
                           << "ms want=about 200ms";
}

TEST(Server, ClosesIdleConnectionAfterIdleTimeoutWithoutReply)
{
    auto config = test_config({inet_endpoint("127.0.0.1")});
    config.server.idle_timeout = 300ms;
    config.server.request_timeout = 100ms;
    auto server = start_server(config);
    const auto port = port_of(server->endpoints().at(0));

    {
        auto client = Client::tcp("127.0.0.1", port);
        const auto start = Clock::now();
        const auto got = client.read_to_close();
        const auto elapsed = Clock::now() - start;
        EXPECT_TRUE(got.closed);
        EXPECT_EQ(got.data, "");
        EXPECT_GE(elapsed, 250ms);
        EXPECT_LT(elapsed, 2s);
    }
    {
        // After an answered request, the idle time counts again from there.
        auto client = Client::tcp("127.0.0.1", port);
        client.send(local_request);
        EXPECT_EQ(client.read_replies(1).data, wire(action_dunno));
        const auto start = Clock::now();
        const auto got = client.read_to_close();
        EXPECT_TRUE(got.closed);
        EXPECT_EQ(got.data, "");
        EXPECT_GE(Clock::now() - start, 250ms);
    }
}

TEST(Server, EveryAnswerRestartsTheIdleTime)
{
    // A client asking every 250 ms stays connected far beyond idle_timeout (400 ms): the idle
    // time counts from each answer, also when the reply is written at once without waiting.
    auto config = test_config({inet_endpoint("127.0.0.1")});
    config.server.idle_timeout = 400ms;
    config.server.request_timeout = 100ms;
    auto server = start_server(config);
    auto client = Client::tcp("127.0.0.1", port_of(server->endpoints().at(0)));
    for (int i = 0; i < 6; ++i) {
        client.send(local_request);
        EXPECT_EQ(client.read_replies(1).data, wire(action_dunno)) << "request " << i;
        EXPECT_FALSE(client.readable_within(250ms)) << "closed after request " << i;
    }
}

TEST(Server, QuietConnectionGivesBufferBackAndIsStillServedOnTime)
{
    // After a second between requests a connection drops its read buffer (its pending read is
    // cancelled and it waits for readability instead). That must be invisible: the next request
    // is answered, and the idle time keeps counting from the last answer, not from the release.
    auto config = test_config({inet_endpoint("127.0.0.1")});
    config.server.idle_timeout = 2500ms;
    config.server.request_timeout = 200ms; // the watchdog looks at least this often
    auto server = start_server(config);
    const auto port = port_of(server->endpoints().at(0));

    auto client = Client::tcp("127.0.0.1", port);
    client.send(local_request);
    EXPECT_EQ(client.read_replies(1).data, wire(action_dunno));
    std::this_thread::sleep_for(1600ms);
    client.send(foreign_request);
    EXPECT_EQ(client.read_replies(1).data, wire(relay_reply));
    std::this_thread::sleep_for(1600ms);
    client.send(local_request);
    EXPECT_EQ(client.read_replies(1).data, wire(action_dunno));

    const auto start = Clock::now();
    const auto got = client.read_to_close();
    const auto elapsed = Clock::now() - start;
    EXPECT_TRUE(got.closed);
    EXPECT_EQ(got.data, "");
    EXPECT_GE(elapsed, 2300ms);
    EXPECT_LT(elapsed, 3200ms) << "the release restarted the idle time";
}

struct BadInput {
    const char* name;
    std::string bytes;
    std::size_t replies_before; // complete requests ahead of the broken one
};

std::vector<BadInput> bad_inputs()
{
    using namespace std::string_literals;
    std::string too_large = "request=smtpd_access_policy\n";
    for (int i = 0; i < 30; ++i) too_large += "name" + std::to_string(i) + "=" + std::string(90, 'v') + "\n";
    std::string too_many = "request=smtpd_access_policy\n";
    for (int i = 0; i < 40; ++i) too_many += "a" + std::to_string(i) + "=b\n";
    return {
        {"line_too_long", "request=smtpd_access_policy\nsender=" + std::string(300, 'a'), 0},
        {"request_too_large", too_large + "\n", 0},
        {"too_many_attributes", too_many + "\n", 0},
        {"missing_equals", "request=smtpd_access_policy\nno equals sign\n\n", 0},
        {"empty_name", "request=smtpd_access_policy\n=value\n\n", 0},
        {"nul_byte", "request=smtpd_access_policy\nsender=a\0b@example.org\n\n"s, 0},
        {"missing_request_type", "protocol_state=RCPT\nrecipient=a@test.local\n\n", 0},
        {"unknown_request_type", "request=something_else\nprotocol_state=RCPT\n\n", 0},
        {"garbage_after_two_good_requests", local_request + foreign_request + "garbage\n\n", 2},
    };
}

TEST(Server, ClosesConnectionBreakingParserRulesWithoutReplyAndOthersGoOn)
{
    LogCapture logs;
    {
        auto server = start_server(test_config({inet_endpoint("127.0.0.1")}));
        const auto port = port_of(server->endpoints().at(0));
        auto bystander = Client::tcp("127.0.0.1", port);

        for (const auto& bad : bad_inputs()) {
            SCOPED_TRACE(bad.name);
            auto client = Client::tcp("127.0.0.1", port);
            client.send(bad.bytes);
            const auto got = client.read_to_close();
            EXPECT_TRUE(got.closed);
            std::string want;
            if (bad.replies_before == 2) want = wire(action_dunno) + wire(relay_reply);
            EXPECT_EQ(got.data, want) << "got=" << got.data << " want=" << want;

            bystander.send(foreign_request);
            EXPECT_EQ(bystander.read_replies(1).data, wire(relay_reply));
        }
    }
    EXPECT_EQ(logs.count({"closing connection from 127.0.0.1:", "(sample \""}), bad_inputs().size()) << logs.dump();
}

TEST(Server, HoldsBackConnectionsOverMaxConnections)
{
    LogCapture logs;
    {
        auto config = test_config({inet_endpoint("127.0.0.1")});
        config.server.max_connections = 2;
        auto server = start_server(config);
        const auto port = port_of(server->endpoints().at(0));

        std::optional<Client> first = Client::tcp("127.0.0.1", port);
        auto second = Client::tcp("127.0.0.1", port);
        for (auto* c : {&*first, &second}) {
            c->send(local_request);
            ASSERT_EQ(c->read_replies(1).data, wire(action_dunno));
        }
        // The kernel completes the handshake (listen backlog), but nobody serves it yet.
        auto third = Client::tcp("127.0.0.1", port);
        third.send(foreign_request);
        EXPECT_FALSE(third.readable_within(300ms));
        EXPECT_EQ(server->open_connections(), 2u);

        first.reset();
        const auto got = third.read_replies(1);
        EXPECT_EQ(got.data, wire(relay_reply));
        EXPECT_TRUE(wait_until([&] { return server->open_connections() == 2; }));
    }
    EXPECT_GE(logs.count({"max_connections (2) reached"}), 1u) << logs.dump();
}

// Uses up every file descriptor number the process may have, so that the next socket() or
// accept() fails with EMFILE, until restore() or destruction.
class DescriptorsExhausted {
public:
    DescriptorsExhausted()
    {
        ::getrlimit(RLIMIT_NOFILE, &saved_);
        int highest = 0;
        for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
            highest = std::max(highest, std::stoi(e.path().filename().string()));
        // Fill the holes below (and one past) the highest descriptor in use.
        for (int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC); fd >= 0; fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) {
            fillers_.push_back(fd);
            if (fd > highest) break;
        }
        rlimit lowered = saved_;
        lowered.rlim_cur = static_cast<rlim_t>(fillers_.back() + 1);
        ::setrlimit(RLIMIT_NOFILE, &lowered);
    }
    ~DescriptorsExhausted() { restore(); }
    DescriptorsExhausted(const DescriptorsExhausted&) = delete;
    DescriptorsExhausted& operator=(const DescriptorsExhausted&) = delete;

    void restore()
    {
        if (fillers_.empty()) return;
        ::setrlimit(RLIMIT_NOFILE, &saved_);
        for (int fd : fillers_) ::close(fd);
        fillers_.clear();
    }

private:
    rlimit saved_{};
    std::vector<int> fillers_;
};

TEST(Server, KeepsAcceptingAfterAcceptFails)
{
    LogCapture logs;
    {
        auto server = start_server(test_config({inet_endpoint("127.0.0.1")}));
        auto client = Client::unconnected_v4();
        {
            DescriptorsExhausted exhausted;
            // The handshake completes in the kernel; the server's accept() fails with EMFILE.
            client.connect_v4(port_of(server->endpoints().at(0)));
            EXPECT_TRUE(wait_until([&] { return logs.count({"accept failed"}) >= 1; }, 2000ms)) << logs.dump();
        }
        // Descriptors are back: after its back-off the server accepts and serves the client.
        client.send(foreign_request);
        EXPECT_EQ(client.read_replies(1).data, wire(relay_reply));
    }
    EXPECT_GE(logs.count({"127.0.0.1:", "accept failed", "retrying in 100ms"}), 1u) << logs.dump();
}

// make_stale_socket - a socket file at `path` that nobody accepts on (its owner died).
void make_stale_socket(const std::filesystem::path& path)
{
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0) << std::strerror(errno);
    ::close(fd);
}

TEST(Server, AppliesSocketModeToUnixSocket)
{
    for (unsigned mode : {0600u, 0660u, 0666u}) {
        SCOPED_TRACE(mode);
        TempDir dir;
        auto config = test_config({unix_endpoint(dir / "policy")});
        config.server.socket_mode = mode;
        auto server = start_server(config);
        struct stat st {};
        ASSERT_EQ(::stat((dir / "policy").c_str(), &st), 0);
        EXPECT_TRUE(S_ISSOCK(st.st_mode));
        EXPECT_EQ(st.st_mode & 0777, mode) << "got=" << std::oct << (st.st_mode & 0777) << " want=" << mode;
        auto client = Client::local(dir / "policy");
        client.send(local_request);
        EXPECT_EQ(client.read_replies(1).data, wire(action_dunno));
    }
}

TEST(Server, AppliesSocketOwnerAndGroupToUnixSocket)
{
    // Our own user and group: a change any process may make, root or not.
    const passwd* user = ::getpwuid(::getuid());
    const group* grp = ::getgrgid(::getgid());
    if (!user || !grp) GTEST_SKIP() << "no passwd/group entry for the test's uid/gid";
    TempDir dir;
    auto config = test_config({unix_endpoint(dir / "policy")});
    config.server.socket_owner = user->pw_name;
    config.server.socket_group = grp->gr_name;
    auto server = start_server(config);
    struct stat st {};
    ASSERT_EQ(::stat((dir / "policy").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, ::getuid());
    EXPECT_EQ(st.st_gid, ::getgid());
}

TEST(Server, ReplacesStaleUnixSocketAndRemovesItAfterStop)
{
    TempDir dir;
    const auto path = dir / "policy";
    make_stale_socket(path);
    ASSERT_TRUE(std::filesystem::is_socket(path));

    auto server = start_server(test_config({unix_endpoint(path)}));
    EXPECT_EQ(server->endpoints(), std::vector<std::string>{"unix:" + path.string()});
    {
        auto client = Client::local(path);
        client.send(foreign_request);
        EXPECT_EQ(client.read_replies(1).data, wire(relay_reply));
    }
    server->stop();
    server->wait();
    EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Server, RefusesUnixSocketAnotherProcessAcceptsOn)
{
    TempDir dir;
    const auto path = dir / "policy";
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
    const int live = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_EQ(::bind(live, reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
    ASSERT_EQ(::listen(live, 8), 0);

    Server server(snapshot_of(test_config({unix_endpoint(path)})));
    try {
        server.bind();
        ADD_FAILURE() << "bind() succeeded on a live socket";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("is in use by another process"), std::string::npos) << e.what();
    }
    // The other process's socket is untouched and still accepts.
    EXPECT_NO_THROW(Client::local(path));
    ::close(live);
}

TEST(Server, RefusesAndKeepsRegularFileAtSocketPath)
{
    TempDir dir;
    const auto path = dir / "policy";
    relayguard::testing::write_file(path, "not a socket\n");

    Server server(snapshot_of(test_config({unix_endpoint(path)})));
    try {
        server.bind();
        ADD_FAILURE() << "bind() succeeded over a regular file";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("is not a socket"), std::string::npos) << e.what();
    }
    EXPECT_EQ(relayguard::testing::read_file(path), "not a socket\n");
}

TEST(Server, UnknownSocketOwnerIsAStartupErrorAndLeavesNoFile)
{
    TempDir dir;
    const auto path = dir / "policy";
    auto config = test_config({inet_endpoint("127.0.0.1"), unix_endpoint(path)});
    config.server.socket_owner = "relayguard-test-no-such-user";
    Server server(snapshot_of(config));
    try {
        server.bind();
        ADD_FAILURE() << "bind() succeeded with an unknown socket_owner";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("unknown socket_owner"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Server, BoundButNeverStartedServerRemovesItsSocketFile)
{
    TempDir dir;
    const auto path = dir / "policy";
    {
        Server server(snapshot_of(test_config({unix_endpoint(path)})));
        server.bind();
        EXPECT_TRUE(std::filesystem::is_socket(path));
    }
    EXPECT_FALSE(std::filesystem::exists(path));
}

bool have_ipv6_loopback()
{
    const int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0) return false;
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_addr = in6addr_loopback;
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&sin6), sizeof sin6) == 0;
    ::close(fd);
    return ok;
}

TEST(Server, ServesIpv6Listener)
{
    if (!have_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback on this host";
    auto server = start_server(test_config({inet_endpoint("::1")}));
    const auto endpoint = server->endpoints().at(0);
    EXPECT_EQ(endpoint.rfind("inet:[::1]:", 0), 0u) << endpoint;
    auto client = Client::tcp("::1", port_of(endpoint));
    client.send(foreign_request);
    EXPECT_EQ(client.read_replies(1).data, wire(relay_reply));
}

TEST(Server, StarListensOnIpv4AndIpv6)
{
    if (!have_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback on this host";
    auto server = start_server(test_config({inet_endpoint("*")}));
    ASSERT_EQ(server->endpoints().size(), 1u);
    const auto port = port_of(server->endpoints().at(0));
    for (const char* address : {"127.0.0.1", "::1"}) {
        SCOPED_TRACE(address);
        auto client = Client::tcp(address, port);
        client.send(local_request);
        EXPECT_EQ(client.read_replies(1).data, wire(action_dunno));
    }
}

TEST(Server, ReloadAppliesToNextRequestOnOpenConnection)
{
    auto config = test_config({inet_endpoint("127.0.0.1")});
    auto server = start_server(config);
    auto client = Client::tcp("127.0.0.1", port_of(server->endpoints().at(0)));
    client.send(foreign_request);
    ASSERT_EQ(client.read_replies(1).data, wire(relay_reply));

    config.relay.enabled = false;
    server->reload(snapshot_of(config));
    client.send(foreign_request);
    const auto got = client.read_replies(1);
    EXPECT_EQ(got.data, wire(action_dunno));
    EXPECT_FALSE(got.closed);
    EXPECT_EQ(server->open_connections(), 1u);
}

TEST(Server, StopAnswersRequestsReceivedAndClosesIdleConnections)
{
    auto server = start_server(test_config({inet_endpoint("127.0.0.1")}));
    const auto port = port_of(server->endpoints().at(0));

    auto idle = Client::tcp("127.0.0.1", port);
    idle.send(local_request);
    ASSERT_EQ(idle.read_replies(1).data, wire(action_dunno));
    auto sent = Client::tcp("127.0.0.1", port);
    auto partial = Client::tcp("127.0.0.1", port);
    ASSERT_TRUE(wait_until([&] { return server->open_connections() == 3; }));
    partial.send(foreign_request.substr(0, 50));
    sent.send(foreign_request); // not read before stop()

    const auto start = Clock::now();
    server->stop();
    partial.send(foreign_request.substr(50));

    const auto got_sent = sent.read_to_close();
    EXPECT_EQ(got_sent.data, wire(relay_reply));
    EXPECT_TRUE(got_sent.closed);
    const auto got_partial = partial.read_to_close();
    EXPECT_EQ(got_partial.data, wire(relay_reply));
    EXPECT_TRUE(got_partial.closed);
    const auto got_idle = idle.read_to_close();
    EXPECT_EQ(got_idle.data, "");
    EXPECT_TRUE(got_idle.closed);

    server->wait();
    // Everyone finished: no need to wait for shutdown_timeout (2 s).
    EXPECT_LT(Clock::now() - start, 1500ms);
    EXPECT_EQ(server->open_connections(), 0u);
    EXPECT_THROW(Client::tcp("127.0.0.1", port), std::runtime_error);
}

TEST(Server, StopClosesStalledConnectionAfterShutdownTimeout)
{
    auto config = test_config({inet_endpoint("127.0.0.1")});
    config.server.shutdown_timeout = 300ms;
    auto server = start_server(config);
    auto client = Client::tcp("127.0.0.1", port_of(server->endpoints().at(0)));
    client.send(local_request.substr(0, 40));
    ASSERT_TRUE(wait_until([&] { return server->open_connections() == 1; }));

    const auto start = Clock::now();
    server->stop();
    server->wait();
    const auto elapsed = Clock::now() - start;
    EXPECT_GE(elapsed, 250ms);
    EXPECT_LT(elapsed, 2s);
    const auto got = client.read_to_close();
    EXPECT_TRUE(got.closed);
    EXPECT_EQ(got.data, "");
}

TEST(Server, StopWithoutConnectionsReturnsPromptly)
{
    auto server = start_server(test_config({inet_endpoint("127.0.0.1")}));
    const auto start = Clock::now();
    server->stop();
    server->stop(); // idempotent
    server->wait();
    EXPECT_LT(Clock::now() - start, 500ms);
}

} // namespace
} // namespace relayguard

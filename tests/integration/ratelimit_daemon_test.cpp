// SPDX-License-Identifier: MIT
// ratelimit_daemon_test.cpp - rate limits end to end: the real relayguard binary with the
// embedded store and with a real redis-server (overrides, two daemons, outages, TLS, AUTH).
//
// Each test writes a config into a TempDir, starts the daemon (testing/daemon_process.hpp) and
// talks to it over a UNIX socket as Postfix does (one connection, many requests) or as Exim does
// (one request per connection, then a half-close). Redis is read and changed over its UNIX socket
// by a small blocking RESP client, as an operator would with redis-cli. Every wait is bounded.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <gtest/gtest.h>

#include "testing/daemon_process.hpp"
#include "testing/redis_server.hpp"
#include "testing/test_support.hpp"

namespace {

namespace fs = std::filesystem;
using relayguard::testing::count_of;
using relayguard::testing::DaemonProcess;
using relayguard::testing::PolicyClient;
using relayguard::testing::RedisServer;
using relayguard::testing::remaining_ms;
using relayguard::testing::SteadyClock;
using relayguard::testing::TempDir;
using relayguard::testing::write_file;
using std::chrono::milliseconds;
using namespace std::chrono_literals;

// store.redis.timeout in the failure tests: short, so that a stalled Redis is noticed fast.
constexpr milliseconds redis_timeout{50};
// store.redis.connect_timeout there: a stalled Redis also stalls the reconnect's handshake.
constexpr milliseconds redis_connect_timeout{200};
// No reply may take longer than this while Redis is down or stalled: redis_timeout plus a
// margin for a loaded 2-core machine (brief: 50 ms timeout -> each reply < 500 ms).
constexpr milliseconds reply_limit{500};
// After Redis is back, the daemon must use it again within about a second. The client backs off
// 100 ms doubling to 2 s, and the outages here last well under a second, so the next attempt
// comes within that; the rest is margin.
constexpr milliseconds recovery_limit{1500};
// Gap between probe requests while waiting for recovery: short against recovery_limit.
constexpr milliseconds recovery_probe_gap{20};
// A retry-after may be below period/N by the seconds the test itself took (the bucket refills
// meanwhile); a test is over long before this much time passes.
constexpr long retry_slack_s = 10;

// Set as store.defer_reply, so that a defer can only come from the store failure path.
constexpr std::string_view defer_reply = "451 4.3.0 ratelimit test: rate limit store unavailable";
// The daemon's outage transition lines (limiter.cpp: "rate-limit store redis ADDRESS unavailable
// (...)" and "... answering again after N s"). Matched loosely: a line with "redis" and the word.
constexpr std::string_view down_word = "unavailable";
constexpr std::string_view up_word = "again";

// server.threads of every daemon here: two workers, so that connections (and their Redis
// connections) are spread over two threads as in production.
constexpr int daemon_threads = 2;
// The Redis client's line when a connection is up (client.cpp: "redis ADDRESS: connected").
constexpr std::string_view redis_connected = ": connected";

const std::string dunno = "action=DUNNO\n\n";

std::string action(std::string_view text) { return fmt::format("action={}\n\n", text); }

// ---- requests ----

// One policy request as Postfix 3.7 sends it (see tests/data/samples). Empty fields get a default
// that passes the static checks: an authenticated client over TLS sends as its own login to a
// foreign domain; an unauthenticated one sends from a foreign sender to the local domain.
struct Req {
    std::string state = "RCPT";
    std::string login;             // sasl_username; empty: unauthenticated
    std::string client = "198.51.100.7";
    std::string recipient;
    std::string instance;          // empty: a fresh transaction
    std::uint64_t size = 0;
};

std::string fresh_instance()
{
    static std::atomic<unsigned> counter{0};
    return fmt::format("5521.6b0a03a5.{:x}.0", ++counter);
}

std::string request(const Req& r)
{
    const bool auth = !r.login.empty();
    std::string recipient = r.recipient;
    if (recipient.empty() && r.state == "RCPT") recipient = auth ? "someone@example.net" : "postmaster@example.com";
    return fmt::format("request=smtpd_access_policy\n"
                       "protocol_state={}\n"
                       "protocol_name=ESMTP\n"
                       "client_address={}\n"
                       "client_name=unknown\n"
                       "client_port=40123\n"
                       "reverse_client_name=unknown\n"
                       "server_address=203.0.113.25\n"
                       "server_port={}\n"
                       "helo_name=client.example.org\n"
                       "sender={}\n"
                       "recipient={}\n"
                       "recipient_count=0\n"
                       "queue_id=\n"
                       "instance={}\n"
                       "size={}\n"
                       "sasl_method={}\n"
                       "sasl_username={}\n"
                       "sasl_sender=\n"
                       "encryption_protocol={}\n"
                       "policy_context=\n"
                       "\n",
                       r.state, r.client, auth ? 587 : 25, auth ? r.login : "x@example.org", recipient,
                       r.instance.empty() ? fresh_instance() : r.instance, r.size, auth ? "PLAIN" : "", r.login,
                       auth ? "TLSv1.3" : "");
}

std::string login_rcpt(const std::string& login) { return request({.login = login}); }

// refused_by - whether `reply` is limit `limit`'s default reply (limits.hpp default_limit_reply),
// or that reply without its retry clause, as a limit blocked by a rate of 0 answers.
bool refused_by(std::string_view reply, std::string_view limit)
{
    const std::string prefix = fmt::format("action=450 4.7.1 Rate limit {} exceeded, retry in ", limit);
    const std::string blocked = fmt::format("action=450 4.7.1 Rate limit {} exceeded\n\n", limit);
    return (reply.starts_with(prefix) && reply.ends_with(" seconds\n\n")) || reply == blocked;
}

// retry_after - the {retry_after} of a limit's default reply, or -1.
long retry_after(std::string_view reply)
{
    constexpr std::string_view marker = ", retry in ";
    const auto at = reply.find(marker);
    if (at == std::string_view::npos) return -1;
    long n = -1;
    if (std::sscanf(std::string(reply.substr(at + marker.size())).c_str(), "%ld seconds", &n) != 1) return -1;
    return n;
}

// ---- Redis, as an operator sees it ----

struct RespReply {
    char type = 0; // '+', '-', ':', '$', '*', or 'n' for nil; 0: no reply (I/O failure)
    std::string text;
    std::vector<RespReply> items;
};

// RedisAdmin - redis-cli in a few lines: one blocking connection per command over the fixture's
// UNIX socket (so it works across restarts), AUTH first when the server has a password.
class RedisAdmin {
public:
    RedisAdmin(std::string unix_path, std::string password) : path_(std::move(unix_path)), password_(std::move(password)) {}

    // run - one command; the reply's text ("OK", "1", a bulk string, "(nil)"), an error as "-ERR ...".
    std::string run(const std::vector<std::string>& args)
    {
        const RespReply r = command(args);
        if (r.type == '-') return "-" + r.text;
        if (r.type == 'n') return "(nil)";
        if (r.type == 0) return "<no reply>";
        return r.text;
    }

    RespReply command(const std::vector<std::string>& args)
    {
        Connection c(path_);
        if (!c.ok()) {
            ADD_FAILURE() << "cannot connect to redis at " << path_;
            return {};
        }
        if (!password_.empty()) {
            const RespReply auth = c.call({"AUTH", password_});
            if (auth.type != '+') ADD_FAILURE() << "AUTH: " << auth.text;
        }
        return c.call(args);
    }

private:
    // How long one admin command may take: Redis answers these in microseconds.
    static constexpr milliseconds command_limit{5000};
    // Bytes read per read(): the replies here are a few dozen.
    static constexpr std::size_t read_chunk_bytes = 4096;

    class Connection {
    public:
        explicit Connection(const std::string& path)
        {
            fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            sockaddr_un addr{};
            addr.sun_family = AF_UNIX;
            std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
            if (fd_ >= 0 && connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
                close(fd_);
                fd_ = -1;
            }
        }
        ~Connection()
        {
            if (fd_ >= 0) close(fd_);
        }
        Connection(const Connection&) = delete;
        Connection& operator=(const Connection&) = delete;
        bool ok() const noexcept { return fd_ >= 0; }

        RespReply call(const std::vector<std::string>& args)
        {
            std::string out = fmt::format("*{}\r\n", args.size());
            for (const auto& a : args) out += fmt::format("${}\r\n{}\r\n", a.size(), a);
            std::string_view rest = out;
            while (!rest.empty()) {
                const ssize_t n = ::send(fd_, rest.data(), rest.size(), MSG_NOSIGNAL);
                if (n <= 0) return {};
                rest.remove_prefix(static_cast<std::size_t>(n));
            }
            deadline_ = SteadyClock::now() + command_limit;
            RespReply reply;
            if (!parse(reply)) return {};
            return reply;
        }

    private:
        bool fill()
        {
            pollfd p{fd_, POLLIN, 0};
            if (poll(&p, 1, remaining_ms(deadline_)) <= 0) return false;
            char chunk[read_chunk_bytes];
            const ssize_t n = read(fd_, chunk, sizeof chunk);
            if (n <= 0) return false;
            buf_.append(chunk, static_cast<std::size_t>(n));
            return true;
        }
        bool line(std::string& out)
        {
            for (;;) {
                if (const auto end = buf_.find("\r\n"); end != std::string::npos) {
                    out = buf_.substr(0, end);
                    buf_.erase(0, end + 2);
                    return true;
                }
                if (!fill()) return false;
            }
        }
        bool parse(RespReply& r)
        {
            std::string head;
            if (!line(head) || head.empty()) return false;
            r.type = head[0];
            r.text = head.substr(1);
            if (r.type == '$' || r.type == '*') {
                const long long n = std::stoll(r.text);
                r.text.clear();
                if (n < 0) {
                    r.type = 'n';
                    return true;
                }
                if (r.type == '*') {
                    r.items.resize(static_cast<std::size_t>(n));
                    for (auto& item : r.items)
                        if (!parse(item)) return false;
                    return true;
                }
                const auto size = static_cast<std::size_t>(n);
                while (buf_.size() < size + 2)
                    if (!fill()) return false;
                r.text = buf_.substr(0, size);
                buf_.erase(0, size + 2);
            }
            return true;
        }

        int fd_ = -1;
        std::string buf_;
        SteadyClock::time_point deadline_;
    };

    std::string path_;
    std::string password_;
};

// count_lines - lines of `log` that mention redis and contain `word`.
std::size_t count_lines(std::string_view log, std::string_view word)
{
    std::size_t count = 0;
    while (!log.empty()) {
        const auto end = log.find('\n');
        const std::string_view line = log.substr(0, end);
        if (line.find("redis") != std::string_view::npos && line.find(word) != std::string_view::npos) ++count;
        if (end == std::string_view::npos) break;
        log.remove_prefix(end + 1);
    }
    return count;
}

// timed_ask - the reply and how long it took.
std::pair<std::string, milliseconds> timed_ask(PolicyClient& client, const std::string& req)
{
    const auto t0 = SteadyClock::now();
    std::string reply = client.ask(req);
    return {std::move(reply), std::chrono::duration_cast<milliseconds>(SteadyClock::now() - t0)};
}

// ---- fixtures ----

// A config for these tests: the static checks pass for the requests request() builds; `limits`
// is [[limit]] tables, `store` the [store] section.
std::string config_text(const fs::path& socket, std::string_view limits, std::string_view store)
{
    std::string text = "[server]\n"
                       "listen = [\"unix:" + socket.string() + "\"]\n"
                       "threads = " + std::to_string(daemon_threads) + "\n"
                       "shutdown_timeout = \"1s\"\n"
                       "\n[log]\nlevel = \"info\"\n"
                       "\n[domains]\nlocal = [\"example.com\"]\n"
                       "\n[checks.exempt]\nnetworks = [\"192.0.2.0/24\"]\nlogins = [\"relay@example.com\"]\n"
                       "\n[rate_limits]\nhooked_at = [\"RCPT\", \"END-OF-MESSAGE\"]\n\n";
    text += limits;
    text += "\n";
    text += store;
    return text;
}

// A [store] section for `server`, reached over its UNIX socket unless `address` says otherwise.
struct RedisSection {
    std::string on_error = "defer";
    std::string address;  // empty: the UNIX socket
    std::string password;
    std::string username;
    std::string extra;    // more [store.redis] lines
};

std::string redis_store(const RedisServer& server, const RedisSection& s)
{
    std::string text = "[store]\ntype = \"redis\"\non_error = \"" + s.on_error + "\"\n";
    // Only where it applies: elsewhere --check-config warns that it has no effect.
    if (s.on_error == "defer") text += "defer_reply = \"" + std::string(defer_reply) + "\"\n";
    text += "\n[store.redis]\n";
    text += "address = \"" + (s.address.empty() ? "unix:" + server.unix_path() : s.address) + "\"\n";
    text += fmt::format("timeout = \"{}ms\"\nconnect_timeout = \"{}ms\"\n", redis_timeout.count(),
                        redis_connect_timeout.count());
    if (!s.password.empty()) text += "password = \"" + s.password + "\"\n";
    if (!s.username.empty()) text += "username = \"" + s.username + "\"\n";
    text += s.extra;
    return text;
}

class RateLimitTest : public ::testing::Test {
protected:
    // start_daemon - write the config, start the daemon, wait for its "started" line and, with
    // the Redis store, until every worker's Redis connection is up: redis.hpp says commands fail
    // (and get on_error's answer) until then, and that start-up race is not what these tests test.
    DaemonProcess& start_daemon(const std::string& config, const std::string& tag = "relayguard",
                                bool wait_for_redis = true)
    {
        const fs::path path = dir_ / (tag + ".toml");
        write_file(path, config);
        DaemonProcess& d = daemons_.emplace_back(path, dir_.path(), tag);
        EXPECT_TRUE(d.wait_started()) << "daemon did not start; stderr:\n" << d.log();
        if (wait_for_redis && config.find("type = \"redis\"") != std::string::npos) {
            EXPECT_TRUE(d.wait_for_log(redis_connected, daemon_threads))
                << "not every worker connected to Redis; stderr:\n" << d.log();
        }
        return d;
    }

    PolicyClient connect(const fs::path& socket) { return PolicyClient::unix_socket(socket); }
    PolicyClient connect() { return connect(socket_); }

    // expect_n - `n` times `req` (a fresh instance each, unless set), expecting `want` every time.
    void expect_n(PolicyClient& client, const Req& req, int n, const std::string& want, std::string_view what)
    {
        for (int i = 1; i <= n; ++i) {
            const std::string got = client.ask(request(req));
            EXPECT_EQ(got, want) << what << ": request " << i << " of " << n;
        }
    }

    RedisAdmin admin(const std::string& password = {}) const { return RedisAdmin(redis_->unix_path(), password); }

    TempDir dir_;
    fs::path socket_ = dir_ / "policy.sock";
    std::unique_ptr<RedisServer> redis_; // destroyed after the daemons (declared before them)
    std::deque<DaemonProcess> daemons_;  // a deque: references stay valid as daemons are added
};

// ===== the counting rules, with either store =====

enum class StoreKind { embedded, redis };

// PrintTo - the parameter's name in gtest's messages, not its bytes.
void PrintTo(StoreKind kind, std::ostream* os) { *os << (kind == StoreKind::redis ? "redis" : "embedded"); }

class RateLimitStores : public RateLimitTest, public ::testing::WithParamInterface<StoreKind> {
protected:
    void SetUp() override
    {
        if (GetParam() == StoreKind::redis) redis_ = std::make_unique<RedisServer>();
    }

    // store - the [store] section. Redis with on_error = "defer": a broken Redis path shows as
    // the defer reply, never as a silent fallback.
    std::string store() const
    {
        if (GetParam() == StoreKind::embedded) return "[store]\ntype = \"embedded\"\n";
        return redis_store(*redis_, {});
    }

    // expect_in_redis - with the Redis store, that the state key `key` exists: the request was
    // counted in Redis. Nothing to check with the embedded store.
    void expect_in_redis(const std::string& key)
    {
        if (GetParam() != StoreKind::redis) return;
        EXPECT_EQ(admin().run({"EXISTS", key}), "1") << "state key " << key << " not in Redis";
    }
};

constexpr std::string_view login_rcpts_4 = R"([[limit]]
name = "login_rcpts"
key = "sasl_username"
unit = "recipients"
rates = "4/1h"
)";

TEST_P(RateLimitStores, PerLoginRecipientsRefuseTheRequestAfterNWithLimitAndRetryAfter)
{
    constexpr long n = 4; // login_rcpts_4
    start_daemon(config_text(socket_, login_rcpts_4, store()));
    auto client = connect();
    ASSERT_TRUE(client.connected());

    for (long i = 0; i < n; ++i)
        EXPECT_EQ(client.ask(request({.login = "alice@example.com", .recipient = fmt::format("r{}@example.net", i)})),
                  dunno)
            << "recipient " << i + 1 << " of " << n;
    const std::string reply = client.ask(login_rcpt("alice@example.com"));
    EXPECT_TRUE(refused_by(reply, "login_rcpts")) << "got=" << reply;
    // GCRA: the next unit is free one emission interval (period / N) after the burst.
    const long got = retry_after(reply);
    EXPECT_LE(got, 3600 / n) << "got=" << got << " want=" << 3600 / n;
    EXPECT_GE(got, 3600 / n - retry_slack_s) << "got=" << got << " want=" << 3600 / n;

    // Case does not make another login; another login has its own budget.
    EXPECT_TRUE(refused_by(client.ask(login_rcpt("Alice@Example.COM")), "login_rcpts"));
    EXPECT_EQ(client.ask(login_rcpt("bob@example.com")), dunno);
    // A second connection (the other worker) sees the same counter.
    auto other = connect();
    EXPECT_TRUE(refused_by(other.ask(login_rcpt("alice@example.com")), "login_rcpts"));
    expect_in_redis("rg:{l:alice@example.com}");
}

constexpr std::string_view login_msgs_2 = R"([[limit]]
name = "login_msgs"
key = "sasl_username"
unit = "messages"
rates = "2/1h"
)";

TEST_P(RateLimitStores, MessagesCountOncePerInstanceOverOneConnection)
{
    start_daemon(config_text(socket_, login_msgs_2, store()));
    auto client = connect();
    ASSERT_TRUE(client.connected());
    const std::string alice = "alice@example.com";

    // Message A: five recipients and END-OF-MESSAGE, one transaction: one message.
    const std::string a = "5521.6b0a03aa.f0adc.0";
    for (int i = 0; i < 5; ++i)
        EXPECT_EQ(client.ask(request({.login = alice, .recipient = fmt::format("r{}@example.net", i), .instance = a})),
                  dunno)
            << "RCPT " << i + 1 << " of message A";
    EXPECT_EQ(client.ask(request({.state = "END-OF-MESSAGE", .login = alice, .instance = a, .size = 4321})), dunno);

    // Message B is the second of two; message C is one too many.
    EXPECT_EQ(client.ask(request({.login = alice, .instance = "5521.6b0a03aa.f0adc.1"})), dunno) << "message B";
    const std::string reply = client.ask(request({.login = alice, .instance = "5521.6b0a03aa.f0adc.2"}));
    EXPECT_TRUE(refused_by(reply, "login_msgs")) << "message C: got=" << reply;
    EXPECT_LE(retry_after(reply), 1800) << "got=" << reply;
    EXPECT_GE(retry_after(reply), 1800 - retry_slack_s) << "got=" << reply;

    // A transaction already counted is not refused for its later recipients.
    EXPECT_EQ(client.ask(request({.login = alice, .recipient = "late@example.net", .instance = a})), dunno);
    expect_in_redis("rg:{l:alice@example.com}");
}

TEST_P(RateLimitStores, MessagesCountOncePerInstanceOverSeveralConnections)
{
    start_daemon(config_text(socket_, login_msgs_2, store()));
    const std::string alice = "alice@example.com";
    // exim_ask - Exim's ${readsocket}: connect, one request, half-close, read to the end.
    const auto exim_ask = [this](const std::string& req) {
        auto c = connect();
        if (!c.connected() || !c.send(req) || !c.shutdown_write()) return std::string("<send failed>");
        std::string reply = c.read_reply();
        EXPECT_TRUE(c.at_eof(1000ms)) << "connection not closed after a half-closed request";
        return reply;
    };

    // One transaction, three connections (two RCPTs and END-OF-MESSAGE): one message. The
    // connections go to both workers in turn.
    const std::string x = "659C6780900F99CE20868D703D4C3F5AF5445EFB";
    EXPECT_EQ(exim_ask(request({.login = alice, .recipient = "a@example.net", .instance = x})), dunno);
    EXPECT_EQ(exim_ask(request({.login = alice, .recipient = "b@example.net", .instance = x})), dunno);
    EXPECT_EQ(exim_ask(request({.state = "END-OF-MESSAGE", .login = alice, .instance = x, .size = 18})), dunno);

    EXPECT_EQ(exim_ask(request({.login = alice, .instance = "DAE222ADBE52CA86E2E8E838CE82C365BD382537"})), dunno)
        << "second message";
    const std::string reply = exim_ask(request({.login = alice, .instance = "292E48B2F77156292F6F675DA78DFED2A050DE4A"}));
    EXPECT_TRUE(refused_by(reply, "login_msgs")) << "third message: got=" << reply;
    expect_in_redis("rg:{l:alice@example.com}");
}

TEST_P(RateLimitStores, BytesCountAtEndOfMessageFromSizeAndARefusalSpendsNothing)
{
    // 1000 bytes a day: refills one byte per 86 s, so nothing refills while the test runs.
    start_daemon(config_text(socket_, R"([[limit]]
name = "login_bytes"
key = "sasl_username"
unit = "bytes"
rates = "1000/1d"
)",
                             store()));
    auto client = connect();
    ASSERT_TRUE(client.connected());
    const std::string alice = "alice@example.com";
    const auto eom = [&](std::uint64_t size) {
        return client.ask(request({.state = "END-OF-MESSAGE", .login = alice, .size = size}));
    };

    // At RCPT `size` is only the client's SIZE= estimate: not counted.
    const std::string a = fresh_instance();
    EXPECT_EQ(client.ask(request({.login = alice, .instance = a, .size = 600})), dunno);
    EXPECT_EQ(client.ask(request({.login = alice, .instance = a, .size = 600})), dunno);
    EXPECT_EQ(client.ask(request({.state = "END-OF-MESSAGE", .login = alice, .instance = a, .size = 600})), dunno)
        << "600 of 1000 bytes";
    std::string reply = eom(600);
    EXPECT_TRUE(refused_by(reply, "login_bytes")) << "1200 of 1000 bytes: got=" << reply;
    EXPECT_EQ(eom(400), dunno) << "exactly the 400 bytes left: the refused 600 spent nothing";
    reply = eom(1);
    EXPECT_TRUE(refused_by(reply, "login_bytes")) << "1001 of 1000 bytes: got=" << reply;
    expect_in_redis("rg:{l:alice@example.com}");
}

TEST_P(RateLimitStores, RequestRefusedByOneLimitConsumesNoOtherLimit)
{
    start_daemon(config_text(socket_, R"([[limit]]
name = "login_rcpts"
key = "sasl_username"
unit = "recipients"
rates = "6/1h"

[[limit]]
name = "domain_rcpts"
key = "recipient_domain"
unit = "recipients"
rates = "2/1h"
)",
                             store()));
    auto client = connect();
    ASSERT_TRUE(client.connected());
    const std::string alice = "alice@example.com";
    const auto to = [&](const std::string& rcpt) { return client.ask(request({.login = alice, .recipient = rcpt})); };

    EXPECT_EQ(to("a@one.example"), dunno);
    EXPECT_EQ(to("b@one.example"), dunno); // login_rcpts: 4 left; one.example: full
    for (int i = 0; i < 3; ++i) {
        const std::string reply = to(fmt::format("c{}@one.example", i));
        EXPECT_TRUE(refused_by(reply, "domain_rcpts")) << "got=" << reply;
    }
    // Had the three refusals taken from login_rcpts, fewer than 4 would be left.
    for (int i = 0; i < 4; ++i) EXPECT_EQ(to(fmt::format("x@d{}.example", i)), dunno) << "recipient " << i + 1 << " of 4 left";
    const std::string reply = to("x@d9.example");
    EXPECT_TRUE(refused_by(reply, "login_rcpts")) << "got=" << reply;
    expect_in_redis("rg:{rd:one.example}");
}

TEST_P(RateLimitStores, SmallerWindowRefusesFirstThenTheLargerOne)
{
    // 3 per 3 s refills one per second; 4 per hour one per 15 minutes. The order in the config
    // does not decide which one refuses.
    start_daemon(config_text(socket_, R"([[limit]]
name = "login_rcpts"
key = "sasl_username"
unit = "recipients"
rates = "4/1h, 3/3s"
)",
                             store()));
    auto client = connect();
    ASSERT_TRUE(client.connected());
    const std::string alice = "alice@example.com";

    expect_n(client, {.login = alice}, 3, dunno, "burst of the 3/3s window");
    std::string reply = client.ask(login_rcpt(alice));
    ASSERT_TRUE(refused_by(reply, "login_rcpts")) << "got=" << reply;
    const long short_retry = retry_after(reply);
    EXPECT_GE(short_retry, 1) << "got=" << reply;
    EXPECT_LE(short_retry, 1) << "the 3/3s window refuses (the hour would say ~900 s); got=" << reply;

    // Retrying after the advertised time must fit: here the test has to let time pass.
    std::this_thread::sleep_for(std::chrono::seconds(short_retry));
    EXPECT_EQ(client.ask(login_rcpt(alice)), dunno) << "after the advertised " << short_retry << " s";

    reply = client.ask(login_rcpt(alice));
    ASSERT_TRUE(refused_by(reply, "login_rcpts")) << "got=" << reply;
    EXPECT_LE(retry_after(reply), 900) << "now the 4/1h window refuses; got=" << reply;
    EXPECT_GE(retry_after(reply), 900 - retry_slack_s) << "now the 4/1h window refuses; got=" << reply;
    expect_in_redis("rg:{l:alice@example.com}");
}

TEST_P(RateLimitStores, ClientAddressLimitCountsNetworksByPrefix)
{
    start_daemon(config_text(socket_, R"([[limit]]
name = "client_rcpts"
key = "client_address"
unit = "recipients"
rates = "3/1h"
scope = "unauthenticated"
prefix_v4 = 24
prefix_v6 = 64
)",
                             store()));
    auto client = connect();
    ASSERT_TRUE(client.connected());
    const auto from = [&](const std::string& address) { return client.ask(request({.client = address})); };

    EXPECT_EQ(from("198.51.100.7"), dunno);
    EXPECT_EQ(from("198.51.100.7"), dunno);
    EXPECT_EQ(from("198.51.100.200"), dunno) << "same /24, third of 3";
    std::string reply = from("198.51.100.9");
    EXPECT_TRUE(refused_by(reply, "client_rcpts")) << "same /24, fourth: got=" << reply;
    EXPECT_EQ(from("198.51.101.7"), dunno) << "another /24";

    EXPECT_EQ(from("2001:db8:1:2::1"), dunno);
    EXPECT_EQ(from("2001:db8:1:2::1"), dunno);
    EXPECT_EQ(from("2001:db8:1:2:ffff:ffff:ffff:fffe"), dunno) << "same /64, third of 3";
    reply = from("2001:DB8:1:2::9");
    EXPECT_TRUE(refused_by(reply, "client_rcpts")) << "same /64, fourth: got=" << reply;
    EXPECT_EQ(from("2001:db8:1:3::1"), dunno) << "another /64";
    expect_in_redis("rg:{c:198.51.100.0/24}");
    expect_in_redis("rg:{c:2001:db8:1:2::/64}");
}

TEST_P(RateLimitStores, ScopeLimitsOnlyAuthenticatedOrOnlyUnauthenticatedRequests)
{
    start_daemon(config_text(socket_, R"([[limit]]
name = "auth_rcpts"
key = "global"
unit = "recipients"
rates = "2/1h"
scope = "authenticated"

[[limit]]
name = "unauth_rcpts"
key = "global"
unit = "recipients"
rates = "2/1h"
scope = "unauthenticated"
)",
                             store()));
    auto client = connect();
    ASSERT_TRUE(client.connected());
    const std::string unauth = request({});

    EXPECT_EQ(client.ask(unauth), dunno);
    expect_n(client, {.login = "alice@example.com"}, 2, dunno, "authenticated, after one unauthenticated");
    std::string reply = client.ask(login_rcpt("bob@example.com"));
    EXPECT_TRUE(refused_by(reply, "auth_rcpts")) << "got=" << reply;
    EXPECT_EQ(client.ask(unauth), dunno) << "the authenticated requests did not count here";
    reply = client.ask(unauth);
    EXPECT_TRUE(refused_by(reply, "unauth_rcpts")) << "got=" << reply;
    expect_in_redis("rg:{g:}");
}

TEST_P(RateLimitStores, ExemptClientsSkipLimitsUnlessAppliesToExempt)
{
    // [checks.exempt]: 192.0.2.0/24 and the login relay@example.com.
    start_daemon(config_text(socket_, R"([[limit]]
name = "client_rcpts"
key = "client_address"
unit = "recipients"
rates = "2/1h"

[[limit]]
name = "exempt_too"
key = "client_address"
unit = "recipients"
rates = "4/1h"
prefix_v4 = 24
applies_to_exempt = true
)",
                             store()));
    auto client = connect();
    ASSERT_TRUE(client.connected());

    // Exempt network: client_rcpts (2) does not count it, exempt_too (4) does.
    expect_n(client, {.client = "192.0.2.10"}, 4, dunno, "exempt client");
    std::string reply = client.ask(request({.client = "192.0.2.10"}));
    EXPECT_TRUE(refused_by(reply, "exempt_too")) << "got=" << reply;

    // Exempt login: the same, from a network of its own.
    expect_n(client, {.login = "relay@example.com", .client = "203.0.113.50"}, 4, dunno, "exempt login");
    reply = client.ask(request({.login = "relay@example.com", .client = "203.0.113.50"}));
    EXPECT_TRUE(refused_by(reply, "exempt_too")) << "got=" << reply;

    // Everyone else: both limits.
    expect_n(client, {.client = "198.51.100.7"}, 2, dunno, "untrusted client");
    reply = client.ask(request({.client = "198.51.100.7"}));
    EXPECT_TRUE(refused_by(reply, "client_rcpts")) << "got=" << reply;
    expect_in_redis("rg:{c:192.0.2.0/24}");
}

INSTANTIATE_TEST_SUITE_P(Store, RateLimitStores, ::testing::Values(StoreKind::embedded, StoreKind::redis),
                         [](const auto& info) { return std::string(info.param == StoreKind::redis ? "Redis" : "Embedded"); });

// ===== Redis only: live overrides, a fleet, SCRIPT FLUSH =====

class RateLimitRedis : public RateLimitTest {
protected:
    void SetUp() override { redis_ = std::make_unique<RedisServer>(); }
};

constexpr std::string_view login_rcpts_2 = R"([[limit]]
name = "login_rcpts"
key = "sasl_username"
unit = "recipients"
rates = "2/1h"
)";

TEST_F(RateLimitRedis, LoginOverrideAppliesToTheVeryNextRequestWithoutReload)
{
    DaemonProcess& d = start_daemon(config_text(socket_, login_rcpts_2, redis_store(*redis_, {})));
    auto client = connect();
    ASSERT_TRUE(client.connected());
    RedisAdmin r = admin();
    const std::string alice = "alice@example.com";
    const std::string okey = "rg:{l:alice@example.com}:o";

    expect_n(client, {.login = alice}, 2, dunno, "config default 2/1h");
    EXPECT_TRUE(refused_by(client.ask(login_rcpt(alice)), "login_rcpts"));

    ASSERT_EQ(r.run({"HSET", okey, "login_rcpts", "unlimited"}), "1");
    expect_n(client, {.login = alice}, 5, dunno, "override unlimited");

    ASSERT_EQ(r.run({"HSET", okey, "login_rcpts", "0"}), "0");
    std::string reply = client.ask(login_rcpt(alice));
    EXPECT_TRUE(refused_by(reply, "login_rcpts")) << "override 0: got=" << reply;

    // Back to the config default, whose two recipients alice used before the overrides.
    ASSERT_EQ(r.run({"HDEL", okey, "login_rcpts"}), "1");
    reply = client.ask(login_rcpt(alice));
    EXPECT_TRUE(refused_by(reply, "login_rcpts")) << "after HDEL: got=" << reply;
    EXPECT_GT(retry_after(reply), 1800 - retry_slack_s) << "2/1h again: got=" << reply;

    // "0" refuses a login at its very first request; HDEL gives it the default.
    const std::string gina_o = "rg:{l:gina@example.com}:o";
    ASSERT_EQ(r.run({"HSET", gina_o, "login_rcpts", "0"}), "1");
    EXPECT_TRUE(refused_by(client.ask(login_rcpt("gina@example.com")), "login_rcpts"));
    ASSERT_EQ(r.run({"HDEL", gina_o, "login_rcpts"}), "1");
    expect_n(client, {.login = "gina@example.com"}, 2, dunno, "gina after HDEL");
    EXPECT_TRUE(refused_by(client.ask(login_rcpt("gina@example.com")), "login_rcpts"));

    // A higher rate: 5 an hour instead of 2, and the retry-after of 5/1h.
    ASSERT_EQ(r.run({"HSET", "rg:{l:carol@example.com}:o", "login_rcpts", "5/1h"}), "1");
    expect_n(client, {.login = "carol@example.com"}, 5, dunno, "override 5/1h");
    reply = client.ask(login_rcpt("carol@example.com"));
    EXPECT_TRUE(refused_by(reply, "login_rcpts")) << "got=" << reply;
    EXPECT_LE(retry_after(reply), 720) << "got=" << reply;
    EXPECT_GE(retry_after(reply), 720 - retry_slack_s) << "got=" << reply;

    EXPECT_EQ(count_of(d.log(), "reload"), 0u) << "no reload involved; log:\n" << d.log();
}

TEST_F(RateLimitRedis, DomainOverrideIsInheritedByLoginsWithoutTheirOwn)
{
    start_daemon(config_text(socket_, login_rcpts_2, redis_store(*redis_, {})));
    auto client = connect();
    ASSERT_TRUE(client.connected());
    RedisAdmin r = admin();
    const std::string domain_o = "rg:{l:@example.com}:o";

    ASSERT_EQ(r.run({"HSET", domain_o, "login_rcpts", "3/1h"}), "1");
    ASSERT_EQ(r.run({"HSET", "rg:{l:erin@example.com}:o", "login_rcpts", "1/1h"}), "1");

    expect_n(client, {.login = "dave@example.com"}, 3, dunno, "domain override 3/1h");
    std::string reply = client.ask(login_rcpt("dave@example.com"));
    EXPECT_TRUE(refused_by(reply, "login_rcpts")) << "got=" << reply;
    EXPECT_LE(retry_after(reply), 1200) << "got=" << reply;
    EXPECT_GE(retry_after(reply), 1200 - retry_slack_s) << "got=" << reply;

    expect_n(client, {.login = "erin@example.com"}, 1, dunno, "own override 1/1h beats the domain's");
    EXPECT_TRUE(refused_by(client.ask(login_rcpt("erin@example.com")), "login_rcpts"));

    expect_n(client, {.login = "frank@example.org"}, 2, dunno, "another domain: config default");
    EXPECT_TRUE(refused_by(client.ask(login_rcpt("frank@example.org")), "login_rcpts"));

    ASSERT_EQ(r.run({"HDEL", domain_o, "login_rcpts"}), "1");
    expect_n(client, {.login = "henry@example.com"}, 2, dunno, "domain override deleted: config default");
    EXPECT_TRUE(refused_by(client.ask(login_rcpt("henry@example.com")), "login_rcpts"));
}

TEST_F(RateLimitRedis, TwoDaemonsOnOneRedisShareOneLimitExactly)
{
    constexpr int limit = 6;
    constexpr int per_daemon = 8;
    const fs::path second_socket = dir_ / "policy2.sock";
    const std::string limits = fmt::format(R"([[limit]]
name = "login_rcpts"
key = "sasl_username"
unit = "recipients"
rates = "{}/1h"
)",
                                           limit);
    start_daemon(config_text(socket_, limits, redis_store(*redis_, {})), "first");
    start_daemon(config_text(second_socket, limits, redis_store(*redis_, {})), "second");

    // Both at once, one connection to each daemon, as two mail servers would.
    std::vector<std::string> replies[2];
    const auto run = [&](int which, fs::path socket) {
        auto client = PolicyClient::unix_socket(socket);
        for (int i = 0; i < per_daemon; ++i) replies[which].push_back(client.ask(login_rcpt("alice@example.com")));
    };
    std::thread first(run, 0, socket_);
    std::thread second(run, 1, second_socket);
    first.join();
    second.join();

    int accepted = 0;
    int accepted_by[2] = {0, 0};
    for (int which = 0; which < 2; ++which)
        for (const auto& reply : replies[which]) {
            if (reply == dunno) {
                ++accepted;
                ++accepted_by[which];
            } else {
                EXPECT_TRUE(refused_by(reply, "login_rcpts")) << "daemon " << which + 1 << ": got=" << reply;
            }
        }
    EXPECT_EQ(accepted, limit) << "got=" << accepted << " (" << accepted_by[0] << " + " << accepted_by[1]
                               << ") want=" << limit;
}

TEST_F(RateLimitRedis, ScriptFlushMidRunIsHandledAndCountsCorrectly)
{
    DaemonProcess& d = start_daemon(config_text(socket_, R"([[limit]]
name = "login_rcpts"
key = "sasl_username"
unit = "recipients"
rates = "4/1h"
)",
                                                redis_store(*redis_, {})));
    // Two connections, normally one on each worker (each has its own Redis connection and
    // remembers on its own that the script is loaded).
    auto one = connect();
    auto two = connect();
    ASSERT_TRUE(one.connected() && two.connected());
    const std::string alice = login_rcpt("alice@example.com");

    EXPECT_EQ(one.ask(alice), dunno);
    EXPECT_EQ(two.ask(alice), dunno);
    ASSERT_EQ(admin().run({"SCRIPT", "FLUSH"}), "OK");
    EXPECT_EQ(one.ask(alice), dunno) << "first request after SCRIPT FLUSH";
    EXPECT_EQ(two.ask(alice), dunno) << "first request after SCRIPT FLUSH";
    std::string reply = one.ask(alice);
    EXPECT_TRUE(refused_by(reply, "login_rcpts")) << "the fifth of 4: got=" << reply;
    reply = two.ask(alice);
    EXPECT_TRUE(refused_by(reply, "login_rcpts")) << "the sixth of 4: got=" << reply;
    EXPECT_EQ(count_lines(d.log(), down_word), 0u) << "NOSCRIPT is not an outage; log:\n" << d.log();
}

// ===== Redis failures: killed and restarted, stalled =====

class RateLimitRedisFailure : public RateLimitTest, public ::testing::WithParamInterface<std::string> {
protected:
    void SetUp() override { redis_ = std::make_unique<RedisServer>(); }

    // While Redis is down, what this mode answers a request that the Redis state would allow.
    std::string while_down() const { return GetParam() == "defer" ? action(defer_reply) : dunno; }

    DaemonProcess& start() { return start_daemon(config_text(socket_, login_rcpts_3, redis_store(*redis_, {.on_error = GetParam()}))); }

    // block_probes - the override "0" on the domain probe.example, in Redis only: a refusal of a
    // probe login can only come from Redis (the local store of on_error = "local" knows no
    // overrides, and each probe login is new, so it has room there).
    void block_probes() { ASSERT_EQ(admin().run({"HSET", "rg:{l:@probe.example}:o", "login_rcpts", "0"}), "1"); }

    std::string probe()
    {
        static std::atomic<unsigned> n{0};
        return login_rcpt(fmt::format("p{}@probe.example", ++n));
    }

    // wait_for_redis - probe until a probe login is refused: the daemon answers from Redis
    // again. How long that took, or nullopt after 5 recovery_limits.
    std::optional<milliseconds> wait_for_redis(PolicyClient& client)
    {
        const auto t0 = SteadyClock::now();
        const auto deadline = t0 + 5 * recovery_limit;
        while (SteadyClock::now() < deadline) {
            auto [reply, took] = timed_ask(client, probe());
            EXPECT_LT(took, reply_limit) << "while recovering: got=" << reply;
            if (refused_by(reply, "login_rcpts"))
                return std::chrono::duration_cast<milliseconds>(SteadyClock::now() - t0);
            EXPECT_EQ(reply, while_down()) << "while recovering";
            std::this_thread::sleep_for(recovery_probe_gap);
        }
        return std::nullopt;
    }

    static constexpr std::string_view login_rcpts_3 = R"([[limit]]
name = "login_rcpts"
key = "sasl_username"
unit = "recipients"
rates = "3/1h"
)";
};

TEST_P(RateLimitRedisFailure, RedisKilledAndRestarted)
{
    const std::string mode = GetParam();
    DaemonProcess& d = start();
    auto one = connect();
    auto two = connect(); // normally the other worker
    ASSERT_TRUE(one.connected() && two.connected());
    RedisAdmin r = admin();
    const std::string alice = login_rcpt("alice@example.com");

    // In Redis: alice has 1 of 3 left; probe logins are blocked by an override only Redis knows.
    EXPECT_EQ(one.ask(alice), dunno);
    EXPECT_EQ(two.ask(alice), dunno);
    block_probes();
    EXPECT_TRUE(refused_by(one.ask(probe()), "login_rcpts"));
    // Kept over the restart (redis-server loads dump.rdb at start).
    ASSERT_EQ(r.run({"SAVE"}), "OK");

    redis_->kill();
    std::vector<std::string> want_alice(5, while_down());
    if (mode == "local") // the embedded store, fresh: 3 of 3, shared by both workers
        want_alice = {dunno, dunno, dunno, "refused", "refused"};
    PolicyClient* order[] = {&one, &two, &one, &two, &one};
    for (std::size_t i = 0; i < want_alice.size(); ++i) {
        auto [reply, took] = timed_ask(*order[i], alice);
        EXPECT_LT(took, reply_limit) << "request " << i + 1 << " while down took " << took.count() << " ms";
        if (want_alice[i] == "refused")
            EXPECT_TRUE(refused_by(reply, "login_rcpts")) << "request " << i + 1 << " while down: got=" << reply;
        else
            EXPECT_EQ(reply, want_alice[i]) << "request " << i + 1 << " while down";
    }
    {
        auto [reply, took] = timed_ask(two, probe());
        EXPECT_LT(took, reply_limit);
        EXPECT_EQ(reply, while_down()) << "the override lives in Redis only";
    }
    EXPECT_TRUE(d.wait_for_log(down_word, 1, 2000ms)) << "no outage line; log:\n" << d.log();

    redis_->restart();
    const auto restarted = SteadyClock::now();
    // Each worker has its own Redis connection (and reconnect schedule): probe both.
    ASSERT_TRUE(wait_for_redis(one)) << "Redis not used again; log:\n" << d.log();
    ASSERT_TRUE(wait_for_redis(two)) << "Redis not used again on the second connection; log:\n" << d.log();
    const auto recovered = std::chrono::duration_cast<milliseconds>(SteadyClock::now() - restarted);
    std::printf("[ timing ] on_error=%s: Redis answering again to the daemon using it: %lld ms\n", mode.c_str(),
                static_cast<long long>(recovered.count()));
    EXPECT_LT(recovered, recovery_limit);

    // Redis's state counts again, not what the local store did meanwhile: alice has 1 left.
    EXPECT_EQ(two.ask(alice), dunno) << "alice's last recipient in Redis";
    EXPECT_TRUE(refused_by(one.ask(alice), "login_rcpts"));

    EXPECT_TRUE(d.wait_for_log(up_word, 1, 2000ms)) << "no recovery line; log:\n" << d.log();
    const std::string log = d.log();
    EXPECT_EQ(count_lines(log, down_word), 1u) << "one line at the start of the outage; log:\n" << log;
    EXPECT_EQ(count_lines(log, up_word), 1u) << "one line at its end; log:\n" << log;
    EXPECT_NE(log.find(mode), std::string::npos) << "the mode in effect is named; log:\n" << log;
}

TEST_P(RateLimitRedisFailure, StalledRedisCostsEachRequestAtMostTheTimeout)
{
    DaemonProcess& d = start();
    auto client = connect();
    ASSERT_TRUE(client.connected());
    block_probes();
    EXPECT_EQ(client.ask(login_rcpt("alice@example.com")), dunno);

    // SIGSTOP our own redis-server child: connections stay open, nothing answers.
    const pid_t redis_pid = redis_->pid();
    ASSERT_GT(redis_pid, 0);
    ASSERT_EQ(kill(redis_pid, SIGSTOP), 0);
    struct Resume {
        pid_t pid;
        ~Resume() { kill(pid, SIGCONT); } // also when an assertion leaves early
    } resume{redis_pid};

    for (int i = 1; i <= 3; ++i) {
        auto [reply, took] = timed_ask(client, login_rcpt("bob@example.com"));
        std::printf("[ timing ] on_error=%s: request %d while Redis is stalled: %lld ms\n", GetParam().c_str(), i,
                    static_cast<long long>(took.count()));
        EXPECT_LT(took, reply_limit) << "request " << i;
        EXPECT_EQ(reply, while_down()) << "request " << i;
    }
    EXPECT_TRUE(d.wait_for_log(down_word, 1, 2000ms)) << "no outage line; log:\n" << d.log();

    ASSERT_EQ(kill(redis_pid, SIGCONT), 0);
    const auto recovered = wait_for_redis(client);
    ASSERT_TRUE(recovered) << "Redis not used again; log:\n" << d.log();
    EXPECT_LT(*recovered, recovery_limit);
    EXPECT_TRUE(d.wait_for_log(up_word, 1, 2000ms)) << "no recovery line; log:\n" << d.log();
    const std::string log = d.log();
    EXPECT_EQ(count_lines(log, down_word), 1u) << "log:\n" << log;
    EXPECT_EQ(count_lines(log, up_word), 1u) << "log:\n" << log;
}

INSTANTIATE_TEST_SUITE_P(OnError, RateLimitRedisFailure, ::testing::Values("dunno", "defer", "local"),
                         [](const auto& info) { return info.param; });

// ===== how the daemon reaches Redis: TLS, AUTH =====

struct ConnectionCase {
    std::string name;
    RedisServer::Options options;
    // The [store.redis] section's connection part, from the running server.
    RedisSection (*section)(const RedisServer&);
    bool enforced; // false: the connection must fail, every request gets the defer reply
};

void PrintTo(const ConnectionCase& c, std::ostream* os) { *os << c.name; }

class RateLimitRedisConnection : public RateLimitTest, public ::testing::WithParamInterface<ConnectionCase> {};

constexpr std::string_view test_password = "rg-test-pass";

TEST_P(RateLimitRedisConnection, ConnectsAndEnforcesOrDefers)
{
    const ConnectionCase& c = GetParam();
    redis_ = std::make_unique<RedisServer>(c.options);
    DaemonProcess& d = start_daemon(config_text(socket_, login_rcpts_2, redis_store(*redis_, c.section(*redis_))),
                                    "relayguard", c.enforced);
    auto client = connect();
    ASSERT_TRUE(client.connected());
    const std::string alice = login_rcpt("alice@example.com");

    if (!c.enforced) {
        for (int i = 0; i < 3; ++i) EXPECT_EQ(client.ask(alice), action(defer_reply)) << "request " << i + 1;
        return;
    }
    EXPECT_EQ(client.ask(alice), dunno);
    EXPECT_EQ(client.ask(alice), dunno);
    const std::string reply = client.ask(alice);
    EXPECT_TRUE(refused_by(reply, "login_rcpts")) << "got=" << reply << "\nlog:\n" << d.log();
    EXPECT_EQ(admin(c.options.requirepass).run({"EXISTS", "rg:{l:alice@example.com}"}), "1")
        << "counted in Redis, not elsewhere";
}

INSTANTIATE_TEST_SUITE_P(
    Redis, RateLimitRedisConnection,
    ::testing::Values(
        ConnectionCase{"TlsWithPassword", {.requirepass = std::string(test_password), .tls = true},
                       [](const RedisServer& s) {
                           return RedisSection{.address = fmt::format("tls:127.0.0.1:{}", s.tls_port()),
                                               .password = std::string(test_password),
                                               .extra = "tls_ca_file = \"" + s.ca_file() + "\"\n"};
                       },
                       true},
        ConnectionCase{"PasswordOverUnixSocket", {.requirepass = std::string(test_password)},
                       [](const RedisServer&) { return RedisSection{.password = std::string(test_password)}; }, true},
        ConnectionCase{"AclUserOverTcp", {.acl_user = "relayguard", .acl_password = "rg-acl-pass", .tcp = true},
                       [](const RedisServer& s) {
                           return RedisSection{.address = fmt::format("tcp:127.0.0.1:{}", s.tcp_port()),
                                               .password = "rg-acl-pass",
                                               .username = "relayguard"};
                       },
                       true},
        ConnectionCase{"WrongPasswordDefers", {.requirepass = std::string(test_password)},
                       [](const RedisServer&) { return RedisSection{.password = "not-the-password"}; }, false}),
    [](const auto& info) { return info.param.name; });

} // namespace

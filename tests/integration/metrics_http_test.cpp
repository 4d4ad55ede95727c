// SPDX-License-Identifier: MIT
// metrics_http_test.cpp - /metrics and /healthz over real sockets: a Server in-process counting
// into the Metrics that a MetricsHttpServer serves; exact counts after known request sequences,
// Redis outages (no server, and a real redis-server killed and restarted), HTTP errors, and the
// daemon's wiring (reload counts). Every wait has a deadline: a broken server fails, never hangs.
#include <relayguard/metrics.hpp>

#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <map>
#include <memory>
#include <netinet/in.h>
#include <poll.h>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <relayguard/policy.hpp>
#include <relayguard/server.hpp>

#include "testing/daemon_process.hpp"
#include "testing/redis_server.hpp"
#include "testing/test_support.hpp"

namespace relayguard {
namespace {

using namespace std::chrono_literals;
using testing::PolicyClient;
using testing::SteadyClock;

// Longest any single wait in these tests may take before the test fails instead.
constexpr auto io_deadline = 10s;

// rcpt_request - an unauthenticated RCPT from 192.0.2.10: refused by the relay check unless the
// recipient is in test.local.
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
const std::string dunno_reply = "action=DUNNO\n\n";
const std::string relay_reply = "action=554 5.7.1 Relay access denied\n\n";

// test_config - what every test's config has; `server_keys` go into [server], `more` after
// the rest.
std::string test_config(std::string_view more = "", std::string_view server_keys = "")
{
    return "[server]\nlisten = [\"inet:127.0.0.1:0\"]\nthreads = 2\n" + std::string(server_keys) +
           "[domains]\nlocal = [\"test.local\"]\n[metrics]\nlisten = \"inet:127.0.0.1:0\"\n" + std::string(more);
}

std::shared_ptr<const Snapshot> snapshot_of(const std::string& toml)
{
    auto config = parse_config(toml, "metrics_http_test.toml");
    if (!config) throw std::runtime_error(config.error().to_string());
    auto snap = build_snapshot(std::move(*config));
    if (!snap) throw std::runtime_error(snap.error().to_string());
    return *snap;
}

struct HttpResponse {
    int status = 0; // 0: no response
    std::string head;
    std::string body;
};

// http_exchange - send `raw` to 127.0.0.1:port, read until the server closes.
HttpResponse http_exchange(std::uint16_t port, const std::string& raw)
{
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string data;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0 &&
        ::send(fd, raw.data(), raw.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(raw.size())) {
        const auto end = SteadyClock::now() + io_deadline;
        for (;;) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, testing::remaining_ms(end)) <= 0) break;
            char buf[16384];
            const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0) break;
            data.append(buf, static_cast<std::size_t>(n));
        }
    }
    ::close(fd);
    HttpResponse r;
    const auto split = data.find("\r\n\r\n");
    if (!data.starts_with("HTTP/1.1 ") || split == std::string::npos) return r;
    r.status = std::stoi(data.substr(9, 3));
    r.head = data.substr(0, split);
    r.body = data.substr(split + 4);
    return r;
}

HttpResponse http_get(std::uint16_t port, const std::string& path)
{
    return http_exchange(port, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
}

// samples_of - the sample lines of an exposition: "name{labels}" -> value as written.
std::map<std::string, std::string> samples_of(const std::string& text)
{
    std::map<std::string, std::string> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        const auto space = line.rfind(' ');
        out[line.substr(0, space)] = line.substr(space + 1);
    }
    return out;
}

std::string value_of(const std::map<std::string, std::string>& samples, const std::string& key)
{
    const auto it = samples.find(key);
    return it == samples.end() ? "(absent)" : it->second;
}

// Scrape - one GET /metrics, parsed.
struct Scrape {
    int status = 0;
    std::map<std::string, std::string> samples;
    std::string operator[](const std::string& key) const { return value_of(samples, key); }
};

// A Server and its metrics endpoint, both in this process, both on free loopback ports.
class Daemon {
public:
    explicit Daemon(const std::string& toml)
        : snapshot_(snapshot_of(toml)),
          metrics_(std::make_shared<Metrics>()),
          server_(snapshot_),
          http_(metrics_, *snapshot_->config.metrics.listen)
    {
        server_.set_metrics(metrics_);
        server_.bind();
        // spdlog's registry (and default logger) is a function-local static made by the first
        // log call. Made here, before the workers start, so that they do not make it on one
        // worker and read it on another: the static's guard is read inside libspdlog, which is
        // not built with TSan, so TSan would not see it publish the logger and report a race.
        spdlog::default_logger();
        http_.start();
        server_.start();
        const std::string ep = server_.endpoints().front();
        policy_port_ = static_cast<std::uint16_t>(std::stoi(ep.substr(ep.rfind(':') + 1)));
    }

    std::uint16_t policy_port() const noexcept { return policy_port_; }
    std::uint16_t http_port() const noexcept { return http_.port(); }
    Server& server() noexcept { return server_; }

    Scrape scrape() const
    {
        const HttpResponse r = http_get(http_.port(), "/metrics");
        return {r.status, samples_of(r.body)};
    }

    // scrape_when - the first scrape in which `key` has `value` (the last one at the deadline):
    // for what the server counts after the client has moved on (a connection's close).
    Scrape scrape_when(const std::string& key, const std::string& value) const
    {
        const auto end = SteadyClock::now() + io_deadline;
        for (;;) {
            Scrape s = scrape();
            if (s[key] == value || SteadyClock::now() > end) return s;
            ::poll(nullptr, 0, 5);
        }
    }

private:
    std::shared_ptr<const Snapshot> snapshot_;
    std::shared_ptr<Metrics> metrics_;
    Server server_;
    MetricsHttpServer http_;
    std::uint16_t policy_port_ = 0;
};

TEST(MetricsHttp, ScrapeAfterAKnownSequenceGivesExactCounts)
{
    Daemon d{test_config()};

    // 3 requests answered DUNNO and 2 refused by the relay check, on two connections; then one
    // connection whose input is not a request at all.
    {
        auto passing = PolicyClient::tcp(d.policy_port());
        for (int i = 0; i < 3; ++i) ASSERT_EQ(passing.ask(local_request), dunno_reply) << "request " << i;
        auto refused = PolicyClient::tcp(d.policy_port());
        for (int i = 0; i < 2; ++i) ASSERT_EQ(refused.ask(foreign_request), relay_reply) << "request " << i;
        auto garbage = PolicyClient::tcp(d.policy_port());
        ASSERT_TRUE(garbage.send("this is not a policy request\n\n"));
        ASSERT_TRUE(garbage.at_eof()) << "the server must close a connection that sends garbage";
    }

    // The clients closed; the server counts each close when it reads the EOF.
    const Scrape s = d.scrape_when("relayguard_connections_open", "0");
    ASSERT_EQ(s.status, 200);
    const std::pair<std::string, std::string> want[] = {
        {"relayguard_requests_total{protocol_state=\"RCPT\"}", "5"},
        {"relayguard_requests_total{protocol_state=\"MAIL\"}", "0"},
        {"relayguard_requests_total{protocol_state=\"unknown\"}", "0"},
        {"relayguard_decisions_total{check=\"none\",action=\"dunno\"}", "3"},
        {"relayguard_decisions_total{check=\"relay\",action=\"reject\"}", "2"},
        {"relayguard_decisions_total{check=\"exempt\",action=\"dunno\"}", "(absent)"},
        {"relayguard_shadow_decisions_total{check=\"relay\"}", "0"},
        {"relayguard_request_duration_seconds_count", "5"},
        {"relayguard_request_duration_seconds_bucket{le=\"+Inf\"}", "5"},
        // The embedded store is in-process: no round trips to time, nothing to fail.
        {"relayguard_store_duration_seconds_count", "0"},
        {"relayguard_store_errors_total{kind=\"not_connected\"}", "0"},
        {"relayguard_store_degraded", "0"},
        {"relayguard_store_outages_total", "0"},
        {"relayguard_connections_total", "3"},
        {"relayguard_connections_open", "0"},
        {"relayguard_connections_closed_total{reason=\"missing_equals\"}", "1"},
        {"relayguard_connections_closed_total{reason=\"truncated_request\"}", "0"},
        {"relayguard_connections_closed_total{reason=\"idle_timeout\"}", "0"},
        {"relayguard_config_reloads_total{result=\"ok\"}", "0"},
        {"relayguard_build_info{version=\"" RELAYGUARD_VERSION "\"}", "1"},
    };
    for (const auto& [key, value] : want) EXPECT_EQ(s[key], value) << key << " got=" << s[key] << " want=" << value;
    std::size_t decision_series = 0;
    for (const auto& [key, value] : s.samples) decision_series += key.starts_with("relayguard_decisions_total{");
    EXPECT_EQ(decision_series, 2u) << "only the decisions that happened are listed";

    // A scrape changes nothing it reports.
    const Scrape again = d.scrape();
    EXPECT_EQ(again.samples, s.samples);
}

TEST(MetricsHttp, CountsConnectionsClosedForTimeoutsAndTruncatedInput)
{
    // Short deadlines (warned about, but valid), so that the server closes within the test.
    Daemon d{test_config("", "idle_timeout = \"300ms\"\nrequest_timeout = \"200ms\"\n")};
    {
        auto idle = PolicyClient::tcp(d.policy_port());
        auto partial = PolicyClient::tcp(d.policy_port());
        auto truncated = PolicyClient::tcp(d.policy_port());
        const std::string half = local_request.substr(0, local_request.size() / 2);
        ASSERT_TRUE(partial.send(half));
        ASSERT_TRUE(truncated.send(half));
        ASSERT_TRUE(truncated.shutdown_write());
        EXPECT_TRUE(truncated.at_eof());
        EXPECT_TRUE(partial.at_eof()) << "request_timeout must close a connection with half a request";
        EXPECT_TRUE(idle.at_eof()) << "idle_timeout must close a connection that sends nothing";
    }
    const Scrape s = d.scrape_when("relayguard_connections_open", "0");
    const std::pair<std::string, std::string> want[] = {
        {"relayguard_connections_closed_total{reason=\"idle_timeout\"}", "1"},
        {"relayguard_connections_closed_total{reason=\"request_timeout\"}", "1"},
        {"relayguard_connections_closed_total{reason=\"truncated_request\"}", "1"},
        {"relayguard_connections_closed_total{reason=\"write_timeout\"}", "0"},
        {"relayguard_connections_total", "3"},
        {"relayguard_requests_total{protocol_state=\"RCPT\"}", "0"},
    };
    for (const auto& [key, value] : want) EXPECT_EQ(s[key], value) << key << " got=" << s[key] << " want=" << value;
}

TEST(MetricsHttp, CountsRateLimitRefusalsAndShadowedChecks)
{
    // The relay check only logs (shadow); a limit of 2 recipients a minute per client network
    // defers the third.
    Daemon d{test_config(R"(
[checks.relay]
shadow = true
[[limit]]
name = "client_rcpt"
key = "client_address"
unit = "recipients"
rates = "2/1m"
)")};
    auto client = PolicyClient::tcp(d.policy_port());
    ASSERT_EQ(client.ask(foreign_request), dunno_reply);
    ASSERT_EQ(client.ask(foreign_request), dunno_reply);
    ASSERT_EQ(client.ask(foreign_request).substr(0, 11), "action=450 ");

    const Scrape s = d.scrape();
    EXPECT_EQ(s["relayguard_shadow_decisions_total{check=\"relay\"}"], "3");
    EXPECT_EQ(s["relayguard_decisions_total{check=\"none\",action=\"dunno\"}"], "2");
    EXPECT_EQ(s["relayguard_decisions_total{check=\"rate_limits\",action=\"defer\"}"], "1");
    EXPECT_EQ(s["relayguard_requests_total{protocol_state=\"RCPT\"}"], "3");
    EXPECT_EQ(s["relayguard_connections_open"], "1");
}

TEST(MetricsHttp, HealthzIsOkWhileServingAnd503OnceStopped)
{
    Daemon d{test_config()};
    HttpResponse r = http_get(d.http_port(), "/healthz");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "ok\n");

    d.server().stop();
    d.server().wait();
    r = http_get(d.http_port(), "/healthz");
    EXPECT_EQ(r.status, 503);
    EXPECT_EQ(r.body, "not serving\n");
}

TEST(MetricsHttp, AnswersEveryOtherRequestWithItsError)
{
    Daemon d{test_config()};
    const std::uint16_t port = d.http_port();

    HttpResponse r = http_get(port, "/metrics");
    EXPECT_EQ(r.status, 200);
    EXPECT_NE(r.head.find("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"), std::string::npos) << r.head;
    EXPECT_NE(r.head.find("\r\nConnection: close"), std::string::npos) << r.head;

    struct Case {
        std::string name;
        std::string raw;
        int want_status;
    };
    const Case cases[] = {
        {"unknown path", "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404},
        {"root", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404},
        {"query string", "GET /healthz?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n", 200},
        {"POST with a body", "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 405},
        {"DELETE", "DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 405},
        {"not HTTP", "HELLO THERE\r\n\r\n", 400},
        {"header over the limit",
         "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(max_http_request_bytes, 'a') + "\r\n\r\n", 413},
        {"body over the limit",
         "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(max_http_request_bytes + 1) +
             "\r\n\r\n",
         413},
    };
    for (const auto& c : cases) {
        r = http_exchange(port, c.raw);
        EXPECT_EQ(r.status, c.want_status) << c.name << ": got=" << r.status << " want=" << c.want_status;
        if (c.want_status == 405) {
            EXPECT_NE(r.head.find("\r\nAllow: GET"), std::string::npos) << c.name;
        }
    }
    // Still serving after all of that.
    EXPECT_EQ(http_get(port, "/healthz").status, 200);
}

// A limit that applies to every test request, so that each one calls the store.
constexpr std::string_view limit_for_every_request = R"(
[[limit]]
name = "client_rcpt"
key = "client_address"
unit = "recipients"
rates = "1000/1m"
)";

TEST(MetricsHttp, CountsStoreErrorsAndDegradedModeWithoutRedis)
{
    const testing::TempDir dir;
    // Nothing listens there: every store call fails at once with not_connected.
    Daemon d{test_config(std::string(limit_for_every_request) +
                         "[store]\ntype = \"redis\"\non_error = \"dunno\"\n[store.redis]\naddress = \"unix:" +
                         (dir / "no-redis.sock").string() + "\"\n")};
    auto client = PolicyClient::tcp(d.policy_port());
    ASSERT_EQ(client.ask(local_request), dunno_reply);
    ASSERT_EQ(client.ask(local_request), dunno_reply);

    const Scrape s = d.scrape();
    EXPECT_EQ(s["relayguard_store_errors_total{kind=\"not_connected\"}"], "2");
    EXPECT_EQ(s["relayguard_store_errors_total{kind=\"timeout\"}"], "0");
    EXPECT_EQ(s["relayguard_store_duration_seconds_count"], "2");
    EXPECT_EQ(s["relayguard_store_degraded"], "1");
    EXPECT_EQ(s["relayguard_store_outages_total"], "1");
    // on_error = dunno: answered as if every limit had room.
    EXPECT_EQ(s["relayguard_decisions_total{check=\"none\",action=\"dunno\"}"], "2");

    const HttpResponse health = http_get(d.http_port(), "/healthz");
    EXPECT_EQ(health.status, 200) << "requests are still answered";
    EXPECT_EQ(health.body, "degraded: store redis unavailable\n");
}

TEST(MetricsHttp, CountsARedisOutageFromLossToRecovery)
{
    testing::RedisServer redis;
    Daemon d{test_config(std::string(limit_for_every_request) +
                         "[store]\ntype = \"redis\"\non_error = \"defer\"\n[store.redis]\naddress = \"unix:" +
                         redis.unix_path() + "\"\n")};
    auto client = PolicyClient::tcp(d.policy_port());

    // ask_until - ask until the reply is `want` (the Redis client reconnects in the background).
    const auto ask_until = [&](const std::string& want) {
        const auto end = SteadyClock::now() + io_deadline;
        std::string got;
        while ((got = client.ask(local_request)) != want && SteadyClock::now() < end) ::poll(nullptr, 0, 20);
        return got;
    };
    const std::string defer_reply = "action=" + std::string(default_store_defer_reply) + "\n\n";

    ASSERT_EQ(ask_until(dunno_reply), dunno_reply) << "Redis never answered";
    const Scrape before = d.scrape();
    EXPECT_EQ(before["relayguard_store_degraded"], "0");
    const std::string outages_before = before["relayguard_store_outages_total"]; // the first connect may race a request

    redis.kill();
    ASSERT_EQ(ask_until(defer_reply), defer_reply) << "on_error = defer must defer while Redis is down";
    Scrape during = d.scrape();
    EXPECT_EQ(during["relayguard_store_degraded"], "1");
    EXPECT_EQ(during["relayguard_store_outages_total"], std::to_string(std::stoi(outages_before) + 1));
    EXPECT_EQ(http_get(d.http_port(), "/healthz").body, "degraded: store redis unavailable\n");
    EXPECT_NE(during["relayguard_decisions_total{check=\"rate_limits\",action=\"defer\"}"], "(absent)");

    redis.restart();
    ASSERT_EQ(ask_until(dunno_reply), dunno_reply) << "Redis never answered again";
    const Scrape after = d.scrape();
    EXPECT_EQ(after["relayguard_store_degraded"], "0");
    EXPECT_EQ(after["relayguard_store_outages_total"], during["relayguard_store_outages_total"]);
    EXPECT_GT(std::stod(after["relayguard_store_degraded_seconds_total"]), 0.0);
    EXPECT_EQ(http_get(d.http_port(), "/healthz").body, "ok\n");
    // Degraded time stops growing once the outage is over.
    EXPECT_EQ(d.scrape()["relayguard_store_degraded_seconds_total"], after["relayguard_store_degraded_seconds_total"]);
}

// The daemon's wiring: the endpoint from the config file, reloads counted by their result.
TEST(MetricsHttp, DaemonServesMetricsAndCountsReloads)
{
    const testing::TempDir dir;
    const auto config = dir / "relayguard.toml";
    testing::write_file(config, test_config());
    testing::DaemonProcess daemon(config, dir.path());
    ASSERT_TRUE(daemon.wait_started()) << daemon.log();
    const std::string marker = "metrics and health check on http inet:127.0.0.1:";
    ASSERT_TRUE(daemon.wait_for_log(marker)) << daemon.log();
    const std::string log = daemon.log();
    const auto at = log.find(marker) + marker.size();
    const auto digits = log.find_first_not_of("0123456789", at);
    const auto port = static_cast<std::uint16_t>(std::stoi(log.substr(at, digits - at)));
    EXPECT_EQ(http_get(port, "/healthz").body, "ok\n");

    ASSERT_EQ(::kill(daemon.pid(), SIGHUP), 0);
    ASSERT_TRUE(daemon.wait_for_log("reloaded ")) << daemon.log();
    testing::write_file(config, test_config("[server]\nthreads = 1\n")); // [server] twice: invalid TOML
    ASSERT_EQ(::kill(daemon.pid(), SIGHUP), 0);
    ASSERT_TRUE(daemon.wait_for_log("failed, keeping the running configuration")) << daemon.log();

    const auto s = samples_of(http_get(port, "/metrics").body);
    EXPECT_EQ(value_of(s, "relayguard_config_reloads_total{result=\"ok\"}"), "1");
    EXPECT_EQ(value_of(s, "relayguard_config_reloads_total{result=\"failed\"}"), "1");

    const auto status = daemon.stop();
    ASSERT_TRUE(status) << daemon.log();
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << daemon.log();
}

} // namespace
} // namespace relayguard

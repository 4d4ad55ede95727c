// SPDX-License-Identifier: MIT
// faults_test.cpp - faults under load: Redis killed, paused and stopped, SIGHUP storms, and
// exact counting from many connections, against the real daemon driven by relayguard-loadgen.
//
// Each test starts a real redis-server (UNIX socket, own TempDir) and relayguard (2 workers),
// then relayguard-loadgen as a child with a bounded load (a rate, a request cap and a duration
// cap; SIGTERM ends it early and it still reports). Its one JSON line gives the replies by action,
// errors and the largest latency. Only our own children are signalled, by pid; waits are bounded.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <gtest/gtest.h>

#include <relayguard/key_schema.hpp>

#include "testing/daemon_process.hpp"
#include "testing/redis_server.hpp"
#include "testing/test_support.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using relayguard::testing::binary_dir;
using relayguard::testing::count_of;
using relayguard::testing::DaemonProcess;
using relayguard::testing::PolicyClient;
using relayguard::testing::RedisServer;
using relayguard::testing::remaining_ms;
using relayguard::testing::slurp;
using relayguard::testing::SteadyClock;
using relayguard::testing::TempDir;
using relayguard::testing::write_file;
using std::chrono::milliseconds;
using namespace std::chrono_literals;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif
#else
constexpr bool sanitized = false;
#endif

// store.redis.timeout: what one request may wait on Redis before on_error decides.
constexpr milliseconds redis_timeout{50};
// store.redis.connect_timeout: a stopped or paused Redis also stalls a reconnect's handshake.
constexpr milliseconds redis_connect_timeout{200};
// No reply may take longer than redis_timeout plus this. The margin covers a request queued on
// a worker behind others that wait on Redis at the same time (their timeouts end together, the
// replies are written one after another), and scheduling on a 2-core machine that runs other
// builds: measured here at well under 100 ms above the timeout, so 300 ms is 3x. Sanitizer
// builds run the daemon 2-15x slower (TSan most), so they get 1 s.
constexpr milliseconds latency_margin = sanitized ? 1000ms : 300ms;
constexpr milliseconds latency_limit = redis_timeout + latency_margin;
// After Redis is back the daemon must answer from it again within this (issue 7).
constexpr milliseconds recovery_limit{1000};
// Gap between recovery probes: short against recovery_limit.
constexpr milliseconds probe_gap{20};
// Load before a fault and after recovery: long enough for many requests at load_rate.
constexpr milliseconds load_before_fault{700};
constexpr milliseconds load_after_recovery{500};
// How long a killed or stopped Redis stays away: above dead_after_min of the Redis client
// (1 s, client.cpp), so that a stopped Redis's connections are given up and reconnected too.
constexpr milliseconds outage_length{1200};
// CLIENT PAUSE length (ms): a slow Redis, 10x the command timeout.
constexpr int pause_ms = 500;

// The load: 12 connections (each one request in flight, like 12 smtpd processes) at a steady
// rate, well below what a Debug daemon answers on this machine, so that latency measures the
// fault and not saturation. Capped by count and time; faults end it with SIGTERM.
constexpr int load_connections = 12;
constexpr int load_rate = 300;
constexpr int load_request_cap = 20000;
constexpr int load_duration_cap_s = 20;
// loadgen's reply timeout: a reply later than this is an error (and would fail the test).
constexpr int loadgen_timeout_s = 2;
// How long loadgen may take to stop and report after SIGTERM, or to finish a counted run.
constexpr milliseconds loadgen_report_limit{25000};

// server.threads: two workers, each with its own Redis connection, as in production.
constexpr int daemon_threads = 2;
constexpr std::string_view redis_connected = ": connected";
// The outage transition lines (limiter.cpp).
constexpr std::string_view outage_line = "unavailable (";
constexpr std::string_view back_line = "answering again after";

constexpr std::string_view defer_reply = "451 4.3.0 faults test: rate limit store unavailable";
const std::string dunno = "action=DUNNO\n\n";

// ---- relayguard-loadgen as a child ----

// What loadgen's --json line says (keys in tests/bench/RESULTS.md).
struct LoadReport {
    bool ok = false;
    std::string raw;
    std::uint64_t requests = 0;
    std::uint64_t errors = 0;
    double max_latency_ms = 0;
    std::map<std::string, std::uint64_t> actions;

    std::uint64_t action(const std::string& name) const
    {
        const auto it = actions.find(name);
        return it == actions.end() ? 0 : it->second;
    }
    std::string action_names() const
    {
        std::string names;
        for (const auto& [name, n] : actions) names += fmt::format("{}{}={}", names.empty() ? "" : ",", name, n);
        return names;
    }
};

// number_after - the number that follows the first `"key":` in `json`.
std::optional<double> number_after(std::string_view json, std::string_view key)
{
    const std::string needle = fmt::format("\"{}\":", key);
    const auto at = json.find(needle);
    if (at == std::string_view::npos) return std::nullopt;
    const std::string rest(json.substr(at + needle.size(), 32));
    char* end = nullptr;
    const double v = std::strtod(rest.c_str(), &end);
    if (end == rest.c_str()) return std::nullopt;
    return v;
}

// parse_report - loadgen's last output line; ok = false if it is not the JSON report.
LoadReport parse_report(const std::string& out)
{
    LoadReport r;
    auto end = out.find_last_not_of('\n');
    if (end == std::string::npos) return r;
    const auto start = out.rfind('\n', end);
    r.raw = out.substr(start == std::string::npos ? 0 : start + 1, end + 1 - (start == std::string::npos ? 0 : start + 1));
    const std::string_view json = r.raw;
    const auto latency = json.find("\"latency_us\":");
    const auto requests = number_after(json, "requests");
    const auto total = number_after(json, "total");
    const auto max = latency == std::string_view::npos ? std::nullopt : number_after(json.substr(latency), "max");
    const auto actions_at = json.find("\"actions\":{");
    if (!requests || !total || !max || actions_at == std::string_view::npos) return r;
    r.requests = static_cast<std::uint64_t>(*requests);
    r.errors = static_cast<std::uint64_t>(*total);
    r.max_latency_ms = *max / 1000.0;
    // "actions":{"DUNNO":123,"450":4}: action words (no quotes or commas in them).
    std::string_view actions = json.substr(actions_at + 11);
    actions = actions.substr(0, actions.find('}'));
    while (!actions.empty()) {
        const auto comma = actions.find(',');
        const auto item = actions.substr(0, comma);
        const auto colon = item.rfind(':');
        if (item.size() < 4 || colon == std::string_view::npos || item.front() != '"') return r;
        r.actions[std::string(item.substr(1, colon - 2))] = std::strtoull(std::string(item.substr(colon + 1)).c_str(), nullptr, 10);
        if (comma == std::string_view::npos) break;
        actions.remove_prefix(comma + 1);
    }
    r.ok = true;
    return r;
}

// Loadgen - `relayguard-loadgen ARGS --json`, stdout and stderr in DIR/TAG.out and .err.
// The destructor SIGKILLs and reaps it if it is still running.
class Loadgen {
public:
    Loadgen(const std::vector<std::string>& args, const fs::path& dir, const std::string& tag)
        : out_(dir / (tag + ".out")), err_(dir / (tag + ".err"))
    {
        const std::string binary = (binary_dir() / "tests" / "relayguard-loadgen").string();
        std::vector<std::string> all{binary};
        all.insert(all.end(), args.begin(), args.end());
        all.emplace_back("--json");
        std::vector<char*> argv;
        for (auto& a : all) argv.push_back(a.data());
        argv.push_back(nullptr);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        posix_spawn_file_actions_addopen(&actions, 2, err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        const int rc = posix_spawn(&pid_, binary.c_str(), &actions, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        if (rc != 0) {
            ADD_FAILURE() << "cannot start " << binary << ": " << std::strerror(rc);
            pid_ = -1;
            return;
        }
        pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
    }
    ~Loadgen()
    {
        if (pid_ > 0 && !reaped_) {
            kill(pid_, SIGKILL);
            int status = 0;
            waitpid(pid_, &status, 0);
        }
        if (pidfd_ >= 0) close(pidfd_);
    }
    Loadgen(const Loadgen&) = delete;
    Loadgen& operator=(const Loadgen&) = delete;

    bool running() const noexcept { return pid_ > 0 && !reaped_; }

    // stop - SIGTERM: loadgen lets the requests in flight finish and reports.
    void stop()
    {
        if (running()) kill(pid_, SIGTERM);
    }

    // report - wait for it to end (bounded) and read its report.
    LoadReport report(milliseconds limit = loadgen_report_limit)
    {
        if (pid_ <= 0) return {};
        if (!reaped_) {
            const auto deadline = SteadyClock::now() + limit;
            pollfd p{pidfd_, POLLIN, 0};
            while (poll(&p, 1, remaining_ms(deadline)) < 0 && errno == EINTR) {}
            int status = 0;
            if (waitpid(pid_, &status, WNOHANG) != pid_) {
                ADD_FAILURE() << "relayguard-loadgen did not end within " << limit.count() << " ms";
                return {};
            }
            reaped_ = true;
            EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
                << "relayguard-loadgen exit status " << status << "; stderr:\n" << slurp(err_);
        }
        LoadReport r = parse_report(slurp(out_));
        EXPECT_TRUE(r.ok) << "no report from relayguard-loadgen; stdout:\n" << slurp(out_) << "\nstderr:\n" << slurp(err_);
        return r;
    }

private:
    fs::path out_, err_;
    pid_t pid_ = -1;
    int pidfd_ = -1;
    bool reaped_ = false;
};

// ---- Redis, as an operator sees it ----

// redis_call - one command over the UNIX socket, as redis-cli would send it; the reply's first
// line ("+OK", ":1", "$5", "-ERR ..."), or "" on an I/O failure. Bounded by 5 s.
std::string redis_call(const std::string& socket_path, const std::vector<std::string>& args)
{
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return "";
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
    std::string reply;
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
        std::string out = fmt::format("*{}\r\n", args.size());
        for (const auto& a : args) out += fmt::format("${}\r\n{}\r\n", a.size(), a);
        if (send(fd, out.data(), out.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(out.size())) {
            const auto deadline = SteadyClock::now() + 5s;
            pollfd p{fd, POLLIN, 0};
            char chunk[512];
            while (reply.find("\r\n") == std::string::npos && poll(&p, 1, remaining_ms(deadline)) == 1) {
                const ssize_t n = read(fd, chunk, sizeof chunk);
                if (n <= 0) break;
                reply.append(chunk, static_cast<std::size_t>(n));
            }
        }
    }
    close(fd);
    const auto eol = reply.find("\r\n");
    return eol == std::string::npos ? "" : reply.substr(0, eol);
}

// ---- requests and config ----

// One request as Postfix 3.7 sends it (tests/data/samples): authenticated over TLS on the
// submission port as its own login to a foreign domain, or (empty login) unauthenticated from
// `client` to the local domain. Both pass every static check of fault_config().
std::string policy_request(const std::string& login, const std::string& client = "198.51.100.7")
{
    static std::atomic<unsigned> counter{0};
    const bool auth = !login.empty();
    return fmt::format("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
                       "client_address={}\nclient_name=unknown\nreverse_client_name=unknown\n"
                       "server_address=203.0.113.25\nserver_port={}\nhelo_name=client.example.org\n"
                       "sender={}\nrecipient={}\nrecipient_count=0\nqueue_id=\ninstance=77.faults.{:x}.0\nsize=0\n"
                       "sasl_method={}\nsasl_username={}\nsasl_sender=\nencryption_protocol={}\npolicy_context=\n\n",
                       client, auth ? 587 : 25, auth ? login : "x@example.org",
                       auth ? "someone@example.net" : "postmaster@example.com", ++counter, auth ? "PLAIN" : "", login,
                       auth ? "TLSv1.3" : "");
}

// refused_by - whether `reply` is limit `limit`'s default refusal (limits.hpp default_limit_reply;
// ", retry in N seconds" follows unless the override blocks the key outright).
bool refused_by(std::string_view reply, std::string_view limit)
{
    return reply.starts_with(fmt::format("action=450 4.7.1 Rate limit {} exceeded", limit));
}

// count_lines - log lines that contain `needle` (each transition line is one line).
std::size_t count_lines(const std::string& log, std::string_view needle) { return count_of(log, needle); }

// The checks the loadgen's requests pass (tests/bench/configs/realistic.toml): every reply to
// its traffic is DUNNO unless a limit or the store's failure mode says otherwise.
std::string fault_config(const fs::path& socket, std::string_view limits, std::string_view store)
{
    return fmt::format(R"([server]
listen = ["unix:{}"]
threads = {}
allow_root = true
shutdown_timeout = "1s"

[log]
level = "info"

[domains]
local = ["example.com"]

[checks.exempt]
enabled = true
networks = ["127.0.0.0/8"]

[checks.auth_required]
enabled = true
ports = [587, 465, 10587]

[checks.plaintext_auth]
enabled = true

[checks.relay]
enabled = true

[checks.sender_ownership]
enabled = true
login_owns_itself = true

[rate_limits]
enabled = true
hooked_at = ["RCPT", "END-OF-MESSAGE"]

{}
{}
)",
                       socket.string(), daemon_threads, limits, store);
}

// Limits of the fault tests. login_rcpts is never reached by the load (1000 logins); a login of
// probe.example is refused by an override that only Redis knows, so its refusal proves that
// Redis answered. client_rcpts applies to unauthenticated requests only (the load has none):
// 1 a day, so a second probe from one client is refused by whichever store counts.
constexpr std::string_view fault_limits = R"([[limit]]
name = "login_rcpts"
key = "sasl_username"
unit = "recipients"
rates = "1000000/1d"

[[limit]]
name = "client_rcpts"
key = "client_address"
unit = "recipients"
rates = "1/1d"
scope = "unauthenticated"
)";

std::string redis_store(const RedisServer& redis, std::string_view on_error)
{
    std::string text = fmt::format("[store]\ntype = \"redis\"\non_error = \"{}\"\n", on_error);
    if (on_error == "defer") text += fmt::format("defer_reply = \"{}\"\n", defer_reply);
    text += fmt::format("\n[store.redis]\naddress = \"unix:{}\"\ntimeout = \"{}ms\"\nconnect_timeout = \"{}ms\"\n",
                        redis.unix_path(), redis_timeout.count(), redis_connect_timeout.count());
    return text;
}

std::vector<std::string> load_args(const fs::path& socket, int seed)
{
    return {"--connect", "unix:" + socket.string(), "--connections", std::to_string(load_connections),
            "--rate", std::to_string(load_rate), "--requests", std::to_string(load_request_cap),
            "--duration", std::to_string(load_duration_cap_s), "--timeout", std::to_string(loadgen_timeout_s),
            "--mix", "auth=95,eom=5", "--seed", std::to_string(seed)};
}

// ---- fixture ----

class FaultsTest : public ::testing::Test {
protected:
    DaemonProcess& start_daemon(const std::string& config, const std::string& tag = "relayguard")
    {
        const fs::path path = dir_ / (tag + ".toml");
        write_file(path, config);
        DaemonProcess& d = daemons_.emplace_back(path, dir_.path(), tag);
        EXPECT_TRUE(d.wait_started()) << "daemon did not start; stderr:\n" << d.log();
        if (config.find("type = \"redis\"") != std::string::npos) {
            EXPECT_TRUE(d.wait_for_log(redis_connected, daemon_threads)) << "Redis not connected; stderr:\n" << d.log();
        }
        return d;
    }

    std::string redis(const std::vector<std::string>& args) const { return redis_call(redis_->unix_path(), args); }

    TempDir dir_;
    fs::path socket_ = dir_ / "policy.sock";
    std::unique_ptr<RedisServer> redis_; // destroyed after the daemons and loadgens
    std::deque<DaemonProcess> daemons_;
    std::deque<Loadgen> loadgens_;       // destroyed first: they are clients of the daemons
};

// ===== Redis faults under load, for each on_error mode =====

enum class Fault { kill_restart, client_pause, sigstop };

class FaultsUnderLoad : public FaultsTest, public ::testing::WithParamInterface<std::string> {
protected:
    void SetUp() override { redis_ = std::make_unique<RedisServer>(); }

    const std::string& mode() const { return GetParam(); }

    // What the mode answers a request Redis would have allowed, while Redis is away.
    std::string while_down() const { return mode() == "defer" ? fmt::format("action={}\n\n", defer_reply) : dunno; }

    std::string probe_login()
    {
        static std::atomic<unsigned> n{0};
        return fmt::format("p{}@probe.example", ++n);
    }

    // timed_ask - the reply; fails the test if it took longer than latency_limit.
    std::string timed_ask(PolicyClient& client, const std::string& request, std::string_view what)
    {
        const auto t0 = SteadyClock::now();
        std::string reply = client.ask(request);
        const auto took = std::chrono::duration_cast<milliseconds>(SteadyClock::now() - t0);
        EXPECT_LE(took, latency_limit) << what << ": got=" << took.count() << " ms want<=" << latency_limit.count()
                                       << " ms; reply " << reply;
        return reply;
    }

    // wait_for_redis - probe until a probe.example login is refused (only Redis refuses it):
    // how long after `since` that was, or nullopt after 5 recovery_limits.
    std::optional<milliseconds> wait_for_redis(PolicyClient& client, SteadyClock::time_point since)
    {
        const auto deadline = SteadyClock::now() + 5 * recovery_limit;
        while (SteadyClock::now() < deadline) {
            const std::string reply = timed_ask(client, policy_request(probe_login()), "recovery probe");
            if (refused_by(reply, "login_rcpts"))
                return std::chrono::duration_cast<milliseconds>(SteadyClock::now() - since);
            EXPECT_EQ(reply, while_down()) << "recovery probe";
            std::this_thread::sleep_for(probe_gap);
        }
        return std::nullopt;
    }

    // run - the whole scenario for one fault: load, fault, probes while down, recovery, report.
    void run(Fault fault)
    {
        DaemonProcess& d = start_daemon(fault_config(socket_, fault_limits, redis_store(*redis_, mode())));
        ASSERT_EQ(redis({"HSET", "rg:{l:@probe.example}:o", "login_rcpts", "0"}), ":1");
        auto one = PolicyClient::unix_socket(socket_);
        auto two = PolicyClient::unix_socket(socket_); // normally on the other worker
        ASSERT_TRUE(one.connected() && two.connected());
        const std::string first_probe = one.ask(policy_request(probe_login()));
        ASSERT_TRUE(refused_by(first_probe, "login_rcpts")) << "Redis not in use at start: got=" << first_probe << "\nlog:\n" << d.log();

        Loadgen& load = loadgens_.emplace_back(load_args(socket_, 7), dir_.path(), "loadgen");
        std::this_thread::sleep_for(load_before_fault);
        ASSERT_TRUE(load.running()) << "loadgen ended early: " << slurp(dir_ / "loadgen.err");

        // The fault. `back`: when Redis is serving again (set when the fault ends).
        const pid_t redis_pid = redis_->pid();
        struct Resume { // SIGCONT also when an assertion leaves early
            pid_t pid;
            bool stopped = false;
            ~Resume()
            {
                if (stopped) kill(pid, SIGCONT);
            }
        } resume{redis_pid};
        const auto began = SteadyClock::now();
        switch (fault) {
        case Fault::kill_restart: redis_->kill(); break;
        case Fault::client_pause:
            ASSERT_EQ(redis({"CLIENT", "PAUSE", std::to_string(pause_ms), "ALL"}), "+OK");
            break;
        case Fault::sigstop:
            ASSERT_EQ(kill(redis_pid, SIGSTOP), 0);
            resume.stopped = true;
            break;
        }

        // While Redis is away: two requests from one new unauthenticated client. Local mode
        // counts them on this host (1 a day: the second is refused); dunno and defer answer both.
        const std::string client = "198.18.0.7";
        const std::string first = timed_ask(one, policy_request("", client), "first request while down");
        const std::string second = timed_ask(one, policy_request("", client), "second request while down");
        if (mode() == "local") {
            EXPECT_EQ(first, dunno) << "local store: first of 1";
            EXPECT_TRUE(refused_by(second, "client_rcpts")) << "local store: second of 1: got=" << second;
        } else {
            EXPECT_EQ(first, while_down());
            EXPECT_EQ(second, while_down());
        }
        EXPECT_TRUE(d.wait_for_log(outage_line, 1, 3000ms)) << "no outage line; log:\n" << d.log();

        SteadyClock::time_point back;
        switch (fault) {
        case Fault::kill_restart:
            std::this_thread::sleep_until(began + outage_length);
            redis_->restart(); // returns once it answers PING
            back = SteadyClock::now();
            ASSERT_EQ(redis({"HSET", "rg:{l:@probe.example}:o", "login_rcpts", "0"}), ":1"); // not saved
            break;
        case Fault::client_pause: back = began + milliseconds(pause_ms); break;
        case Fault::sigstop:
            std::this_thread::sleep_until(began + outage_length);
            ASSERT_EQ(kill(redis_pid, SIGCONT), 0);
            resume.stopped = false;
            back = SteadyClock::now();
            break;
        }

        // Answers come from Redis again on both workers' connections within recovery_limit.
        std::this_thread::sleep_until(back);
        const auto recovered_one = wait_for_redis(one, back);
        const auto recovered_two = wait_for_redis(two, back);
        ASSERT_TRUE(recovered_one && recovered_two) << "Redis not used again; log:\n" << d.log();
        std::printf("[ timing ] on_error=%s: answers from Redis again %lld ms after it was back\n", mode().c_str(),
                    static_cast<long long>(std::max(*recovered_one, *recovered_two).count()));
        EXPECT_LE(*recovered_one, recovery_limit) << "got=" << recovered_one->count() << " ms";
        EXPECT_LE(*recovered_two, recovery_limit) << "got=" << recovered_two->count() << " ms";
        // ... and are counted there: a new login's state key exists in Redis.
        EXPECT_EQ(one.ask(policy_request("after@example.org")), dunno);
        EXPECT_EQ(redis({"EXISTS", relayguard::state_key("rg:", relayguard::LimitKey::sasl_username, "after@example.org")}),
                  ":1")
            << "not counted in Redis";

        std::this_thread::sleep_for(load_after_recovery);
        load.stop();
        const LoadReport r = load.report();
        ASSERT_TRUE(r.ok);
        std::printf("[ load ] on_error=%s: %s\n", mode().c_str(), r.raw.c_str());
        EXPECT_GT(r.requests, 0u);
        EXPECT_EQ(r.errors, 0u) << "errors or unanswered requests: " << r.raw;
        EXPECT_LE(r.max_latency_ms, double(latency_limit.count()))
            << "got=" << r.max_latency_ms << " ms want<=" << latency_limit.count() << " ms";
        // The load's own requests reach no limit: only the mode's answers appear.
        const std::uint64_t deferred = r.action("451");
        EXPECT_EQ(r.action("DUNNO") + deferred, r.requests) << "replies: " << r.action_names();
        if (mode() == "defer") {
            EXPECT_GT(deferred, 0u) << "no defer during the outage: " << r.action_names();
        } else {
            EXPECT_EQ(deferred, 0u) << "replies: " << r.action_names();
        }

        // One line when the outage began, one when it ended; the mode is named.
        EXPECT_TRUE(d.wait_for_log(back_line, 1, 3000ms)) << "no recovery line; log:\n" << d.log();
        const std::string log = d.log();
        EXPECT_EQ(count_lines(log, outage_line), 1u) << "log:\n" << log;
        EXPECT_EQ(count_lines(log, back_line), 1u) << "log:\n" << log;
        EXPECT_NE(log.find("on_error = " + mode()), std::string::npos) << "log:\n" << log;
    }
};

TEST_P(FaultsUnderLoad, RedisKilledAndRestarted) { run(Fault::kill_restart); }
TEST_P(FaultsUnderLoad, RedisPausedByClientPause) { run(Fault::client_pause); }
TEST_P(FaultsUnderLoad, RedisStoppedAndContinued) { run(Fault::sigstop); }

INSTANTIATE_TEST_SUITE_P(OnError, FaultsUnderLoad, ::testing::Values("dunno", "defer", "local"),
                         [](const auto& info) { return info.param; });

// ===== SIGHUP under load =====

TEST_F(FaultsTest, ReloadsUnderLoadAlternatingGoodAndBadConfigsLoseNoRequest)
{
    constexpr int reloads = 20;
    const auto config = [&](int n) {
        // A good config changes a limit (the reload has something to do); a bad one alternates a
        // TOML syntax error and a value the loader refuses.
        const std::string limit = fmt::format("[[limit]]\nname = \"login_rcpts\"\nkey = \"sasl_username\"\n"
                                              "unit = \"recipients\"\nrates = \"{}/1d\"\n",
                                              1000000 + n);
        std::string text = fault_config(socket_, limit, "[store]\ntype = \"embedded\"\n");
        if (n % 4 == 1) text += "[checks.relay\n";
        if (n % 4 == 3) text += "[[limit]]\nname = \"bad\"\nkey = \"sasl_username\"\nunit = \"recipients\"\nrates = \"many/1d\"\n";
        return text;
    };
    DaemonProcess& d = start_daemon(config(0));
    const fs::path path = dir_ / "relayguard.toml";
    const fs::path next = dir_ / "relayguard.toml.next";
    Loadgen& load = loadgens_.emplace_back(load_args(socket_, 11), dir_.path(), "loadgen");
    std::this_thread::sleep_for(load_before_fault);

    int good = 0, bad = 0;
    for (int n = 1; n <= reloads; ++n) {
        // Written aside, then renamed over: the daemon reads either the old file or the new one.
        write_file(next, config(n));
        ASSERT_EQ(std::rename(next.c_str(), path.c_str()), 0) << std::strerror(errno);
        ASSERT_EQ(kill(d.pid(), SIGHUP), 0);
        if (n % 2 == 0) {
            ++good;
            ASSERT_TRUE(d.wait_for_log("reloaded ", good)) << "reload " << n << " (good); log:\n" << d.log();
        } else {
            ++bad;
            ASSERT_TRUE(d.wait_for_log("failed, keeping the running configuration", bad))
                << "reload " << n << " (bad); log:\n" << d.log();
        }
    }
    load.stop();
    const LoadReport r = load.report();
    ASSERT_TRUE(r.ok);
    std::printf("[ load ] %d reloads: %s\n", reloads, r.raw.c_str());
    EXPECT_GT(r.requests, 0u);
    EXPECT_EQ(r.errors, 0u) << r.raw;
    EXPECT_EQ(r.action("DUNNO"), r.requests) << "replies: " << r.action_names();
    const std::string log = d.log();
    EXPECT_EQ(count_of(log, "reloaded "), static_cast<std::size_t>(reloads / 2)) << log;
    EXPECT_EQ(count_of(log, "failed, keeping the running configuration"), static_cast<std::size_t>(reloads / 2)) << log;
    EXPECT_TRUE(d.stop().has_value()) << "daemon did not stop after the reloads";
}

// ===== exact counting from many connections =====

// One shared limit: every recipient of every login counts against one global budget. A day
// long, so that nothing refills while a test runs (one unit per 173 s).
constexpr int global_limit = 500;
const std::string global_limits = fmt::format(R"([[limit]]
name = "global_rcpts"
key = "global"
unit = "recipients"
rates = "{}/1d"
)",
                                              global_limit);

// counted_args - `requests` RCPT requests exactly, as fast as the daemon answers, no pacing.
std::vector<std::string> counted_args(const fs::path& socket, int connections, int requests, int seed)
{
    return {"--connect", "unix:" + socket.string(), "--connections", std::to_string(connections),
            "--requests", std::to_string(requests), "--duration", std::to_string(load_duration_cap_s),
            "--timeout", std::to_string(loadgen_timeout_s), "--mix", "auth=100", "--seed", std::to_string(seed)};
}

// expect_exact - the replies of one or more runs: exactly `limit` accepted, the rest refused by
// the global limit, nothing else.
void expect_exact(const std::vector<LoadReport>& reports, std::uint64_t sent)
{
    std::uint64_t requests = 0, accepted = 0, refused = 0, errors = 0;
    std::string raw;
    for (const auto& r : reports) {
        requests += r.requests;
        accepted += r.action("DUNNO");
        refused += r.action("450");
        errors += r.errors;
        raw += r.raw + "\n";
    }
    EXPECT_EQ(requests, sent) << raw;
    EXPECT_EQ(errors, 0u) << raw;
    EXPECT_EQ(accepted, static_cast<std::uint64_t>(global_limit)) << "got=" << accepted << " want=" << global_limit << "\n" << raw;
    EXPECT_EQ(refused, sent - global_limit) << raw;
}

TEST_F(FaultsTest, ExactCountWithTheEmbeddedStoreFromSixteenConnections)
{
    constexpr int sent = 800;
    start_daemon(fault_config(socket_, global_limits, "[store]\ntype = \"embedded\"\n"));
    Loadgen& load = loadgens_.emplace_back(counted_args(socket_, 16, sent, 21), dir_.path(), "loadgen");
    expect_exact({load.report()}, sent);
}

TEST_F(FaultsTest, ExactCountWithRedisFromSixteenConnections)
{
    constexpr int sent = 800;
    redis_ = std::make_unique<RedisServer>();
    start_daemon(fault_config(socket_, global_limits, redis_store(*redis_, "defer")));
    Loadgen& load = loadgens_.emplace_back(counted_args(socket_, 16, sent, 22), dir_.path(), "loadgen");
    expect_exact({load.report()}, sent);
}

TEST_F(FaultsTest, ExactCountWithTwoDaemonsOnOneRedisLoadedAtOnce)
{
    constexpr int sent_each = 500;
    redis_ = std::make_unique<RedisServer>();
    const fs::path second = dir_ / "policy2.sock";
    start_daemon(fault_config(socket_, global_limits, redis_store(*redis_, "defer")), "first");
    start_daemon(fault_config(second, global_limits, redis_store(*redis_, "defer")), "second");
    Loadgen& a = loadgens_.emplace_back(counted_args(socket_, 8, sent_each, 23), dir_.path(), "loadgen1");
    Loadgen& b = loadgens_.emplace_back(counted_args(second, 8, sent_each, 24), dir_.path(), "loadgen2");
    const LoadReport ra = a.report();
    const LoadReport rb = b.report();
    EXPECT_GT(ra.action("DUNNO"), 0u) << "the first daemon accepted nothing: not a shared race\n" << ra.raw;
    EXPECT_GT(rb.action("DUNNO"), 0u) << "the second daemon accepted nothing: not a shared race\n" << rb.raw;
    expect_exact({ra, rb}, 2 * sent_each);
}

} // namespace

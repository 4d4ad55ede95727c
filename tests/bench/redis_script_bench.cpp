// SPDX-License-Identifier: MIT
// redis_script_bench.cpp - relayguard-redis-script-bench: Redis's CPU per policy request.
//
// Runs N typical requests through RedisStore::apply (the daemon's exact EVALSHA) and N of a
// 10-call reference script (DESIGN.md §3: one hash per entity, HMGET + HSET + PEXPIRE each, plus
// TIME), alternately, R rounds; per run CONFIG RESETSTAT, then INFO commandstats gives Redis's
// own usec_per_call of EVALSHA and the redis.call()s per request. Prints every run and medians.
// A benchmark tool, not a test: nothing is asserted. Loopback/UNIX socket only.
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <fmt/format.h>

#include <relayguard/counter_store.hpp>
#include <relayguard/key_schema.hpp>
#include <relayguard/redis.hpp>
#include <relayguard/redis_store.hpp>

#include "testing/redis_server.hpp"

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using relayguard::CounterOp;
using relayguard::LimitKey;
using relayguard::StoreRequest;
using relayguard::redis::Client;
using relayguard::redis::Reply;

// Defaults: requests per run and runs (medians are over runs); requests in flight at once
// (Redis's CPU per command does not depend on it; it only shortens the wall time of a run).
constexpr int default_requests = 20'000;
constexpr int default_rounds = 3;
constexpr int default_inflight = 8;

// Populations, as relayguard-loadgen's defaults: 1000 logins in one domain, 1000 clients in
// 256 /24 networks; 5 recipients per message (so 1 request in 5 starts a new instance).
constexpr int logins = 1000;
constexpr int client_nets = 256;
constexpr int recipients_per_message = 5;

// The reference script (DESIGN.md §3, not relayguard's): for each of 3 entities one HMGET of
// its 2 windows' TATs and its override, GCRA for both, one HSET, one PEXPIRE; 10 calls.
constexpr std::string_view reference_script = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #KEYS do
  local key = KEYS[i]
  local v = redis.call('HMGET', key, 'a', 'b', 'o')
  local a, b = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  if a < now then a = now end
  if b < now then b = now end
  a = a + 3000000
  b = b + 3600000
  redis.call('HSET', key, 'a', a, 'b', b)
  redis.call('PEXPIRE', key, math.ceil((b - now) / 1000))
end
return 1
)lua";

struct Options {
    int requests = default_requests;
    int rounds = default_rounds;
    int inflight = default_inflight;
    std::string redis;          // empty: start our own redis-server
    std::string scenario = "typical";
    bool verbose = false;       // also print every command's calls per request
    std::string only;           // "store" or "reference": run only that one (e.g. under perf)
};

// typical_request - the n-th RCPT request of an authenticated client: 3 ops with 2 windows each
// on 2 entities (the login, with the parent "@example.com" whose override it would inherit, and
// the client's /24); messages count once per instance. Rates as in production: each entity's
// TATs stay ahead of now between its visits (so its hash persists: the steady state), yet no
// run comes near them (a run is ~65 requests per login, ~260 per client network). "override":
// the login has its own override of both limits (no parent lookup). "readonly": consume =
// false (relayguardctl check/usage).
StoreRequest typical_request(long n, const std::string& scenario)
{
    const auto rates = [](std::string_view text) { return *relayguard::parse_rate_spec(text); };
    const long message = n / recipients_per_message; // its recipients share login, client, instance
    const std::string login = fmt::format("login{}@example.com", message % logins);
    CounterOp messages;
    messages.limit = "login_messages";
    messages.key = LimitKey::sasl_username;
    messages.value = login;
    messages.parent = "@example.com";
    messages.defaults = rates("20/1m, 100/1h");
    messages.once_per_instance = true;
    CounterOp recipients = messages;
    recipients.limit = "login_recipients";
    recipients.once_per_instance = false;
    recipients.defaults = rates("200/1m, 1000/1h");
    CounterOp client;
    client.limit = "client_recipients";
    client.key = LimitKey::client_address;
    client.value = fmt::format("192.0.{}.0/24", message % client_nets);
    client.defaults = rates("1000/1m, 5000/1h");
    StoreRequest r;
    r.ops = {messages, recipients, client};
    r.instance = fmt::format("Q{}", message);
    r.consume = scenario != "readonly";
    return r;
}

// run_sync - run `aw` on `io` to completion.
template <class T>
T run_sync(asio::io_context& io, asio::awaitable<T> aw)
{
    std::optional<T> out;
    std::exception_ptr failure;
    asio::co_spawn(io, std::move(aw), [&](std::exception_ptr e, T value) {
        failure = e;
        if (!e) out.emplace(std::move(value));
    });
    while (!out && !failure) io.run_one();
    if (failure) std::rethrow_exception(failure);
    return std::move(*out);
}

// send - one command (owning its arguments while it is in flight).
asio::awaitable<boost::system::result<Reply, std::error_code>> send(Client& client, std::vector<std::string> args)
{
    std::vector<std::string_view> argv(args.begin(), args.end());
    co_return co_await client.command(std::move(argv));
}

// command - one command that must get a non-error reply.
Reply command(asio::io_context& io, Client& client, std::vector<std::string> args)
{
    const std::string name = args.at(0);
    auto r = run_sync(io, send(client, std::move(args)));
    if (!r) throw std::runtime_error(name + ": " + r.error().message());
    if (r->is_error()) throw std::runtime_error(name + ": " + r->str);
    return std::move(*r);
}

// Subject - what one run sends: the store's request or the reference script.
enum class Subject { store, reference };

// worker - requests first, first + step, ... below `end`; the first failure stops the run.
asio::awaitable<int> worker(Client& client, relayguard::RedisStore& store, const relayguard::redis::Script& ref,
                            Subject subject, const std::string& scenario, long first, long step, long end,
                            long offset)
{
    for (long n = first; n < end; n += step) {
        if (subject == Subject::store) {
            auto r = co_await store.apply(typical_request(offset + n, scenario));
            if (!r) throw std::runtime_error("apply: " + r.error().message());
            if (!r->allowed) throw std::runtime_error("a typical request was refused: rates too low");
        } else {
            const long e = offset + n;
            const long message = e / recipients_per_message;
            std::vector<std::string> keys = {fmt::format("ref:{{l:login{}@example.com}}", message % logins),
                                             fmt::format("ref:{{l:@example.com:{}}}", message % 7),
                                             fmt::format("ref:{{c:192.0.{}.0/24}}", message % client_nets)};
            auto r = co_await client.eval(ref, keys, {});
            if (!r) throw std::runtime_error("reference eval: " + r.error().message());
        }
    }
    co_return 0;
}

struct Stats {
    double usec_per_call = 0;   // cmdstat_evalsha, Redis's own accounting
    double calls_per_request = 0; // redis.call()s inside the script, per EVALSHA
    double cpu_usec_per_request = 0; // redis-server's user+sys CPU per request (own server only)
    long evalsha_calls = 0;
};

// commandstats - INFO commandstats as name -> {calls, usec}.
std::map<std::string, std::pair<long, double>> commandstats(asio::io_context& io, Client& client)
{
    const Reply info = command(io, client, {"INFO", "commandstats"});
    std::map<std::string, std::pair<long, double>> out;
    std::istringstream in(info.str);
    for (std::string line; std::getline(in, line);) {
        // cmdstat_evalsha:calls=20000,usec=812345,usec_per_call=40.62,...
        if (!line.starts_with("cmdstat_")) continue;
        const auto colon = line.find(':');
        const std::string name = line.substr(8, colon - 8);
        const auto calls = line.find("calls=");
        const auto usec = line.find(",usec=");
        if (calls == std::string::npos || usec == std::string::npos) continue;
        out[name] = {std::stol(line.substr(calls + 6)), std::stod(line.substr(usec + 6))};
    }
    return out;
}

// process_cpu_usec - user+sys CPU of `pid` from /proc (10 ms ticks); -1 when unknown.
double process_cpu_usec(pid_t pid)
{
    if (pid <= 0) return -1;
    std::ifstream in(fmt::format("/proc/{}/stat", pid));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto paren = text.rfind(')');
    if (paren == std::string::npos) return -1;
    std::istringstream fields(text.substr(paren + 2));
    std::string f;
    double utime = 0, stime = 0;
    // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
    for (int i = 3; i <= 15 && fields >> f; ++i) {
        if (i == 14) utime = std::stod(f);
        if (i == 15) stime = std::stod(f);
    }
    return (utime + stime) * 1e6 / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// run - one run of opt.requests of `subject`: reset Redis's stats, send, read them back.
Stats run(asio::io_context& io, Client& client, relayguard::RedisStore& store, const relayguard::redis::Script& ref,
          Subject subject, const Options& opt, long offset, pid_t server_pid)
{
    command(io, client, {"CONFIG", "RESETSTAT"});
    const double cpu0 = process_cpu_usec(server_pid);
    int done = 0;
    std::exception_ptr failure;
    for (int w = 0; w < opt.inflight; ++w) {
        asio::co_spawn(io, worker(client, store, ref, subject, opt.scenario, w, opt.inflight, opt.requests, offset),
                       [&](std::exception_ptr e, int) {
                           if (e && !failure) failure = e;
                           ++done;
                       });
    }
    while (done < opt.inflight) io.run_one();
    if (failure) std::rethrow_exception(failure);
    const double cpu1 = process_cpu_usec(server_pid);
    auto stats = commandstats(io, client);
    Stats s;
    const auto& e = stats["evalsha"];
    s.evalsha_calls = e.first;
    s.usec_per_call = e.first > 0 ? e.second / static_cast<double>(e.first) : 0;
    long inner = 0;
    for (const auto& [name, v] : stats) {
        if (name != "evalsha" && name != "eval" && name != "config|resetstat" && name != "config" && name != "info")
            inner += v.first;
    }
    if (opt.verbose && server_pid > 0) {
        for (const auto& [name, v] : stats)
            fmt::print("      {:<18} {:>8.2f} per request\n", name, static_cast<double>(v.first) / opt.requests);
    }
    s.calls_per_request = e.first > 0 ? static_cast<double>(inner) / static_cast<double>(e.first) : 0;
    s.cpu_usec_per_request = cpu0 < 0 ? -1 : (cpu1 - cpu0) / opt.requests;
    if (stats.contains("eval")) throw std::runtime_error("a script was not cached: EVAL fallback measured");
    return s;
}

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

int parse_int(std::string_view text, const char* what)
{
    int v = 0;
    const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || p != text.data() + text.size() || v <= 0)
        throw std::runtime_error(fmt::format("{}: not a positive number: {}", what, text));
    return v;
}

Options parse_options(int argc, char** argv)
{
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        const auto value = [&]() -> std::string_view {
            if (i + 1 >= argc) throw std::runtime_error(fmt::format("{} needs a value", a));
            return argv[++i];
        };
        if (a == "--requests") o.requests = parse_int(value(), "--requests");
        else if (a == "--rounds") o.rounds = parse_int(value(), "--rounds");
        else if (a == "--inflight") o.inflight = parse_int(value(), "--inflight");
        else if (a == "--redis") o.redis = value();
        else if (a == "--scenario") o.scenario = value();
        else if (a == "--verbose") o.verbose = true;
        else if (a == "--only") o.only = value();
        else
            throw std::runtime_error(fmt::format(
                "usage: {} [--requests N] [--rounds R] [--inflight K] [--redis ADDRESS]"
                " [--scenario typical|override|readonly] [--verbose] [--only store|reference]",
                argv[0]));
    }
    if (o.scenario != "typical" && o.scenario != "override" && o.scenario != "readonly")
        throw std::runtime_error("unknown scenario " + o.scenario);
    return o;
}

// bench - start or reach Redis, warm up (every entity's hash exists, as on a server that has
// been running), then the rounds, each a store run and a reference run; print, return 0.
int bench(const Options& opt)
{
    std::unique_ptr<relayguard::testing::RedisServer> server;
    std::string address = opt.redis;
    pid_t pid = -1;
    if (address.empty()) {
        server = std::make_unique<relayguard::testing::RedisServer>();
        address = "unix:" + server->unix_path();
        pid = server->pid();
    }
    asio::io_context io;
    relayguard::redis::ClientConfig config;
    config.address = address;
    config.command_timeout = 10s; // a loaded machine; a timeout would spoil the run, not measure it
    Client client(io.get_executor(), config);
    client.start();
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!client.connected() && std::chrono::steady_clock::now() < deadline) io.run_one_for(10ms);
    if (!client.connected()) throw std::runtime_error("no connection to " + address);

    // A fresh keyspace per run, also against a server (--redis) that ran the bench before.
    const std::string prefix = fmt::format("bench{}:", ::getpid());
    relayguard::RedisStore store(client, prefix);
    const relayguard::redis::Script ref{std::string(reference_script)};
    command(io, client, {"SCRIPT", "LOAD", relayguard::rate_script().body()});
    command(io, client, {"SCRIPT", "LOAD", ref.body()});
    if (opt.scenario == "override") {
        for (int i = 0; i < logins; ++i) {
            const std::string okey = relayguard::override_key(prefix, LimitKey::sasl_username,
                                                              fmt::format("login{}@example.com", i));
            command(io, client,
                    {"HSET", okey, "login_messages", "40/1m,200/1h", "login_recipients", "400/1m"});
        }
    }
    // Warm up: every entity's hash exists, as on a server that has been running a while.
    Options warm = opt;
    warm.requests = std::max(recipients_per_message * logins, opt.requests / 10);
    if (opt.only != "reference") run(io, client, store, ref, Subject::store, warm, 0, -1);
    if (opt.only != "store") run(io, client, store, ref, Subject::reference, warm, 0, -1);

    fmt::print("redis {} scenario {}, {} requests per run, {} in flight\n", address, opt.scenario, opt.requests,
               opt.inflight);
    fmt::print("{:>5} {:>10} {:>14} {:>16} {:>16}\n", "round", "subject", "usec_per_call", "calls/request",
               "server cpu us/req");
    std::vector<double> store_us, ref_us, store_cpu, ref_cpu;
    double store_calls = 0, ref_calls = 0;
    long offset = warm.requests;
    for (int round = 1; round <= opt.rounds; ++round) {
        for (const Subject subject : {Subject::store, Subject::reference}) {
            if (!opt.only.empty() && opt.only != (subject == Subject::store ? "store" : "reference")) continue;
            const Stats s = run(io, client, store, ref, subject, opt, offset, pid);
            const bool is_store = subject == Subject::store;
            if (s.evalsha_calls != opt.requests)
                throw std::runtime_error(fmt::format("evalsha calls got={} want={}", s.evalsha_calls, opt.requests));
            (is_store ? store_us : ref_us).push_back(s.usec_per_call);
            (is_store ? store_cpu : ref_cpu).push_back(s.cpu_usec_per_request);
            (is_store ? store_calls : ref_calls) = s.calls_per_request;
            fmt::print("{:>5} {:>10} {:>14.2f} {:>16.2f} {:>16.1f}\n", round, is_store ? "store" : "reference",
                       s.usec_per_call, s.calls_per_request, s.cpu_usec_per_request);
        }
        offset += opt.requests;
    }
    const double s = median(store_us), r = median(ref_us);
    fmt::print("median usec_per_call: store {:.2f} ({:.2f} calls), reference {:.2f} ({:.2f} calls), ratio {:.2f}\n",
               s, store_calls, r, ref_calls, r > 0 ? s / r : 0);
    if (pid > 0)
        fmt::print("median server cpu us/request: store {:.1f}, reference {:.1f}\n", median(store_cpu),
                   median(ref_cpu));
    client.close();
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    try {
        return bench(parse_options(argc, argv));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "relayguard-redis-script-bench: %s\n", e.what());
        return 1;
    }
}

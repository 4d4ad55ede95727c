// SPDX-License-Identifier: MIT
// loadgen.cpp - relayguard-loadgen: load a policy server the way Postfix's smtpd processes do.
//
// Modes: load (N connections, one request in flight on each, requests made from captured Postfix
// 3.7 requests with varied attributes; throughput, latency, replies, the daemon's CPU and RSS),
// --idle (hold N idle connections, report the daemon's RSS), --serve-dunno (a do-nothing server
// answering DUNNO: the ceiling), --self-test. A benchmark tool: 1-2 threads, each with its own
// io_context and connections. XXX: CPU figures come from /proc in clock ticks (10 ms each).
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <fmt/core.h>

namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using asio::awaitable;
using Clock = std::chrono::steady_clock;
using Protocol = asio::generic::stream_protocol;
using Socket = Protocol::socket;
using Acceptor = asio::basic_socket_acceptor<Protocol>;
using namespace std::chrono_literals;

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

// Where a Postfix main.cf usually points check_policy_service (contrib/postfix/main.cf).
constexpr std::string_view default_connect = "tcp:127.0.0.1:10033";
// A run must end by itself: also with --requests, this caps it unless --duration is given.
constexpr double default_duration_s = 10.0;
// A reply slower than this counts as a timeout and the connection is re-opened. Postfix's own
// smtpd_policy_service_timeout is 100 s; a benchmark wants to hear about stalls sooner.
constexpr double default_reply_timeout_s = 5.0;
// How often each thread looks for replies past their deadline.
constexpr auto watchdog_period = 50ms;
// Pause before re-connecting after a failed connect, so a dead server is not hammered.
constexpr auto reconnect_backoff = 100ms;
// A policy reply is "action=...\n\n", at most a few hundred bytes (Postfix cuts near 512).
constexpr std::size_t max_reply_bytes = 64 * 1024;
// Bytes asked of each read: a whole reply, or a whole Postfix request (0.6-1.3 KiB).
constexpr std::size_t read_chunk_bytes = 4096;
// --serve-dunno: an unfinished request longer than this closes the connection.
constexpr std::size_t max_served_request_bytes = 1024 * 1024;
// --idle: connects in flight at once, below the usual listen backlog (somaxconn 4096).
constexpr std::size_t idle_connect_parallelism = 256;
// --idle: attempts per connection while the server's backlog is full, and the pause between.
constexpr unsigned idle_connect_attempts = 100;
constexpr auto idle_connect_retry = 20ms;
// File descriptors beyond the connections: stdio, epoll, eventfd, timers, /proc reads.
constexpr rlim_t fd_headroom = 64;
// The load generator is meant to use 1 or 2 threads on a small box (the daemon needs the rest).
constexpr unsigned max_threads = 64;
// Postfix's smtpd closes a message after this many RCPTs in the default population.
constexpr unsigned default_per_message = 5;
// Smallest and largest message size put into END-OF-MESSAGE requests (bytes).
constexpr std::uint64_t min_message_bytes = 1000;
constexpr std::uint64_t max_message_bytes = 100000;

// ---------------------------------------------------------------------------------------------
// Options

enum class Mode : unsigned char { load, idle, serve_dunno, self_test, help };

struct TemplateSpec {
    std::string name;
    fs::path file;
    std::string state; // protocol_state of the request to take; empty: the first request
};

struct Options {
    Mode mode = Mode::load;
    std::string connect{default_connect};
    std::size_t connections = 1;
    std::uint64_t requests = 0; // 0: no count limit
    double rate = 0;            // requests per second, all connections together; 0: no pacing
    double duration_s = default_duration_s;
    double warmup_s = 0;
    double timeout_s = default_reply_timeout_s;
    unsigned threads = 1;
    std::uint64_t logins = 1000;
    std::uint64_t clients = 1000;
    std::uint64_t senders = 1000;
    std::uint64_t recipients = 10000;
    std::string local_domain = "example.com";
    std::string external_domain = "example.net";
    std::vector<std::pair<std::string, unsigned>> mix{{"auth", 70}, {"unauth", 25}, {"eom", 5}};
    unsigned per_message = default_per_message;
    fs::path template_dir;
    std::vector<TemplateSpec> templates;
    long pid = 0;       // the daemon; 0: not measured
    long redis_pid = 0; // a redis-server; 0: not measured
    bool json = false;
    std::uint64_t seed = 1;
    std::size_t idle_connections = 0;
    std::string serve;  // --serve-dunno endpoint
};

// print_usage - every option, one line each.
void print_usage(std::FILE* to)
{
    fmt::print(to,
        "usage: relayguard-loadgen [options]                 load a policy server like Postfix\n"
        "       relayguard-loadgen --idle N [options]        hold N idle connections\n"
        "       relayguard-loadgen --serve-dunno PORT|ENDPOINT [--threads N]\n"
        "       relayguard-loadgen --self-test\n"
        "  --connect EP         tcp:HOST:PORT or unix:/PATH (default {})\n"
        "  --connections N      connections, each with one request in flight (default 1)\n"
        "  --requests N         send exactly N measured requests (all connections together), stop\n"
        "                       once each is answered or failed (default: no limit)\n"
        "  --rate R             at most R requests per second, all connections together, spread\n"
        "                       evenly; a slow server is not caught up on later (default 0: no pacing)\n"
        "  --duration S         measure for S seconds (default {}; also caps --requests)\n"
        "  --warmup S           run S seconds before measuring (default 0)\n"
        "  --timeout S          a reply later than this is a timeout error (default {})\n"
        "  --threads N          threads of the load generator or of --serve-dunno (default 1)\n"
        "  --logins N           logins login<i>@LOCAL, i random in [0,N) (default 1000)\n"
        "  --clients N          client addresses from 192.0.2/24, 198.51.100/24, 203.0.113/24\n"
        "                       and 2001:db8::/32 (default 1000)\n"
        "  --senders N          external senders sender<i>@EXTERNAL of unauthenticated mail;\n"
        "                       authenticated mail uses the login as sender (default 1000)\n"
        "  --recipients N       recipients rcpt<i>@..., local for unauthenticated mail (default 10000)\n"
        "  --local-domain D     (default example.com)   --external-domain D (default example.net)\n"
        "  --mix NAME=PCT,...   share of each template (default auth=70,unauth=25,eom=5)\n"
        "  --per-message K      requests per message (one `instance`); END-OF-MESSAGE also ends\n"
        "                       a message (default {})\n"
        "  --templates DIR      the Postfix 3.7 samples (default {})\n"
        "  --template NAME=FILE[@STATE]  the request of FILE with protocol_state STATE (default:\n"
        "                       its first request); built in: auth, unauth, eom\n"
        "  --pid PID            the daemon: CPU (/proc/PID/stat) and VmRSS/VmHWM (/proc/PID/status)\n"
        "  --redis-pid PID      a redis-server: its CPU over the same window\n"
        "  --idle N             open N connections, hold them --duration seconds, report RSS\n"
        "  --serve-dunno EP     answer action=DUNNO to every request until SIGTERM/SIGINT;\n"
        "                       a bare PORT means tcp:127.0.0.1:PORT (0: any; printed)\n"
        "  --json               one line of JSON instead of the report\n"
        "  --seed N             random seed (default 1)\n"
        "  --self-test          check this tool against its own DUNNO server, then exit\n"
        "  -h, --help           this help\n",
        default_connect, default_duration_s, default_reply_timeout_s, default_per_message,
        RELAYGUARD_SAMPLES_DIR "/postfix-3.7");
}

// parse_number - the whole of `text` as a number (doubles: finite, not negative).
template <class T>
bool parse_number(std::string_view text, T& out)
{
    if (text.empty()) return false;
    if constexpr (std::is_floating_point_v<T>) {
        // from_chars for double is in libstdc++ 11+; strtod would accept "inf" and leading space.
        auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
        return ec == std::errc() && p == text.data() + text.size() && std::isfinite(out) && out >= 0;
    } else {
        auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
        return ec == std::errc() && p == text.data() + text.size();
    }
}

// parse_mix - "auth=70,unauth=25,eom=5": weights of the templates by name.
std::optional<std::string> parse_mix(std::string_view text, Options& options)
{
    options.mix.clear();
    while (!text.empty()) {
        const auto comma = text.find(',');
        const auto item = text.substr(0, comma);
        const auto eq = item.find('=');
        unsigned weight = 0;
        if (eq == std::string_view::npos || eq == 0 || !parse_number(item.substr(eq + 1), weight))
            return fmt::format("--mix: \"{}\" is not NAME=PERCENT", item);
        if (weight > 0) options.mix.emplace_back(std::string(item.substr(0, eq)), weight);
        if (comma == std::string_view::npos) break;
        text.remove_prefix(comma + 1);
    }
    if (options.mix.empty()) return std::string("--mix: no template has a share above 0");
    return std::nullopt;
}

// parse_template_spec - "NAME=FILE[@STATE]".
std::optional<std::string> parse_template_spec(std::string_view text, Options& options)
{
    const auto eq = text.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == text.size())
        return fmt::format("--template: \"{}\" is not NAME=FILE[@STATE]", text);
    TemplateSpec spec{.name = std::string(text.substr(0, eq))};
    auto file = text.substr(eq + 1);
    if (const auto at = file.rfind('@'); at != std::string_view::npos) {
        spec.state = std::string(file.substr(at + 1));
        file = file.substr(0, at);
    }
    spec.file = std::string(file);
    std::erase_if(options.templates, [&](const TemplateSpec& t) { return t.name == spec.name; });
    options.templates.push_back(std::move(spec));
    return std::nullopt;
}

// parse_arguments - fill `options`; the reason when the command line is wrong.
std::optional<std::string> parse_arguments(int argc, char** argv, Options& options)
{
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        std::optional<std::string_view> inline_value;
        if (arg.starts_with("--")) {
            if (const auto eq = arg.find('='); eq != std::string_view::npos) {
                inline_value = arg.substr(eq + 1);
                arg = arg.substr(0, eq);
            }
        }
        auto value = [&]() -> std::optional<std::string_view> {
            if (inline_value) return inline_value;
            if (i + 1 >= argc) return std::nullopt;
            return std::string_view(argv[++i]);
        };
        auto number = [&](auto& out) -> std::optional<std::string> {
            const auto v = value();
            if (!v || !parse_number(*v, out)) return fmt::format("option {} needs a number", arg);
            return std::nullopt;
        };
        auto text = [&](auto& out) -> std::optional<std::string> {
            const auto v = value();
            if (!v || v->empty()) return fmt::format("option {} needs an argument", arg);
            out = std::string(*v);
            return std::nullopt;
        };
        std::optional<std::string> error;
        if (arg == "-h" || arg == "--help") options.mode = Mode::help;
        else if (arg == "--connect") error = text(options.connect);
        else if (arg == "--connections") error = number(options.connections);
        else if (arg == "--requests") error = number(options.requests);
        else if (arg == "--rate") error = number(options.rate);
        else if (arg == "--duration") error = number(options.duration_s);
        else if (arg == "--warmup") error = number(options.warmup_s);
        else if (arg == "--timeout") error = number(options.timeout_s);
        else if (arg == "--threads") error = number(options.threads);
        else if (arg == "--logins") error = number(options.logins);
        else if (arg == "--clients") error = number(options.clients);
        else if (arg == "--senders") error = number(options.senders);
        else if (arg == "--recipients") error = number(options.recipients);
        else if (arg == "--local-domain") error = text(options.local_domain);
        else if (arg == "--external-domain") error = text(options.external_domain);
        else if (arg == "--per-message") error = number(options.per_message);
        else if (arg == "--pid") error = number(options.pid);
        else if (arg == "--redis-pid") error = number(options.redis_pid);
        else if (arg == "--seed") error = number(options.seed);
        else if (arg == "--json") options.json = true;
        else if (arg == "--self-test") options.mode = Mode::self_test;
        else if (arg == "--templates") {
            std::string dir;
            error = text(dir);
            options.template_dir = dir;
        } else if (arg == "--mix") {
            std::string mix;
            if (!(error = text(mix))) error = parse_mix(mix, options);
        } else if (arg == "--template") {
            std::string spec;
            if (!(error = text(spec))) error = parse_template_spec(spec, options);
        } else if (arg == "--idle") {
            options.mode = Mode::idle;
            error = number(options.idle_connections);
        } else if (arg == "--serve-dunno") {
            options.mode = Mode::serve_dunno;
            error = text(options.serve);
        } else if (arg.starts_with("-")) {
            error = fmt::format("unknown option {}", arg);
        } else {
            error = fmt::format("unexpected argument {}", arg);
        }
        if (error) return error;
    }
    if (options.connections == 0) return std::string("--connections must be at least 1");
    if (options.threads == 0 || options.threads > max_threads)
        return fmt::format("--threads must be 1 to {}", max_threads);
    if (options.logins == 0 || options.clients == 0 || options.senders == 0 || options.recipients == 0)
        return std::string("--logins, --clients, --senders and --recipients must be at least 1");
    if (options.per_message == 0) return std::string("--per-message must be at least 1");
    if (options.duration_s <= 0) return std::string("--duration must be above 0");
    if (options.timeout_s <= 0) return std::string("--timeout must be above 0");
    if (options.mode == Mode::idle && options.idle_connections == 0)
        return std::string("--idle needs at least 1 connection");
    return std::nullopt;
}

std::chrono::nanoseconds seconds_to_ns(double s)
{
    return std::chrono::nanoseconds(static_cast<std::int64_t>(s * 1e9));
}

// ---------------------------------------------------------------------------------------------
// Endpoints: "tcp:HOST:PORT" (also "inet:", Postfix's and relayguard's spelling), "unix:/PATH",
// or a bare PORT for 127.0.0.1. Numeric hosts only: nothing here should ever resolve a name.

struct Target {
    bool unix_socket = false;
    Protocol::endpoint endpoint;
};

// parse_target - an endpoint for --connect or --serve-dunno; nullopt with `error` set if bad.
std::optional<Target> parse_target(std::string_view text, std::string& error)
{
    if (text.starts_with("unix:")) {
        const auto path = text.substr(5);
        if (path.empty() || path.size() >= sizeof(sockaddr_un::sun_path)) {
            error = fmt::format("\"{}\": a UNIX socket path of 1 to {} bytes is needed", text,
                                sizeof(sockaddr_un::sun_path) - 1);
            return std::nullopt;
        }
        return Target{true, Protocol::endpoint(asio::local::stream_protocol::endpoint(std::string(path)))};
    }
    std::string_view rest = text;
    if (rest.starts_with("tcp:")) rest.remove_prefix(4);
    else if (rest.starts_with("inet:")) rest.remove_prefix(5);
    else if (rest.find(':') == std::string_view::npos) {
        std::uint16_t port = 0;
        if (parse_number(rest, port)) return Target{false, Protocol::endpoint(asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), port))};
    }
    const auto colon = rest.rfind(':');
    std::uint16_t port = 0;
    if (colon == std::string_view::npos || !parse_number(rest.substr(colon + 1), port)) {
        error = fmt::format("\"{}\" is not tcp:HOST:PORT, unix:/PATH or a port number", text);
        return std::nullopt;
    }
    auto host = rest.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(std::string(host), ec);
    if (ec) {
        error = fmt::format("\"{}\": \"{}\" is not an IP address", text, host);
        return std::nullopt;
    }
    return Target{false, Protocol::endpoint(asio::ip::tcp::endpoint(address, port))};
}

// endpoint_text - "tcp:127.0.0.1:10033", "tcp:[::1]:10033" or "unix:/path", for reports.
std::string endpoint_text(const Protocol::endpoint& ep)
{
    const auto* sa = ep.data();
    if (sa->sa_family == AF_UNIX) {
        const auto* un = reinterpret_cast<const sockaddr_un*>(sa);
        const std::size_t max = ep.size() - offsetof(sockaddr_un, sun_path);
        return fmt::format("unix:{}", std::string_view(un->sun_path, ::strnlen(un->sun_path, max)));
    }
    if (sa->sa_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
        asio::ip::address_v4::bytes_type b;
        std::memcpy(b.data(), &in->sin_addr, 4);
        return fmt::format("tcp:{}:{}", asio::ip::address_v4(b).to_string(), ntohs(in->sin_port));
    }
    if (sa->sa_family == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
        asio::ip::address_v6::bytes_type b;
        std::memcpy(b.data(), &in6->sin6_addr, 16);
        return fmt::format("tcp:[{}]:{}", asio::ip::address_v6(b).to_string(), ntohs(in6->sin6_port));
    }
    return "unknown";
}

// raise_fd_limit - make room for `wanted` descriptors (soft limit, up to the hard one).
std::optional<std::string> raise_fd_limit(rlim_t wanted)
{
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return fmt::format("getrlimit: {}", std::strerror(errno));
    if (limit.rlim_cur >= wanted) return std::nullopt;
    if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < wanted)
        return fmt::format("{} file descriptors needed, hard limit is {} (raise it: ulimit -Hn)", wanted,
                           limit.rlim_max);
    limit.rlim_cur = wanted;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) return fmt::format("setrlimit: {}", std::strerror(errno));
    return std::nullopt;
}

// raise_fd_limit_to_hard - a server cannot know how many clients come: allow what we may.
void raise_fd_limit_to_hard()
{
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == limit.rlim_max) return;
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
}

// ---------------------------------------------------------------------------------------------
// /proc readings of another process (the daemon, redis-server).

struct ProcSample {
    bool ok = false;
    std::uint64_t cpu_us = 0;    // utime + stime, all threads
    std::uint64_t rss_kib = 0;   // VmRSS
    std::uint64_t hwm_kib = 0;   // VmHWM: peak over the process's whole life
};

// read_proc - CPU and memory of process `pid` now; ok = false when it cannot be read (gone).
ProcSample read_proc(long pid)
{
    ProcSample sample;
    if (pid <= 0) return sample;
    std::ifstream stat(fmt::format("/proc/{}/stat", pid));
    std::string line;
    if (!std::getline(stat, line)) return sample;
    // The command name (field 2) may contain spaces and ')': fields resume after the last ')'.
    const auto paren = line.rfind(')');
    if (paren == std::string::npos) return sample;
    std::istringstream fields(line.substr(paren + 1));
    std::string field;
    std::uint64_t utime = 0, stime = 0;
    // proc(5): utime and stime are fields 14 and 15; field 3 (state) is the first after ')'.
    for (int n = 3; n <= 15 && (fields >> field); ++n) {
        if (n == 14) parse_number(field, utime);
        if (n == 15) parse_number(field, stime);
    }
    const auto ticks = static_cast<std::uint64_t>(::sysconf(_SC_CLK_TCK));
    sample.cpu_us = (utime + stime) * 1000000 / (ticks ? ticks : 100);
    std::ifstream status(fmt::format("/proc/{}/status", pid));
    while (std::getline(status, line)) {
        auto take = [&](std::string_view key, std::uint64_t& out) {
            if (!line.starts_with(key)) return;
            std::string_view v = std::string_view(line).substr(key.size());
            while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
            v = v.substr(0, v.find(' '));
            parse_number(v, out);
        };
        take("VmRSS:", sample.rss_kib);
        take("VmHWM:", sample.hwm_kib);
    }
    sample.ok = true;
    return sample;
}

// connect_to - connect `s` to `target`. A UNIX socket whose server's backlog is full fails
// with EAGAIN, which Asio takes for "in progress" and then reports as connected: ask the kernel.
awaitable<boost::system::error_code> connect_to(Socket& s, const Target& target)
{
    auto [ec] = co_await s.async_connect(target.endpoint, use_nothrow);
    if (!ec && target.unix_socket) s.remote_endpoint(ec);
    co_return ec;
}

// own_cpu_us - this process's user + system CPU time, all threads.
std::uint64_t own_cpu_us()
{
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    auto us = [](const timeval& tv) { return std::uint64_t(tv.tv_sec) * 1000000 + std::uint64_t(tv.tv_usec); };
    return us(usage.ru_utime) + us(usage.ru_stime);
}

// ---------------------------------------------------------------------------------------------
// Request templates: a captured request, compiled into literal text and the attribute values
// ("slots") that vary from request to request.

enum class Slot : unsigned char {
    none,
    client_address,
    client_name,
    reverse_client_name,
    client_port,
    sender,
    recipient,
    recipient_count,
    queue_id,
    instance,
    size,
    sasl_username,
};

struct Segment {
    std::string literal; // written before the slot's value ("...\nname=")
    Slot slot = Slot::none;
};

struct Template {
    std::string name;
    std::string origin;       // "file@STATE", for the report
    bool authenticated = false; // the capture has a sasl_username
    bool end_of_message = false;
    std::vector<Segment> segments;
};

// slot_for - which attributes vary. A null sender stays null, and sasl_username is only set in
// requests that had one: the capture decides what kind of request it is.
Slot slot_for(std::string_view name, std::string_view value, bool end_of_message)
{
    if (name == "client_address") return Slot::client_address;
    if (name == "client_name") return Slot::client_name;
    if (name == "reverse_client_name") return Slot::reverse_client_name;
    if (name == "client_port") return Slot::client_port;
    if (name == "sender") return value.empty() ? Slot::none : Slot::sender;
    if (name == "recipient") return Slot::recipient;
    if (name == "recipient_count") return Slot::recipient_count;
    if (name == "queue_id") return Slot::queue_id;
    if (name == "instance") return Slot::instance;
    if (name == "size") return end_of_message ? Slot::size : Slot::none; // MAIL FROM SIZE= stays
    if (name == "sasl_username") return value.empty() ? Slot::none : Slot::sasl_username;
    return Slot::none;
}

// load_template - the first request of `spec.file` whose protocol_state is spec.state (or the
// first request at all), compiled. Throws with the reason.
Template load_template(const TemplateSpec& spec, const fs::path& dir)
{
    const fs::path path = spec.file.is_absolute() || fs::exists(spec.file) ? spec.file : dir / spec.file;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(fmt::format("template {}: cannot read {}", spec.name, path.string()));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::size_t start = 0;
    while (start < text.size()) {
        auto end = text.find("\n\n", start);
        if (end == std::string::npos) end = text.size();
        std::vector<std::pair<std::string_view, std::string_view>> attributes;
        std::string_view request(text.data() + start, end - start);
        std::string_view state;
        while (!request.empty()) {
            const auto nl = request.find('\n');
            const auto line = request.substr(0, nl);
            const auto eq = line.find('=');
            if (eq == std::string_view::npos)
                throw std::runtime_error(fmt::format("template {}: {}: line \"{}\" has no '='", spec.name,
                                                     path.string(), line));
            attributes.emplace_back(line.substr(0, eq), line.substr(eq + 1));
            if (line.substr(0, eq) == "protocol_state") state = line.substr(eq + 1);
            if (nl == std::string_view::npos) break;
            request.remove_prefix(nl + 1);
        }
        start = end + 2;
        if (attributes.empty() || (!spec.state.empty() && state != spec.state)) continue;

        Template t{.name = spec.name,
                   .origin = fmt::format("{}@{}", path.filename().string(), state),
                   .end_of_message = state == "END-OF-MESSAGE"};
        std::string literal;
        for (const auto& [name, value] : attributes) {
            literal.append(name).push_back('=');
            const Slot slot = slot_for(name, value, t.end_of_message);
            if (slot == Slot::sasl_username) t.authenticated = true;
            if (slot == Slot::none) {
                literal.append(value).push_back('\n');
                continue;
            }
            t.segments.push_back({std::move(literal), slot});
            literal = "\n";
        }
        literal.push_back('\n'); // SMTPD_POLICY_README: an empty line ends the request
        t.segments.push_back({std::move(literal), Slot::none});
        return t;
    }
    throw std::runtime_error(fmt::format("template {}: {} has no request{}", spec.name, path.string(),
                                         spec.state.empty() ? "" : " with protocol_state=" + spec.state));
}

// builtin_templates - the three the brief names: an unauthenticated RCPT, an authenticated
// RCPT over TLS on the submission port, and that session's END-OF-MESSAGE.
std::vector<TemplateSpec> builtin_templates()
{
    return {
        {"auth", "tls_auth_plain.policy", "RCPT"},
        {"unauth", "rcpt_unauthenticated.policy", "RCPT"},
        {"eom", "tls_auth_plain.policy", "END-OF-MESSAGE"},
    };
}

// ---------------------------------------------------------------------------------------------
// Populations and the per-connection message state.

// append_client_address - client i of the population: TEST-NET-1/2/3 (RFC 5737) and the
// documentation prefix 2001:db8::/32 (RFC 3849) in turn; attribute values only, never contacted.
// XXX: the three /24s hold 762 IPv4 addresses; larger populations repeat them (IPv6 do not).
void append_client_address(std::string& out, std::uint64_t i)
{
    const std::uint64_t host = i / 4;
    switch (i % 4) {
    case 0: fmt::format_to(std::back_inserter(out), "192.0.2.{}", host % 254 + 1); break;
    case 1: fmt::format_to(std::back_inserter(out), "198.51.100.{}", host % 254 + 1); break;
    case 2: fmt::format_to(std::back_inserter(out), "203.0.113.{}", host % 254 + 1); break;
    default: // each its own /64, canonical text (no zero group besides the "::")
        fmt::format_to(std::back_inserter(out), "2001:db8:{:x}:{:x}::1", host / 0xffff % 0xffff + 1,
                       host % 0xffff + 1);
    }
}

struct Population {
    std::uint64_t logins, clients, senders, recipients;
    std::string local_domain, external_domain;
    unsigned per_message;
    std::uint64_t run_nonce; // keeps `instance` values of two runs apart
};

// One SMTP transaction as seen by the policy server: one `instance`, one client and login.
struct Message {
    std::uint64_t number = 0;   // messages begun on this connection
    unsigned requests = 0;      // requests of this message sent so far
    unsigned rcpts = 0;         // RCPT requests among them
    std::uint64_t client = 0, login = 0, sender = 0, last_recipient = 0;
    std::uint16_t client_port = 0;
    std::string instance, queue_id, client_address;
};

class Generator {
public:
    Generator(const Population& population, const std::vector<Template>& templates,
              const std::vector<unsigned>& weights, std::uint64_t connection, std::uint64_t seed)
        : population_(population), templates_(templates), connection_(connection),
          rng_(seed ^ (0x9E3779B97F4A7C15ull * (connection + 1)))
    {
        unsigned total = 0;
        for (const unsigned w : weights) cumulative_.push_back(total += w);
    }

    // render - the next request of this connection into `out` (cleared first).
    void render(std::string& out)
    {
        const Template& t = templates_[pick_template()];
        if (message_.requests == 0) begin_message();
        std::uint64_t recipient = message_.last_recipient;
        if (!t.end_of_message) recipient = uniform(population_.recipients);

        out.clear();
        for (const auto& segment : t.segments) {
            out.append(segment.literal);
            switch (segment.slot) {
            case Slot::none: break;
            case Slot::client_address: out.append(message_.client_address); break;
            case Slot::client_name:
            case Slot::reverse_client_name: out.append("unknown"); break; // TEST-NET has no PTR
            case Slot::client_port: fmt::format_to(std::back_inserter(out), "{}", message_.client_port); break;
            case Slot::sender:
                if (t.authenticated) append_login(out);
                else fmt::format_to(std::back_inserter(out), "sender{}@{}", message_.sender, population_.external_domain);
                break;
            case Slot::recipient:
                // Postfix names the recipient at END-OF-MESSAGE only when there was exactly one.
                if (t.end_of_message && message_.rcpts != 1) break;
                fmt::format_to(std::back_inserter(out), "rcpt{}@{}", recipient,
                               t.authenticated ? population_.external_domain : population_.local_domain);
                break;
            case Slot::recipient_count:
                // Postfix: 0 at RCPT, the accepted recipients at END-OF-MESSAGE.
                fmt::format_to(std::back_inserter(out), "{}", t.end_of_message ? message_.rcpts : 0u);
                break;
            case Slot::queue_id:
                // Postfix assigns the queue id with the first accepted recipient.
                if (t.end_of_message || message_.rcpts > 0) out.append(message_.queue_id);
                break;
            case Slot::instance: out.append(message_.instance); break;
            case Slot::size:
                fmt::format_to(std::back_inserter(out), "{}", min_message_bytes + uniform(max_message_bytes - min_message_bytes));
                break;
            case Slot::sasl_username: append_login(out); break;
            }
        }

        if (!t.end_of_message) {
            ++message_.rcpts;
            message_.last_recipient = recipient;
        }
        if (++message_.requests >= population_.per_message || t.end_of_message) message_.requests = 0;
    }

private:
    std::uint64_t uniform(std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng_); }

    std::size_t pick_template()
    {
        const auto r = static_cast<unsigned>(uniform(cumulative_.back()));
        return static_cast<std::size_t>(std::upper_bound(cumulative_.begin(), cumulative_.end(), r) - cumulative_.begin());
    }

    void begin_message()
    {
        ++message_.number;
        message_.rcpts = 0;
        message_.client = uniform(population_.clients);
        message_.login = uniform(population_.logins);
        message_.sender = uniform(population_.senders);
        message_.client_port = static_cast<std::uint16_t>(1024 + uniform(65535 - 1024));
        message_.client_address.clear();
        append_client_address(message_.client_address, message_.client);
        // Postfix's instance is "pid.time.usec.counter" in hex; unique per run and connection here.
        message_.instance = fmt::format("{:x}.{:x}.{:x}.0", population_.run_nonce & 0xffffffff, connection_,
                                        message_.number);
        message_.queue_id = fmt::format("{:011X}", rng_() & 0xfffffffffffull);
    }

    void append_login(std::string& out) const
    {
        fmt::format_to(std::back_inserter(out), "login{}@{}", message_.login, population_.local_domain);
    }

    const Population& population_;
    const std::vector<Template>& templates_;
    std::uint64_t connection_;
    std::mt19937_64 rng_;
    std::vector<unsigned> cumulative_;
    Message message_;
};

// ---------------------------------------------------------------------------------------------
// Load mode.

struct Stats {
    std::vector<std::uint32_t> latency_ns; // saturated at ~4.29 s; max_ns is exact
    std::uint64_t max_ns = 0;
    std::vector<std::pair<std::string, std::uint64_t>> actions; // few distinct: a linear scan
    std::uint64_t closed = 0;           // connection closed (or reset) without a reply
    std::uint64_t timeouts = 0;         // no reply within --timeout
    std::uint64_t connect_failures = 0; // connect refused or failed
    std::uint64_t bad_replies = 0;      // not "action=...\n\n", or more than one reply

    void count_action(std::string_view action, std::uint64_t count = 1)
    {
        for (auto& [name, n] : actions)
            if (name == action) {
                n += count;
                return;
            }
        actions.emplace_back(std::string(action), count);
    }
};

enum class Phase : int { warmup, measuring, stopped };

struct LoadResult {
    std::string target;
    std::size_t connections = 0;
    unsigned threads = 0;
    double warmup_s = 0;
    double duration_s = 0;
    std::uint64_t requests = 0;
    Stats stats;              // merged
    std::vector<std::string> templates;
    ProcSample daemon_start, daemon_end, redis_start, redis_end;
    std::uint64_t loadgen_cpu_us = 0;
    bool interrupted = false;
};

class LoadRun;

struct Connection {
    Connection(asio::io_context& ctx, Generator generator, std::size_t index)
        : socket(ctx), backoff(ctx), generator(std::move(generator)), index(index) {}
    Socket socket;
    asio::steady_timer backoff; // reconnect backoff, and --rate pacing
    Generator generator;
    std::size_t index;          // 0 .. connections-1: its slot in the --rate schedule
    Clock::time_point deadline{};
    Clock::time_point next_send{}; // --rate: not before this; zero: not scheduled yet
    bool busy = false;      // a request is waiting for its reply
    bool timed_out = false; // the watchdog closed the socket
    bool counted = false;   // --requests: the request in flight holds one of the N tickets
    bool done = false;      // --requests: every ticket is taken, this connection ends
    std::string out, in;
};

struct Worker {
    asio::io_context ctx{1}; // one thread runs it: Asio may skip some locking
    std::vector<std::unique_ptr<Connection>> connections;
    asio::steady_timer watchdog{ctx};
    Stats stats;
};

class LoadRun {
public:
    LoadRun(const Options& options, const Target& target, const std::vector<Template>& templates)
        : options_(options), target_(target), templates_(templates), timeout_(seconds_to_ns(options.timeout_s)),
          workers_(make_workers(options.threads)), control_timer_(workers_[0]->ctx), signals_(workers_[0]->ctx)
    {
        for (const auto& entry : options.mix) weights_.push_back(entry.second);
        population_ = Population{options.logins, options.clients, options.senders, options.recipients,
                                 options.local_domain, options.external_domain, options.per_message,
                                 static_cast<std::uint64_t>(Clock::now().time_since_epoch().count()) ^ options.seed};
    }

    LoadResult run()
    {
        if (auto error = raise_fd_limit(static_cast<rlim_t>(options_.connections) + fd_headroom))
            throw std::runtime_error(*error);
        phase_.store(options_.warmup_s > 0 ? Phase::warmup : Phase::measuring);
        if (options_.warmup_s <= 0) begin_measuring();
        for (std::size_t i = 0; i < options_.connections; ++i) {
            auto& w = *workers_[i % workers_.size()];
            w.connections.push_back(std::make_unique<Connection>(
                w.ctx, Generator(population_, templates_, weights_, i, options_.seed), i));
            w.stats.latency_ns.reserve(1 << 16);
            asio::co_spawn(w.ctx, run_connection(w, *w.connections.back()), rethrow);
        }
        for (auto& w : workers_) asio::co_spawn(w->ctx, watchdog(*w), rethrow);
        asio::co_spawn(workers_[0]->ctx, control(), rethrow);
        signals_.add(SIGINT);
        signals_.add(SIGTERM);
        signals_.async_wait([this](boost::system::error_code ec, int) {
            if (ec) return;
            result_.interrupted = true;
            control_timer_.cancel();
        });

        // Each thread runs its own io_context; an exception (a bug: I/O errors are values here)
        // stops the run and is rethrown on this thread.
        std::vector<std::exception_ptr> failures(workers_.size());
        auto run_worker = [&](std::size_t i) {
            try {
                workers_[i]->ctx.run();
            } catch (...) {
                failures[i] = std::current_exception();
                stop_all();
                workers_[i]->ctx.restart();
                workers_[i]->ctx.run();
            }
        };
        std::vector<std::thread> threads;
        for (std::size_t i = 1; i < workers_.size(); ++i) threads.emplace_back(run_worker, i);
        run_worker(0);
        for (auto& t : threads) t.join();
        for (auto& failure : failures)
            if (failure) std::rethrow_exception(failure);
        return collect();
    }

private:
    static void rethrow(std::exception_ptr e)
    {
        if (e) std::rethrow_exception(e);
    }

    static std::vector<std::unique_ptr<Worker>> make_workers(unsigned threads)
    {
        std::vector<std::unique_ptr<Worker>> workers;
        for (unsigned i = 0; i < threads; ++i) workers.push_back(std::make_unique<Worker>());
        return workers;
    }

    bool stopping() const noexcept { return phase_.load(std::memory_order_relaxed) == Phase::stopped; }
    bool measuring() const noexcept { return phase_.load(std::memory_order_relaxed) == Phase::measuring; }

    void begin_measuring()
    {
        result_.daemon_start = read_proc(options_.pid);
        result_.redis_start = read_proc(options_.redis_pid);
        loadgen_cpu_start_ = own_cpu_us();
        t0_ = Clock::now();
        phase_.store(Phase::measuring);
    }

    void end_measuring()
    {
        phase_.store(Phase::stopped);
        t1_ = Clock::now();
        result_.daemon_end = read_proc(options_.pid);
        result_.redis_end = read_proc(options_.redis_pid);
        result_.loadgen_cpu_us = own_cpu_us() - loadgen_cpu_start_;
    }

    // stop_all - end the run: each thread closes its connections that wait for nothing, and a
    // connection with a request in flight closes once its reply is in (or overdue), as Postfix
    // closes between requests; a server must not see a reply fail just because a run ended.
    // Each io_context then runs dry.
    void stop_all()
    {
        phase_.store(Phase::stopped);
        asio::post(workers_[0]->ctx, [this] { signals_.cancel(); });
        for (auto& w : workers_) {
            asio::post(w->ctx, [w = w.get()] {
                for (auto& c : w->connections) {
                    c->backoff.cancel();
                    if (c->busy) continue;
                    boost::system::error_code ignored;
                    c->socket.close(ignored);
                }
            });
        }
    }

    // control - warmup, measuring window, stop. Runs on thread 0.
    awaitable<void> control()
    {
        if (phase_.load() == Phase::warmup) {
            control_timer_.expires_after(seconds_to_ns(options_.warmup_s));
            co_await control_timer_.async_wait(use_nothrow);
            if (!result_.interrupted) begin_measuring();
        }
        const bool reached = options_.requests != 0 && settled_.load() >= options_.requests;
        if (!result_.interrupted && !reached) {
            control_timer_.expires_after(seconds_to_ns(options_.duration_s));
            co_await control_timer_.async_wait(use_nothrow); // cancelled: --requests reached, or a signal
        }
        if (phase_.load() != Phase::measuring) begin_measuring(); // a signal during warmup
        end_measuring();
        stop_all();
    }

    // watchdog - close connections whose reply is overdue; the reader sees the close. Runs
    // until the run has stopped and no reply is awaited any more.
    awaitable<void> watchdog(Worker& w)
    {
        for (;;) {
            w.watchdog.expires_after(watchdog_period);
            co_await w.watchdog.async_wait(use_nothrow);
            const auto now = Clock::now();
            const bool waiting = std::any_of(w.connections.begin(), w.connections.end(),
                                             [](const auto& c) { return c->busy; });
            if (stopping() && !waiting) co_return;
            for (auto& c : w.connections) {
                if (c->busy && now > c->deadline) {
                    c->timed_out = true;
                    boost::system::error_code ignored;
                    c->socket.close(ignored);
                }
            }
        }
    }

    // run_connection - one Postfix-like client: connect, exchange until the connection fails,
    // re-connect (after reconnect_backoff if the connect failed), until the run stops.
    awaitable<void> run_connection(Worker& w, Connection& c)
    {
        while (!stopping() && !c.done) {
            c.socket = Socket(w.ctx);
            auto ec = co_await connect_to(c.socket, target_);
            if (stopping()) break;
            if (ec) {
                if (measuring()) ++w.stats.connect_failures;
                c.backoff.expires_after(reconnect_backoff);
                co_await c.backoff.async_wait(use_nothrow);
                continue;
            }
            if (!target_.unix_socket) c.socket.set_option(asio::ip::tcp::no_delay(true), ec);
            co_await exchange(w, c);
            boost::system::error_code ignored;
            c.socket.close(ignored);
        }
    }

    // exchange - requests and replies on one open connection, one at a time like Postfix;
    // returns when the connection fails (counted) or the run stops.
    awaitable<void> exchange(Worker& w, Connection& c)
    {
        std::array<char, read_chunk_bytes> chunk;
        while (!stopping()) {
            if (options_.rate > 0 && !co_await pace(c)) co_return;
            if (!take_ticket(c)) co_return;
            c.generator.render(c.out);
            const auto sent = Clock::now();
            c.deadline = sent + timeout_;
            c.busy = true;
            c.timed_out = false;
            auto [wec, written] = co_await asio::async_write(c.socket, asio::buffer(c.out), use_nothrow);
            (void)written;
            if (wec) {
                fail(w, c);
                co_return;
            }
            c.in.clear();
            std::size_t end = std::string::npos;
            while (end == std::string::npos) {
                auto [rec, n] = co_await c.socket.async_read_some(asio::buffer(chunk), use_nothrow);
                if (rec) {
                    fail(w, c);
                    co_return;
                }
                const auto scan_from = c.in.empty() ? 0 : c.in.size() - 1;
                c.in.append(chunk.data(), n);
                end = c.in.find("\n\n", scan_from);
                if (end == std::string::npos && c.in.size() > max_reply_bytes) {
                    if (measuring()) {
                        ++w.stats.bad_replies;
                        settle(c);
                    }
                    c.busy = false;
                    co_return;
                }
            }
            c.busy = false;
            const auto latency = Clock::now() - sent;
            // Without pipelining, bytes after the reply mean the server answered twice.
            if (end + 2 != c.in.size()) {
                if (measuring()) {
                    ++w.stats.bad_replies;
                    settle(c);
                }
                co_return;
            }
            record(w, c, std::string_view(c.in).substr(0, end), latency);
        }
    }

    // pace - --rate: wait for this connection's next slot. Connection i of n sends at
    // t0 + (i/n + k) * n/rate; a slot already past is taken at once and the schedule restarts
    // from now (no burst to catch up). False when the run stopped meanwhile.
    awaitable<bool> pace(Connection& c)
    {
        const auto n = static_cast<double>(options_.connections);
        const auto interval = std::chrono::duration_cast<Clock::duration>(seconds_to_ns(n / options_.rate));
        auto now = Clock::now();
        if (c.next_send == Clock::time_point{})
            c.next_send = now + interval * static_cast<std::int64_t>(c.index) / static_cast<std::int64_t>(options_.connections);
        if (c.next_send > now) {
            c.backoff.expires_at(c.next_send);
            co_await c.backoff.async_wait(use_nothrow);
            if (stopping()) co_return false;
            now = Clock::now();
        }
        c.next_send = std::max(c.next_send + interval, now);
        co_return true;
    }

    // take_ticket - --requests: one of the N measured requests for the next send, or false
    // once all are taken (the connection ends). Requests sent during warmup take none.
    bool take_ticket(Connection& c)
    {
        c.counted = false;
        if (options_.requests == 0 || !measuring()) return true;
        if (tickets_.fetch_add(1, std::memory_order_relaxed) >= options_.requests) {
            c.done = true;
            return false;
        }
        c.counted = true;
        return true;
    }

    // settle - --requests: a ticketed request got its reply or failed; after the last one
    // the run ends (it could also end earlier, at --duration).
    void settle(Connection& c)
    {
        if (!c.counted) return;
        c.counted = false;
        if (settled_.fetch_add(1, std::memory_order_relaxed) + 1 == options_.requests)
            asio::post(workers_[0]->ctx, [this] { control_timer_.cancel(); });
    }

    // fail - count a connection that broke while a reply was awaited (not after the run ended).
    void fail(Worker& w, Connection& c)
    {
        c.busy = false;
        if (!measuring()) return;
        if (c.timed_out) ++w.stats.timeouts;
        else ++w.stats.closed;
        settle(c);
    }

    // record - count one reply received inside the measuring window; with --requests, only
    // the replies to the N ticketed requests (not to ones sent during warmup).
    void record(Worker& w, Connection& c, std::string_view reply, Clock::duration latency)
    {
        if (!measuring()) return;
        if (options_.requests != 0 && !c.counted) return;
        settle(c);
        constexpr std::string_view prefix = "action=";
        if (!reply.starts_with(prefix)) {
            ++w.stats.bad_replies;
            return;
        }
        reply.remove_prefix(prefix.size());
        const auto ns = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(latency).count());
        w.stats.latency_ns.push_back(static_cast<std::uint32_t>(std::min<std::uint64_t>(ns, UINT32_MAX)));
        w.stats.max_ns = std::max(w.stats.max_ns, ns);
        w.stats.count_action(reply.substr(0, reply.find_first_of(" \t\n")));
    }

    // collect - merge the threads' figures; latencies sorted for the percentiles.
    LoadResult collect()
    {
        LoadResult& r = result_;
        r.target = endpoint_text(target_.endpoint);
        r.connections = options_.connections;
        r.threads = static_cast<unsigned>(workers_.size());
        r.warmup_s = options_.warmup_s;
        r.duration_s = std::chrono::duration<double>(t1_ - t0_).count();
        for (const auto& t : templates_) r.templates.push_back(fmt::format("{}={}", t.name, t.origin));
        for (auto& w : workers_) {
            auto& s = w->stats;
            r.stats.latency_ns.insert(r.stats.latency_ns.end(), s.latency_ns.begin(), s.latency_ns.end());
            r.stats.max_ns = std::max(r.stats.max_ns, s.max_ns);
            for (const auto& [name, n] : s.actions) r.stats.count_action(name, n);
            r.stats.closed += s.closed;
            r.stats.timeouts += s.timeouts;
            r.stats.connect_failures += s.connect_failures;
            r.stats.bad_replies += s.bad_replies;
        }
        std::sort(r.stats.actions.begin(), r.stats.actions.end(),
                  [](const auto& a, const auto& b) { return a.second != b.second ? a.second > b.second : a.first < b.first; });
        std::sort(r.stats.latency_ns.begin(), r.stats.latency_ns.end());
        r.requests = r.stats.latency_ns.size();
        return std::move(result_);
    }

    const Options& options_;
    const Target& target_;
    const std::vector<Template>& templates_;
    std::vector<unsigned> weights_;
    Population population_{};
    std::chrono::nanoseconds timeout_;
    std::vector<std::unique_ptr<Worker>> workers_;
    asio::steady_timer control_timer_;
    asio::signal_set signals_;
    std::atomic<Phase> phase_{Phase::warmup};
    std::atomic<std::uint64_t> tickets_{0}; // --requests: measured requests sent
    std::atomic<std::uint64_t> settled_{0}; // --requests: of those, answered or failed
    Clock::time_point t0_{}, t1_{};
    std::uint64_t loadgen_cpu_start_ = 0;
    LoadResult result_;
};

// percentile_us - nearest rank of sorted nanoseconds, in µs.
double percentile_us(const std::vector<std::uint32_t>& sorted, double p)
{
    if (sorted.empty()) return 0;
    auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
    rank = std::clamp<std::size_t>(rank, 1, sorted.size());
    return sorted[rank - 1] / 1000.0;
}

double mean_us(const std::vector<std::uint32_t>& v)
{
    if (v.empty()) return 0;
    long double sum = 0;
    for (const auto x : v) sum += x;
    return static_cast<double>(sum / v.size() / 1000.0L);
}

// json_string - a JSON string literal; reply text comes from the server under test.
std::string json_string(std::string_view s)
{
    std::string out = "\"";
    for (const unsigned char ch : s) {
        if (ch == '"' || ch == '\\') {
            out.push_back('\\');
            out.push_back(static_cast<char>(ch));
        } else if (ch < 0x20 || ch >= 0x7f) {
            fmt::format_to(std::back_inserter(out), "\\u{:04x}", ch);
        } else {
            out.push_back(static_cast<char>(ch));
        }
    }
    out.push_back('"');
    return out;
}

std::string json_proc(const ProcSample& start, const ProcSample& end, long pid, std::uint64_t requests)
{
    if (pid <= 0) return "null";
    if (!start.ok || !end.ok) return fmt::format("{{\"pid\":{},\"error\":\"cannot read /proc\"}}", pid);
    const auto cpu = end.cpu_us - std::min(end.cpu_us, start.cpu_us);
    return fmt::format("{{\"pid\":{},\"cpu_us\":{},\"cpu_us_per_request\":{:.2f},\"vm_rss_kib\":{},"
                       "\"vm_rss_start_kib\":{},\"vm_hwm_kib\":{}}}",
                       pid, cpu, requests ? double(cpu) / double(requests) : 0.0, end.rss_kib, start.rss_kib,
                       end.hwm_kib);
}

// print_load_json - the one line run-matrix.sh collects (keys documented in bench/RESULTS.md).
void print_load_json(const LoadResult& r, const Options& o)
{
    const auto& l = r.stats.latency_ns;
    std::string actions;
    for (const auto& [name, n] : r.stats.actions)
        fmt::format_to(std::back_inserter(actions), "{}{}:{}", actions.empty() ? "" : ",", json_string(name), n);
    std::string templates;
    for (const auto& t : r.templates) fmt::format_to(std::back_inserter(templates), "{}{}", templates.empty() ? "" : ",", json_string(t));
    std::string mix;
    for (const auto& [name, w] : o.mix) fmt::format_to(std::back_inserter(mix), "{}{}:{}", mix.empty() ? "" : ",", json_string(name), w);
    fmt::print("{{\"mode\":\"load\",\"target\":{},\"connections\":{},\"threads\":{},\"seed\":{},\"warmup_s\":{},"
               "\"duration_s\":{:.3f},\"requests\":{},\"requests_per_s\":{:.1f},"
               "\"latency_us\":{{\"p50\":{:.1f},\"p90\":{:.1f},\"p99\":{:.1f},\"p99_9\":{:.1f},\"max\":{:.1f},\"mean\":{:.1f}}},"
               "\"actions\":{{{}}},\"errors\":{{\"total\":{},\"closed\":{},\"timeouts\":{},\"connect_failures\":{},\"bad_replies\":{}}},"
               "\"daemon\":{},\"redis\":{},\"loadgen_cpu_us\":{},\"mix\":{{{}}},\"per_message\":{},\"templates\":[{}],"
               "\"rate\":{},\"interrupted\":{}}}\n",
               json_string(r.target), r.connections, r.threads, o.seed, r.warmup_s, r.duration_s, r.requests,
               r.duration_s > 0 ? double(r.requests) / r.duration_s : 0.0, percentile_us(l, 0.50),
               percentile_us(l, 0.90), percentile_us(l, 0.99), percentile_us(l, 0.999), r.stats.max_ns / 1000.0,
               mean_us(l), actions,
               r.stats.closed + r.stats.timeouts + r.stats.connect_failures + r.stats.bad_replies, r.stats.closed,
               r.stats.timeouts, r.stats.connect_failures, r.stats.bad_replies,
               json_proc(r.daemon_start, r.daemon_end, o.pid, r.requests),
               json_proc(r.redis_start, r.redis_end, o.redis_pid, r.requests), r.loadgen_cpu_us, mix,
               o.per_message, templates, o.rate, r.interrupted);
}

void print_proc_line(std::string_view label, long pid, const ProcSample& start, const ProcSample& end,
                     std::uint64_t requests, bool memory)
{
    if (pid <= 0) return;
    if (!start.ok || !end.ok) {
        fmt::print("{:<13}pid {}: cannot read /proc\n", label, pid);
        return;
    }
    const auto cpu = end.cpu_us - std::min(end.cpu_us, start.cpu_us);
    fmt::print("{:<13}pid {}: cpu {:.2f} s = {:.1f} µs/request", label, pid, cpu / 1e6,
               requests ? double(cpu) / double(requests) : 0.0);
    if (memory) fmt::print("; VmRSS {} KiB (start {}), VmHWM {} KiB (lifetime peak)", end.rss_kib, start.rss_kib, end.hwm_kib);
    fmt::print("\n");
}

void print_load_report(const LoadResult& r, const Options& o)
{
    const auto& l = r.stats.latency_ns;
    fmt::print("relayguard-loadgen: {}, {} connection{}, {} thread{}, seed {}{}\n", r.target, r.connections,
               r.connections == 1 ? "" : "s", r.threads, r.threads == 1 ? "" : "s", o.seed,
               r.interrupted ? " (interrupted)" : "");
    std::string mix;
    for (const auto& [name, w] : o.mix) fmt::format_to(std::back_inserter(mix), "{}{}={}", mix.empty() ? "" : ",", name, w);
    std::string templates;
    for (const auto& t : r.templates) fmt::format_to(std::back_inserter(templates), " {}", t);
    fmt::print("{:<13}{}, {} per message;{}\n", "mix", mix, o.per_message, templates);
    if (o.rate > 0) fmt::print("{:<13}at most {}/s\n", "rate", o.rate);
    fmt::print("{:<13}{} in {:.2f} s (after {} s warmup) = {:.1f}/s\n", "requests", r.requests, r.duration_s,
               r.warmup_s, r.duration_s > 0 ? double(r.requests) / r.duration_s : 0.0);
    fmt::print("{:<13}p50 {:.1f}  p90 {:.1f}  p99 {:.1f}  p99.9 {:.1f}  max {:.1f}  mean {:.1f}\n", "latency µs",
               percentile_us(l, 0.50), percentile_us(l, 0.90), percentile_us(l, 0.99), percentile_us(l, 0.999),
               r.stats.max_ns / 1000.0, mean_us(l));
    fmt::print("{:<13}", "actions");
    for (const auto& [name, n] : r.stats.actions)
        fmt::print("{} {} ({:.1f}%)  ", name, n, r.requests ? 100.0 * double(n) / double(r.requests) : 0.0);
    fmt::print("\n{:<13}closed {}  timeouts {}  connect failures {}  bad replies {}\n", "errors", r.stats.closed,
               r.stats.timeouts, r.stats.connect_failures, r.stats.bad_replies);
    print_proc_line("daemon", o.pid, r.daemon_start, r.daemon_end, r.requests, true);
    print_proc_line("redis", o.redis_pid, r.redis_start, r.redis_end, r.requests, false);
    fmt::print("{:<13}cpu {:.2f} s = {:.1f} µs/request\n", "loadgen", r.loadgen_cpu_us / 1e6,
               r.requests ? double(r.loadgen_cpu_us) / double(r.requests) : 0.0);
}

// load_templates - the templates the mix names, from --template or the built-in list.
std::vector<Template> load_templates(const Options& options)
{
    auto specs = builtin_templates();
    for (const auto& spec : options.templates) {
        std::erase_if(specs, [&](const TemplateSpec& s) { return s.name == spec.name; });
        specs.push_back(spec);
    }
    const fs::path dir = options.template_dir.empty() ? fs::path(RELAYGUARD_SAMPLES_DIR) / "postfix-3.7" : options.template_dir;
    std::vector<Template> templates;
    for (const auto& entry : options.mix) {
        const auto& name = entry.first;
        const auto spec = std::find_if(specs.begin(), specs.end(), [&](const TemplateSpec& s) { return s.name == name; });
        if (spec == specs.end())
            throw std::runtime_error(fmt::format("--mix names \"{}\": not a template (auth, unauth, eom or --template)", name));
        templates.push_back(load_template(*spec, dir));
    }
    return templates;
}

// ---------------------------------------------------------------------------------------------
// Idle mode: how much memory an open, quiet connection costs the daemon.

struct IdleResult {
    std::string target;
    std::size_t wanted = 0, connected = 0, connect_failures = 0, connect_retries = 0, closed_by_server = 0;
    double connect_s = 0, hold_s = 0;
    ProcSample before, opened, end;
};

// run_idle - open --idle connections (idle_connect_parallelism at a time), hold them for
// --duration, close them; the daemon's memory before, once open, and at the end of the hold.
IdleResult run_idle(const Options& options, const Target& target)
{
    if (auto error = raise_fd_limit(static_cast<rlim_t>(options.idle_connections) + fd_headroom))
        throw std::runtime_error(*error);
    IdleResult r;
    r.target = endpoint_text(target.endpoint);
    r.wanted = options.idle_connections;
    r.before = read_proc(options.pid);

    asio::io_context ctx(1);
    std::vector<std::unique_ptr<Socket>> sockets;
    sockets.reserve(r.wanted);
    bool stopping = false, interrupted = false;
    std::size_t next = 0, openers = std::min(idle_connect_parallelism, r.wanted);
    asio::steady_timer hold(ctx);
    asio::signal_set signals(ctx, SIGINT, SIGTERM);
    signals.async_wait([&](boost::system::error_code ec, int) {
        if (ec) return;
        interrupted = true;
        hold.cancel();
    });
    const auto started = Clock::now();

    // watch - an idle connection reads nothing; a completed read means the server closed it.
    auto watch = [&](Socket& s) -> awaitable<void> {
        std::array<char, 64> sink;
        auto [ec, n] = co_await s.async_read_some(asio::buffer(sink), use_nothrow);
        (void)n;
        (void)ec;
        if (!stopping) ++r.closed_by_server;
    };
    auto hold_phase = [&]() -> awaitable<void> {
        const auto opened_at = Clock::now();
        r.connect_s = std::chrono::duration<double>(opened_at - started).count();
        r.opened = read_proc(options.pid);
        if (!interrupted) {
            hold.expires_after(seconds_to_ns(options.duration_s));
            co_await hold.async_wait(use_nothrow);
        }
        r.hold_s = std::chrono::duration<double>(Clock::now() - opened_at).count();
        r.end = read_proc(options.pid);
        stopping = true;
        signals.cancel();
        for (auto& s : sockets) {
            boost::system::error_code ignored;
            s->close(ignored);
        }
    };
    auto opener = [&]() -> awaitable<void> {
        while (next < r.wanted && !interrupted) {
            ++next;
            std::unique_ptr<Socket> s;
            boost::system::error_code ec;
            for (unsigned attempt = 0; attempt < idle_connect_attempts && !interrupted; ++attempt) {
                if (attempt > 0) {
                    ++r.connect_retries;
                    asio::steady_timer pause(ctx, idle_connect_retry);
                    co_await pause.async_wait(use_nothrow);
                }
                s = std::make_unique<Socket>(ctx);
                ec = co_await connect_to(*s, target);
                if (!ec) break;
            }
            if (ec || interrupted) {
                ++r.connect_failures;
                continue;
            }
            ++r.connected;
            asio::co_spawn(ctx, watch(*s), asio::detached);
            sockets.push_back(std::move(s));
        }
        if (--openers == 0) asio::co_spawn(ctx, hold_phase(), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
    };
    const std::size_t spawn = openers;
    for (std::size_t i = 0; i < spawn; ++i)
        asio::co_spawn(ctx, opener(), [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
    ctx.run();
    return r;
}

void print_idle(const IdleResult& r, const Options& o)
{
    const std::size_t open = r.connected - std::min(r.connected, r.closed_by_server);
    const bool mem = o.pid > 0 && r.before.ok && r.end.ok;
    const double per_conn = mem && open ? (double(r.end.rss_kib) - double(r.before.rss_kib)) * 1024.0 / double(open) : 0.0;
    if (o.json) {
        fmt::print("{{\"mode\":\"idle\",\"target\":{},\"wanted\":{},\"connected\":{},\"open_at_end\":{},"
                   "\"connect_failures\":{},\"connect_retries\":{},\"closed_by_server\":{},\"connect_s\":{:.3f},\"hold_s\":{:.3f},"
                   "\"daemon\":",
                   json_string(r.target), r.wanted, r.connected, open, r.connect_failures, r.connect_retries, r.closed_by_server,
                   r.connect_s, r.hold_s);
        if (!mem) fmt::print("null}}\n");
        else
            fmt::print("{{\"pid\":{},\"vm_rss_before_kib\":{},\"vm_rss_opened_kib\":{},\"vm_rss_end_kib\":{},"
                       "\"vm_hwm_kib\":{},\"bytes_per_connection\":{:.0f}}}}}\n",
                       o.pid, r.before.rss_kib, r.opened.rss_kib, r.end.rss_kib, r.end.hwm_kib, per_conn);
        return;
    }
    fmt::print("relayguard-loadgen --idle: {}, {} wanted, {} connected in {:.2f} s, {} connect failures, "
               "{} retries (backlog full)\n",
               r.target, r.wanted, r.connected, r.connect_s, r.connect_failures, r.connect_retries);
    fmt::print("held {:.2f} s: {} still open, {} closed by the server\n", r.hold_s, open, r.closed_by_server);
    if (mem)
        fmt::print("daemon pid {}: VmRSS {} KiB before, {} KiB opened, {} KiB at end = {:.0f} bytes/connection; "
                   "VmHWM {} KiB\n",
                   o.pid, r.before.rss_kib, r.opened.rss_kib, r.end.rss_kib, per_conn, r.end.hwm_kib);
}

// ---------------------------------------------------------------------------------------------
// --serve-dunno: the ceiling. Reads requests, answers DUNNO to each, holds no state.

class DunnoServer {
public:
    DunnoServer(const Target& target, unsigned threads)
    {
        for (unsigned i = 0; i < threads; ++i) contexts_.push_back(std::make_unique<asio::io_context>(1));
        acceptor_.emplace(*contexts_[0]);
        if (target.unix_socket) {
            std::error_code ignored;
            const auto path = endpoint_text(target.endpoint).substr(5);
            // A socket file left by an earlier run would make bind() fail; only sockets are removed.
            if (fs::is_socket(path, ignored)) fs::remove(path, ignored);
        }
        acceptor_->open(target.endpoint.protocol());
        if (!target.unix_socket) acceptor_->set_option(asio::socket_base::reuse_address(true));
        acceptor_->bind(target.endpoint);
        acceptor_->listen(asio::socket_base::max_listen_connections);
        local_ = endpoint_text(acceptor_->local_endpoint());
        unix_ = target.unix_socket;
    }

    ~DunnoServer()
    {
        stop();
        for (auto& t : threads_) t.join();
        // Sessions and the accept loop die with their io_context. Work guards and the acceptor
        // go first: both refer to an io_context that must still exist.
        guards_.clear();
        acceptor_.reset();
        contexts_.clear();
        if (unix_) {
            std::error_code ignored;
            fs::remove(local_.substr(5), ignored);
        }
    }

    const std::string& local() const noexcept { return local_; }

    // start - the accept loop and the worker threads; returns at once.
    void start()
    {
        asio::co_spawn(*contexts_[0], accept_loop(), asio::detached);
        for (auto& ctx : contexts_) {
            auto guard = std::make_shared<asio::executor_work_guard<asio::io_context::executor_type>>(ctx->get_executor());
            guards_.push_back(guard);
            threads_.emplace_back([c = ctx.get()] { c->run(); });
        }
    }

    // stop - thread-safe; sessions in progress are dropped with their io_context.
    void stop()
    {
        for (auto& ctx : contexts_) ctx->stop();
    }

private:
    awaitable<void> accept_loop()
    {
        std::size_t next = 0;
        for (;;) {
            auto& ctx = *contexts_[next++ % contexts_.size()];
            auto [ec, socket] = co_await acceptor_->async_accept(ctx, use_nothrow);
            if (ec == asio::error::operation_aborted) co_return;
            if (ec) { // out of descriptors, most likely: pause instead of spinning
                asio::steady_timer pause(*contexts_[0], reconnect_backoff);
                co_await pause.async_wait(use_nothrow);
                continue;
            }
            if (!unix_) {
                boost::system::error_code ignored;
                socket.set_option(asio::ip::tcp::no_delay(true), ignored);
            }
            asio::co_spawn(ctx, session(std::move(socket)), asio::detached);
        }
    }

    // session - answer every complete request on one connection, pipelined ones too.
    static awaitable<void> session(Socket socket)
    {
        static constexpr std::string_view reply = "action=DUNNO\n\n";
        std::string in, out;
        std::array<char, read_chunk_bytes> chunk;
        for (;;) {
            auto [ec, n] = co_await socket.async_read_some(asio::buffer(chunk), use_nothrow);
            if (ec) co_return;
            const auto scan_from = in.empty() ? 0 : in.size() - 1;
            in.append(chunk.data(), n);
            std::size_t consumed = 0;
            out.clear();
            // SMTPD_POLICY_README: a request ends with an empty line; answer each one in order.
            for (auto end = in.find("\n\n", scan_from); end != std::string::npos; end = in.find("\n\n", consumed)) {
                out.append(reply);
                consumed = end + 2;
            }
            in.erase(0, consumed);
            if (in.size() > max_served_request_bytes) co_return;
            if (out.empty()) continue;
            auto [wec, written] = co_await asio::async_write(socket, asio::buffer(out), use_nothrow);
            (void)written;
            if (wec) co_return;
        }
    }

    std::vector<std::unique_ptr<asio::io_context>> contexts_;
    std::optional<Acceptor> acceptor_;
    std::vector<std::shared_ptr<asio::executor_work_guard<asio::io_context::executor_type>>> guards_;
    std::vector<std::thread> threads_;
    std::string local_;
    bool unix_ = false;
};

// serve_dunno - --serve-dunno: serve until SIGINT or SIGTERM, then exit 0.
int serve_dunno(const Options& options, const Target& target)
{
    // Blocked here so that sigwait() below, not a worker thread, takes them.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    raise_fd_limit_to_hard();
    DunnoServer server(target, options.threads);
    server.start();
    fmt::print("listening on {}, {} thread{}\n", server.local(), options.threads, options.threads == 1 ? "" : "s");
    std::fflush(stdout);
    int signal = 0;
    sigwait(&set, &signal);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// --self-test: the tool against its own DUNNO server, over TCP and a UNIX socket.

int self_test()
{
    int failures = 0;
    auto check = [&](bool ok, std::string_view what, auto got, auto want) {
        if (ok) return;
        ++failures;
        fmt::print(stderr, "self-test: {}: got={} want={}\n", what, got, want);
    };
    char dir_template[] = "/tmp/relayguard-loadgen.XXXXXX";
    if (!::mkdtemp(dir_template)) {
        fmt::print(stderr, "self-test: mkdtemp: {}\n", std::strerror(errno));
        return 1;
    }
    const std::string dir = dir_template;
    for (const std::string& endpoint : {std::string("tcp:127.0.0.1:0"), "unix:" + dir + "/dunno.sock"}) {
        std::string error;
        auto listen = parse_target(endpoint, error);
        DunnoServer server(*listen, 1);
        server.start();
        const auto target = parse_target(server.local(), error);
        Options options;
        options.connect = server.local();
        options.connections = 4;
        options.requests = 300;
        options.pid = ::getpid();
        const auto templates = load_templates(options);
        auto result = LoadRun(options, *target, templates).run();
        const std::string where = server.local();
        check(result.requests == options.requests, where + " requests", result.requests, options.requests);
        const std::uint64_t dunno = result.stats.actions.size() == 1 && result.stats.actions[0].first == "DUNNO"
                                        ? result.stats.actions[0].second : 0;
        check(dunno == options.requests, where + " DUNNO replies", dunno, options.requests);
        const auto errors = result.stats.closed + result.stats.timeouts + result.stats.connect_failures + result.stats.bad_replies;
        check(errors == 0, where + " errors", errors, 0);
        check(result.daemon_end.ok && result.daemon_end.rss_kib > 0, where + " own VmRSS read", result.daemon_end.rss_kib, "> 0");

        // --rate: 100 requests at 1000/s from 4 connections take about 0.1 s, not less.
        Options paced = options;
        paced.requests = 100;
        paced.rate = 1000;
        const auto slow = LoadRun(paced, *target, templates).run();
        check(slow.requests == paced.requests, where + " paced requests", slow.requests, paced.requests);
        const double min_s = double(paced.requests - paced.connections) / paced.rate;
        check(slow.duration_s >= min_s, where + " paced duration s", slow.duration_s, fmt::format(">= {}", min_s));

        Options idle;
        idle.idle_connections = 20;
        idle.duration_s = 0.05;
        idle.pid = ::getpid();
        const auto held = run_idle(idle, *target);
        check(held.connected == idle.idle_connections, where + " idle connected", held.connected, idle.idle_connections);
        check(held.closed_by_server == 0, where + " idle closed by server", held.closed_by_server, 0);
    }
    std::error_code ignored;
    fs::remove_all(dir, ignored);
    if (failures == 0) fmt::print("self-test: ok\n");
    return failures == 0 ? 0 : 1;
}

} // namespace

int main(int argc, char** argv)
{
    Options options;
    if (auto error = parse_arguments(argc, argv, options)) {
        fmt::print(stderr, "relayguard-loadgen: {}\n", *error);
        print_usage(stderr);
        return 2;
    }
    // A server that closes while we write must be an error we count, not the end of the process.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        switch (options.mode) {
        case Mode::help: print_usage(stdout); return 0;
        case Mode::self_test: return self_test();
        case Mode::serve_dunno: {
            std::string error;
            const auto target = parse_target(options.serve, error);
            if (!target) throw std::runtime_error("--serve-dunno: " + error);
            return serve_dunno(options, *target);
        }
        case Mode::idle:
        case Mode::load: {
            std::string error;
            const auto target = parse_target(options.connect, error);
            if (!target) throw std::runtime_error("--connect: " + error);
            if (options.mode == Mode::idle) {
                print_idle(run_idle(options, *target), options);
                return 0;
            }
            const auto templates = load_templates(options);
            const auto result = LoadRun(options, *target, templates).run();
            if (options.json) print_load_json(result, options);
            else print_load_report(result, options);
            return result.requests > 0 ? 0 : 1;
        }
        }
    } catch (const std::exception& e) {
        fmt::print(stderr, "relayguard-loadgen: {}\n", e.what());
        return 1;
    }
    return 0;
}

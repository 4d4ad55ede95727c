// SPDX-License-Identifier: MIT
// relayguard_main.cpp - the relayguard daemon: arguments, config, listeners, signals, background.
//
// Wiring only (STYLE.md): load_snapshot() -> privileges decided -> Server::bind() -> background
// unless --foreground (systemd) -> metrics listener -> drop to server.user -> start() -> signal
// loop on the main thread (SIGHUP reloads, SIGTERM/SIGINT drain and stop). In the background
// stdin/stdout/stderr are /dev/null once started, so log target "stderr" logs nothing there.
// Exit codes: 0 ok, 1 configuration or startup error, 2 usage error.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/core.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <relayguard/config.hpp>
#include <relayguard/logging.hpp>
#include <relayguard/metrics.hpp>
#include <relayguard/policy.hpp>
#include <relayguard/server.hpp>

#include "server/privileges.hpp"

namespace {

using namespace relayguard;

// Where the Debian package installs the config and where the systemd unit expects it.
constexpr std::string_view default_config_path = "/etc/relayguard/relayguard.toml";

// Success, including a stop by SIGTERM/SIGINT.
constexpr int exit_ok = 0;
// The configuration is invalid, or the daemon could not start (bind, fork, threads).
constexpr int exit_failure = 1;
// The command line is wrong: unknown option, missing argument.
constexpr int exit_usage = 2;

struct Options {
    std::string config_path{default_config_path};
    bool check_config = false;
    bool foreground = false;
    bool allow_root = false; // --allow-root: as server.allow_root
    bool help = false;
    bool version = false;
};

// print_usage - one line per option.
void print_usage(std::FILE* to)
{
    fmt::print(to,
               "usage: relayguard [--config FILE] [--check-config] [--foreground] [--allow-root] [--help] "
               "[--version]\n"
               "  -c, --config FILE   configuration file (default: {})\n"
               "      --check-config  check the configuration and the files it names, then exit\n"
               "      --foreground    do not go to the background (as under systemd)\n"
               "      --allow-root    keep running as root when server.user is not set\n"
               "  -h, --help          show this help and exit\n"
               "  -V, --version       show the version and exit\n",
               default_config_path);
}

// parse_arguments - fill `options` from argv. Returns the reason when the command line is
// wrong. Accepts "--config FILE", "--config=FILE", "-c FILE" and "-cFILE".
std::optional<std::string> parse_arguments(int argc, char** argv, Options& options)
{
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--config" || arg == "-c") {
            if (i + 1 >= argc) return fmt::format("option {} needs a FILE argument", arg);
            options.config_path = argv[++i];
        } else if (arg.starts_with("--config=")) {
            options.config_path = arg.substr(std::string_view("--config=").size());
            if (options.config_path.empty()) return std::string("option --config needs a FILE argument");
        } else if (arg.starts_with("-c") && !arg.starts_with("--")) {
            options.config_path = arg.substr(2);
        } else if (arg == "--check-config") {
            options.check_config = true;
        } else if (arg == "--foreground") {
            options.foreground = true;
        } else if (arg == "--allow-root") {
            options.allow_root = true;
        } else if (arg == "--help" || arg == "-h") {
            options.help = true;
        } else if (arg == "--version" || arg == "-V") {
            options.version = true;
        } else if (arg.starts_with("-")) {
            return fmt::format("unknown option {}", arg);
        } else {
            return fmt::format("unexpected argument {}", arg);
        }
    }
    return std::nullopt;
}

// check_config - --check-config: load everything a start would load, bind nothing. Messages
// go out exactly as load_snapshot() words them ("FILE:LINE: KEY: ..."), for editors and
// systemd's ExecStartPre. server.user/group must exist; whether the identity that runs the
// check may run the daemon is not judged (ExecStartPre and an admin's shell differ).
int check_config(const std::string& path)
{
    std::vector<std::string> warnings;
    auto snapshot = load_snapshot(path, &warnings);
    for (const auto& warning : warnings) fmt::print(stderr, "{}\n", warning);
    if (!snapshot) {
        fmt::print(stderr, "{}\n", snapshot.error().to_string());
        return exit_failure;
    }
    if (auto account = server_detail::lookup_account((*snapshot)->config.server, path); !account) {
        fmt::print(stderr, "{}\n", account.error().to_string());
        return exit_failure;
    }
    fmt::print("{}: OK\n", path);
    return exit_ok;
}

// Background - going to the background the classic way, after the listeners are bound (so that
// bind errors still reach the terminal and the exit code) and before any thread starts (threads
// do not survive fork()). The parent stays until the child reports that it runs, then exits 0;
// if the child dies first (it logged why), the parent exits 1.
class Background {
public:
    Background() = default;
    Background(const Background&) = delete;
    Background& operator=(const Background&) = delete;
    ~Background()
    {
        if (ready_fd_ >= 0) ::close(ready_fd_);
    }

    // detach - fork. Returns in the child (new session, cwd "/") or on failure (false); the
    // parent never returns.
    bool detach()
    {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) {
            spdlog::error("cannot go to the background: pipe: {}", std::strerror(errno));
            return false;
        }
        std::fflush(nullptr); // else buffered output would be written twice
        const pid_t pid = ::fork();
        if (pid < 0) {
            spdlog::error("cannot go to the background: fork: {}", std::strerror(errno));
            ::close(fds[0]);
            ::close(fds[1]);
            return false;
        }
        if (pid > 0) {
            ::close(fds[1]);
            wait_for_child(fds[0]);
        }
        ::close(fds[0]);
        ready_fd_ = fds[1];
        // No controlling terminal: a hangup of the shell that started us is not our SIGHUP.
        ::setsid();
        // Do not keep the directory we were started in busy (the config path is absolute).
        if (::chdir("/") != 0) spdlog::warn("chdir /: {}", std::strerror(errno));
        return true;
    }

    // report_running - child: stdin/stdout/stderr to /dev/null, then let the parent exit 0.
    // No-op when not detached.
    void report_running()
    {
        if (ready_fd_ < 0) return;
        const int null_fd = ::open("/dev/null", O_RDWR);
        if (null_fd >= 0) {
            ::dup2(null_fd, STDIN_FILENO);
            ::dup2(null_fd, STDOUT_FILENO);
            ::dup2(null_fd, STDERR_FILENO);
            if (null_fd > STDERR_FILENO) ::close(null_fd);
        }
        const char ok = '0';
        while (::write(ready_fd_, &ok, 1) < 0 && errno == EINTR) {
        }
        ::close(ready_fd_);
        ready_fd_ = -1;
    }

private:
    // wait_for_child - parent: block until the child reports or exits, then end the process.
    // _exit(), not exit(): the Server's destructor in this process would unlink the UNIX
    // sockets and deregister the listeners the child now serves on.
    [[noreturn]] static void wait_for_child(int fd)
    {
        char status = 0;
        ssize_t n;
        while ((n = ::read(fd, &status, 1)) < 0 && errno == EINTR) {
        }
        std::fflush(nullptr);
        ::_exit(n == 1 && status == '0' ? exit_ok : exit_failure);
    }

    int ready_fd_ = -1; // child: write end of the pipe to the waiting parent
};

// What the signal loop needs besides the Server.
struct Running {
    std::string path;                       // the config file
    Metrics& metrics;                       // counts reloads
    std::optional<Endpoint> metrics_listen; // as started (a change needs a restart)
};

// reload - SIGHUP: a new snapshot from the same file, or the old one kept and the error logged.
void reload(Server& server, const Running& running)
{
    const std::string& path = running.path;
    std::vector<std::string> warnings;
    auto snapshot = load_snapshot(path, &warnings);
    if (!snapshot) {
        for (const auto& warning : warnings) spdlog::warn("{}", warning);
        spdlog::error("reload of {} failed, keeping the running configuration: {}", path,
                      snapshot.error().to_string());
        running.metrics.reloaded(false);
        return;
    }
    init_logging((*snapshot)->config.log);
    for (const auto& warning : warnings) spdlog::warn("{}", warning);
    if ((*snapshot)->config.metrics.listen != running.metrics_listen)
        spdlog::warn("reload: metrics.listen changed; the new value takes effect after a restart");
    server.reload(*snapshot);
    running.metrics.reloaded(true);
    spdlog::info("reloaded {}", path);
}

// handle_signals - runs on the main thread, so a reload and a stop never overlap. Returns after
// SIGTERM/SIGINT, once stop() was called.
boost::asio::awaitable<void> handle_signals(boost::asio::signal_set& signals, Server& server, const Running& running)
{
    const std::string& path = running.path;
    for (;;) {
        auto [ec, signo] = co_await signals.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
        if (ec) co_return;
        if (signo == SIGHUP) {
            try {
                reload(server, running);
            } catch (const std::exception& e) {
                // e.g. the syslog sink could not be built; the running configuration stays.
                spdlog::error("reload of {} failed, keeping the running configuration: {}", path, e.what());
                running.metrics.reloaded(false);
            }
            continue;
        }
        spdlog::info("stopping");
        server.stop();
        co_return;
    }
}

// worker_threads - what Server starts for the config's `threads` (0: one per core).
unsigned worker_threads(const ServerConfig& config)
{
    if (config.threads != 0) return config.threads;
    return std::max(1u, std::thread::hardware_concurrency());
}

// run_daemon - load, bind, detach, start, serve until SIGTERM/SIGINT.
int run_daemon(const Options& options)
{
    std::string path = options.config_path;
    if (!options.foreground) {
        // Reloads happen after chdir("/"): keep naming the same file.
        std::error_code ec;
        auto absolute = std::filesystem::absolute(path, ec);
        if (!ec) path = absolute.lexically_normal().string();
    }

    std::vector<std::string> warnings;
    auto loaded = load_snapshot(path, &warnings);
    if (!loaded) {
        for (const auto& warning : warnings) spdlog::warn("{}", warning);
        spdlog::error("{}", loaded.error().to_string());
        return exit_failure;
    }
    std::shared_ptr<const Snapshot> snapshot = *loaded;
    // Decided before anything is bound: a typo in server.user, or root without a user, must
    // leave no socket file behind.
    auto privileges = server_detail::plan_privileges(snapshot->config.server, path, options.allow_root,
                                                     server_detail::current_identity());
    if (!privileges) {
        for (const auto& warning : warnings) spdlog::warn("{}", warning);
        spdlog::error("{}", privileges.error().to_string());
        return exit_failure;
    }
    init_logging(snapshot->config.log);
    for (const auto& warning : warnings) spdlog::warn("{}", warning);
    for (const auto& warning : privileges->warnings) spdlog::warn("{}", warning);

    Server server(snapshot);
    const auto metrics = std::make_shared<Metrics>();
    server.set_metrics(metrics);
    try {
        server.bind();
    } catch (const std::exception& e) {
        spdlog::error("cannot listen: {}", e.what());
        return exit_failure;
    }

    Background background;
    if (!options.foreground && !background.detach()) return exit_failure;

    // Registered before the workers start, so that no signal finds its default action (death)
    // once we are up; Asio forwards a signal caught on any thread to this io_context.
    boost::asio::io_context signal_context(1);
    boost::asio::signal_set signals(signal_context, SIGHUP, SIGTERM, SIGINT);

    // Its own thread (after the fork, which threads do not survive), so that a slow scraper
    // never touches the workers; before them, so that a port in use stops the start here.
    std::unique_ptr<MetricsHttpServer> metrics_http;
    if (const auto& listen = snapshot->config.metrics.listen) {
        try {
            metrics_http = std::make_unique<MetricsHttpServer>(metrics, *listen);
            metrics_http->start();
        } catch (const std::exception& e) {
            spdlog::error("cannot serve metrics: {}", e.what());
            return exit_failure;
        }
    }

    // Everything that needs root is done: listeners bound (UNIX sockets chmod/chowned), the
    // metrics port bound, logging open. From here on, nothing runs as root; the workers, the
    // store connections and every reload run as server.user. The metrics thread started above
    // is dropped as well: glibc applies setgroups/setresgid/setresuid to every thread.
    if (const auto& to = privileges->drop_to) {
        if (auto error = server_detail::drop_privileges(*to)) {
            spdlog::error("cannot drop privileges to user \"{}\": {}", to->user, *error);
            return exit_failure;
        }
        spdlog::info("running as user {} (uid {}), group {} (gid {})", to->user, to->uid,
                     to->group.empty() ? std::string("-") : to->group, to->gid);
    }

    try {
        server.start();
    } catch (const std::exception& e) {
        spdlog::error("cannot start: {}", e.what());
        return exit_failure;
    }
    const unsigned threads = worker_threads(snapshot->config.server);
    spdlog::info("relayguard {} started: {} {}, listening on {}", RELAYGUARD_VERSION, threads,
                 threads == 1 ? "thread" : "threads", fmt::join(server.endpoints(), ", "));
    if (metrics_http)
        spdlog::info("metrics and health check on http {} (/metrics, /healthz)", metrics_http->endpoint());
    if (!options.foreground && snapshot->config.log.target == LogConfig::Target::stderr_)
        spdlog::warn("logging to stderr, which is /dev/null in the background from now on: "
                     "set log.target = \"syslog\" or run with --foreground");
    background.report_running();

    const Running running{path, *metrics, snapshot->config.metrics.listen};
    boost::asio::co_spawn(signal_context, handle_signals(signals, server, running), [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
    });
    signal_context.run();
    server.wait();
    // /healthz said 503 while the connections drained; now nothing is left to report on.
    if (metrics_http) metrics_http->stop();
    spdlog::info("stopped");
    return exit_ok;
}

} // namespace

int main(int argc, char** argv)
{
    // A client that goes away mid-reply must cost an EPIPE, not the process. Set before any
    // thread exists so that every thread inherits it.
    std::signal(SIGPIPE, SIG_IGN);

    Options options;
    if (auto error = parse_arguments(argc, argv, options)) {
        fmt::print(stderr, "relayguard: {}\n", *error);
        print_usage(stderr);
        return exit_usage;
    }
    if (options.help) {
        print_usage(stdout);
        return exit_ok;
    }
    if (options.version) {
        fmt::print("relayguard {}\n", RELAYGUARD_VERSION);
        return exit_ok;
    }

    try {
        if (options.check_config) return check_config(options.config_path);
        // Until the config says otherwise: stderr, info.
        init_logging(LogConfig{});
        return run_daemon(options);
    } catch (const std::exception& e) {
        // Startup edge only: the request path does not throw (STYLE.md).
        spdlog::critical("{}", e.what());
        return exit_failure;
    }
}

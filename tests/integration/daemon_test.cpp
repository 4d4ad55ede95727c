// SPDX-License-Identifier: MIT
// daemon_test.cpp - the relayguard executable end to end: arguments, --check-config, serving,
// SIGHUP reload, SIGTERM/SIGINT drain, a socket already in use, going to the background.
//
// Each test runs the real binary (binary_dir()/relayguard) with fork/exec, its stdout and stderr
// in files of a TempDir, and talks to it over a UNIX socket there (or 127.0.0.1 on the port the
// daemon reports for "inet:127.0.0.1:0"). Every wait has a deadline; log lines are awaited with
// inotify and exits with pidfd, not by sleeping. TearDown kills what a test started, by pid.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <deque>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/core.h>
#include <gtest/gtest.h>

#include <relayguard/policy.hpp>

#include "testing/test_support.hpp"

namespace {

namespace fs = std::filesystem;
using relayguard::testing::TempDir;
using relayguard::testing::binary_dir;
using relayguard::testing::read_file;
using relayguard::testing::write_file;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How long any one step may take before the test fails instead of hanging: generous for a
// loaded 2-core machine, short enough that a hang is noticed.
constexpr milliseconds step_limit{10000};
// DESIGN/brief bar: a stop by signal completes within this.
constexpr milliseconds stop_limit{2000};
// Bar for starting the process up to its first answered request.
constexpr milliseconds startup_limit{2000};

constexpr std::string_view relay_reply = "554 5.7.1 daemon test: relaying denied";

fs::path relayguard_binary() { return binary_dir() / "relayguard"; }

// open_pidfd - a pidfd for `pid` (readable once it ends), or -1. glibc 2.36's <sys/pidfd.h>
// lacks extern "C", so the system call is made directly.
int open_pidfd(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

int remaining_ms(Clock::time_point deadline)
{
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    return left > 0 ? static_cast<int>(left) : 0;
}

// A config for these tests: UNIX socket `socket`, TCP on a free port, the given local domains.
std::string daemon_config(const fs::path& socket, std::string_view local_domains, bool with_tcp = true)
{
    return fmt::format(R"([server]
listen = ["unix:{}"{}]
threads = 2
shutdown_timeout = "1s"

[log]
level = "info"

[domains]
local = [{}]

[checks.exempt]
networks = ["192.0.2.0/24"]

[checks.auth_required]
ports = [587]

[checks.plaintext_auth]
mechanisms = ["PLAIN", "LOGIN"]

[checks.relay]
reply = "{}"
)",
                       socket.string(), with_tcp ? R"(, "inet:127.0.0.1:0")" : "", local_domains, relay_reply);
}

// An unauthenticated RCPT request from an untrusted client, as Postfix 3.7 sends it.
std::string rcpt_request(std::string_view recipient)
{
    return fmt::format("request=smtpd_access_policy\n"
                       "protocol_state=RCPT\n"
                       "protocol_name=ESMTP\n"
                       "client_address=198.51.100.7\n"
                       "client_name=mx.example.org\n"
                       "client_port=40123\n"
                       "reverse_client_name=mx.example.org\n"
                       "server_address=203.0.113.25\n"
                       "server_port=25\n"
                       "helo_name=mx.example.org\n"
                       "sender=x@example.org\n"
                       "recipient={}\n"
                       "recipient_count=0\n"
                       "queue_id=\n"
                       "instance=5521.6b0a03a5.a0244.0\n"
                       "size=0\n"
                       "sasl_method=\n"
                       "sasl_username=\n"
                       "encryption_protocol=\n"
                       "policy_context=\n"
                       "\n",
                       recipient);
}

std::string action(std::string_view text) { return fmt::format("action={}\n\n", text); }

// slurp - the file's content, "" if it cannot be read (yet).
std::string slurp(const fs::path& path)
{
    std::string text;
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (!f) return text;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    std::fclose(f);
    return text;
}

// running - whether the process exists and is not a zombie (kill -0 answers for zombies).
bool running(pid_t pid)
{
    const std::string stat = slurp(fmt::format("/proc/{}/stat", pid));
    const auto paren = stat.rfind(')'); // the command name may contain anything
    if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
    const char state = stat[paren + 2];
    return state != 'Z' && state != 'X';
}

// stat_field - field `n` (1-based, as in proc(5)) of /proc/PID/stat, or -1.
long stat_field(pid_t pid, int n)
{
    std::string stat = read_file(fmt::format("/proc/{}/stat", pid));
    auto paren = stat.rfind(')');
    if (paren == std::string::npos) return -1;
    std::string_view rest = std::string_view(stat).substr(paren + 2); // field 3 onwards
    for (int field = 3; field < n; ++field) {
        auto space = rest.find(' ');
        if (space == std::string_view::npos) return -1;
        rest.remove_prefix(space + 1);
    }
    long value = -1;
    std::from_chars(rest.data(), rest.data() + rest.size(), value);
    return value;
}

std::size_t count_of(std::string_view text, std::string_view needle)
{
    std::size_t count = 0;
    for (auto at = text.find(needle); at != std::string_view::npos; at = text.find(needle, at + needle.size()))
        ++count;
    return count;
}

// wait_for_text - whether `needle` occurs at least `times` times in `file` before the deadline.
// Gives up early when `pid` (if > 0) ends first. inotify and pidfd: no sleeping and polling.
bool wait_for_text(const fs::path& file, std::string_view needle, std::size_t times = 1, pid_t pid = -1,
                   milliseconds limit = step_limit)
{
    const auto deadline = Clock::now() + limit;
    const int notify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (notify < 0) return false;
    if (inotify_add_watch(notify, file.c_str(), IN_MODIFY | IN_CLOSE_WRITE) < 0) {
        ADD_FAILURE() << "inotify_add_watch " << file << ": " << std::strerror(errno);
        close(notify);
        return false;
    }
    const int process = pid > 0 ? open_pidfd(pid) : -1;
    bool found = false;
    bool ended = false;
    for (;;) {
        // Read after the watch exists, so that nothing written in between is missed.
        if (count_of(slurp(file), needle) >= times) {
            found = true;
            break;
        }
        if (ended) break; // that was the last look at what the process wrote
        const int timeout = remaining_ms(deadline);
        if (timeout == 0) break;
        pollfd fds[2] = {{notify, POLLIN, 0}, {process, POLLIN, 0}};
        if (poll(fds, process >= 0 ? 2 : 1, timeout) < 0 && errno != EINTR) break;
        char events[4096];
        while (read(notify, events, sizeof events) > 0) {
        }
        if (process >= 0 && (fds[1].revents & POLLIN)) ended = true;
    }
    if (process >= 0) close(process);
    close(notify);
    return found;
}

// A connection to the daemon; every read has a deadline.
class PolicyClient {
public:
    static PolicyClient unix_socket(const fs::path& path)
    {
        PolicyClient c;
        c.fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
        if (connect(c.fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) c.reset();
        return c;
    }

    static PolicyClient tcp(std::uint16_t port)
    {
        PolicyClient c;
        c.fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(c.fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) c.reset();
        return c;
    }

    PolicyClient(PolicyClient&& other) noexcept
        : fd_(std::exchange(other.fd_, -1)), eof_(other.eof_), buf_(std::move(other.buf_))
    {
    }
    PolicyClient& operator=(PolicyClient&&) = delete;
    ~PolicyClient() { reset(); }

    bool connected() const noexcept { return fd_ >= 0; }

    bool send(std::string_view bytes)
    {
        while (!bytes.empty()) {
            ssize_t n = write(fd_, bytes.data(), bytes.size());
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return false;
            bytes.remove_prefix(static_cast<size_t>(n));
        }
        return true;
    }

    // read_reply - one reply, "action=...\n\n"; on EOF or timeout whatever arrived (maybe "").
    std::string read_reply(milliseconds limit = step_limit)
    {
        const auto deadline = Clock::now() + limit;
        for (;;) {
            if (auto end = buf_.find("\n\n"); end != std::string::npos) {
                std::string reply = buf_.substr(0, end + 2);
                buf_.erase(0, end + 2);
                return reply;
            }
            if (!fill(deadline)) return std::exchange(buf_, {});
        }
    }

    // at_eof - whether the peer closes (or resets) the connection, sending nothing more, before
    // the deadline.
    bool at_eof(milliseconds limit = step_limit)
    {
        const auto deadline = Clock::now() + limit;
        while (buf_.empty()) {
            if (!fill(deadline)) return eof_;
        }
        return false;
    }

    std::string ask(std::string_view request)
    {
        if (!send(request)) return "<send failed>";
        return read_reply();
    }

private:
    PolicyClient() = default;

    void reset()
    {
        if (fd_ >= 0) close(fd_);
        fd_ = -1;
    }

    // fill - read what is there; false on EOF, error or deadline.
    bool fill(Clock::time_point deadline)
    {
        if (fd_ < 0) return false;
        pollfd p{fd_, POLLIN, 0};
        int r = poll(&p, 1, remaining_ms(deadline));
        if (r <= 0) return false;
        char chunk[4096];
        ssize_t n = read(fd_, chunk, sizeof chunk);
        // A connection still in the listen backlog when the listener closes is reset, not ended.
        if (n == 0 || (n < 0 && errno == ECONNRESET)) eof_ = true;
        if (n <= 0) return false;
        buf_.append(chunk, static_cast<size_t>(n));
        return true;
    }

    int fd_ = -1;
    bool eof_ = false;
    std::string buf_;
};

struct Process {
    pid_t pid = -1;
    bool reaped = false;
    fs::path out; // its stdout
    fs::path err; // its stderr
};

struct RunResult {
    int exit_code = -1; // -1: did not exit normally in time
    std::string out;
    std::string err;
};

class Daemon : public ::testing::Test {
protected:
    void TearDown() override
    {
        for (auto& p : processes_) {
            if (p.reaped || p.pid <= 0) continue;
            kill(p.pid, SIGKILL);
            // Our child (or adopted as subreaper): reap it, bounded.
            wait_exit(p, milliseconds(2000));
        }
    }

    // spawn - run the binary with `args`; stdout/stderr into files named after `tag`.
    Process& spawn(const std::vector<std::string>& args, const std::string& tag = "relayguard")
    {
        Process p;
        p.out = dir_ / (tag + ".out");
        p.err = dir_ / (tag + ".err");
        const std::string binary = relayguard_binary().string();
        // Tests run as root (CI, containers) with configs that set no server.user; harmless
        // for every other invocation (--check-config, --help, usage errors).
        std::vector<std::string> all{binary, "--allow-root"};
        all.insert(all.end(), args.begin(), args.end());
        std::vector<char*> argv;
        for (auto& a : all) argv.push_back(a.data());
        argv.push_back(nullptr);
        // Opened here, not in the child, so that the files exist (and can be watched) as soon as
        // spawn() returns. O_CLOEXEC: only the dup2() copies reach the program.
        const int in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        const int out_fd = open(p.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        const int err_fd = open(p.err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        EXPECT_TRUE(in_fd >= 0 && out_fd >= 0 && err_fd >= 0) << std::strerror(errno);

        p.pid = fork();
        if (p.pid == 0) {
            // Only async-signal-safe calls between fork and exec.
            if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) _exit(126);
            execv(binary.c_str(), argv.data());
            _exit(127);
        }
        close(in_fd);
        close(out_fd);
        close(err_fd);
        EXPECT_GT(p.pid, 0) << "fork: " << std::strerror(errno);
        processes_.push_back(p);
        return processes_.back();
    }

    // wait_exit - the raw wait status once `p` has ended, or nullopt at the deadline.
    static std::optional<int> wait_exit(Process& p, milliseconds limit = step_limit)
    {
        int fd = open_pidfd(p.pid);
        if (fd < 0) return std::nullopt;
        pollfd pfd{fd, POLLIN, 0};
        int r;
        const auto deadline = Clock::now() + limit;
        while ((r = poll(&pfd, 1, remaining_ms(deadline))) < 0 && errno == EINTR) {
        }
        close(fd);
        if (r <= 0) return std::nullopt;
        int status = 0;
        if (waitpid(p.pid, &status, 0) != p.pid) return std::nullopt;
        p.reaped = true;
        return status;
    }

    // run - a command that is expected to end by itself.
    RunResult run(const std::vector<std::string>& args, const std::string& tag = "run")
    {
        Process& p = spawn(args, tag);
        RunResult result;
        auto status = wait_exit(p);
        EXPECT_TRUE(status) << "relayguard did not exit within " << step_limit.count() << " ms";
        if (status && WIFEXITED(*status)) result.exit_code = WEXITSTATUS(*status);
        result.out = read_file(p.out);
        result.err = read_file(p.err);
        return result;
    }

    // start_foreground - a daemon in --foreground, once it has logged "started".
    Process& start_foreground(const fs::path& config, const std::string& tag = "daemon")
    {
        Process& p = spawn({"--foreground", "--config", config.string()}, tag);
        EXPECT_TRUE(wait_for_text(p.err, " started: ", 1, p.pid))
            << "daemon did not start; stderr:\n" << read_file(p.err);
        return p;
    }

    fs::path write_config(const std::string& name, const std::string& text)
    {
        fs::path path = dir_ / name;
        write_file(path, text);
        return path;
    }

    TempDir dir_;
    fs::path socket_ = dir_ / "policy.sock";
    std::deque<Process> processes_; // a deque: references stay valid as processes are added
};

// tcp_port - the port of "inet:127.0.0.1:N" in the daemon's "started" line, or 0.
std::uint16_t tcp_port(const std::string& log)
{
    constexpr std::string_view prefix = "inet:127.0.0.1:";
    auto at = log.find(prefix);
    if (at == std::string::npos) return 0;
    unsigned port = 0;
    const char* begin = log.data() + at + prefix.size();
    std::from_chars(begin, log.data() + log.size(), port);
    return static_cast<std::uint16_t>(port);
}

// ---- arguments ----

TEST_F(Daemon, PrintsVersion)
{
    for (const char* flag : {"--version", "-V"}) {
        RunResult r = run({flag});
        EXPECT_EQ(r.exit_code, 0) << flag;
        EXPECT_EQ(r.out, fmt::format("relayguard {}\n", RELAYGUARD_VERSION)) << flag;
        EXPECT_EQ(r.err, "") << flag;
    }
}

TEST_F(Daemon, PrintsHelpWithEveryOption)
{
    for (const char* flag : {"--help", "-h"}) {
        RunResult r = run({flag});
        EXPECT_EQ(r.exit_code, 0) << flag;
        EXPECT_EQ(r.err, "") << flag;
        EXPECT_TRUE(r.out.starts_with("usage: relayguard ")) << "got=" << r.out;
        for (const char* option : {"--config FILE", "--check-config", "--foreground", "--allow-root", "--help",
                                   "--version", "/etc/relayguard/relayguard.toml"})
            EXPECT_NE(r.out.find(option), std::string::npos) << "help lacks " << option << "; got=" << r.out;
    }
}

TEST_F(Daemon, RejectsBadUsageWithExitCode2)
{
    struct Case {
        std::vector<std::string> args;
        std::string message;
    };
    const Case cases[] = {
        {{"--bogus"}, "relayguard: unknown option --bogus\n"},
        {{"-x"}, "relayguard: unknown option -x\n"},
        {{"--config"}, "relayguard: option --config needs a FILE argument\n"},
        {{"-c"}, "relayguard: option -c needs a FILE argument\n"},
        {{"--config="}, "relayguard: option --config needs a FILE argument\n"},
        {{"--check-config", "extra.toml"}, "relayguard: unexpected argument extra.toml\n"},
    };
    for (const auto& c : cases) {
        RunResult r = run(c.args);
        EXPECT_EQ(r.exit_code, 2) << c.args[0];
        EXPECT_TRUE(r.err.starts_with(c.message)) << "got=" << r.err << " want prefix=" << c.message;
        EXPECT_NE(r.err.find("usage: relayguard "), std::string::npos) << "no usage; got=" << r.err;
        EXPECT_EQ(r.out, "");
    }
}

// ---- --check-config ----

TEST_F(Daemon, CheckConfigAcceptsGoodConfigInEveryArgumentForm)
{
    fs::path config = write_config("good.toml", daemon_config(socket_, R"("test.local")"));
    std::vector<std::string> want_warnings;
    ASSERT_TRUE(relayguard::load_snapshot(config.string(), &want_warnings));
    std::string want_err;
    for (const auto& w : want_warnings) want_err += w + "\n";

    const std::vector<std::vector<std::string>> forms = {
        {"--check-config", "--config", config.string()},
        {"--config=" + config.string(), "--check-config"},
        {"-c", config.string(), "--check-config"},
        {"--check-config", "--foreground", "-c" + config.string()},
    };
    for (const auto& args : forms) {
        RunResult r = run(args);
        EXPECT_EQ(r.exit_code, 0) << args[0] << "; stderr=" << r.err;
        EXPECT_EQ(r.out, config.string() + ": OK\n");
        EXPECT_EQ(r.err, want_err);
    }
    EXPECT_FALSE(fs::exists(socket_)) << "--check-config must not bind";
}

TEST_F(Daemon, CheckConfigPrintsWarningsAndStillSucceeds)
{
    // A trusted network with host bits set is accepted with a warning (net.hpp parse_cidr).
    std::string text = daemon_config(socket_, R"("test.local")");
    text.replace(text.find("192.0.2.0/24"), 12, "192.0.2.1/24");
    fs::path config = write_config("warn.toml", text);
    std::vector<std::string> want_warnings;
    ASSERT_TRUE(relayguard::load_snapshot(config.string(), &want_warnings));
    ASSERT_FALSE(want_warnings.empty()) << "the config module no longer warns about host bits";
    std::string want_err;
    for (const auto& w : want_warnings) want_err += w + "\n";

    RunResult r = run({"--check-config", "-c", config.string()});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.out, config.string() + ": OK\n");
    EXPECT_EQ(r.err, want_err);
    EXPECT_TRUE(r.err.starts_with(config.string() + ":")) << "got=" << r.err;
}

TEST_F(Daemon, CheckConfigReportsTheErrorWithFileLineAndKey)
{
    struct Case {
        std::string name;
        std::string config_text;
        std::string want_prefix; // "FILE:LINE: KEY: " with FILE relative to the temp dir
        std::string map_text;    // written to "owners" when set
    };
    const std::string good = daemon_config(socket_, R"("test.local")");
    const Case cases[] = {
        {"duplicate_table.toml", good + "\n[checks.relay]\nenabled = true\n", "", ""},
        {"bad_key.toml", "[server]\nlisten = [\"unix:" + socket_.string() + "\"]\nthreadz = 2\n",
         "bad_key.toml:3: server.threadz: ", ""},
        {"bad_type.toml", "[server]\nlisten = [\"unix:" + socket_.string() + "\"]\n\n[log]\nlevel = 3\n",
         "bad_type.toml:5: log.level: ", ""},
        {"bad_map.toml",
         good + "\n[checks.sender_ownership]\nmap_file = \"" + (dir_ / "owners").string() + "\"\n",
         "owners:3: ", "a@test.local  alice\n@test.local  bob\nnot-an-address  carol\n"},
        {"missing_map.toml",
         good + "\n[checks.sender_ownership]\nmap_file = \"" + (dir_ / "absent-map").string() + "\"\n",
         "absent-map: ", ""},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.name);
        fs::path config = write_config(c.name, c.config_text);
        if (!c.map_text.empty()) write_file(dir_ / "owners", c.map_text);
        auto want = relayguard::load_snapshot(config.string());
        ASSERT_FALSE(want) << "test config unexpectedly valid";
        RunResult r = run({"--check-config", "--config", config.string()});
        EXPECT_EQ(r.exit_code, 1);
        EXPECT_EQ(r.out, "");
        // Exactly what load_snapshot says, and it is "FILE:LINE: KEY: message".
        EXPECT_EQ(r.err, want.error().to_string() + "\n");
        if (!c.want_prefix.empty()) {
            EXPECT_TRUE(r.err.starts_with((dir_ / c.want_prefix).string()))
                << "got=" << r.err << " want prefix=" << (dir_ / c.want_prefix).string();
        }
    }
    // Nonexistent config file.
    RunResult r = run({"--check-config", "--config", (dir_ / "nope.toml").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_TRUE(r.err.starts_with((dir_ / "nope.toml").string() + ": ")) << "got=" << r.err;
    EXPECT_FALSE(fs::exists(socket_)) << "--check-config must not bind";
}

TEST_F(Daemon, StartWithBadConfigExits1AndBindsNothing)
{
    fs::path config = write_config("bad.toml", "[server]\nlisten = [\"unix:" + socket_.string() + "\"]\nthreadz = 2\n");
    auto want = relayguard::load_snapshot(config.string());
    ASSERT_FALSE(want);
    for (bool foreground : {true, false}) {
        std::vector<std::string> args{"--config", config.string()};
        if (foreground) args.push_back("--foreground");
        RunResult r = run(args);
        EXPECT_EQ(r.exit_code, 1) << "foreground=" << foreground;
        EXPECT_NE(r.err.find(want.error().to_string()), std::string::npos) << "got=" << r.err;
        EXPECT_FALSE(fs::exists(socket_));
    }
}

// ---- serving ----

TEST_F(Daemon, ForegroundDaemonAnswersOnUnixAndTcp)
{
    fs::path config = write_config("relayguard.toml", daemon_config(socket_, R"("test.local")"));
    const auto t0 = Clock::now();
    Process& p = start_foreground(config);
    auto unix_client = PolicyClient::unix_socket(socket_);
    ASSERT_TRUE(unix_client.connected()) << std::strerror(errno);
    EXPECT_EQ(unix_client.ask(rcpt_request("a@test.local")), action("DUNNO"));
    const auto startup = Clock::now() - t0;
    const auto startup_ms = std::chrono::duration_cast<milliseconds>(startup).count();
    std::printf("[ timing ] process start to first answered request: %lld ms\n", static_cast<long long>(startup_ms));
    EXPECT_LT(startup, startup_limit);

    EXPECT_EQ(unix_client.ask(rcpt_request("bob@example.com")), action(relay_reply));

    std::string log = read_file(p.err);
    EXPECT_NE(log.find(fmt::format("relayguard {} started: 2 threads, listening on unix:{}, inet:127.0.0.1:",
                                   RELAYGUARD_VERSION, socket_.string())),
              std::string::npos)
        << "got=" << log;
    std::uint16_t port = tcp_port(log);
    ASSERT_NE(port, 0) << "no TCP port in the started line; got=" << log;
    auto tcp_client = PolicyClient::tcp(port);
    ASSERT_TRUE(tcp_client.connected());
    EXPECT_EQ(tcp_client.ask(rcpt_request("bob@example.com")), action(relay_reply));
    EXPECT_EQ(tcp_client.ask(rcpt_request("Someone@TEST.local")), action("DUNNO"));
    EXPECT_TRUE(running(p.pid));
}

TEST_F(Daemon, SighupWithGoodConfigAppliesToOpenAndNewConnections)
{
    fs::path config = write_config("relayguard.toml", daemon_config(socket_, R"("test.local")"));
    Process& p = start_foreground(config);
    auto open_client = PolicyClient::unix_socket(socket_);
    ASSERT_TRUE(open_client.connected());
    EXPECT_EQ(open_client.ask(rcpt_request("bob@new.example")), action(relay_reply));

    write_file(config, daemon_config(socket_, R"("test.local", "new.example")"));
    ASSERT_EQ(kill(p.pid, SIGHUP), 0);
    ASSERT_TRUE(wait_for_text(p.err, "reloaded " + config.string(), 1, p.pid)) << read_file(p.err);

    EXPECT_EQ(open_client.ask(rcpt_request("bob@new.example")), action("DUNNO")) << "same connection";
    auto new_client = PolicyClient::unix_socket(socket_);
    ASSERT_TRUE(new_client.connected());
    EXPECT_EQ(new_client.ask(rcpt_request("bob@new.example")), action("DUNNO")) << "new connection";
    EXPECT_EQ(new_client.ask(rcpt_request("bob@example.com")), action(relay_reply));
    EXPECT_TRUE(running(p.pid));
}

TEST_F(Daemon, SighupWithBadConfigKeepsTheRunningOne)
{
    fs::path config = write_config("relayguard.toml", daemon_config(socket_, R"("test.local")"));
    Process& p = start_foreground(config);
    auto open_client = PolicyClient::unix_socket(socket_);
    ASSERT_TRUE(open_client.connected());
    EXPECT_EQ(open_client.ask(rcpt_request("a@test.local")), action("DUNNO"));

    // A new local domain plus an error on line 3: nothing of it may take effect.
    write_file(config, "[server]\nlisten = [\"unix:" + socket_.string() + "\"]\nthreadz = 2\n"
                       "[domains]\nlocal = [\"new.example\"]\n");
    auto want = relayguard::load_snapshot(config.string());
    ASSERT_FALSE(want);
    ASSERT_EQ(kill(p.pid, SIGHUP), 0);
    const std::string want_line = "reload of " + config.string() +
                                  " failed, keeping the running configuration: " + want.error().to_string();
    ASSERT_TRUE(wait_for_text(p.err, want_line, 1, p.pid)) << "want=" << want_line << "\ngot=" << read_file(p.err);
    EXPECT_NE(want_line.find(config.string() + ":3: "), std::string::npos) << "error must name file and line";
    EXPECT_NE(read_file(p.err).find("error: " + want_line), std::string::npos)
        << "logged at error level; got=" << read_file(p.err);

    EXPECT_TRUE(running(p.pid));
    EXPECT_EQ(open_client.ask(rcpt_request("bob@new.example")), action(relay_reply)) << "same connection";
    EXPECT_EQ(open_client.ask(rcpt_request("a@test.local")), action("DUNNO"));
    auto new_client = PolicyClient::unix_socket(socket_);
    ASSERT_TRUE(new_client.connected());
    EXPECT_EQ(new_client.ask(rcpt_request("bob@new.example")), action(relay_reply)) << "new connection";

    // And a later good reload still works.
    write_file(config, daemon_config(socket_, R"("test.local", "new.example")"));
    ASSERT_EQ(kill(p.pid, SIGHUP), 0);
    ASSERT_TRUE(wait_for_text(p.err, "reloaded " + config.string(), 1, p.pid)) << read_file(p.err);
    EXPECT_EQ(new_client.ask(rcpt_request("bob@new.example")), action("DUNNO"));
}

class DaemonStop : public Daemon, public ::testing::WithParamInterface<int> {};

TEST_P(DaemonStop, AnswersThePendingRequestExitsZeroAndRemovesTheSocket)
{
    const int signo = GetParam();
    fs::path config = write_config("relayguard.toml", daemon_config(socket_, R"("test.local")"));
    Process& p = start_foreground(config);
    auto client = PolicyClient::unix_socket(socket_);
    ASSERT_TRUE(client.connected());
    EXPECT_EQ(client.ask(rcpt_request("a@test.local")), action("DUNNO"));
    auto idle_client = PolicyClient::unix_socket(socket_);
    ASSERT_TRUE(idle_client.connected());

    // The request goes out just before the signal; its answer must still come.
    ASSERT_TRUE(client.send(rcpt_request("bob@example.com")));
    const auto t0 = Clock::now();
    ASSERT_EQ(kill(p.pid, signo), 0);
    EXPECT_EQ(client.read_reply(), action(relay_reply));

    auto status = wait_exit(p);
    ASSERT_TRUE(status) << "still running " << step_limit.count() << " ms after the signal";
    const auto took = Clock::now() - t0;
    EXPECT_LT(took, stop_limit) << "took " << std::chrono::duration_cast<milliseconds>(took).count() << " ms";
    EXPECT_TRUE(WIFEXITED(*status)) << "status=" << *status;
    EXPECT_EQ(WEXITSTATUS(*status), 0);
    EXPECT_TRUE(client.at_eof(milliseconds(1000)));
    EXPECT_TRUE(idle_client.at_eof(milliseconds(1000)));
    EXPECT_FALSE(fs::exists(socket_)) << "UNIX socket file left behind";
    std::string log = read_file(p.err);
    EXPECT_NE(log.find(": stopping"), std::string::npos) << "got=" << log;
}

INSTANTIATE_TEST_SUITE_P(Signals, DaemonStop, ::testing::Values(SIGTERM, SIGINT),
                         [](const auto& info) { return std::string(info.param == SIGTERM ? "SIGTERM" : "SIGINT"); });

TEST_F(Daemon, SecondDaemonOnTheSameSocketRefusesToStart)
{
    fs::path config = write_config("relayguard.toml", daemon_config(socket_, R"("test.local")"));
    Process& first = start_foreground(config);
    const pid_t first_pid = first.pid;
    fs::path config2 = write_config("second.toml", daemon_config(socket_, R"("test.local")", false));

    for (bool foreground : {true, false}) {
        std::vector<std::string> args{"--config", config2.string()};
        if (foreground) args.push_back("--foreground");
        RunResult r = run(args, foreground ? "second-fg" : "second-bg");
        EXPECT_EQ(r.exit_code, 1) << "foreground=" << foreground;
        EXPECT_NE(r.err.find("cannot listen: "), std::string::npos) << "got=" << r.err;
        EXPECT_NE(r.err.find(socket_.string()), std::string::npos) << "the message names the socket; got=" << r.err;

        EXPECT_TRUE(running(first_pid));
        ASSERT_TRUE(fs::exists(socket_));
        auto client = PolicyClient::unix_socket(socket_);
        ASSERT_TRUE(client.connected());
        EXPECT_EQ(client.ask(rcpt_request("bob@example.com")), action(relay_reply));
    }
}

// find_daemon - pids of running relayguard processes whose command line names `config`.
std::vector<pid_t> find_daemon(const fs::path& config)
{
    std::vector<pid_t> pids;
    const fs::path binary = fs::canonical(relayguard_binary());
    for (const auto& entry : fs::directory_iterator("/proc")) {
        const std::string name = entry.path().filename().string();
        if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; }))
            continue;
        std::error_code ec;
        if (fs::read_symlink(entry.path() / "exe", ec) != binary || ec) continue;
        std::FILE* f = std::fopen((entry.path() / "cmdline").c_str(), "r");
        if (!f) continue;
        std::string cmdline;
        char buf[4096];
        size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) cmdline.append(buf, n);
        std::fclose(f);
        const pid_t pid = std::stoi(name);
        if (cmdline.find(config.string()) != std::string::npos && running(pid)) pids.push_back(pid);
    }
    return pids;
}

TEST_F(Daemon, WithoutForegroundReturnsZeroOnceUpAndRunsDetached)
{
    // Adopt the daemon when its parent exits, so that it can be reaped here (its exit status
    // checked, no zombie left).
    ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    fs::path config = write_config("background.toml", daemon_config(socket_, R"("test.local")"));

    RunResult r = run({"--config", config.string()}, "background");
    ASSERT_EQ(r.exit_code, 0) << "stderr=" << r.err;
    // Up means answering: no retry needed.
    auto client = PolicyClient::unix_socket(socket_);
    ASSERT_TRUE(client.connected()) << std::strerror(errno);
    EXPECT_EQ(client.ask(rcpt_request("bob@example.com")), action(relay_reply));
    EXPECT_NE(r.err.find(" started: "), std::string::npos) << "started line before detaching; got=" << r.err;

    auto pids = find_daemon(config);
    ASSERT_EQ(pids.size(), 1u) << "daemons found for " << config;
    Process daemon{pids[0], false, {}, {}};
    processes_.push_back(daemon);
    Process& d = processes_.back();
    EXPECT_EQ(stat_field(d.pid, 6), d.pid) << "not a session leader (setsid)";
    std::error_code ec;
    EXPECT_EQ(fs::read_symlink(fmt::format("/proc/{}/cwd", d.pid), ec), fs::path("/"));
    EXPECT_EQ(fs::read_symlink(fmt::format("/proc/{}/fd/2", d.pid), ec), fs::path("/dev/null"));

    ASSERT_EQ(kill(d.pid, SIGTERM), 0);
    auto status = wait_exit(d);
    ASSERT_TRUE(status) << "daemon did not stop";
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "status=" << *status;
    EXPECT_FALSE(fs::exists(socket_));
    EXPECT_TRUE(find_daemon(config).empty());
}

} // namespace

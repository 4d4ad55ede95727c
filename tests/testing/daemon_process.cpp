// SPDX-License-Identifier: MIT
// daemon_process.cpp - spawn, watch and stop the relayguard executable; a policy client (see
// daemon_process.hpp).
#include "testing/daemon_process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "testing/test_support.hpp"

namespace relayguard::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

// Bytes read from a socket per read(): a policy reply is a few dozen.
constexpr std::size_t read_chunk_bytes = 4096;
// How long a process killed with SIGKILL in a destructor may take to be reaped.
constexpr milliseconds reap_limit{2000};

// open_pidfd - a pidfd for `pid` (readable once it ends), or -1. glibc 2.36's <sys/pidfd.h>
// lacks extern "C", so the system call is made directly.
int open_pidfd(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

} // namespace

int remaining_ms(SteadyClock::time_point deadline)
{
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - SteadyClock::now()).count();
    return left > 0 ? static_cast<int>(left) : 0;
}

std::string slurp(const fs::path& path)
{
    std::string text;
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (!f) return text;
    char buf[read_chunk_bytes];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    std::fclose(f);
    return text;
}

std::size_t count_of(std::string_view text, std::string_view needle)
{
    std::size_t count = 0;
    if (needle.empty()) return 0;
    for (auto at = text.find(needle); at != std::string_view::npos; at = text.find(needle, at + needle.size()))
        ++count;
    return count;
}

bool process_running(pid_t pid)
{
    const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
    const auto paren = stat.rfind(')'); // the command name may contain anything
    if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
    const char state = stat[paren + 2];
    return state != 'Z' && state != 'X';
}

bool wait_for_text(const fs::path& file, std::string_view needle, std::size_t times, pid_t pid, milliseconds limit)
{
    const auto deadline = SteadyClock::now() + limit;
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
        char events[read_chunk_bytes];
        while (read(notify, events, sizeof events) > 0) {
        }
        if (process >= 0 && (fds[1].revents & POLLIN)) ended = true;
    }
    if (process >= 0) close(process);
    close(notify);
    return found;
}

// ---- PolicyClient ----

PolicyClient PolicyClient::unix_socket(const fs::path& path)
{
    PolicyClient c;
    c.fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (connect(c.fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) c.reset();
    return c;
}

PolicyClient PolicyClient::tcp(std::uint16_t port)
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

PolicyClient::PolicyClient(PolicyClient&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), eof_(other.eof_), buf_(std::move(other.buf_))
{
}

PolicyClient::~PolicyClient() { reset(); }

bool PolicyClient::send(std::string_view bytes)
{
    while (!bytes.empty()) {
        // MSG_NOSIGNAL: a daemon that closed on us is a test failure, not a SIGPIPE.
        const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

bool PolicyClient::shutdown_write() { return fd_ >= 0 && ::shutdown(fd_, SHUT_WR) == 0; }

std::string PolicyClient::read_reply(milliseconds limit)
{
    const auto deadline = SteadyClock::now() + limit;
    for (;;) {
        if (auto end = buf_.find("\n\n"); end != std::string::npos) {
            std::string reply = buf_.substr(0, end + 2);
            buf_.erase(0, end + 2);
            return reply;
        }
        if (!fill(deadline)) return std::exchange(buf_, {});
    }
}

bool PolicyClient::at_eof(milliseconds limit)
{
    const auto deadline = SteadyClock::now() + limit;
    while (buf_.empty()) {
        if (!fill(deadline)) return eof_;
    }
    return false;
}

std::string PolicyClient::ask(std::string_view request, milliseconds limit)
{
    if (!send(request)) return "<send failed>";
    return read_reply(limit);
}

void PolicyClient::reset()
{
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
}

// fill - read what is there; false on EOF, error or deadline.
bool PolicyClient::fill(SteadyClock::time_point deadline)
{
    if (fd_ < 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, remaining_ms(deadline)) <= 0) return false;
    char chunk[read_chunk_bytes];
    const ssize_t n = read(fd_, chunk, sizeof chunk);
    // A connection still in the listen backlog when the listener closes is reset, not ended.
    if (n == 0 || (n < 0 && errno == ECONNRESET)) eof_ = true;
    if (n <= 0) return false;
    buf_.append(chunk, static_cast<std::size_t>(n));
    return true;
}

// ---- DaemonProcess ----

fs::path relayguard_binary() { return binary_dir() / "relayguard"; }

DaemonProcess::DaemonProcess(const fs::path& config, const fs::path& dir, const std::string& tag)
    // Tests run as root (CI, containers) with configs that set no server.user.
    : DaemonProcess(DaemonArgs{{"--foreground", "--allow-root", "--config", config.string()}}, dir, tag)
{
}

DaemonProcess::DaemonProcess(const DaemonArgs& arguments, const fs::path& dir, const std::string& tag)
    : out_(dir / (tag + ".out")), err_(dir / (tag + ".err"))
{
    const std::string binary = relayguard_binary().string();
    std::vector<std::string> args{binary};
    args.insert(args.end(), arguments.args.begin(), arguments.args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // Opened here, not in the child, so that the files exist (and can be watched) as soon as
    // the constructor returns. O_CLOEXEC: only the dup2() copies reach the program.
    const int in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    const int out_fd = open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int err_fd = open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    EXPECT_TRUE(in_fd >= 0 && out_fd >= 0 && err_fd >= 0) << std::strerror(errno);

    pid_ = fork();
    if (pid_ == 0) {
        // Only async-signal-safe calls between fork and exec.
        if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) _exit(126);
        execv(binary.c_str(), argv.data());
        _exit(127);
    }
    close(in_fd);
    close(out_fd);
    close(err_fd);
    EXPECT_GT(pid_, 0) << "fork: " << std::strerror(errno);
}

DaemonProcess::~DaemonProcess()
{
    if (reaped_ || pid_ <= 0) return;
    kill(pid_, SIGKILL);
    wait_exit(reap_limit);
}

bool DaemonProcess::wait_started(milliseconds limit)
{
    return pid_ > 0 && wait_for_text(err_, " started: ", 1, pid_, limit);
}

bool DaemonProcess::wait_for_log(std::string_view needle, std::size_t times, milliseconds limit) const
{
    return wait_for_text(err_, needle, times, pid_, limit);
}

std::optional<int> DaemonProcess::wait_exit(milliseconds limit)
{
    if (pid_ <= 0 || reaped_) return std::nullopt;
    const int fd = open_pidfd(pid_);
    if (fd < 0) return std::nullopt;
    pollfd pfd{fd, POLLIN, 0};
    int r;
    const auto deadline = SteadyClock::now() + limit;
    while ((r = poll(&pfd, 1, remaining_ms(deadline))) < 0 && errno == EINTR) {
    }
    close(fd);
    if (r <= 0) return std::nullopt;
    int status = 0;
    if (waitpid(pid_, &status, 0) != pid_) return std::nullopt;
    reaped_ = true;
    return status;
}

std::optional<int> DaemonProcess::stop(milliseconds limit)
{
    if (pid_ <= 0 || reaped_) return std::nullopt;
    kill(pid_, SIGTERM);
    return wait_exit(limit);
}

} // namespace relayguard::testing

// SPDX-License-Identifier: MIT
// events.cpp - the event command runner (see events.hpp): posix_spawn, a pidfd and poll(), so
// that one thread writes the event, reads the output, enforces the timeout and reaps the child.
#include "server/events.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include <relayguard/metrics.hpp>
#include <relayguard/strings.hpp>

extern char** environ;

namespace relayguard::server_detail {
namespace {

using Clock = std::chrono::steady_clock;

// How often a running command's wait looks at stop(): shutdown is never held up longer.
constexpr std::chrono::milliseconds stop_poll_interval{100};

// A file descriptor closed when it goes out of scope.
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) noexcept : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&&) = delete;
    ~Fd() { reset(); }
    int get() const noexcept { return fd_; }
    void reset() noexcept
    {
        if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    }

private:
    int fd_ = -1;
};

// log_output - the command's output, one log line per line, already capped.
void log_output(const std::string& output, bool truncated)
{
    std::size_t start = 0;
    while (start < output.size()) {
        std::size_t end = output.find('\n', start);
        if (end == std::string::npos) end = output.size();
        if (end > start) spdlog::info("event command: {}", sanitize(std::string_view(output).substr(start, end - start), event_output_log_bytes));
        start = end + 1;
    }
    if (truncated) spdlog::info("event command: (output past {} bytes not logged)", event_output_log_bytes);
}

} // namespace

EventRunner::EventRunner(std::size_t queue_limit, Metrics& metrics) : limit_(queue_limit), metrics_(metrics) {}

EventRunner::~EventRunner() { stop(); }

bool EventRunner::submit(std::string command, std::string json, std::chrono::milliseconds timeout)
{
    std::unique_lock lock(mutex_);
    if (stopping_) return false;
    if (queue_.size() >= limit_) {
        const bool first = !dropping_;
        dropping_ = true;
        lock.unlock();
        metrics_.event_dropped();
        if (first) spdlog::warn("event command queue full ({} events waiting): dropping events until it drains", limit_);
        return false;
    }
    queue_.push_back(Job{std::move(command), std::move(json), timeout});
    // Started here, on a worker thread: it inherits the workers' blocked signals, so the
    // daemon's signals keep going to its main thread.
    if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
    lock.unlock();
    wake_.notify_one();
    return true;
}

void EventRunner::stop()
{
    {
        std::lock_guard lock(mutex_);
        if (stopping_ && !thread_.joinable()) return;
        stopping_ = true;
        if (!queue_.empty()) spdlog::info("event command: {} event(s) not run at shutdown", queue_.size());
        queue_.clear();
    }
    wake_.notify_one();
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

// run - the thread body: one job at a time until stop().
void EventRunner::run()
{
    for (;;) {
        Job job;
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
            if (stopping_) return;
            job = std::move(queue_.front());
            queue_.pop_front();
            if (queue_.empty()) dropping_ = false;
        }
        run_one(job);
    }
}

// run_one - spawn, feed stdin, collect output, wait for the exit or kill at the timeout.
void EventRunner::run_one(const Job& job)
{
    int in_pipe[2], out_pipe[2];
    if (pipe2(in_pipe, O_CLOEXEC) != 0) {
        spdlog::warn("event command: pipe: {}", std::strerror(errno));
        return;
    }
    Fd in_read(in_pipe[0]), in_write(in_pipe[1]);
    if (pipe2(out_pipe, O_CLOEXEC) != 0) {
        spdlog::warn("event command: pipe: {}", std::strerror(errno));
        return;
    }
    Fd out_read(out_pipe[0]), out_write(out_pipe[1]);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in_read.get(), 0);
    posix_spawn_file_actions_adddup2(&actions, out_write.get(), 1);
    posix_spawn_file_actions_adddup2(&actions, out_write.get(), 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    // Its own process group, so that a timeout kills what the shell started too; default
    // signal handling and an empty mask (the daemon's threads block and ignore some).
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    for (int sig : {SIGPIPE, SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM})
        sigaddset(&defaults, sig);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::string shell = "/bin/sh", dash_c = "-c", command = job.command;
    char* argv[] = {shell.data(), dash_c.data(), command.data(), nullptr};
    pid_t pid = -1;
    const int spawned = posix_spawn(&pid, "/bin/sh", &actions, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (spawned != 0) {
        spdlog::warn("event command: cannot run /bin/sh: {}", std::strerror(spawned));
        return;
    }
    in_read.reset();
    out_write.reset();
    Fd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
    fcntl(in_write.get(), F_SETFL, O_NONBLOCK);
    fcntl(out_read.get(), F_SETFL, O_NONBLOCK);

    const std::string input = job.json + "\n";
    std::size_t written = 0;
    std::string output;
    bool truncated = false, exited = false, killed = false, output_open = true;
    const auto deadline = Clock::now() + job.timeout;
    while (!exited || output_open) {
        const auto now = Clock::now();
        bool stop_now;
        {
            std::lock_guard lock(mutex_);
            stop_now = stopping_;
        }
        if (now >= deadline || stop_now) {
            kill(-pid, SIGKILL);
            killed = true;
            break;
        }
        pollfd fds[3];
        nfds_t n = 0;
        const int pid_slot = pidfd.get() >= 0 && !exited ? static_cast<int>(n) : -1;
        if (pid_slot >= 0) fds[n++] = {pidfd.get(), POLLIN, 0};
        const int out_slot = output_open ? static_cast<int>(n) : -1;
        if (out_slot >= 0) fds[n++] = {out_read.get(), POLLIN, 0};
        const int in_slot = in_write.get() >= 0 ? static_cast<int>(n) : -1;
        if (in_slot >= 0) fds[n++] = {in_write.get(), POLLOUT, 0};
        const auto wait = std::min(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) +
                                       std::chrono::milliseconds(1),
                                   stop_poll_interval);
        if (n == 0) break;
        if (poll(fds, n, static_cast<int>(wait.count())) < 0 && errno != EINTR) break;
        if (pid_slot >= 0 && fds[pid_slot].revents) exited = true;
        if (in_slot >= 0 && fds[in_slot].revents) {
            const ssize_t w = ::write(in_write.get(), input.data() + written, input.size() - written);
            if (w > 0) written += static_cast<std::size_t>(w);
            // Done, or the command closed its stdin without reading it all: either way, EOF.
            if (written == input.size() || (w < 0 && errno != EAGAIN && errno != EINTR)) in_write.reset();
        }
        if (out_slot >= 0 && fds[out_slot].revents) {
            char buf[4096];
            const ssize_t r = ::read(out_read.get(), buf, sizeof buf);
            if (r > 0) {
                const std::size_t room = event_output_log_bytes - std::min(event_output_log_bytes, output.size());
                output.append(buf, std::min(room, static_cast<std::size_t>(r)));
                if (static_cast<std::size_t>(r) > room) truncated = true;
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                output_open = false;
            }
        }
        // A background child of the command may keep the output open: once the command
        // itself has exited, what is buffered is all we wait for.
        if (exited && output_open && !(fds[out_slot].revents & POLLIN)) output_open = false;
    }
    int status = 0;
    waitpid(pid, &status, 0);
    log_output(output, truncated);
    if (killed) {
        spdlog::warn("event command killed after {} ms (command_timeout): {}", job.timeout.count(),
                     sanitize(job.command, 200));
    } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        spdlog::warn("event command exited with status {}: {}", WEXITSTATUS(status), sanitize(job.command, 200));
    } else if (WIFSIGNALED(status)) {
        spdlog::warn("event command killed by signal {}: {}", WTERMSIG(status), sanitize(job.command, 200));
    }
}

} // namespace relayguard::server_detail

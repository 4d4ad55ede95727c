// SPDX-License-Identifier: MIT
// daemon_process.hpp - the real relayguard executable as a child process, and a policy client
// that talks to it, for integration tests (daemon_test.cpp's approach, shared).
//
// The daemon runs with --foreground, its stdout/stderr in files; log lines are awaited with
// inotify and exits with pidfd, never by sleeping. Every wait has a deadline. Only the child
// this object started is ever signalled, by its pid. Not thread-safe (PolicyClient: one per thread).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace relayguard::testing {

using SteadyClock = std::chrono::steady_clock;

// How long one step (a start, a reply, a log line) may take before a test fails instead of
// hanging: generous for a loaded 2-core machine, short enough that a hang is noticed.
inline constexpr std::chrono::milliseconds default_step_limit{10000};

// remaining_ms - milliseconds left until `deadline`, 0 once it has passed (a poll() timeout).
int remaining_ms(SteadyClock::time_point deadline);

// slurp - the file's content, "" if it cannot be read (yet); unlike read_file(), no failure.
std::string slurp(const std::filesystem::path& path);

// count_of - non-overlapping occurrences of `needle` in `text`.
std::size_t count_of(std::string_view text, std::string_view needle);

// process_running - whether `pid` exists and is not a zombie (kill -0 answers for zombies).
bool process_running(pid_t pid);

// wait_for_text - whether `needle` occurs at least `times` times in `file` before the deadline;
// gives up early when `pid` (if > 0) ends first.
bool wait_for_text(const std::filesystem::path& file, std::string_view needle, std::size_t times = 1,
                   pid_t pid = -1, std::chrono::milliseconds limit = default_step_limit);

// A connection to a policy server (UNIX or loopback TCP); every read has a deadline.
class PolicyClient {
public:
    static PolicyClient unix_socket(const std::filesystem::path& path);
    static PolicyClient tcp(std::uint16_t port);

    PolicyClient(PolicyClient&& other) noexcept;
    PolicyClient& operator=(PolicyClient&&) = delete;
    ~PolicyClient();

    bool connected() const noexcept { return fd_ >= 0; }

    bool send(std::string_view bytes);
    // shutdown_write - half-close, as Exim's ${readsocket} does after its one request.
    bool shutdown_write();

    // read_reply - one reply, "action=...\n\n"; on EOF or timeout whatever arrived (maybe "").
    std::string read_reply(std::chrono::milliseconds limit = default_step_limit);

    // at_eof - whether the peer closes (or resets) the connection, sending nothing more, before
    // the deadline.
    bool at_eof(std::chrono::milliseconds limit = default_step_limit);

    // ask - send `request`, read its reply ("<send failed>" if it could not be sent).
    std::string ask(std::string_view request, std::chrono::milliseconds limit = default_step_limit);

private:
    PolicyClient() = default;
    void reset();
    bool fill(SteadyClock::time_point deadline);

    int fd_ = -1;
    bool eof_ = false;
    std::string buf_;
};

// relayguard_binary - binary_dir()/relayguard.
std::filesystem::path relayguard_binary();

// The arguments after the program name, exactly as given (nothing added).
struct DaemonArgs {
    std::vector<std::string> args;
};

// DaemonProcess - `relayguard --foreground --allow-root --config CONFIG` (or the DaemonArgs
// given), stdout and stderr in DIR/TAG.out and DIR/TAG.err. The destructor SIGKILLs and reaps
// it if it is still running.
class DaemonProcess {
public:
    DaemonProcess(const std::filesystem::path& config, const std::filesystem::path& dir,
                  const std::string& tag = "relayguard");
    DaemonProcess(const DaemonArgs& args, const std::filesystem::path& dir, const std::string& tag = "relayguard");
    ~DaemonProcess();
    DaemonProcess(const DaemonProcess&) = delete;
    DaemonProcess& operator=(const DaemonProcess&) = delete;

    // wait_started - whether it logged its " started: " line in time (false if it exited).
    bool wait_started(std::chrono::milliseconds limit = default_step_limit);

    pid_t pid() const noexcept { return pid_; }
    const std::filesystem::path& err_path() const noexcept { return err_; }
    // log - its stderr so far.
    std::string log() const { return slurp(err_); }
    bool wait_for_log(std::string_view needle, std::size_t times = 1,
                      std::chrono::milliseconds limit = default_step_limit) const;

    // wait_exit - the raw wait status once it has ended, or nullopt at the deadline.
    std::optional<int> wait_exit(std::chrono::milliseconds limit = default_step_limit);
    // stop - SIGTERM, then wait_exit().
    std::optional<int> stop(std::chrono::milliseconds limit = default_step_limit);

private:
    pid_t pid_ = -1;
    bool reaped_ = false;
    std::filesystem::path out_;
    std::filesystem::path err_;
};

} // namespace relayguard::testing

// SPDX-License-Identifier: MIT
// events.hpp - the event command runner: `/bin/sh -c COMMAND` per compromise-ladder event, with
// the event's JSON on stdin, on one thread of its own (private to the server module).
//
// Workers only submit() (a lock, a push, a notify: never a wait on a child). The queue is
// bounded; past it events are dropped, counted, and warned about once per burst. A command that
// outlives its timeout is killed with its whole process group. SECURITY: the command comes from
// the config (trusted); the event JSON carries untrusted values, escaped by event_json().
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

namespace relayguard {
class Metrics;
}

namespace relayguard::server_detail {

// Bytes of a command's stdout/stderr copied to the log per event; the rest is read and dropped.
inline constexpr std::size_t event_output_log_bytes = 2048;

class EventRunner {
public:
    // `queue_limit`: events waiting at most (EventsConfig::queue); `metrics` counts drops and
    // must outlive this.
    EventRunner(std::size_t queue_limit, Metrics& metrics);
    ~EventRunner(); // stop()
    EventRunner(const EventRunner&) = delete;
    EventRunner& operator=(const EventRunner&) = delete;

    // submit - run `command` with `json` on stdin, killed after `timeout`. Any thread; returns
    // at once; false if the queue is full (the event is dropped and counted).
    bool submit(std::string command, std::string json, std::chrono::milliseconds timeout);

    // stop - kill a running command, drop what waits, end the thread. Idempotent.
    void stop();

private:
    struct Job {
        std::string command;
        std::string json;
        std::chrono::milliseconds timeout;
    };
    void run();
    void run_one(const Job& job);

    const std::size_t limit_;
    Metrics& metrics_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<Job> queue_;
    bool stopping_ = false;
    bool dropping_ = false; // in a burst of drops: warned already
    std::thread thread_;    // started on the first submit(): no thread when no command is set
};

} // namespace relayguard::server_detail

// SPDX-License-Identifier: MIT
// logging.cpp - stderr or syslog (facility mail) through spdlog's default logger.
//
// One logger for the life of the process, installed as spdlog's default once: spdlog::info() and
// friends read the default logger through a raw pointer, so replacing it while workers log (a
// reload) would free a logger in use (ThreadSanitizer found exactly that). A reload changes the
// logger's level (atomic) and, if the target changed, the one sink behind a dist_sink (under
// its mutex). An unchanged target keeps its sink: a new syslog sink would openlog() and the old
// one's destructor then closelog().
#include <relayguard/logging.hpp>

#include <syslog.h>

#include <mutex>
#include <optional>

#include <spdlog/sinks/dist_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>

namespace relayguard {
namespace {

spdlog::level::level_enum to_spdlog(LogConfig::Level level)
{
    switch (level) {
    case LogConfig::Level::debug: return spdlog::level::debug;
    case LogConfig::Level::info: return spdlog::level::info;
    case LogConfig::Level::warning: return spdlog::level::warn;
    case LogConfig::Level::error: return spdlog::level::err;
    }
    return spdlog::level::info;
}

} // namespace

void init_logging(const LogConfig& config)
{
    static const auto dist = std::make_shared<spdlog::sinks::dist_sink_mt>();
    static const auto logger = [] {
        auto made = std::make_shared<spdlog::logger>("relayguard", dist);
        spdlog::set_default_logger(made);
        return made;
    }();
    // Reloads come from the main thread only; the lock keeps a test that calls this from two
    // threads honest.
    static std::mutex reconfigure;
    static std::optional<LogConfig::Target> current;
    const std::lock_guard lock(reconfigure);
    if (current != config.target) {
        std::shared_ptr<spdlog::sinks::sink> sink;
        if (config.target == LogConfig::Target::syslog) {
            // syslog adds its own time stamp, host and pid.
            sink = std::make_shared<spdlog::sinks::syslog_sink_mt>("relayguard", LOG_PID, LOG_MAIL, false);
            sink->set_pattern("%l: %v");
        } else {
            sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
            sink->set_pattern("%Y-%m-%dT%H:%M:%S.%e relayguard[%P]: %l: %v");
        }
        dist->set_sinks({std::move(sink)});
        current = config.target;
    }
    logger->set_level(to_spdlog(config.level));
    logger->flush_on(spdlog::level::warn);
}

} // namespace relayguard

// SPDX-License-Identifier: MIT
// logging.cpp - stderr or syslog (facility mail) through spdlog's default logger.
//
// The default logger is replaced whole (spdlog::set_default_logger is thread-safe), so a reload
// that changes the target never leaves a half-configured logger visible to the workers.
#include <relayguard/logging.hpp>

#include <syslog.h>

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
    std::shared_ptr<spdlog::logger> logger;
    if (config.target == LogConfig::Target::syslog) {
        // syslog adds its own time stamp, host and pid.
        auto sink = std::make_shared<spdlog::sinks::syslog_sink_mt>("relayguard", LOG_PID, LOG_MAIL, false);
        logger = std::make_shared<spdlog::logger>("relayguard", std::move(sink));
        logger->set_pattern("%l: %v");
    } else {
        auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
        logger = std::make_shared<spdlog::logger>("relayguard", std::move(sink));
        logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e relayguard[%P]: %l: %v");
    }
    logger->set_level(to_spdlog(config.level));
    logger->flush_on(spdlog::level::warn);
    spdlog::set_default_logger(std::move(logger));
}

} // namespace relayguard

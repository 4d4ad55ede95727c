// SPDX-License-Identifier: MIT
// snapshot.cpp - build the immutable Snapshot a decision reads: config plus the files it names.
//
// Runs at start and on SIGHUP, never on the request path. A snapshot is built whole or not at
// all: any unreadable or invalid file fails the load, so a reload never half-applies.
// Thread-safe (no shared state); the result is shared read-only between workers.
#include <relayguard/policy.hpp>

#include <utility>

namespace relayguard {

// build_snapshot - local domains from domains.local then domains.file, owners from
// sender_ownership.map_file. Errors name the map file and its line.
boost::system::result<std::shared_ptr<const Snapshot>, ConfigError> build_snapshot(Config config)
{
    auto snap = std::make_shared<Snapshot>();
    snap->config = std::move(config);
    const Config& cfg = snap->config;

    for (const auto& domain : cfg.domains.local) snap->local_domains.add(domain);
    if (!cfg.domains.file.empty()) {
        auto domains = load_domain_file(cfg.domains.file, std::move(snap->local_domains));
        if (!domains) return domains.error();
        snap->local_domains = std::move(*domains);
    }

    if (!cfg.sender_ownership.map_file.empty()) {
        auto owners = load_sender_login_map(cfg.sender_ownership.map_file, cfg.address);
        if (!owners) return owners.error();
        snap->owners = std::move(*owners);
    }
    return std::shared_ptr<const Snapshot>(std::move(snap));
}

boost::system::result<std::shared_ptr<const Snapshot>, ConfigError>
load_snapshot(const std::string& config_path, std::vector<std::string>* warnings)
{
    auto config = load_config(config_path, warnings);
    if (!config) return config.error();
    return build_snapshot(std::move(*config));
}

} // namespace relayguard

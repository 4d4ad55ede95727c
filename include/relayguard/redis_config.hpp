// SPDX-License-Identifier: MIT
// redis_config.hpp - how to reach Redis (shared by the config, the client and relayguardctl).
#pragma once

#include <chrono>
#include <string>

namespace relayguard::redis {

// Where Redis is: "unix:/run/redis/redis.sock", "tcp:HOST:PORT" (or "HOST:PORT"),
// "tls:HOST:PORT"; IPv6 literals in brackets ("tcp:[::1]:6379"). HOST may be a name (resolved
// at each connect).
struct ClientConfig {
    std::string address = "tcp:127.0.0.1:6379";
    std::string username; // ACL user (AUTH username password); empty: AUTH password only
    std::string password; // empty: no AUTH
    unsigned database = 0; // SELECT when not 0
    std::chrono::milliseconds command_timeout{100};
    std::chrono::milliseconds connect_timeout{1000};
    std::chrono::milliseconds reconnect_min{100};  // first backoff; doubles up to reconnect_max
    // At most this between attempts: a Redis that is back is used again within it (recovery
    // within a second), and a reconnect every 500 ms costs a dead Redis nothing.
    std::chrono::milliseconds reconnect_max{500};
    // TLS (address "tls:..."): CA bundle to verify the server with (empty: system default
    // paths), optional client certificate and key, server name for SNI and verification
    // (empty: HOST), and whether to verify at all (only turn off in tests).
    std::string tls_ca_file;
    std::string tls_cert_file;
    std::string tls_key_file;
    std::string tls_server_name;
    bool tls_verify = true;
};

} // namespace relayguard::redis
